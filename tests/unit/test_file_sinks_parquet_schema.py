"""``write_parquet`` of a field whose type differs between batches: the output does not
depend on where the batches were cut. A field None in every record of the first batch and a
string later failed (``schema coupon: string does not match the file's schema coupon:
null``), as did ints then floats: the file's schema was fixed by the first batch."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raystream.engine.errors import UserCodeError
from raystream.engine.sink_operator import SinkOperator
from raystream.operators.sinks import ParquetSink
from raystream.operators.testing import OperatorHarness


def write(directory, batches: list[list]) -> list:
    """One sink subtask writes each list of records as one batch: the part files committed."""
    sink = ParquetSink(str(directory))
    harness = OperatorHarness(SinkOperator(sink))
    for batch in batches:
        harness.process(batch)
    result = harness.end_input()
    committables = [c for cs in result.committables.values() for c in cs]
    sink.create_committer().commit(committables)
    return sorted(directory.glob("part-*.parquet"))


def cut(records: list, size: int) -> list[list]:
    return [records[i:i + size] for i in range(0, len(records), size)]


@pytest.mark.parametrize("size", [1, 3, 4, 10])
def test_a_field_none_in_the_first_batches_then_strings_is_one_string_column(tmp_path, size):
    records = [{"k": i, "coupon": None if i < 4 else f"c{i}"} for i in range(10)]
    [part] = write(tmp_path, cut(records, size))
    table = pq.read_table(part)
    assert table.schema == pa.schema([("k", pa.int64()), ("coupon", pa.string())])
    assert table.to_pylist() == records


def test_a_nested_field_none_first_takes_the_later_type(tmp_path):
    records = [{"k": 0, "x": {"a": [1], "b": None}}, {"k": 1, "x": {"a": [], "b": "s"}}]
    [part] = write(tmp_path, cut(records, 1))
    assert pq.read_table(part).to_pylist() == records


def test_a_field_none_throughout_is_written_as_a_null_column(tmp_path):
    [part] = write(tmp_path, [[{"k": 0, "x": None}], [{"k": 1, "x": None}]])
    assert pq.read_table(part).to_pylist() == [{"k": 0, "x": None}, {"k": 1, "x": None}]


def test_a_field_a_later_batch_lacks_is_null_there(tmp_path):
    [part] = write(tmp_path, [[{"k": 0, "x": "a"}], [{"k": 1}], [{"x": "c", "k": 2}]])
    assert pq.read_table(part).to_pylist() == [{"k": 0, "x": "a"}, {"k": 1, "x": None}, {"k": 2, "x": "c"}]


def test_records_of_one_batch_with_different_keys_are_null_where_they_lack_one(tmp_path):
    """In one batch they travel pickled: the sink refused them ("keys differ from the first
    record's") where one record per batch wrote them."""
    records = [{"k": 0}, {"k": 1, "x": 1}, {"k": 2}, {"k": 3, "x": 3}]
    write(tmp_path / "a", [records])
    write(tmp_path / "b", cut(records, 1))  # (x first seen in the second file: a part file with it)
    schema = pa.schema([("k", pa.int64()), ("x", pa.int64())])
    one_batch = pq.read_table(tmp_path / "a", schema=schema).to_pylist()
    per_record = sorted(pq.read_table(tmp_path / "b", schema=schema).to_pylist(), key=lambda r: r["k"])
    assert one_batch == per_record == [{"k": r["k"], "x": r.get("x")} for r in records]


def test_ints_then_floats_start_a_part_file_of_doubles(tmp_path):
    """The file written so far holds int64: it is finished and a file of doubles begins."""
    records = [{"k": i, "x": i if i < 4 else i + 0.5} for i in range(10)]
    parts = write(tmp_path, cut(records, 4))
    schemas = [pq.read_schema(p).field("x").type for p in parts]
    assert schemas == [pa.int64(), pa.float64()]
    table = pq.read_table(tmp_path, schema=pa.schema([("k", pa.int64()), ("x", pa.float64())]))
    assert sorted(table.to_pylist(), key=lambda r: r["k"]) == records
    # a later batch of ints goes into the file of doubles (no third file)
    assert len(write(tmp_path / "more", [records[:4], records[4:], records[:2]])) == 2


def test_a_new_field_in_a_later_batch_starts_a_part_file_with_it(tmp_path):
    parts = write(tmp_path, [[{"k": 0}], [{"k": 1, "y": "b"}], [{"k": 2}]])
    assert [pq.read_schema(p).names for p in parts] == [["k"], ["k", "y"]]
    table = pq.read_table(tmp_path, schema=pa.schema([("k", pa.int64()), ("y", pa.string())]))
    assert sorted(table.to_pylist(), key=lambda r: r["k"]) == [{"k": 0, "y": None}, {"k": 1, "y": "b"}, {"k": 2, "y": None}]


def test_a_field_of_strings_then_ints_fails_naming_field_types_and_record(tmp_path):
    with pytest.raises(UserCodeError, match=r"write_parquet\(.*\): field 'x' is int64 in this batch and string in "
                                            r"the batches before .*one Parquet column holds one type") as info:
        write(tmp_path, [[{"k": 0, "x": "a"}], [{"k": 1, "x": None}, {"k": 2, "x": 7}]])
    assert info.value.record == {"k": 2, "x": 7}


def test_a_part_file_rolled_and_never_handed_over_is_deleted_on_close(tmp_path):
    sink = ParquetSink(str(tmp_path))
    harness = OperatorHarness(SinkOperator(sink))
    harness.process([{"x": 1}])
    harness.process([{"x": 1.5}])  # rolls the file of ints
    assert len(list(tmp_path.rglob(".inprogress-*"))) == 2  # (in .raystream/ when the task says its job)
    harness.operator.close()  # (an attempt that fails before its next checkpoint)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
