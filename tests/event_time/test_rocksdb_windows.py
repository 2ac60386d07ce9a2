"""Windows, joins and co-process timers with their state in RocksDB (issue 16), in-process.

* Evidence that window contents live in the keyed backend, not the operator: the operator
  holds no per-key dict, the backend's entry count follows the open (key, window) pairs
  while its read cache stays at its 64 entries, and the output equals the heap backend's.
* Snapshot, restore and rescale 2 -> 3 from RocksDB snapshots, and from a heap job's
  snapshot into RocksDB (switching backends through a savepoint), for tumbling windows
  (with and without allowed lateness: pane mode on the heap), sessions, count windows
  (trigger state), window joins, interval joins, keyed co-process timers and the field
  aggregate ``sum(emit="final")``: the output of the interrupted, rescaled run equals an
  uninterrupted run's.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import pytest

from raystream.checkpoint import AggregateFunction, ValueStateDescriptor
from raystream.checkpoint.backends import HeapStateBackend
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.partitioners import KeySelector
from raystream.operators.connected import KeyedCoProcessOperator
from raystream.operators.functions import KeyedCoProcessFunction
from raystream.operators.joins import CoGroupWindowOperator, IntervalJoinOperator, _CoGroup
from raystream.operators.keyed_final import FieldAggregateOperator
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_operator import AGGREGATE, LIST, REDUCE, WindowOperator
from raystream.operators.window_state import WINDOW_CONTENTS, BackendWindowState
from raystream.operators.windows import (
    CountTrigger,
    EventTimeSessionWindows,
    GlobalWindows,
    ProcessWindowFunction,
    PurgingTrigger,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)

pytest.importorskip("rocksdict")
from raystream.checkpoint.backends import RocksDBStateBackend  # noqa: E402

MAXP = 128
TS = TimestampAssigner(column=1)
KEY = KeySelector(0)


def rocksdb(tmp_path: Any, name: str = "rocksdb") -> RocksDBStateBackend:
    return RocksDBStateBackend(str(tmp_path / name), cache_size=64)


def backend(kind: str, tmp_path: Any) -> Any:
    return HeapStateBackend() if kind == "heap" else rocksdb(tmp_path, f"rocksdb-{kind}")


class Count(AggregateFunction):
    def create_accumulator(self):
        return 0

    def add(self, value, acc):
        return acc + 1

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return a + b


class Describe(ProcessWindowFunction):
    def process(self, key, context, elements):
        w = context.window
        yield (key, getattr(w, "start", None), getattr(w, "end", None), sorted(map(repr, elements)))


# ---------------------------------------------------------------------------- evidence


def test_window_contents_live_in_rocksdb_not_in_the_operator(tmp_path):
    """5,000 keys with open windows: the operator has no dict of contents, the keyed
    backend holds one entry per (key, window) (beyond its 64-entry read cache, so in
    RocksDB), and firing removes them; the output equals the heap backend's."""
    rows = [(f"k{i}", 10 + i % 50, i) for i in range(5000)]

    def run(state_backend):
        op = WindowOperator(KEY.key_of, TumblingEventTimeWindows.of(100), REDUCE,
                            lambda a, b: (a[0], a[1], a[2] + b[2]), timestamp_assigner=TS)
        h = OperatorHarness(op, state_backend=state_backend)
        for i in range(0, len(rows), 500):
            h.process(rows[i:i + 500])
        return op, h

    heap_op, heap = run(HeapStateBackend())
    op, h = run(rocksdb(tmp_path))
    assert heap_op.num_open_windows() == 5000  # the heap operator: in its own dicts
    assert isinstance(op.contents, BackendWindowState)  # RocksDB: no per-key dict at all
    keyed = op.ctx.keyed_backend
    assert keyed.num_entries(WINDOW_CONTENTS) == 5000 == op.num_open_windows()
    assert keyed.cache_stats()["entries"] <= 64
    assert op.timers.num_event_timers() == 5000
    h.process([(f"k{i}", 150, 1) for i in range(1000)])  # a second window for 1,000 keys
    assert keyed.num_entries(WINDOW_CONTENTS) == 6000
    heap.process([(f"k{i}", 150, 1) for i in range(1000)])
    h.advance_watermark(99)
    heap.advance_watermark(99)
    assert keyed.num_entries(WINDOW_CONTENTS) == 1000 and op.timers.num_event_timers() == 1000
    h.end_input()
    heap.end_input()
    assert sorted(h.records()) == sorted(heap.records())
    assert len(h.records()) == 6000


# ---------------------------------------------------------------------------- rescaling

Script = list[tuple[str, int, Any]]  # ("rec", input, records) | ("wm", input, timestamp)


def script_one_input(n: int = 1200, seed: int = 3) -> Script:
    """Out-of-order records of 20 keys in batches, with a watermark that lags 30 ms and
    leaves some records late (side output / allowed lateness)."""
    rng = random.Random(seed)
    out: Script = []
    for b in range(0, n, 60):
        batch = [(f"k{rng.randrange(20)}", b + rng.randrange(-40, 60), i) for i in range(b, b + 60)]
        out.append(("rec", 0, batch))
        out.append(("wm", 0, b + 60 - 30))
    return out


