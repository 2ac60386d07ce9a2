"""A trigger's state set to None is removed (Flink's ``state.clear()``), and ``CountTrigger``
clears its count when it fires, as Flink's does. Before, ``count_window(n)`` (a global
window, never cleaned up) kept ``{"count": 0}`` for every key that ever completed a window:
memory and every checkpoint grew with the number of keys seen (10,000 keys seen twice by
``count_window(2)``: 10,000 trigger states, 220 kB per heap snapshot instead of 0.3 kB)."""

from __future__ import annotations

import pickle

from raystream.checkpoint.backends import HeapStateBackend
from raystream.engine.partitioners import KeySelector
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_operator import REDUCE, WindowOperator
from raystream.operators.window_state import WINDOW_TRIGGER_STATE
from raystream.operators.windows import (
    CountTrigger,
    GlobalWindows,
    PurgingTrigger,
    Trigger,
    TriggerResult,
    TumblingEventTimeWindows,
)


def trigger_states(h: OperatorHarness) -> int:
    """The (key, window) trigger states the operator keeps: in the heap snapshot's key
    groups, or in the off-heap keyed backend's trigger map state."""
    backend = h.ctx.keyed_backend
    if getattr(backend, "off_heap", False):
        return backend.num_entries(WINDOW_TRIGGER_STATE)
    groups = h.snapshot()["operator"]["groups"]
    return sum(len(w) for blob in groups.values() for w in pickle.loads(blob)[1].values())


def counting(n: int) -> WindowOperator:
    return WindowOperator(KeySelector(0).key_of, GlobalWindows.create(), REDUCE, lambda a, b: (a[0], a[1] + b[1]),
                          trigger=PurgingTrigger.of(CountTrigger.of(n)))


def test_count_windows_keep_no_state_for_keys_whose_windows_fired(state_backend):
    h = OperatorHarness(counting(2), state_backend=state_backend)
    for i in range(0, 3000, 500):
        h.process([(f"id{j}", 1) for j in range(i, i + 500) for _ in range(2)])
    h.process([("open", 1)])  # one key with a window still open
    assert len(h.take()) == 3000
    assert trigger_states(h) == 1
    h.process([("open", 1)])
    assert h.take() == [("open", 2)] and trigger_states(h) == 0


def test_heap_snapshots_do_not_grow_with_the_keys_seen():
    h = OperatorHarness(counting(2), state_backend=HeapStateBackend())
    h.process([(f"id{j}", 1) for j in range(10) for _ in range(2)])
    small = len(pickle.dumps(h.snapshot()))
    h.process([(f"id{j}", 1) for j in range(10, 5000) for _ in range(2)])
    assert len(pickle.dumps(h.snapshot())) == small


class FireAtSum(Trigger):
    """Fires when a window's values add up to 10, then forgets its sum (sets it to None)."""

    def on_element(self, element, timestamp, window, ctx):
        total = ctx.get_state("sum", 0) + element[1]
        if total >= 10:
            ctx.set_state("sum", None)
            return TriggerResult.FIRE_AND_PURGE
        ctx.set_state("sum", total)
        return TriggerResult.CONTINUE

    def clear(self, window, ctx):
        ctx.set_state("sum", None)


def test_a_custom_trigger_removes_its_state_by_setting_none(state_backend):
    op = WindowOperator(KeySelector(0).key_of, TumblingEventTimeWindows.of(1000), REDUCE,
                        lambda a, b: (a[0], a[1] + b[1], a[2]), trigger=FireAtSum(),
                        timestamp_assigner=TimestampAssigner(column=2))
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("a", 4, 1), ("b", 3, 2), ("a", 6, 3)])
    assert h.take() == [("a", 10, 1)] and trigger_states(h) == 1  # b's sum
    h.process([("b", 9, 4)])
    assert h.take() == [("b", 12, 2)] and trigger_states(h) == 0
    h.process([("c", 1, 5)])
    h.advance_watermark(999)  # the cleanup timer clears c's window
    assert trigger_states(h) == 0
