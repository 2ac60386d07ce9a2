"""Two-input operators leave an idle input out of their event time (Flink >= 1.14's
``CombinedWatermarkStatus``): interval join, window join / co-group, co-process functions.

Each operator runs in a task with one channel per input (input 0: channel 0, input 1:
channel 1) driven step by step; what leaves the task (records, watermarks, statuses) is
checked in order. Before, the combined watermark was always the minimum of both inputs, so
one idle input held every window, join buffer and timer back until it sent data again.
"""

from __future__ import annotations

from raystream.engine.events import MAX_WATERMARK, MIN_WATERMARK, Watermark
from raystream.engine.partitioners import KeySelector
from raystream.operators.connected import (
    CoProcessOperator,
    KeyedCoProcessOperator,
    TwoInputWatermarks,
)
from raystream.operators.functions import CoProcessFunction, KeyedCoProcessFunction
from raystream.operators.joins import CoGroupWindowOperator, IntervalJoinOperator, _CoGroup
from raystream.operators.time import TimestampAssigner
from raystream.operators.windows import TumblingEventTimeWindows
from tests.event_time.idle_tasks import ACTIVE, IDLE, IdleTask, wm

TS1 = TimestampAssigner(column=1)
KEYS = (KeySelector(0), KeySelector(0))


def test_combined_watermark_leaves_an_idle_input_out_and_never_goes_back() -> None:
    w = TwoInputWatermarks()
    assert w.update(100, 0) is None and w.update(5, 1) == 5
    assert w.update_status(True, 1) == 100 and not w.idle
    assert w.update(300, 1) is None  # an idle input's watermark is kept, not counted
    assert w.update_status(True, 0) is None and w.idle  # both idle: idle, event time stays
    assert w.update_status(False, 0) is None and not w.idle
    assert w.update_status(False, 1) is None  # (300 and 100: the minimum is 100, no change)
    assert w.update(200, 0) == 200
    v = TwoInputWatermarks()
    v.update(40, 1)
    v.update_status(True, 1)
    assert v.update(MAX_WATERMARK, 0) == MAX_WATERMARK  # a finished input counts (end of time)...
    assert v.idle  # ...but is not active: with the other one idle, the operator is idle
    assert TwoInputWatermarks().current == MIN_WATERMARK


def test_interval_join_goes_on_when_one_input_is_idle() -> None:
    op = IntervalJoinOperator(KEYS, (TS1, TS1), -5, 5, lambda a, b: (a, b), late_tag="late")
    t = IdleTask([lambda: op], channel_inputs=(0, 1), keyed=True)
    t.send(0, [("a", 10)])
    t.send(1, [("a", 12)])
    assert t.take() == [("data", [(("a", 10), ("a", 12))])]
    t.watermark(0, 100)
    t.watermark(1, 5)
    assert t.take() == [wm(5)]
    t.idle(1)
    assert t.take() == [wm(100)]  # the idle right side no longer holds the join back
    assert op.num_buffered() == 0  # the buffers were pruned by the timers at 100
    t.send(1, [("a", 50)])  # a right record behind the combined watermark: late
    assert t.take() == [("side", [("a", 50)])]
    t.idle(0)
    assert t.take() == [IDLE]  # both inputs idle: the operator (and task) is idle, once
    t.idle(1, False)
    t.watermark(1, 60)  # behind 100: nothing goes back
    t.watermark(1, 150)  # input 0 is still idle: input 1 alone sets event time
    assert t.take() == [ACTIVE, wm(150)]


class CoGroupCounts:
    def __call__(self, key, lefts, rights):  # noqa: ANN001 - a co-group function
        return [(key, len(lefts), len(rights))]


def test_window_co_group_fires_when_one_input_is_idle() -> None:
    op = CoGroupWindowOperator(KEYS, (TS1, TS1), TumblingEventTimeWindows.of(10), _CoGroup(CoGroupCounts(), None))
    t = IdleTask([lambda: op], channel_inputs=(0, 1), keyed=True)
    t.send(0, [("a", 1), ("a", 15)])
    t.send(1, [("a", 5)])
    t.watermark(0, 30)
    t.watermark(1, 2)
    assert t.take() == [wm(2)]
    t.idle(1)
    assert t.take() == [("data", [("a", 1, 1), ("a", 1, 0)]), wm(30)]


def test_window_join_a_finished_input_and_an_idle_one_fire_everything_then_idle() -> None:
    op = CoGroupWindowOperator(KEYS, (TS1, TS1), TumblingEventTimeWindows.of(10), _CoGroup(None, lambda a, b: (a, b)))
    t = IdleTask([lambda: op], channel_inputs=(0, 1), keyed=True)
    t.send(0, [("a", 1), ("a", 25)])
    t.send(1, [("a", 3)])
    t.watermark(1, 4)
    t.idle(1)
    t.take()
    t.send(0, Watermark(MAX_WATERMARK))  # the left side ends (its task's last watermark, then the end)
    t.end(0)
    # the finished input counts as neither active nor idle: the operator is idle after it fired
    assert t.take() == [("data", [(("a", 1), ("a", 3))]), wm(MAX_WATERMARK), IDLE]
    t.end(1)
    assert t.take() == [ACTIVE]


class TimerAtTimestamp(KeyedCoProcessFunction):
    def process_element1(self, value, ctx):  # noqa: ANN001
        ctx.timer_service().register_event_time_timer(value[1])

    def process_element2(self, value, ctx):  # noqa: ANN001
        ctx.timer_service().register_event_time_timer(value[1])

    def on_timer(self, timestamp, ctx):  # noqa: ANN001
        yield ("timer", ctx.get_current_key(), timestamp)


def test_keyed_co_process_timers_fire_when_one_input_is_idle() -> None:
    op = KeyedCoProcessOperator(TimerAtTimestamp(), KEYS, (TS1, TS1))
    t = IdleTask([lambda: op], channel_inputs=(0, 1), keyed=True)
    t.send(0, [("a", 7)])
    t.watermark(0, 10)
    assert t.take() == []  # input 1 has no watermark yet
    t.idle(1)
    assert t.take() == [("data", [("timer", "a", 7)]), wm(10)]


class Echo(CoProcessFunction):
    def process_element1(self, value, ctx):  # noqa: ANN001
        yield value

    def process_element2(self, value, ctx):  # noqa: ANN001
        yield value


def test_co_process_both_inputs_idle_says_idle_once_and_a_restore_starts_active() -> None:
    t = IdleTask([lambda: CoProcessOperator(Echo())], channel_inputs=(0, 1, 1))  # input 1: two channels
    t.watermark(0, 8)
    t.idle(1)
    assert t.take() == []  # input 1's channel 2 still holds it
    t.idle(2)
    assert t.take() == [wm(8)]
    t.idle(0)
    assert t.take() == [IDLE]
    restore = t.snapshot(1)
    r = IdleTask([lambda: CoProcessOperator(Echo())], channel_inputs=(0, 1, 1), restore=restore)
    r.watermark(0, 20)
    assert r.take() == []  # restored: every input active again, input 1 holds event time
    r.idle(1)
    r.idle(2)
    assert r.take() == [wm(20)]
