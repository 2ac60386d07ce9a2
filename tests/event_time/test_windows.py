"""Window operators in-process (OperatorHarness): results vs a pyarrow group-by reference,
in-order and shuffled input, parallelism 1 and N, late data, sessions, snapshot/restore.

The record-API WindowOperator runs on both keyed state backends (``state_backend``, or
``backend`` in the parametrised cases): on RocksDB its contents, trigger state and timers
live in the keyed backend (with a read cache of 64 entries here, so most of them are in
RocksDB itself). The vectorized operator keeps its state in memory on either backend and
runs on the heap backend only."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from raystream.checkpoint import AggregateFunction
from raystream.checkpoint.backends import HeapStateBackend
from raystream.engine.errors import ConfigError
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.partitioners import KeySelector
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_fast import VectorWindowAggregateOperator
from raystream.operators.window_operator import AGGREGATE, LIST, REDUCE, WindowOperator
from raystream.operators.windowed_stream import _SpecsWindowFunction
from raystream.operators.windows import (
    CountTrigger,
    EventTimeSessionWindows,
    EventTimeTrigger,
    GlobalWindows,
    ProcessWindowFunction,
    PurgingTrigger,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)

TS = TimestampAssigner(column="ts")
MAXP = 128
#: (vectorized operator, keyed state backend) cases: the vectorized one keeps memory state
FAST_BACKENDS = [(True, "heap"), (False, "heap"), (False, "rocksdb")]


def backend_of(kind: str, tmp_path: Any = None) -> Any:
    """A state backend by name; RocksDB with a 64-entry read cache (state spills to RocksDB)."""
    if kind == "heap":
        return HeapStateBackend()
    pytest.importorskip("rocksdict")
    from raystream.checkpoint.backends import RocksDBStateBackend

    return RocksDBStateBackend(None if tmp_path is None else str(tmp_path / "rocksdb"), cache_size=64)


def events(n: int, keys: int = 20, seed: int = 1, disorder: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = [{"key": f"k{rng.randrange(keys)}", "value": rng.randrange(1000), "ts": 1000 + i * 3} for i in range(n)]
    if disorder:
        rows = [dict(r, ts=r["ts"] + rng.randrange(-disorder, disorder + 1)) for r in rows]
        blocks = [rows[i : i + 256] for i in range(0, len(rows), 256)]
        for b in blocks:
            rng.shuffle(b)  # shuffled within each 256-row batch: bounded out-of-orderness
        rows = [r for b in blocks for r in b]
    return rows


def reference(rows: list[dict], size: int, slide: int | None = None) -> list[tuple]:
    t = pa.Table.from_pylist(rows)
    ts = t.column("ts").to_numpy()
    slide = slide or size
    parts = []
    k = -(-size // slide)
    last = ts - ts % slide
    for j in range(k):
        starts = last - j * slide
        ok = starts > ts - size
        parts.append(pa.table({"key": t.column("key").filter(pa.array(ok)), "window_start": starts[ok],
                               "value": t.column("value").filter(pa.array(ok))}))
    g = pa.concat_tables(parts).group_by(["key", "window_start"]).aggregate(
        [("value", "count"), ("value", "sum"), ("value", "min"), ("value", "max")])
    return sorted(zip(*(g.column(c).to_pylist() for c in ["key", "window_start", "value_count", "value_sum", "value_min", "value_max"])))


SPECS = {"n": ("value", "count"), "total": ("value", "sum"), "lo": ("value", "min"), "hi": ("value", "max"), "avg": ("value", "mean")}


def run_chunks(make, rows, parallelism, chunk, bound, state_backend=None):
    """Feed ``rows`` in chunks to every subtask that owns their keys, with a watermark of
    max_ts - bound - 1 after each chunk; return all output rows."""
    harnesses = [OperatorHarness(make(), i, parallelism, MAXP, state_backend=state_backend) for i in range(parallelism)]
    owners = [KeyGroupRange.for_subtask(i, parallelism, MAXP) for i in range(parallelism)]
    max_ts = -(2**63)
    for s in range(0, len(rows), chunk):
        part = rows[s : s + chunk]
        for h, kgr in zip(harnesses, owners):
            mine = [r for r in part if key_group_for(r["key"], MAXP) in kgr]
            if mine:
                h.process(pa.RecordBatch.from_pylist(mine))
        max_ts = max(max_ts, max(r["ts"] for r in part))
        for h in harnesses:
            h.advance_watermark(max_ts - bound - 1)
    out = []
    for h in harnesses:
        h.end_input()
        out.extend(h.records())
    return out


def as_tuples(out):
    return sorted((r["key"], r["window_start"], r["n"], r["total"], r["lo"], r["hi"]) for r in out)


@pytest.mark.parametrize("parallelism", [1, 3])
@pytest.mark.parametrize("disorder", [0, 40])
@pytest.mark.parametrize("fast,backend", FAST_BACKENDS)
@pytest.mark.parametrize("slide", [None, 50])
def test_window_aggregate_equals_groupby_reference(parallelism, disorder, fast, backend, slide, tmp_path):
    rows = events(3000, disorder=disorder)
    assigner = TumblingEventTimeWindows.of(100) if slide is None else SlidingEventTimeWindows.of(100, slide)
    if fast:
        make = lambda: VectorWindowAggregateOperator("key", "ts", assigner, SPECS)  # noqa: E731
    else:
        make = lambda: WindowOperator(KeySelector("key").key_of, assigner, LIST, None,  # noqa: E731
                                      _SpecsWindowFunction("key", SPECS), timestamp_assigner=TS)
    out = run_chunks(make, rows, parallelism, 256, bound=2 * disorder, state_backend=backend_of(backend, tmp_path))
    assert as_tuples(out) == reference(rows, 100, slide)
    for r in out:
        assert r["window_end"] == r["window_start"] + 100
        assert r["avg"] == pytest.approx(r["total"] / r["n"])


@pytest.mark.parametrize("fast,backend", FAST_BACKENDS)
def test_late_records_go_to_side_output(fast, backend, tmp_path):
    assigner = TumblingEventTimeWindows.of(100)
    if fast:
        op = VectorWindowAggregateOperator("key", "ts", assigner, {"n": ("value", "count")}, late_tag="late")
    else:
        op = WindowOperator(KeySelector("key").key_of, assigner, LIST, None, _SpecsWindowFunction("key", {"n": ("value", "count")}),
                            late_tag="late", timestamp_assigner=TS)
    h = OperatorHarness(op, state_backend=backend_of(backend, tmp_path))
    h.process(pa.RecordBatch.from_pylist([{"key": "a", "value": 1, "ts": 10}, {"key": "a", "value": 1, "ts": 150}]))
    h.advance_watermark(199)
    late = [{"key": "a", "value": 7, "ts": 50}, {"key": "b", "value": 8, "ts": 199}]
    h.process(pa.RecordBatch.from_pylist(late + [{"key": "a", "value": 9, "ts": 250}]))
    h.end_input()
    assert sorted((r["key"], r["window_start"], r["n"]) for r in h.records()) == [("a", 0, 1), ("a", 100, 1), ("a", 200, 1)]
    assert h.side_records("late") == late


def test_late_records_without_side_output_are_counted(state_backend):
    op = WindowOperator(KeySelector("key").key_of, TumblingEventTimeWindows.of(100), REDUCE, lambda a, b: a, timestamp_assigner=TS)
    h = OperatorHarness(op, state_backend=state_backend)
    h.advance_watermark(500)
    h.process([{"key": "a", "ts": 10}])
    assert h.ctx.metrics["num_late_records_dropped"] == 1


def test_allowed_lateness_refires_and_then_side_outputs(state_backend):
    op = WindowOperator(KeySelector(0).key_of, TumblingEventTimeWindows.of(100), REDUCE, lambda a, b: (a[0], a[1] + b[1], 0),
                        allowed_lateness=50, late_tag="late", timestamp_assigner=TimestampAssigner(column=2))
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("a", 1, 10), ("a", 2, 20)])
    h.advance_watermark(99)
    assert h.take() == [("a", 3, 0)]
    h.process([("a", 5, 30)])  # late but within lateness: fires again with the update
    assert h.take() == [("a", 8, 0)]
    h.advance_watermark(149)  # cleanup time 99 + 50 reached
    h.process([("a", 100, 40)])
    assert h.take() == [] and h.side_records("late") == [("a", 100, 40)]
    assert op.num_open_windows() == 0


class Avg(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + value["value"], acc[1] + 1)

    def get_result(self, acc):
        return acc[0] / acc[1]

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


class WithWindow(ProcessWindowFunction):
    def process(self, key, context, elements):
        yield (key, context.window.start, context.window.end, list(elements))


def test_aggregate_function_with_process_window_function(state_backend):
    op = WindowOperator(KeySelector("key").key_of, TumblingEventTimeWindows.of(100), AGGREGATE, Avg(), WithWindow(), timestamp_assigner=TS)
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([{"key": "a", "value": 2, "ts": 1}, {"key": "a", "value": 4, "ts": 99}, {"key": "a", "value": 10, "ts": 100}])
    h.advance_watermark(99)
    assert h.take() == [("a", 0, 100, [3.0])]
    h.end_input()
    assert h.take() == [("a", 100, 200, [10.0])]


def session_reference(stamps: list[int], gap: int) -> list[tuple[int, int, int]]:
    s = sorted(stamps)
    out = []
    start = prev = s[0]
    n = 1
    for t in s[1:]:
        if t - prev > gap:
            out.append((start, prev + gap, n))
            start, n = t, 0
        prev = t
        n += 1
    out.append((start, prev + gap, n))
    return out


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2000), min_size=1, max_size=60), st.integers(1, 200), st.randoms(use_true_random=False))
def test_session_windows_merge_like_reference(backend, stamps, gap, rnd):
    order = list(stamps)
    rnd.shuffle(order)
    op = WindowOperator(KeySelector(0).key_of, EventTimeSessionWindows.with_gap(gap), LIST, None, WithWindow(),
                        timestamp_assigner=TimestampAssigner(column=1))
    h = OperatorHarness(op, state_backend=backend_of(backend))
    for i in range(0, len(order), 7):
        h.process([("k", t) for t in order[i : i + 7]])
    h.end_input()
    got = sorted((start, end, len(els)) for _k, start, end, els in h.records())
    assert got == session_reference(stamps, gap)


def test_session_windows_fire_in_event_time_and_count_trigger_merges(state_backend):
    op = WindowOperator(KeySelector(0).key_of, EventTimeSessionWindows.with_gap(10), REDUCE, lambda a, b: (a[0], a[1] + b[1]),
                        timestamp_assigner=TimestampAssigner(column=1))
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("a", 0), ("a", 5), ("a", 30)])
    h.advance_watermark(14)
    assert h.take() == [("a", 5)]
    h.process([("a", 38)])
    h.end_input()
    assert h.take() == [("a", 68)]


def test_count_windows_and_processing_time_windows(state_backend):
    op = WindowOperator(KeySelector(0).key_of, GlobalWindows.create(), REDUCE, lambda a, b: (a[0], a[1] + b[1]),
                        trigger=PurgingTrigger.of(CountTrigger.of(3)))
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("a", 1), ("b", 1), ("a", 2), ("a", 3), ("a", 4)])
    assert h.take() == [("a", 6)]
    h.process([("a", 5), ("a", 6)])
    assert h.take() == [("a", 15)]

    op = WindowOperator(KeySelector(0).key_of, TumblingProcessingTimeWindows.of(1000), REDUCE, lambda a, b: (a[0], a[1] + b[1]))
    h = OperatorHarness(op, state_backend=state_backend)
    h.advance_processing_time(100)
    h.process([("a", 1), ("a", 2)])
    h.advance_processing_time(998)
    assert h.take() == []
    h.advance_processing_time(999)
    assert h.take() == [("a", 3)]
    h.advance_processing_time(1500)
    h.process([("a", 7)])
    h.advance_processing_time(2100)
    assert h.take() == [("a", 7)]


@pytest.mark.parametrize("fast,backend", FAST_BACKENDS)
@pytest.mark.parametrize("assigner", [SlidingEventTimeWindows.of(100, 50), TumblingEventTimeWindows.of(100)])
def test_snapshot_restore_continues_identically(fast, backend, assigner, tmp_path):
    rows = events(2000, disorder=20, seed=5)

    def make():
        if fast:
            return VectorWindowAggregateOperator("key", "ts", assigner, SPECS)
        return WindowOperator(KeySelector("key").key_of, assigner, LIST, None, _SpecsWindowFunction("key", SPECS), timestamp_assigner=TS)

    def feed(h, part, max_ts):
        h.process(pa.RecordBatch.from_pylist(part))
        h.advance_watermark(max_ts - 41)

    state_backend = backend_of(backend, tmp_path)
    full = OperatorHarness(make(), state_backend=state_backend)
    max_ts = 0
    half = len(rows) // 2
    snap = None
    for i in range(0, len(rows), 200):
        part = rows[i : i + 200]
        max_ts = max(max_ts, max(r["ts"] for r in part))
        feed(full, part, max_ts)
        if i + 200 == half:
            snap = full.snapshot()
            before = len(full.records())
    full.end_input()
    # restore the snapshot at parallelism 2 and replay the second half
    restored = [OperatorHarness(make(), i, 2, MAXP, restore=[snap], state_backend=state_backend) for i in range(2)]
    max_ts = max(r["ts"] for r in rows[:half])
    for i in range(half, len(rows), 200):
        part = rows[i : i + 200]
        max_ts = max(max_ts, max(r["ts"] for r in part))
        for j, h in enumerate(restored):
            kgr = KeyGroupRange.for_subtask(j, 2, MAXP)
            feed(h, [r for r in part if key_group_for(r["key"], MAXP) in kgr], max_ts)
    for h in restored:
        h.end_input()
    after = full.records()[before:]
    got = [r for h in restored for r in h.records()]
    assert as_tuples(got) == as_tuples(after)


class _GenericTrigger(EventTimeTrigger):
    """EventTimeTrigger by behaviour, but not by type: forces the per-record timer path."""


@settings(max_examples=40, deadline=None)
@given(
    stamps=st.lists(st.integers(0, 600), min_size=1, max_size=120),
    chunk=st.integers(1, 40),
    lag=st.integers(0, 120),
    kind=st.sampled_from([REDUCE, AGGREGATE, LIST]),
)
# a batch behind a watermark that is exactly a window's max timestamp (49): one window,
# several windows in order, several windows out of order
@example(stamps=[10, 49, 30, 20], chunk=2, lag=0, kind=AGGREGATE)
@example(stamps=[10, 49, 30, 60], chunk=2, lag=0, kind=REDUCE)
@example(stamps=[10, 49, 60, 30], chunk=2, lag=0, kind=LIST)
def test_tumbling_panes_equal_the_per_record_timer_path(stamps, chunk, lag, kind):
    """Pane mode (one pane per window, fired as a whole) gives the same results, in the
    same order, and the same late records as the generic per-(key, window) timer path,
    for out-of-order input with records behind the watermark."""
    rows = [{"key": f"k{i % 7}", "ts": t} for i, t in enumerate(stamps)]
    fn: Any = {REDUCE: lambda a, b: {"key": a["key"], "ts": a["ts"], "n": a.get("n", 1) + 1},
               AGGREGATE: _Count(), LIST: None}[kind]
    wf = _KeyWindowCount() if kind == LIST else None

    def run(trigger, backend="heap"):
        op = WindowOperator(KeySelector("key").key_of, TumblingEventTimeWindows.of(50), kind, fn, wf,
                            trigger=trigger, late_tag="late", timestamp_assigner=TS)
        h = OperatorHarness(op, state_backend=backend_of(backend))
        assert op._panes_mode == (trigger is None and backend == "heap")
        max_ts = -1
        for i in range(0, len(rows), chunk):
            part = rows[i : i + chunk]
            h.process(part)
            max_ts = max(max_ts, *(r["ts"] for r in part))
            h.advance_watermark(max_ts - lag)
        backend = h.ctx.keyed_backend
        close, backend.close = backend.close, lambda: None  # (the ending task closes it: look first)
        h.end_input()
        assert op.num_open_windows() == 0
        close()
        return h.records(), h.side_records("late")

    panes = run(None)
    assert panes == run(_GenericTrigger())
    # RocksDB: the per-record path with contents and timers in the keyed backend; timers of
    # one time fire in key-group order there (in registration order on the heap)
    records, late = run(None, "rocksdb")
    assert sorted(map(repr, records)) == sorted(map(repr, panes[0])) and late == panes[1]


class _Count(AggregateFunction):
    def create_accumulator(self):
        return 0

    def add(self, value, acc):
        return acc + 1

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return a + b


class _KeyWindowCount(ProcessWindowFunction):
    def process(self, key, context, elements):
        yield (key, context.window.start, len(list(elements)))


@pytest.mark.parametrize("make,period", [
    (lambda off: TumblingEventTimeWindows.of(1000, off), 1000),
    (lambda off: SlidingEventTimeWindows.of(3000, 1000, off), 1000),
])
def test_window_offsets_as_flink_takes_them(make, period):
    """abs(offset) < size (tumbling) or slide (sliding); a negative offset shifts back, as
    Flink's ``TumblingEventTimeWindows.of(Time.days(1), Time.hours(-8))``."""
    neg, pos = make(-300), make(700)
    for t in (-2500, -1, 0, 699, 700, 1699, 12345):
        assert neg.assign_windows(None, t, 0) == pos.assign_windows(None, t, 0)
    assert min(w.start for w in neg.assign_windows(None, 1000, 0)) % period == 700
    for bad in (period, -period, 5 * period, 1.5, True, "1"):
        with pytest.raises(ConfigError, match=rf"abs\(offset\) < (size|slide) \({period}\)"):
            make(bad)