def script_two_inputs(n: int = 800, seed: int = 4) -> Script:
    rng = random.Random(seed)
    out: Script = []
    for b in range(0, n, 40):
        for side in (0, 1):
            batch = [(f"k{rng.randrange(8)}", b + rng.randrange(0, 40), side * 10_000 + i) for i in range(b, b + 40)]
            out.append(("rec", side, batch))
        out.append(("wm", 0, b + 40 - 5))
        out.append(("wm", 1, b + 40 - 5))
    return out


def drive(harnesses: list[OperatorHarness], steps: Script) -> None:
    """Run ``steps``: records go to the subtask that owns their key's group."""
    p = len(harnesses)
    ranges = [KeyGroupRange.for_subtask(i, p, MAXP) for i in range(p)]
    for kind, side, payload in steps:
        if kind == "wm":
            for h in harnesses:
                h.advance_watermark(payload, side)
            continue
        for h, kgr in zip(harnesses, ranges):
            mine = [r for r in payload if key_group_for(r[0], MAXP) in kgr]
            if mine:
                h.process(mine, side)


def outputs(harnesses: list[OperatorHarness]) -> list[str]:
    return [repr(r) for h in harnesses for r in h.records()] + [
        repr(("late", r)) for h in harnesses for r in h.side_records("late")]


def interrupted_run(make: Callable[[], Any], steps: Script, first: Any, second: Any) -> list[str]:
    """The first half at parallelism 2 on backend ``first``, a snapshot of both subtasks,
    the second half at parallelism 3 on ``second`` restored from it; all output, sorted."""
    half = len(steps) // 2
    two = [OperatorHarness(make(), i, 2, MAXP, state_backend=first) for i in range(2)]
    drive(two, steps[:half])
    snaps = [h.snapshot() for h in two]
    got = outputs(two)
    three = [OperatorHarness(make(), i, 3, MAXP, restore=snaps, state_backend=second) for i in range(3)]
    drive(three, steps[half:])
    for h in three:
        h.end_input()
    return sorted(got + outputs(three))


def uninterrupted_run(make: Callable[[], Any], steps: Script) -> list[str]:
    two = [OperatorHarness(make(), i, 2, MAXP) for i in range(2)]
    drive(two, steps)
    for h in two:
        h.end_input()
    return sorted(outputs(two))


class Match(KeyedCoProcessFunction):
    """Keeps the last left record per key; a right record matches it; an event-time timer
    20 ms after each left record reports the key's state."""

    def open(self, ctx):
        self.last = ctx.get_state(ValueStateDescriptor("last"))

    def process_element1(self, value, ctx):
        self.last.update(value)
        ctx.timer_service().register_event_time_timer(ctx.timestamp + 20)

    def process_element2(self, value, ctx):
        if self.last.value() is not None:
            yield ("match", self.last.value(), value)

    def on_timer(self, timestamp, ctx):
        yield ("timer", ctx.get_current_key(), timestamp, self.last.value())


def _sum(a, b):
    return (a[0], max(a[1], b[1]), a[2] + b[2])


OPERATORS: dict[str, tuple[Callable[[], Any], Callable[[], Script]]] = {
    # pane mode on the heap (tumbling, default trigger, no lateness)
    "tumbling": (lambda: WindowOperator(KEY.key_of, TumblingEventTimeWindows.of(100), AGGREGATE, Count(), Describe(),
                                        late_tag="late", timestamp_assigner=TS), script_one_input),
    "tumbling-lateness": (lambda: WindowOperator(KEY.key_of, TumblingEventTimeWindows.of(100), REDUCE, _sum,
                                                 allowed_lateness=40, late_tag="late", timestamp_assigner=TS),
                          script_one_input),
    "sliding": (lambda: WindowOperator(KEY.key_of, SlidingEventTimeWindows.of(100, 50), LIST, None, Describe(),
                                       late_tag="late", timestamp_assigner=TS), script_one_input),
    "sessions": (lambda: WindowOperator(KEY.key_of, EventTimeSessionWindows.with_gap(15), LIST, None, Describe(),
                                        late_tag="late", timestamp_assigner=TS), lambda: script_one_input(900, 8)),
    "count": (lambda: WindowOperator(KEY.key_of, GlobalWindows.create(), REDUCE, _sum,
                                     trigger=PurgingTrigger.of(CountTrigger.of(4))), script_one_input),
    "window-join": (lambda: CoGroupWindowOperator((KEY, KEY), (TS, TS), TumblingEventTimeWindows.of(50),
                                                  _CoGroup(None, lambda a, r: (a[0], a[2], r[2]))), script_two_inputs),
    "interval-join": (lambda: IntervalJoinOperator((KEY, KEY), (TS, TS), -10, 15, lambda a, r: (a[2], r[2]),
                                                   late_tag="late"), script_two_inputs),
    "co-process-timers": (lambda: KeyedCoProcessOperator(Match(), (KEY, KEY), (TS, TS)), script_two_inputs),
    "field-sum": (lambda: FieldAggregateOperator(KEY, 2, "sum"), script_one_input),
}


