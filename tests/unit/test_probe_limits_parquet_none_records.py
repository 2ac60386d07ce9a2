"""``write_parquet`` of a stream of scalars with None records: the file does not depend on
where the batches were cut (no Ray).

Before, ``from_collection([None, 1, 2]).write_parquet(dir)`` wrote a ``value`` column with a
null at parallelism 1 and failed the job at parallelism 2 (``records that are all None (a
column of no type)``): the subtask that got the None alone had a batch of Nones only."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raystream.engine.errors import UserCodeError
from raystream.engine.sink_operator import SinkOperator
from raystream.operators.sinks import ParquetSink
from raystream.operators.testing import OperatorHarness


def write(directory, batches: list[list]) -> list[pa.Table]:
    sink = ParquetSink(str(directory))
    harness = OperatorHarness(SinkOperator(sink))
    for batch in batches:
        harness.process(batch)
    result = harness.end_input()
    sink.create_committer().commit([c for cs in result.committables.values() for c in cs])
    return [pq.read_table(p) for p in sorted(directory.glob("part-*.parquet"))]


@pytest.mark.parametrize("batches", [[[None, 1, 2]], [[None], [1, 2]], [[None], [None, 1], [2]], [[1], [None], [2]]])
def test_none_records_of_ints_are_nulls_of_the_value_column_however_the_batches_are_cut(tmp_path, batches):
    [table] = write(tmp_path, batches)
    assert table.schema == pa.schema([("value", pa.int64())])
    assert table.column("value").to_pylist() == [v for b in batches for v in b]


def test_a_stream_of_none_records_only_is_a_null_column(tmp_path):
    [table] = write(tmp_path, [[None], [None, None]])
    assert table.to_pylist() == [{"value": None}] * 3


def test_none_records_among_dict_records_are_still_refused_naming_them(tmp_path):
    with pytest.raises(UserCodeError, match=r"None records among records of fields \['k'\]"):
        write(tmp_path / "a", [[None], [{"k": 1}]])
    with pytest.raises(UserCodeError, match="records that are all None"):
        write(tmp_path / "b", [[{"k": 1}], [None]])
