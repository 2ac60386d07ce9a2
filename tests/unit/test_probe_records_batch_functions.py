"""What a ``map_batches`` function returns becomes records of all its columns: a batch that
kept the metadata of its input (scalar, tuple or pickled records) but has other columns
now (``append_column``, a table built from it) gives dict rows of every column instead of
the input's kind of record, which kept only the first column and dropped the others."""

from __future__ import annotations

import datetime as dt
import enum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.engine.records import Batch, arrow_to_records, batch_kind, records_to_arrow
from raystream.operators.sinks import collected_records


def _run(env: rs.StreamEnvironment) -> list:
    result = run_in_process(env.get_job_graph(), JobConfig(name="batch-functions"), timeout_s=120)
    [batches] = result["results"].values()
    return collected_records(batches)


def test_a_column_appended_to_scalar_records_is_kept() -> None:
    env = rs.StreamEnvironment(parallelism=1)
    (env.from_collection([1, 2, 3])
     .map_batches(lambda b: b.append_column("sq", pc.multiply(b["value"], b["value"])))
     .key_by("sq").reduce(lambda a, b: a)
     .collect())
    assert _run(env) == [{"value": 1, "sq": 1}, {"value": 2, "sq": 4}, {"value": 3, "sq": 9}]


def test_a_table_built_from_a_scalar_batch_keeps_its_columns() -> None:
    env = rs.StreamEnvironment(parallelism=1)
    (env.from_collection([1, 2])
     .map_batches(lambda b: pa.Table.from_batches([b]).append_column("y", pa.array([5, 6])))
     .collect())
    assert _run(env) == [{"value": 1, "y": 5}, {"value": 2, "y": 6}]


@pytest.mark.parametrize(("records", "change", "expected"), [
    ([1, 2], lambda b: b.append_column("x", pa.array(["a", "b"])), [{"value": 1, "x": "a"}, {"value": 2, "x": "b"}]),
    ([(1, "a")], lambda b: b.append_column("z", pa.array([True])), [{"f0": 1, "f1": "a", "z": True}]),
    ([(1, "a")], lambda b: b.select(["f1"]), [{"f1": "a"}]),
    ([{"a": [1]}], lambda b: b.append_column("n", pa.array([7])), None),
])
def test_a_changed_batch_is_rows_of_its_columns(records: list, change, expected: list | None) -> None:
    rb = change(records_to_arrow(records))
    assert batch_kind(rb.schema) == b"row"
    back = arrow_to_records(rb)
    assert [list(r) for r in back] == [rb.schema.names] * rb.num_rows
    if expected is not None:
        assert back == expected
    assert not Batch.of_arrow(rb).is_columnar or batch_kind(rb.schema) == b"row"


@pytest.mark.parametrize("records", [[1, None, 3], [(1, "a"), (2, "b")], [{"a": [1]}, {"a": 2}], ["x"]])
def test_unchanged_or_filtered_batches_keep_their_kind(records: list) -> None:
    rb = records_to_arrow(records)
    assert arrow_to_records(rb.slice(0, len(records))) == records
    assert arrow_to_records(rb.filter(pa.array([True] * len(records)))) == records


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


def test_a_replaced_zone_or_enum_column_is_read_as_what_it_holds_now() -> None:
    """Before: an int column replacing an aware datetime column of that name failed
    (AttributeError: no unit), a str column replacing an IntEnum column was looked up as members."""
    utc = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    rb = records_to_arrow([{"at": utc, "level": Level.HIGH}])
    assert arrow_to_records(rb) == [{"at": utc, "level": Level.HIGH}]
    assert type(arrow_to_records(rb)[0]["level"]) is Level
    changed = rb.set_column(0, "at", pa.array([5])).set_column(1, "level", pa.array([2.5]))
    assert arrow_to_records(changed) == [{"at": 5, "level": 2.5}]


def test_map_batches_gets_list_and_struct_columns_of_nested_dict_records() -> None:
    """Before: the function got one pickled 'record' column (KeyError: 'tags')."""
    records = [{"id": 1, "tags": ["a", "b"], "pos": {"x": 1.5}, "emb": np.array([0.5, 1.0], np.float32)},
               {"id": 2, "tags": [], "pos": {"x": -2.0}, "emb": np.array([2.0, 0.0], np.float32)}]
    env = rs.StreamEnvironment(parallelism=1)
    (env.from_collection(records)
     .map_batches(lambda b: {"id": b["id"], "n": pc.list_value_length(b["tags"]), "x": pc.struct_field(b["pos"], "x"),
                             "e0": pc.list_element(b["emb"], 0)})
     .collect())
    assert _run(env) == [{"id": 1, "n": 2, "x": 1.5, "e0": 0.5}, {"id": 2, "n": 0, "x": -2.0, "e0": 2.0}]


def test_nested_records_that_arrow_cannot_hold_equal_stay_pickled() -> None:
    for records in ([{"s": {1, 2}}], [{"m": np.zeros((2, 2))}], [{"a": [1, "x"]}]):
        rb = Batch.of_records(records).columns(nested=True)
        assert rb.schema.names == ["record"]
        assert repr(arrow_to_records(rb)) == repr(records)
