"""``aggregate()`` against plain Python, SQL semantics: nulls skipped, the sum/min/max of a
key without a value null, ints exact (min/max of ints were float64: 3 became 3.0 and
2**53 + 1 became 2**53), a sum beyond int64 an error instead of a wrapped value, and a batch
whose column holds only nulls (Arrow's null type) skipped like any null instead of failing the
job. The result must not depend on how the input is cut into batches."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.engine.errors import JobFailed
from raystream.engine.keygroups import key_groups_of_keys
from raystream.engine.records import Batch
from raystream.operators.keyed import AggregateOperator, LocalAggregateOperator
from raystream.operators.testing import OperatorHarness
from raystream.operators.window_fast import VectorWindowAggregateOperator
from raystream.operators.windowed_stream import _SpecsWindowFunction
from raystream.operators.windows import TumblingEventTimeWindows

SPECS = {"s": ("v", "sum"), "n": ("v", "count"), "lo": ("v", "min"), "hi": ("v", "max"), "m": ("v", "mean")}
BIG = 2**53


def reference(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(r["k"], []).append(r["v"])
    ref = {}
    for k, vs in out.items():
        vals = [v for v in vs if v is not None]
        ref[k] = {"s": sum(vals) if vals else None, "n": len(vals), "lo": min(vals) if vals else None,
                  "hi": max(vals) if vals else None, "m": sum(vals) / len(vals) if vals else None}
    return ref


def cut(rows: list[dict], cuts: list[int]) -> list[list[dict]]:
    bounds = sorted({0, len(rows), *(c % (len(rows) + 1) for c in cuts)})
    return [rows[a:b] for a, b in zip(bounds, bounds[1:])]


def final_rows(h: OperatorHarness) -> dict:
    return {r["k"]: {c: r[c] for c in SPECS} for r in h.records()}


def one_phase(batches: list[list[dict]], emit: str = "final") -> dict:
    h = OperatorHarness(AggregateOperator("k", SPECS, emit))
    for b in batches:
        h.process(Batch.of_records([dict(r) for r in b]))
    h.end_input()
    if emit == "final":
        return final_rows(h)
    last: dict = {}
    for r in h.records():  # the latest update of each key
        last[r["k"]] = {c: r[c] for c in SPECS}
    return last


def two_phase(batches: list[list[dict]], restore_after: int | None = None) -> dict:
    local = OperatorHarness(LocalAggregateOperator("k", SPECS, max_held_rows=3))
    for b in batches:
        local.process(Batch.of_records([dict(r) for r in b]))
    local.end_input()
    glob = OperatorHarness(AggregateOperator("k", SPECS, "final", partials=True))
    for i, b in enumerate(local.output.batches):
        if i == restore_after:
            glob = OperatorHarness(AggregateOperator("k", SPECS, "final", partials=True), restore=[glob.snapshot()])
        glob.process(Batch.of_arrow(b.arrow()))
    glob.end_input()
    return final_rows(glob)


def same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        for c in SPECS:
            g, w = got[k][c], want[k][c]
            if c == "m" and w is not None:
                assert g == pytest.approx(w, rel=1e-12), (k, c)
            else:
                assert g == w and type(g) is type(w), (k, c, g, w)


values = st.one_of(st.none(), st.integers(-(2**60), 2**60), st.integers(-5, 5))


@settings(max_examples=60, deadline=None)
@given(data=st.lists(st.tuples(st.sampled_from("abcde"), values), min_size=1, max_size=60),
       cuts=st.lists(st.integers(0, 80), max_size=8), restore_after=st.integers(0, 4))
def test_aggregate_equals_python_for_any_batches(data, cuts, restore_after):
    rows = [{"k": k, "v": v} for k, v in data]
    want = reference(rows)
    batches = cut(rows, cuts)
    same(one_phase(batches), want)
    same(one_phase(batches, "updates"), want)
    same(two_phase(batches, restore_after), want)


def test_min_max_of_ints_stay_exact_ints():
    rows = [{"k": "a", "v": BIG + 1}, {"k": "a", "v": BIG + 3}, {"k": "b", "v": 3}]
    for batches in ([rows], [[r] for r in rows]):
        for got in (one_phase(batches), one_phase(batches, "updates"), two_phase(batches)):
            assert (got["a"]["lo"], got["a"]["hi"], got["b"]["lo"]) == (BIG + 1, BIG + 3, 3)
            assert type(got["b"]["lo"]) is int


def test_min_max_keep_the_columns_type():
    utc = dt.timezone.utc
    t = [dt.datetime(2024, 1, 1, tzinfo=utc), dt.datetime(2023, 1, 1, tzinfo=utc)]
    rb = pa.RecordBatch.from_pydict({"k": ["a", "a", "b"], "s": ["x", "b", None],
                                     "t": pa.array([t[0], t[1], None], pa.timestamp("us", tz="UTC"))})
    h = OperatorHarness(AggregateOperator("k", {"lo": ("s", "min"), "hi": ("s", "max"), "first": ("t", "min")}, "final"))
    h.process(rb)
    h.end_input()
    assert h.records() == [{"k": "a", "lo": "b", "hi": "x", "first": t[1]}, {"k": "b", "lo": None, "hi": None, "first": None}]


def test_ints_then_floats_widen_min_and_sum():
    batches = [[{"k": "a", "v": 3}], [{"k": "a", "v": 0.5}]]
    got = one_phase(batches)
    assert (got["a"]["s"], got["a"]["lo"], got["a"]["hi"]) == (3.5, 0.5, 3.0)


@pytest.mark.parametrize("split", [False, True])
def test_a_sum_beyond_int64_fails_naming_the_key(split):
    rows = [{"k": "a", "v": 2**62}, {"k": "a", "v": 2**62}, {"k": "b", "v": 1}]
    batches = [[r] for r in rows] if split else [rows]
    for run in (one_phase, lambda b: one_phase(b, "updates"), two_phase):
        with pytest.raises((OverflowError, JobFailed), match=r"sum .*'a'.* 9223372036854775808, beyond a 64-bit integer"):
            run(batches)


def test_a_batch_of_nulls_only_is_skipped():
    """Such a batch (a rate-limited source with sparse nulls makes them) failed the job with
    'computes over Arrow columns, and these records have none', so whether a job failed
    depended on where its batches were cut."""
    rows = [{"k": "a", "v": None}, {"k": "b", "v": None}, {"k": "a", "v": 4}, {"k": "c", "v": None}]
    for batches in ([rows[:2], rows[2:3], rows[3:]], [[r] for r in rows], [rows]):
        for got in (one_phase(batches), one_phase(batches, "updates"), two_phase(batches)):
            same(got, reference(rows))
            assert got["b"] == {"s": None, "n": 0, "lo": None, "hi": None, "m": None}


def test_a_snapshot_without_masks_restores():
    """Snapshots before this change: min/max as float64 filled with +-inf, sums without a mask."""
    acc = {"s": [5, 0], "n": [2, 0], "lo": [1.0, np.inf], "hi": [4.0, -np.inf], "m#sum": [5, 0], "m#count": [2, 0]}
    groups = key_groups_of_keys(["a", "b"], OperatorHarness(AggregateOperator("k", SPECS)).ctx.max_parallelism)
    old = {"by_key_group": {int(g): {"keys": [k], "acc": {n: np.array([v[i]]) for n, v in acc.items()}}
                            for i, (k, g) in enumerate(zip("ab", groups))}}
    h = OperatorHarness(AggregateOperator("k", SPECS, "final"), restore=[{"operator": old}])
    h.process(Batch.of_records([{"k": "b", "v": 7}]))
    h.end_input()
    assert final_rows(h) == {"a": {"s": 5, "n": 2, "lo": 1.0, "hi": 4.0, "m": 2.5},
                             "b": {"s": 7, "n": 1, "lo": 7.0, "hi": 7.0, "m": 7.0}}


def test_window_sum_of_nulls_only_is_null_on_both_paths():
    specs = {"s": ("v", "sum"), "n": ("v", "count")}
    rows = [{"k": "a", "v": None, "ts": 1}, {"k": "a", "v": None, "ts": 2}, {"k": "b", "v": 5, "ts": 3}]
    fast = OperatorHarness(VectorWindowAggregateOperator("k", "ts", TumblingEventTimeWindows.of(1000), specs))
    for r in rows:  # a batch of nulls only, then values
        fast.process(Batch.of_records([r]))
    fast.end_input()
    got = sorted((r["k"], r["s"], r["n"]) for r in fast.records())

    class Ctx:
        class window:
            start, end = 0, 1000

    fn = _SpecsWindowFunction("k", specs)
    want = sorted((o["k"], o["s"], o["n"]) for k in "ab" for o in fn.process(k, Ctx, [r for r in rows if r["k"] == k]))
    assert got == want == [("a", None, 0), ("b", 5, 1)]


def test_min_max_over_batches_of_other_int_widths_stay_int64():
    """Parquet files of one dataset may hold a column as int32 in one and int64 in another."""
    h = OperatorHarness(AggregateOperator("k", {"lo": ("v", "min"), "hi": ("v", "max")}, "final"))
    h.process(pa.RecordBatch.from_pydict({"k": ["a"], "v": pa.array([7], pa.int32())}))
    h.process(pa.RecordBatch.from_pydict({"k": ["a"], "v": pa.array([2**40], pa.int64())}))
    h.process(pa.RecordBatch.from_pydict({"k": ["a"], "v": pa.array([3], pa.uint8())}))
    h.end_input()
    assert h.records() == [{"k": "a", "lo": 3, "hi": 2**40}]
    assert h.table().schema.field("hi").type == pa.int64()


def test_dictionary_encoded_keys_of_other_dictionaries_merge():
    """Parquet files (or row groups) hold a dictionary-encoded key column with their own
    dictionaries: merging their partials failed with 'Unifying differing dictionaries',
    reported as 'cannot compute sum of column n'."""
    specs = {"n": ("v", "count"), "s": ("v", "sum")}
    batches = [pa.RecordBatch.from_pydict({"k": pa.array(ks).dictionary_encode(), "v": list(range(len(ks)))})
               for ks in (["a", "b", "a"], ["zz", "a"], ["b"])]
    local = OperatorHarness(LocalAggregateOperator("k", specs, max_held_rows=100))
    for b in batches:
        local.process(b)
    local.end_input()
    glob = OperatorHarness(AggregateOperator("k", specs, "final", partials=True))
    for out in local.output.batches:
        glob.process(Batch.of_arrow(out.arrow()))
    glob.end_input()
    assert sorted((r["k"], r["n"], r["s"]) for r in glob.records()) == [("a", 3, 3), ("b", 2, 1), ("zz", 1, 0)]

