"""Scalar records with None among them, and tuples whose first record has None in a field,
are typed columns (the None a null) as when the None falls elsewhere: whether a batch has a
``value`` (or ``f0``..) column for ``map_batches`` must not depend on where batches are cut."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.engine.records import (
    KIND_KEY,
    Batch,
    arrow_to_records,
    records_to_arrow,
    why_not_columns,
)
from raystream.operators.sinks import collected_records


def _typed(records: list) -> list:
    return [(type(r), r) if not isinstance(r, tuple) else [(type(v), v) for v in r] for r in records]


@pytest.mark.parametrize("records", [
    [1, None, 3],
    [None, 1],
    ["a", None, "b"],
    [None, b"x"],
    [None, 1.5, float("inf")],
    [True, None, False],
])
def test_scalars_with_none_are_a_value_column_and_come_back_exactly(records: list) -> None:
    rb = records_to_arrow(records)
    assert rb.schema.metadata[KIND_KEY] == b"scalar"
    assert rb.schema.names == ["value"]
    assert rb.column(0).null_count == records.count(None)
    assert _typed(arrow_to_records(rb)) == _typed(records)


def test_numpy_scalars_with_none_come_back_as_python_scalars() -> None:
    assert arrow_to_records(records_to_arrow([np.int32(4), None])) == [4, None]


@pytest.mark.parametrize("records", [
    [(None, 1), ("a", 2)],
    [(1, None, "x"), (2, 3, None)],
])
def test_tuples_with_none_first_are_typed_columns(records: list) -> None:
    rb = records_to_arrow(records)
    assert rb.schema.metadata[KIND_KEY] == b"tuple"
    assert _typed(arrow_to_records(rb)) == _typed(records)


@pytest.mark.parametrize("records", [
    [None, None],                      # no type: pickled
    [1, None, "x"],                    # two types
    [None, 2**70],                     # beyond int64
    [None, dt.datetime(2020, 1, 1)],   # not a scalar kind shipped as a value column
    [(None, [1]), (None, [2])],        # nested
])
def test_what_has_no_typed_column_still_travels_pickled_and_exact(records: list) -> None:
    rb = records_to_arrow(records)
    assert rb.schema.metadata[KIND_KEY] == b"pickle"
    assert arrow_to_records(rb) == records


@pytest.mark.parametrize("records", [[1, 2, None, 4, None], [None, None, "a", "b"], [("k", 1), (None, 2), ("j", None)]])
def test_every_cut_of_a_stream_has_the_same_columns(records: list) -> None:
    names = records_to_arrow(records).schema.names
    for i in range(len(records)):
        for part in (records[:i + 1], records[i:]):
            if any(v is not None for v in part):
                assert Batch.of_records(part).columns().schema.names == names, part


def test_why_not_columns_sees_past_nones() -> None:
    assert why_not_columns([None, 1, "x"]) == (2, "records of different types (int and str)")
    assert why_not_columns([None, None]) == (0, "records that are all None (a column of no type)")


def test_map_batches_on_a_value_column_whatever_batch_holds_the_none() -> None:
    """Before: a batch of [None, 4] reached the function as a pickled 'record' column, and
    ``batch["value"]`` failed the job with KeyError: 'value' (at batch_size=2, not at 4)."""
    env = rs.StreamEnvironment(parallelism=1)
    (env.from_collection([1, 2, None, 4, 5, None], batch_size=2)
     .map_batches(lambda b: b.filter(pc.is_valid(b["value"])))
     .map(lambda v: v * 10)
     .collect())
    result = run_in_process(env.get_job_graph(), JobConfig(name="null-scalars"), timeout_s=120)
    [batches] = result["results"].values()
    assert collected_records(batches) == [10, 20, 40, 50]


def test_map_batches_numpy_format_sees_tuple_fields_with_none_first() -> None:
    env = rs.StreamEnvironment(parallelism=1)
    (env.from_collection([(None, 1), ("a", 2), ("b", 3)], batch_size=1)
     .map_batches(lambda d: {"n": np.asarray(d["f1"]) * 2}, batch_format="numpy")
     .collect())
    result = run_in_process(env.get_job_graph(), JobConfig(name="null-tuples"), timeout_s=120)
    [batches] = result["results"].values()
    assert collected_records(batches) == [{"n": 2}, {"n": 4}, {"n": 6}]
    assert pa.Table.from_batches([b.replace_schema_metadata(None) for b in batches]).num_rows == 3
