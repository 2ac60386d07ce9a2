"""``ctx.timer_service()`` of a function on a stream without a key: a ``CoProcessFunction``
on connected streams that are not keyed, a ``BroadcastProcessFunction``, and the broadcast
side of a keyed one. It reads the current watermark and processing time; registering or
deleting a timer is a clear error saying to key the stream (Flink throws "Setting timers is
only supported on a keyed streams"). Before, ``timer_service()`` was None there, and a user's
``ctx.timer_service().register_event_time_timer(t)`` failed with ``'NoneType' object has no
attribute ...``."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import ConfigError, UserCodeError
from raystream.engine.operator import ManualClock
from raystream.engine.partitioners import KeySelector
from raystream.operators.testing import OperatorHarness
from raystream.operators.two_input import (
    BroadcastProcessOperator,
    CoProcessOperator,
    KeyedBroadcastProcessOperator,
)


class Times(rs.CoProcessFunction):
    """Emits (input, event time, processing time) per record; registers a timer when asked."""

    def process_element1(self, value, ctx):  # noqa: ANN001
        ts = ctx.timer_service()
        if value == "timer":
            ts.register_event_time_timer(100)
        yield (1, ts.current_watermark(), ts.current_processing_time())

    def process_element2(self, value, ctx):  # noqa: ANN001
        ts = ctx.timer_service()
        if value == "timer":
            ts.delete_processing_time_timer(100)
        yield (2, ts.current_watermark(), ts.current_processing_time())


class BroadcastTimes(rs.BroadcastProcessFunction):
    def process_element(self, value, ctx):  # noqa: ANN001
        if value == "timer":
            ctx.timer_service().register_processing_time_timer(100)
        yield ("element", ctx.timer_service().current_watermark())

    def process_broadcast_element(self, value, ctx):  # noqa: ANN001
        if value == "timer":
            ctx.timer_service().register_event_time_timer(100)
        yield ("broadcast", ctx.timer_service().current_processing_time())


def test_a_co_process_function_without_a_key_reads_both_times() -> None:
    h = OperatorHarness(CoProcessOperator(Times()), clock=ManualClock(7))
    h.advance_watermark(30, 0)
    h.advance_watermark(20, 1)
    h.process(["a"], 0)
    h.advance_processing_time(9)
    h.process(["b"], 1)
    assert h.records() == [(1, 20, 7), (2, 20, 9)]


@pytest.mark.parametrize("input_index", [0, 1])
def test_a_timer_without_a_key_is_a_clear_error(input_index) -> None:
    h = OperatorHarness(CoProcessOperator(Times()))
    with pytest.raises(UserCodeError) as err:
        h.process(["timer"], input_index)
    assert isinstance(err.value.original, ConfigError) and err.value.record == "timer"
    assert "timers are only supported on keyed streams" in str(err.value.original)
    assert "key_by(k1, k2)" in str(err.value.original)


@pytest.mark.parametrize("input_index", [0, 1])
def test_a_broadcast_function_reads_the_times_and_refuses_timers(input_index) -> None:
    h = OperatorHarness(BroadcastProcessOperator(BroadcastTimes(), ["rules"]), clock=ManualClock(5))
    h.advance_watermark(12, 0)
    h.advance_watermark(40, 1)
    h.process(["x"], input_index)
    assert h.records() == [("element", 12) if input_index == 0 else ("broadcast", 5)]
    with pytest.raises(UserCodeError) as err:
        h.process(["timer"], input_index)
    assert isinstance(err.value.original, ConfigError) and "needs a key" in str(err.value.original)


def test_the_broadcast_side_of_a_keyed_broadcast_function_refuses_timers() -> None:
    h = OperatorHarness(KeyedBroadcastProcessOperator(BroadcastTimes(), ["rules"], KeySelector(lambda v: v)))
    h.process(["x"], 1)
    assert h.records() == [("broadcast", 0)]
    with pytest.raises(UserCodeError) as err:
        h.process(["timer"], 1)
    assert isinstance(err.value.original, ConfigError)
    h2 = OperatorHarness(KeyedBroadcastProcessOperator(BroadcastTimes(), ["rules"], KeySelector(lambda v: v)))
    h2.process(["timer"], 0)  # the keyed side has a key: its timer is taken
    assert h2.pending_processing_timers == [100]
