"""Windows, joins and final field aggregates switched from RocksDB back to the heap backend
(issue 16), in-process: on RocksDB these operators keep their state (window contents,
trigger state, merging window sets, join buffers, ``_field/*`` values) and timers in the
keyed backend; restored on the heap, the operators take them into their own structures.

A run on RocksDB at parallelism 2 (or 3) is snapshotted halfway and continued on the heap
backend at parallelism 3 (or 1); its output must equal an uninterrupted heap run's. Also:
the heap backend keeps none of that state as keyed state after the hand-over (a later
heap snapshot carries it as operator state only, and restores into RocksDB again), and the
hand-over happens once.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from raystream.checkpoint import HeapKeyedStateBackend, ValueStateDescriptor
from raystream.checkpoint.backends import HeapStateBackend
from raystream.engine.errors import StateError
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.partitioners import KeySelector
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_combiner import CombinedWindowOperator, WindowAggregateCombiner
from raystream.operators.window_state import WINDOW_CONTENTS, BackendWindowState
from raystream.operators.windows import TumblingEventTimeWindows

pytest.importorskip("rocksdict")
from tests.event_time.test_rocksdb_windows import (  # noqa: E402
    MAXP,
    OPERATORS,
    Count,
    drive,
    outputs,
    rocksdb,
    uninterrupted_run,
)

#: operators whose RocksDB state is the operator's own (not a user function's keyed state)
SWITCHED = sorted(n for n in OPERATORS if n != "co-process-timers")
OPERATOR_STATE_PREFIXES = ("_window/", "_join/", "_field/", "_timers/")


def switched_run(make: Callable[[], Any], steps: list, first: Any, old_p: int, second: Any, new_p: int,
                 check: Callable[[list[OperatorHarness]], None] | None = None) -> list[str]:
    """The first half at ``old_p`` on ``first``, a snapshot of every subtask, the second half
    at ``new_p`` on ``second`` restored from it (``check`` sees the restored harnesses
    before they run); all output, sorted."""
    half = len(steps) // 2
    old = [OperatorHarness(make(), i, old_p, MAXP, state_backend=first) for i in range(old_p)]
    drive(old, steps[:half])
    snaps = [h.snapshot() for h in old]
    got = outputs(old)
    new = [OperatorHarness(make(), i, new_p, MAXP, restore=snaps, state_backend=second) for i in range(new_p)]
    if check is not None:
        check(new)
    drive(new, steps[half:])
    for h in new:
        h.end_input()
    return sorted(got + outputs(new))


def no_operator_state_in_keyed_backend(harnesses: list[OperatorHarness]) -> None:
    for h in harnesses:
        keyed = h.ctx.keyed_backend
        assert not [n for n in keyed.state_names() if n.startswith(OPERATOR_STATE_PREFIXES)]
        assert keyed.take_restored_timers("_timers/event_time") == {}  # handed over once


@pytest.mark.parametrize(("old_p", "new_p"), [(2, 3), (3, 1)])
@pytest.mark.parametrize("name", SWITCHED)
def test_rocksdb_snapshot_restored_on_heap_at_another_parallelism_equals_an_uninterrupted_run(
        name, old_p, new_p, tmp_path):
    make, script = OPERATORS[name]
    steps = script()
    want = uninterrupted_run(make, steps)
    assert len(want) >= 20
    got = switched_run(make, steps, rocksdb(tmp_path), old_p, HeapStateBackend(), new_p,
                       no_operator_state_in_keyed_backend)
    assert got == want


def test_co_process_timers_also_switch_to_the_heap(tmp_path):
    # user keyed state + timers (KeyedCoProcessOperator): restored on the heap as before
    make, script = OPERATORS["co-process-timers"]
    steps = script()
    assert switched_run(make, steps, rocksdb(tmp_path), 2, HeapStateBackend(), 3) == uninterrupted_run(make, steps)


def test_windows_taken_from_rocksdb_are_open_in_the_heap_operator(tmp_path):
    """The open windows of a RocksDB run are, after a rescaled restore on the heap, in the
    heap operators' dicts (each subtask: its own key groups' windows only), with their
    cleanup timers, and fire."""
    make, script = OPERATORS["tumbling-lateness"]
    steps = script()[:9]
    two = [OperatorHarness(make(), i, 2, MAXP, state_backend=rocksdb(tmp_path)) for i in range(2)]
    drive(two, steps)
    open_before = sum(h.operator.num_open_windows() for h in two)
    timers_before = sum(h.operator.timers.num_event_timers() for h in two)
    assert open_before > 0 and timers_before > 0
    snaps = [h.snapshot() for h in two]
    three = [OperatorHarness(make(), i, 3, MAXP, restore=snaps, state_backend=HeapStateBackend()) for i in range(3)]
    assert sum(h.operator.num_open_windows() for h in three) == open_before
    assert sum(h.operator.timers.num_event_timers() for h in three) == timers_before
    for i, h in enumerate(three):
        assert not isinstance(h.operator.contents, BackendWindowState)
        kgr = KeyGroupRange.for_subtask(i, 3, MAXP)
        assert h.operator.contents and all(key_group_for(k, MAXP) in kgr for k in h.operator.contents)
    for h in three:
        h.end_input()
        assert h.operator.num_open_windows() == 0


@pytest.mark.parametrize("name", ["sessions", "interval-join", "field-sum", "count"])
def test_rocksdb_to_heap_to_rocksdb_equals_an_uninterrupted_run(name, tmp_path):
    """RocksDB p=2 -> heap p=3 -> RocksDB p=1: what the heap operators took over is in their
    next snapshot (as operator state) and moves into RocksDB again."""
    make, script = OPERATORS[name]
    steps = script()
    want = uninterrupted_run(make, steps)
    third = len(steps) // 3
    two = [OperatorHarness(make(), i, 2, MAXP, state_backend=rocksdb(tmp_path, "a")) for i in range(2)]
    drive(two, steps[:third])
    got = outputs(two)
    snaps = [h.snapshot() for h in two]
    three = [OperatorHarness(make(), i, 3, MAXP, restore=snaps, state_backend=HeapStateBackend()) for i in range(3)]
    drive(three, steps[third:2 * third])
    got += outputs(three)
    snaps = [h.snapshot() for h in three]
    [one] = [OperatorHarness(make(), 0, 1, MAXP, restore=snaps, state_backend=rocksdb(tmp_path, "b"))]
    drive([one], steps[2 * third:])
    one.end_input()
    assert sorted(got + outputs([one])) == want


def test_the_window_contents_of_a_rocksdb_snapshot_are_in_the_heap_keyed_backend_until_taken(tmp_path):
    # the heap backend alone (no operator yet) keeps them as restored keyed state: nothing is lost
    make, script = OPERATORS["sliding"]
    h = OperatorHarness(make(), state_backend=rocksdb(tmp_path))
    drive([h], script()[:6])
    open_windows = h.operator.num_open_windows()
    snap = h.snapshot()
    heap = HeapKeyedStateBackend(KeyGroupRange(0, MAXP - 1), MAXP)
    heap.restore([HeapStateBackend().deserialize_snapshot(snap["keyed"], KeyGroupRange(0, MAXP - 1))])
    assert WINDOW_CONTENTS in heap.state_names()
    taken = heap.take_restored_state(WINDOW_CONTENTS)
    assert sum(len(per_key) for group in taken.values() for per_key in group.values()) == open_windows
    assert WINDOW_CONTENTS not in heap.state_names() and heap.take_restored_state(WINDOW_CONTENTS) == {}


def test_a_field_value_without_its_first_record_fails_the_heap_restore_naming_the_key(tmp_path):
    make, script = OPERATORS["field-sum"]
    h = OperatorHarness(make(), state_backend=rocksdb(tmp_path))
    drive([h], script()[:4])
    keyed = h.ctx.keyed_backend
    keyed.set_current_key("k3")
    keyed.get_state(ValueStateDescriptor("_field/first")).clear()  # a corrupt snapshot
    snap = h.snapshot()
    with pytest.raises(StateError, match=r"sum\(2\) of operator .*key 'k3' but no first record"):
        OperatorHarness(make(), restore=[snap], state_backend=HeapStateBackend())


@pytest.mark.parametrize("lateness", [0, 60])
def test_the_keyed_half_of_a_combined_window_switches_to_the_heap(lateness, tmp_path):
    """``CombinedWindowOperator`` (a WindowOperator merging a combiner's partials): RocksDB
    p=2 -> heap p=3 (pane mode on the heap without lateness) equals an uninterrupted heap run."""
    assigner = TumblingEventTimeWindows.of(100)
    ts, sel = TimestampAssigner(column="ts"), KeySelector("key")
    # the combiner's partials (what CombinedWindowOperator merges), with the watermarks
    rows = [{"key": f"k{i % 12}", "value": i, "ts": 5 * i - (150 if i % 37 == 36 else 0)} for i in range(1500)]
    up = OperatorHarness(WindowAggregateCombiner(sel, assigner, Count(), ts))
    steps: list = []
    for i in range(0, len(rows), 50):
        sent = len(up.output.batches)
        up.process(rows[i:i + 50])
        for b in up.output.batches[sent:]:
            steps.append(("rec", 0, b.records()))
        wm = max(r["ts"] for r in rows[i:i + 50]) - 30
        up.advance_watermark(wm)
        steps.append(("wm", 0, wm))

    def make():
        return CombinedWindowOperator(sel.key_of, assigner, Count(), None, lateness, "late", ts)

    want = uninterrupted_run(make, steps)
    assert len(want) >= 20
    assert switched_run(make, steps, rocksdb(tmp_path), 2, HeapStateBackend(), 3,
                        no_operator_state_in_keyed_backend) == want
