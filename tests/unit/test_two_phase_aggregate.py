"""Two-phase (local-global) aggregate == the one-phase keyed aggregate.

``aggregate(..., emit="final")`` groups every upstream batch by key before the shuffle
(``LocalAggregateOperator``) and merges the partials in the keyed ``AggregateOperator``
(``partials=True``), where partial rows of one key from several upstream batches can arrive
in one batch. The final rows must equal the one-phase operator's for any split of the input
into batches and any grouping of the partials, including nulls, floats and a restore from a
snapshot taken in between. The local operator holds the partials of consecutive batches
(a mini-batch) within a cap on held rows and sends them merged, one row per key, at the end
of input and before every checkpoint barrier: it never has state in a snapshot.
"""

from __future__ import annotations

import math

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.engine.records import Batch
from raystream.operators.keyed import AggregateOperator, LocalAggregateOperator
from raystream.operators.testing import OperatorHarness

SPECS = {
    "total": ("value", "sum"),
    "n": ("value", "count"),
    "lo": ("value", "min"),
    "hi": ("value", "max"),
    "avg": ("value", "mean"),
    "ftotal": ("f", "sum"),
    "fhi": ("f", "max"),
}

rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"]),
        st.one_of(st.none(), st.integers(-1000, 1000)),
        st.floats(-1e3, 1e3, allow_nan=False),
    ),
    min_size=1,
    max_size=120,
)


def _batches(data: list, cuts: list[int]) -> list[pa.RecordBatch]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        part = data[lo:hi]
        out.append(pa.RecordBatch.from_pydict({
            "key": [r[0] for r in part],
            "value": pa.array([r[1] for r in part], pa.int64()),
            "f": pa.array([r[2] for r in part], pa.float64()),
        }))
    return out


def _final(h: OperatorHarness) -> dict:
    t = h.table()
    return {r["key"]: {k: v for k, v in r.items() if k != "key"} for r in t.to_pylist()}


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        for col in a[k]:
            x, y = a[k][col], b[k][col]
            if isinstance(x, float) or isinstance(y, float):
                if x is None or y is None or not (math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6) or (math.isnan(x) and math.isnan(y))):
                    return False
            elif x != y:
                return False
    return True


@settings(max_examples=80, deadline=None)
@given(data=rows, cuts=st.lists(st.integers(0, 200), max_size=6), group=st.integers(1, 4),
       restore_after=st.integers(0, 6), held=st.integers(1, 40), barriers=st.sets(st.integers(0, 6), max_size=3))
def test_two_phase_equals_one_phase(data, cuts, group, restore_after, held, barriers):
    batches = _batches(data, cuts)
    one = OperatorHarness(AggregateOperator("key", SPECS, "final"))
    for b in batches:
        one.process(b)
    one.end_input()

    local = OperatorHarness(LocalAggregateOperator("key", SPECS, max_held_rows=held))
    for i, b in enumerate(batches):
        local.process(b)
        assert local.operator.held_rows <= held + len(b)  # the cap, plus one batch's partials
        if i in barriers:  # a checkpoint: what was held went out before the barrier
            assert local.snapshot()["operator"] is None
            assert local.operator.held_rows == 0
    local.end_input()
    partial_batches = [b.arrow() for b in local.output.batches]
    assert sum(len(b) for b in partial_batches) <= len(data)
    # partials of several upstream sends reach the global operator in one batch
    merged = [pa.Table.from_batches(partial_batches[i:i + group]).combine_chunks().to_batches()[0]
              for i in range(0, len(partial_batches), group)]
    two = OperatorHarness(AggregateOperator("key", SPECS, "final", partials=True))
    for i, b in enumerate(merged):
        if i == restore_after:  # a checkpoint, then a fresh subtask restored from it
            state = two.snapshot()
            two = OperatorHarness(AggregateOperator("key", SPECS, "final", partials=True),
                                  restore=[state])
        two.process(Batch.of_arrow(b))
    two.end_input()
    assert _same(_final(one), _final(two)), (_final(one), _final(two))


def test_the_partials_of_consecutive_batches_go_out_merged_one_row_per_key():
    local = OperatorHarness(LocalAggregateOperator("key", {"total": ("value", "sum"), "avg": ("value", "mean")}))
    local.process(pa.RecordBatch.from_pydict({"key": ["a", "b", "a", "a"], "value": [1, 2, 3, 4]}))
    local.process(pa.RecordBatch.from_pydict({"key": ["c", "a"], "value": [5, 6]}))
    assert local.output.batches == []  # held
    assert local.snapshot()["operator"] is None  # sent before the barrier instead
    got = sorted(local.table().to_pylist(), key=lambda r: r["key"])
    assert got == [{"key": "a", "total": 14, "avg#sum": 14, "avg#count": 4},
                   {"key": "b", "total": 2, "avg#sum": 2, "avg#count": 1},
                   {"key": "c", "total": 5, "avg#sum": 5, "avg#count": 1}]
    local.process(pa.RecordBatch.from_pydict({"key": ["a"], "value": [7]}))
    local.end_input()
    assert local.table().to_pylist()[-1] == {"key": "a", "total": 7, "avg#sum": 7, "avg#count": 1}


def test_many_distinct_keys_stop_the_holding_within_the_cap():
    local = OperatorHarness(LocalAggregateOperator("key", {"total": ("value", "sum")}, max_held_rows=10))
    local.process(pa.RecordBatch.from_pydict({"key": ["a", "b", "a"], "value": [1, 2, 3]}))
    local.process(pa.RecordBatch.from_pydict({"key": ["a", "b"], "value": [1, 1]}))
    assert local.output.batches == []  # 4 rows held, under the cap
    local.process(pa.RecordBatch.from_pydict({"key": [f"k{i}" for i in range(9)], "value": [1] * 9}))
    # 13 rows held > 10: merged into 11 rows, more than half the cap: sent, holding stops
    assert [len(b) for b in local.output.batches] == [11]
    local.process(pa.RecordBatch.from_pydict({"key": ["a", "a"], "value": [5, 5]}))
    assert [len(b) for b in local.output.batches] == [11, 1]  # at once, one row per key
    local.end_input()
    totals: dict = {}
    for r in local.table().to_pylist():
        totals[r["key"]] = totals.get(r["key"], 0) + r["total"]
    assert totals == {"a": 15, "b": 3, **{f"k{i}": 1 for i in range(9)}}
