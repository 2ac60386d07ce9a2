"""A restored window join / co-group keeps the combined watermark it had reached.

Its inputs' watermarks start again from the minimum after a restore (a task's watermark
valve and an input's stream status are not part of a snapshot, and an input that was idle
before the snapshot is active again with its old, lower watermark). Before, the restored
``CoGroupWindowOperator`` combined them from the minimum again and sent every advance
downstream, so its output's event time went back behind the watermark it had sent before
the snapshot (the window operator itself kept its restored event time: its windows and
late records were right, only the emitted watermarks regressed).
"""

from __future__ import annotations

from typing import Callable

import pytest

from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.partitioners import KeySelector
from raystream.operators.joins import CoGroupWindowOperator, IntervalJoinOperator, _CoGroup
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.windows import (
    EventTimeSessionWindows,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
    WindowAssigner,
)

TS1 = TimestampAssigner(column=1)
KEYS = (KeySelector(0), KeySelector(0))

ASSIGNERS = {
    "tumbling": lambda: TumblingEventTimeWindows.of(10),  # the pane path
    "sliding": lambda: SlidingEventTimeWindows.of(20, 10),
    "session": lambda: EventTimeSessionWindows.with_gap(5),
}


def counts(key, lefts, rights):  # noqa: ANN001, ANN201 - a co-group function
    return [(key, sorted(r[1] for r in lefts), sorted(r[1] for r in rights))]


def co_group(assigner: WindowAssigner, lateness: int) -> CoGroupWindowOperator:
    return CoGroupWindowOperator(KEYS, (TS1, TS1), assigner, _CoGroup(counts, None), allowed_lateness=lateness,
                                 late_tag="late")


def run_first_part(h: OperatorHarness) -> None:
    h.process([("a", 1), ("a", 15), ("b", 104), ("a", 105)], 0)
    h.process([("a", 5), ("b", 101), ("a", 108)], 1)
    h.advance_watermark(100, 0)
    h.advance_watermark(100, 1)


def run_second_part(h: OperatorHarness, mine: Callable[[str], bool] = lambda key: True) -> None:
    h.advance_watermark(50, 0)  # the inputs' watermarks start again below the combined one
    h.advance_watermark(60, 1)
    h.process([r for r in [("a", 70), ("b", 112)] if mine(r[0])], 0)  # 70: late at the restored event time
    h.process([r for r in [("b", 113)] if mine(r[0])], 1)
    h.advance_watermark(130, 0)
    h.advance_watermark(130, 1)


@pytest.mark.parametrize("lateness", [0, 5])
@pytest.mark.parametrize("kind", sorted(ASSIGNERS))
def test_restored_co_group_never_sends_a_watermark_behind_the_snapshot(kind, lateness, state_backend) -> None:
    h = OperatorHarness(co_group(ASSIGNERS[kind](), lateness), state_backend=state_backend)
    run_first_part(h)
    assert h.watermarks == [100]
    before = sorted(h.take())
    snap = h.snapshot()
    uninterrupted = OperatorHarness(co_group(ASSIGNERS[kind](), lateness), state_backend=state_backend)
    run_first_part(uninterrupted)
    run_second_part(uninterrupted)
    want = sorted(uninterrupted.records())
    for parallelism in (1, 2):  # restored as it was, and rescaled
        got, late = list(before), []
        for i in range(parallelism):
            r = OperatorHarness(co_group(ASSIGNERS[kind](), lateness), subtask_index=i, parallelism=parallelism,
                                restore=[snap], state_backend=state_backend)
            groups = KeyGroupRange.for_subtask(i, parallelism, 128)
            run_second_part(r, lambda key, groups=groups: key_group_for(key, 128) in groups)  # the keys this subtask owns
            assert r.watermarks == [130], f"{kind}: subtask {i}/{parallelism} sent {r.watermarks} after 100"
            got += r.records()
            late += r.side_records("late")
        assert sorted(got) == want
        assert late == [("a", 70)]


def test_interval_join_and_co_group_restore_the_same_way() -> None:
    """The interval join kept its combined watermark already; both use TwoInputWatermarks.restore."""
    op = IntervalJoinOperator(KEYS, (TS1, TS1), -5, 5, lambda a, b: (a, b), late_tag="late")
    h = OperatorHarness(op)
    h.advance_watermark(100, 0)
    h.advance_watermark(100, 1)
    r = OperatorHarness(IntervalJoinOperator(KEYS, (TS1, TS1), -5, 5, lambda a, b: (a, b), late_tag="late"),
                        restore=[h.snapshot()])
    r.advance_watermark(40, 0)
    r.advance_watermark(70, 1)
    r.process([("a", 90)], 0)
    assert r.watermarks == [] and r.side_records("late") == [("a", 90)]
