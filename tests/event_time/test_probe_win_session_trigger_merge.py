"""Merging (session) windows hand the merged windows' trigger state to ``on_merge`` before
the old windows are cleared, as Flink's WindowOperator does (``onMerge``, then ``clear`` of
each merged window). Before, the old windows were cleared first, so a trigger whose
``clear()`` resets its state (``CountTrigger``, most custom triggers) merged the reset
values: a session built from merged parts lost their counts and fired late or never."""

from __future__ import annotations

from raystream.engine.partitioners import KeySelector
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_operator import LIST, WindowOperator
from raystream.operators.windows import (
    CountTrigger,
    EventTimeSessionWindows,
    ProcessWindowFunction,
    Trigger,
    TriggerResult,
)


class Contents(ProcessWindowFunction):
    def process(self, key, context, elements):
        yield (key, context.window.start, context.window.end, sorted(e[1] for e in elements))


def session_op(trigger: Trigger) -> WindowOperator:
    return WindowOperator(KeySelector(0).key_of, EventTimeSessionWindows.with_gap(10), LIST, None, Contents(),
                          trigger=trigger, timestamp_assigner=TimestampAssigner(column=1))


def test_count_trigger_counts_the_records_of_merged_sessions(state_backend):
    h = OperatorHarness(session_op(CountTrigger.of(3)), state_backend=state_backend)
    h.process([("a", 0), ("a", 15)])  # two sessions [0, 10) and [15, 25), one record each
    assert h.take() == []
    h.process([("a", 8)])  # bridges them: one session [0, 25) of 3 records, the 3rd fires it
    assert h.take() == [("a", 0, 25, [0, 8, 15])]
    h.process([("b", 0), ("b", 30), ("b", 20), ("b", 10)])  # merged step by step: fires at the 3rd
    assert h.take() == [("b", 0, 40, [0, 10, 20, 30])]


class SumAtLeast(Trigger):
    """Fires (and purges) when the values of a window add up to ``limit``; clear() resets."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def on_element(self, element, timestamp, window, ctx):
        total = ctx.get_state("sum", 0) + element[2]
        if total >= self.limit:
            ctx.set_state("sum", 0)
            return TriggerResult.FIRE_AND_PURGE
        ctx.set_state("sum", total)
        return TriggerResult.CONTINUE

    def can_merge(self):
        return True

    def on_merge(self, window, ctx):
        ctx.set_state("sum", sum(ctx.merged_states("sum")))

    def clear(self, window, ctx):
        ctx.set_state("sum", 0)


def test_a_custom_trigger_merges_its_state_before_the_old_windows_are_cleared(state_backend):
    op = WindowOperator(KeySelector(0).key_of, EventTimeSessionWindows.with_gap(10), LIST, None,
                        Contents(), trigger=SumAtLeast(10), timestamp_assigner=TimestampAssigner(column=1))
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("a", 0, 4), ("a", 20, 4)])
    h.process([("a", 10, 2)])  # [0, 30): 4 + 4 + 2 = 10
    assert h.take() == [("a", 0, 30, [0, 10, 20])]