@pytest.mark.parametrize("first", ["rocksdb", "heap"])
@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_rescale_2_to_3_on_rocksdb_equals_an_uninterrupted_run(name, first, tmp_path):
    make, script = OPERATORS[name]
    steps = script()
    want = uninterrupted_run(make, steps)
    assert len(want) >= 20
    got = interrupted_run(make, steps, backend(first, tmp_path), rocksdb(tmp_path, "restored"))
    assert got == want


def test_restored_windows_are_in_the_backend_and_fire(tmp_path):
    """After a rescaled restore from RocksDB snapshots the windows are in each new
    subtask's RocksDB (its own key groups only) and nothing stays open after the input."""
    make, script = OPERATORS["tumbling-lateness"]
    steps = script()[:9]
    two = [OperatorHarness(make(), i, 2, MAXP, state_backend=rocksdb(tmp_path)) for i in range(2)]
    drive(two, steps)
    open_before = sum(h.operator.num_open_windows() for h in two)
    assert open_before > 0
    snaps = [h.snapshot() for h in two]
    three = [OperatorHarness(make(), i, 3, MAXP, restore=snaps, state_backend=rocksdb(tmp_path, "r")) for i in range(3)]
    assert sum(h.operator.num_open_windows() for h in three) == open_before
    for i, h in enumerate(three):
        assert isinstance(h.operator.contents, BackendWindowState)
        kgr = KeyGroupRange.for_subtask(i, 3, MAXP)
        keys = list(h.ctx.keyed_backend.keys(WINDOW_CONTENTS))
        assert keys and all(key_group_for(k, MAXP) in kgr for k in keys)
    for h in three:
        backend = h.ctx.keyed_backend
        close, backend.close = backend.close, lambda: None  # (the ending task closes it: look first)
        h.end_input()
        assert h.operator.num_open_windows() == 0
        close()


# ---------------------------------------------------------------------------- combined windows


class Stats(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + 1, acc[1] + value["value"])

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


@pytest.mark.parametrize("lateness", [0, 60])
def test_combined_window_on_rocksdb_equals_the_uncombined_heap_window(lateness, tmp_path):
    """The keyed half of a combined ``aggregate(AggregateFunction)`` window merges the
    combiner's partials into window contents in the keyed backend (no panes on RocksDB),
    also across a snapshot restored at parallelism 2."""
    from raystream.operators.window_combiner import CombinedWindowOperator, WindowAggregateCombiner

    ts, sel, assigner = TimestampAssigner(column="ts"), KeySelector("key"), TumblingEventTimeWindows.of(100)
    rng = random.Random(lateness)
    rows = [{"key": f"k{rng.randrange(12)}", "value": i, "ts": 5 * i - (150 if i % 37 == 36 else 0)} for i in range(1500)]
    chunks = [rows[i:i + 50] for i in range(0, len(rows), 50)]

    def uncombined() -> list[str]:
        h = OperatorHarness(WindowOperator(sel.key_of, assigner, AGGREGATE, Stats(), None, None, lateness, "late", ts))
        for c in chunks:
            h.process(c)
            h.advance_watermark(max(r["ts"] for r in c) - 30)
        h.end_input()
        return sorted(outputs([h]))

    def combined(snapshot_at: int | None) -> list[str]:
        up = OperatorHarness(WindowAggregateCombiner(sel, assigner, Stats(), ts))
        make = lambda: CombinedWindowOperator(sel.key_of, assigner, Stats(), None, lateness, "late", ts)  # noqa: E731
        down = [OperatorHarness(make(), state_backend=rocksdb(tmp_path, "a"))]
        assert isinstance(down[0].operator.contents, BackendWindowState)
        done: list[str] = []
        sent = 0
        for i, c in enumerate(chunks):
            if i == snapshot_at:
                snaps = [h.snapshot() for h in down]
                done += outputs(down)
                down = [OperatorHarness(make(), j, 2, MAXP, restore=snaps, state_backend=rocksdb(tmp_path, "b"))
                        for j in range(2)]
            up.process(c)
            for b in up.output.batches[sent:]:
                for j, h in enumerate(down):
                    kgr = KeyGroupRange.for_subtask(j, len(down), MAXP)
                    mine = [r for r in b.records() if key_group_for(r[0], MAXP) in kgr]
                    if mine:
                        h.process(mine)
            sent = len(up.output.batches)
            wm = max(r["ts"] for r in c) - 30
            up.advance_watermark(wm)
            for h in down:
                h.advance_watermark(wm)
        for h in down:
            h.end_input()
        return sorted(done + outputs(down))

    want = uncombined()
    assert any(r.startswith("('late'") for r in want)
    assert combined(None) == want
    assert combined(len(chunks) // 2) == want
