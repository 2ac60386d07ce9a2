"""The columnar state of ``sum/min/max(column, emit="final")`` (``operators/field_columns.py``)
must hold what the dict fold holds: for any sequence of Arrow batches (int or float values,
huge ints, ``-0.0``, null keys), Python record batches among them, and a snapshot/restore
anywhere, the keyed half emits what a plain Python loop gives, value types included, and a
snapshot taken in columnar mode is the dict fold's snapshot (no Ray)."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch
from raystream.operators.field_columns import ColumnarFieldFold
from raystream.operators.keyed_final import FieldAggregateOperator
from raystream.operators.testing import OperatorHarness

KEY = KeySelector("key")
FOLD = {"sum": lambda a, b: a + b, "min": min, "max": max}


class _DictOnly(FieldAggregateOperator):
    """The operator as it was before the columnar state: the dict fold only."""

    def open(self, ctx: Any, output: Any) -> None:
        super().open(ctx, output)
        self._columns = None


def reference(records: list[dict[str, Any]], how: str) -> list[dict[str, Any]]:
    """Per key (first appearance order), its first record with ``value`` folded in order."""
    out: dict[Any, dict[str, Any]] = {}
    for r in records:
        k = r["key"]
        out[k] = {**out[k], "value": FOLD[how](out[k]["value"], r["value"])} if k in out else dict(r)
    return list(out.values())


def exact(rows: list[dict[str, Any]]) -> list[tuple]:
    """Rows comparable exactly: value types and the sign of zero included."""
    return [tuple((k, type(v).__name__, repr(v)) for k, v in sorted(r.items())) for r in rows]


def arrow(rows: list[dict[str, Any]], value_type: pa.DataType) -> Batch:
    return Batch.of_arrow(pa.RecordBatch.from_pydict(
        {"key": pa.array([r["key"] for r in rows], pa.string()),
         "value": pa.array([r["value"] for r in rows], value_type),
         "i": pa.array([r["i"] for r in rows], pa.int64())}))


ints = st.one_of(st.integers(-1000, 1000), st.sampled_from([2**61, -(2**61), 2**62 - 1]))
floats = st.one_of(st.integers(-1000, 1000).map(lambda i: i / 4), st.just(-0.0), st.just(0.0))
batches = st.lists(
    st.tuples(
        st.sampled_from(["int", "float", "records"]),
        st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), ints, floats), min_size=0, max_size=30),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(data=batches, how=st.sampled_from(["sum", "min", "max"]), restore_after=st.integers(0, 6))
def test_equals_a_python_loop_across_kinds_and_a_restore(data, how, restore_after):
    inputs, records, n = [], [], 0
    for kind, rows in data:
        recs = [{"key": k, "value": f if kind == "float" else i, "i": (n := n + 1)} for k, i, f in rows]
        records += recs
        if kind == "records":
            inputs.append(Batch.of_records(recs))
        else:
            inputs.append(arrow(recs, pa.float64() if kind == "float" else pa.int64()))
    h = OperatorHarness(FieldAggregateOperator(KEY, "value", how))
    for j, b in enumerate(inputs):
        if j == restore_after:
            h = OperatorHarness(FieldAggregateOperator(KEY, "value", how), restore=[h.snapshot()])
        h.process(b)
    h.end_input()
    assert exact(sorted(h.records(), key=lambda r: r["i"])) == exact(sorted(reference(records, how), key=lambda r: r["i"]))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(-50, 50)), min_size=1, max_size=40),
       split=st.integers(1, 40), how=st.sampled_from(["sum", "min", "max"]))
def test_a_columnar_snapshot_is_the_dict_folds_snapshot(rows, split, how):
    recs = [{"key": k, "value": v, "i": i} for i, (k, v) in enumerate(rows)]
    snaps = []
    for cls in (FieldAggregateOperator, _DictOnly):
        h = OperatorHarness(cls(KEY, "value", how))
        h.process(arrow(recs[:split], pa.int64()))
        h.process(arrow(recs[split:], pa.int64()))
        snaps.append(h.snapshot())
    assert snaps[0] == snaps[1]


def test_float_sums_keep_negative_zero_and_python_order():
    fold = ColumnarFieldFold("value", "sum")
    rb = pa.RecordBatch.from_pydict({"key": ["z", "x", "x", "x"], "value": [-0.0, 0.1, 0.2, 0.3]})
    assert fold.fold(rb, 0, 1)
    got = {r["key"]: r["value"] for r in fold.results()}
    assert math.copysign(1.0, got["z"]) == -1.0
    assert got["x"] == (0.1 + 0.2) + 0.3  # added row by row, as the loop does


def test_it_declines_what_numpy_would_compute_differently():
    fold = ColumnarFieldFold("value", "sum")
    assert not fold.fold(pa.RecordBatch.from_pydict({"key": ["a"], "value": pa.array([None], pa.int64())}), 0, 1)
    assert not fold.fold(pa.RecordBatch.from_pydict({"key": ["a"], "value": [True]}), 0, 1)  # bools
    assert not fold.fold(pa.RecordBatch.from_pydict({"key": ["a"], "value": pa.array([1], pa.uint64())}), 0, 1)
    assert fold.fold(pa.RecordBatch.from_pydict({"key": ["a"], "value": [2**61]}), 0, 1)
    assert not fold.fold(pa.RecordBatch.from_pydict({"key": ["a"], "value": [2**61]}), 0, 1)  # could overflow
    assert not fold.fold(pa.RecordBatch.from_pydict({"key": ["a"], "value": [1.5]}), 0, 1)  # float after int
    assert not ColumnarFieldFold("value", "min").fold(pa.RecordBatch.from_pydict({"key": ["a"], "value": [1.5]}), 0, 1)
    assert [r["value"] for r in fold.results()] == [2**61]  # nothing declined was folded


def test_an_int_sum_beyond_int64_moves_to_python_ints():
    h = OperatorHarness(FieldAggregateOperator(KEY, "value", "sum"))
    big = 2**62 - 1
    for i in range(4):
        h.process(arrow([{"key": "a", "value": big, "i": i}], pa.int64()))
    h.end_input()
    assert h.records() == [{"key": "a", "value": 4 * big, "i": 0}]
