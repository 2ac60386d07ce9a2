"""Settings of window joins / co-groups and interval joins are checked when the job is built.

Before, ``a.join(b)...allowed_lateness(-5)`` was taken: every window was cleaned up before
it fired and the join emitted nothing, silently; a lateness of ``"5"`` or None, or a
``trigger("x")``, failed only once the job ran, with a bare ``TypeError`` /
``AttributeError`` from inside the window operator; ``between(1.5, "x")`` failed with a
bare ``TypeError`` comparing the bounds; and a trigger that cannot merge session windows
was refused only by the running task. ``WindowedStream`` already refused all of these.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import GraphError
from raystream.operators.time import WatermarkStrategy
from raystream.operators.windows import (
    CountTrigger,
    EventTimeSessionWindows,
    Trigger,
    TriggerResult,
    TumblingEventTimeWindows,
)

STRATEGY = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")


def two_streams() -> tuple[rs.DataStream, rs.DataStream]:
    env = rs.StreamEnvironment(parallelism=2)
    a = env.from_collection([{"k": 1, "ts": 1}]).assign_timestamps_and_watermarks(STRATEGY)
    b = env.from_collection([{"k": 1, "ts": 2}]).assign_timestamps_and_watermarks(STRATEGY)
    return a, b


@pytest.mark.parametrize("co_group", [False, True])
@pytest.mark.parametrize("lateness", [-5, "5", 2.5, None, True])
def test_window_join_refuses_a_bad_allowed_lateness(co_group, lateness) -> None:
    a, b = two_streams()
    joined = (a.co_group(b) if co_group else a.join(b)).where("k").equal_to("k").window(TumblingEventTimeWindows.of(10))
    with pytest.raises(GraphError, match=r"allowed_lateness must be a non-negative int \(ms\) or timedelta, got " + repr(lateness)):
        joined.allowed_lateness(lateness)


@pytest.mark.parametrize("trigger", ["x", 5, None])
def test_window_join_refuses_a_trigger_that_is_not_one(trigger) -> None:
    a, b = two_streams()
    joined = a.join(b).where("k").equal_to("k").window(TumblingEventTimeWindows.of(10))
    with pytest.raises(GraphError, match="trigger\\(\\) expects a Trigger"):
        joined.trigger(trigger)


class FireAtEnd(Trigger):
    """A custom trigger that does not say it can merge windows."""

    def on_element(self, element, timestamp, window, ctx):  # noqa: ANN001, ANN201
        return TriggerResult.CONTINUE


def test_window_join_refuses_a_trigger_that_cannot_merge_sessions_when_built() -> None:
    a, b = two_streams()
    joined = a.co_group(b).where("k").equal_to("k").window(EventTimeSessionWindows.with_gap(5)).trigger(FireAtEnd())
    with pytest.raises(GraphError, match="window_co_group: trigger FireAtEnd cannot be used with merging windows"):
        joined.apply(lambda key, lefts, rights: [])


def test_window_join_settings_that_are_fine_still_build() -> None:
    a, b = two_streams()
    joined = a.join(b).where("k").equal_to("k").window(TumblingEventTimeWindows.of(10)).allowed_lateness(0)
    assert joined.trigger(CountTrigger.of(3)).apply(lambda x, y: (x, y)).node.name == "window_join"


@pytest.mark.parametrize("lower,upper", [(1.5, "x"), ("0", 5), (0, None), (True, 3)])
def test_interval_join_bounds_must_be_int_milliseconds(lower, upper) -> None:
    a, b = two_streams()
    with pytest.raises(GraphError, match=r"bound must be an int \(ms\)"):
        a.key_by("k").interval_join(b.key_by("k")).between(lower, upper)
