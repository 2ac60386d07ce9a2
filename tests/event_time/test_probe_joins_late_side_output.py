"""``a.join(b)...side_output_late_data(tag)`` / ``a.co_group(b)...``: late records of
either input go to a side output instead of being dropped.

A window join dropped its late records with the window operator's warning "use
.side_output_late_data(tag) or allowed_lateness(ms) to keep them", but ``JoinedStreams`` had
no ``side_output_late_data``: the remedy the engine gave did not exist. The join is built
with the DataStream API and its operator run in a task driven step by step.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.operators.functions import OutputTag
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import WatermarkStrategy
from raystream.operators.windows import (
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
    WindowAssigner,
)

LATE = OutputTag("late")
STRATEGY = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")


def join_harness(assigner: WindowAssigner, co_group: bool, lateness: int) -> OperatorHarness:
    env = rs.StreamEnvironment(parallelism=2)
    a = env.from_collection([]).assign_timestamps_and_watermarks(STRATEGY)
    b = env.from_collection([]).assign_timestamps_and_watermarks(STRATEGY)
    joined = (a.co_group(b) if co_group else a.join(b)).where("k").equal_to("k").window(assigner)
    joined = joined.allowed_lateness(lateness).side_output_late_data(LATE)
    if co_group:
        stream = joined.apply(lambda key, ls, rs_: [(key, sorted(x["ts"] for x in ls), sorted(x["ts"] for x in rs_))])
    else:
        stream = joined.apply(lambda left, right: (left["ts"], right["ts"]))
    factory = stream.node.operator_factory
    assert factory is not None
    return OperatorHarness(factory())


@pytest.mark.parametrize("co_group", [False, True])
@pytest.mark.parametrize("assigner", [TumblingEventTimeWindows.of(10), SlidingEventTimeWindows.of(10, 5)],
                         ids=["tumbling", "sliding"])
@pytest.mark.parametrize("lateness", [0, 4])
def test_late_records_of_both_inputs_reach_the_side_output(assigner, co_group, lateness) -> None:
    h = join_harness(assigner, co_group, lateness)
    h.process([{"k": "a", "ts": 1}, {"k": "a", "ts": 12}], 0)
    h.process([{"k": "a", "ts": 3}], 1)
    h.advance_watermark(30, 0)
    h.advance_watermark(30, 1)  # every window up to [20, 30) has expired (also with lateness 4)
    fired = h.take()
    assert fired
    late = [{"k": "a", "ts": 2}, {"k": "a", "ts": 15, "side": 1}]
    h.process(late[:1], 0)
    h.process(late[1:], 1)
    h.process([{"k": "a", "ts": 35}], 0)  # not late
    assert h.side_records(LATE) == late  # the records as they came, of either input
    h.end_input()
    windows_of_35 = 1 if isinstance(assigner, TumblingEventTimeWindows) else 2
    assert h.take() == ([("a", [35], [])] * windows_of_35 if co_group else [])
