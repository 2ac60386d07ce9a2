"""A window's trigger or merge that fails names what it was doing: the record, or (for a
timer) the trigger call, its window and key; a trigger method that returns something other
than a TriggerResult is a ConfigError saying so. Before, a trigger returning None failed
with ``'NoneType' object has no attribute 'is_fire'``, an ``on_event_time`` that raised
named nothing but the operator, and an ``AggregateFunction.merge`` that raised while
session windows merged was blamed on the first record of the batch."""

from __future__ import annotations

import pytest

from raystream.checkpoint import AggregateFunction
from raystream.engine.errors import ConfigError, UserCodeError
from raystream.engine.partitioners import KeySelector
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_operator import AGGREGATE, REDUCE, WindowOperator
from raystream.operators.windows import (
    EventTimeSessionWindows,
    TimeWindow,
    Trigger,
    TriggerResult,
    TumblingEventTimeWindows,
)

TS = TimestampAssigner(column=1)


class ReturnsNone(Trigger):
    def on_element(self, element, timestamp, window, ctx):
        return None  # forgot "return TriggerResult.CONTINUE"


class FailsOnTimer(Trigger):
    def on_element(self, element, timestamp, window, ctx):
        ctx.register_event_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_event_time(self, time, window, ctx):
        raise ValueError("no luck")


def reducing(trigger: Trigger) -> WindowOperator:
    return WindowOperator(KeySelector(0).key_of, TumblingEventTimeWindows.of(10), REDUCE, lambda a, b: a,
                          trigger=trigger, timestamp_assigner=TS)


def test_a_trigger_that_returns_none_is_a_config_error_naming_it(state_backend):
    h = OperatorHarness(reducing(ReturnsNone()), state_backend=state_backend)
    with pytest.raises(UserCodeError) as err:
        h.process([("a", 1), ("b", 2)])
    assert err.value.record == ("a", 1)
    assert isinstance(err.value.original, ConfigError)
    assert "ReturnsNone.on_element() returned None" in str(err.value.original)
    assert "TriggerResult" in str(err.value.original)


def test_a_trigger_failing_in_on_event_time_names_the_call_window_and_key(state_backend):
    h = OperatorHarness(reducing(FailsOnTimer()), state_backend=state_backend)
    h.process([("a", 1)])
    with pytest.raises(UserCodeError) as err:
        h.advance_watermark(20)
    assert isinstance(err.value.original, ValueError)
    assert err.value.record == f"FailsOnTimer.on_event_time(9) of window {TimeWindow(0, 10)!r} of key 'a'"


class MergeFails(AggregateFunction):
    def create_accumulator(self):
        return 0

    def add(self, value, acc):
        return acc + 1

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        raise ValueError("cannot merge")


def test_a_failing_merge_of_session_windows_names_the_record_that_merged_them(state_backend):
    op = WindowOperator(KeySelector(0).key_of, EventTimeSessionWindows.with_gap(10), AGGREGATE, MergeFails(),
                        timestamp_assigner=TS)
    h = OperatorHarness(op, state_backend=state_backend)
    with pytest.raises(UserCodeError) as err:
        h.process([("a", 0), ("a", 20), ("a", 10)])  # ("a", 10) bridges [0, 10) and [20, 30)
    assert err.value.record == ("a", 10) and isinstance(err.value.original, ValueError)
