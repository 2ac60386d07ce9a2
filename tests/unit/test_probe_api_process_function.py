"""``DataStream.process(ProcessFunction)`` on a stream without a key (Flink's
``ProcessFunction``), run in-process with the operator harness.

raystream had no ``process()`` on a stream without a key: a Flink user's
``stream.process(MyProcessFunction())`` had no ProcessFunction to subclass and a
KeyedProcessFunction there was only refused for not being keyed. Now the function gets
every record with its timestamp, emits to side outputs, reads the watermark and the clock,
and a timer or keyed state is refused naming the operator and saying to key the stream.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.checkpoint.descriptors import ValueStateDescriptor
from raystream.engine.errors import ConfigError, GraphError, UserCodeError
from raystream.engine.operator import ManualClock
from raystream.operators.basic import ProcessOperator
from raystream.operators.testing import OperatorHarness


class Clocks(rs.ProcessFunction):
    """Emits each record with its timestamp, the watermark and the processing time; odd
    records also go to the side output ``odd``; counts its lifecycle calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def open(self, runtime_context):
        self.calls.append(f"open {runtime_context.index_of_this_subtask}/{runtime_context.number_of_parallel_subtasks}")

    def process_element(self, value, ctx):
        if value % 2:
            ctx.output(rs.OutputTag("odd"), value)
        ts = ctx.timer_service()
        yield (value, ctx.timestamp, ts.current_watermark(), ts.current_processing_time())

    def close(self):
        self.calls.append("close")


def test_records_side_outputs_watermark_and_clock():
    fn = Clocks()
    h = OperatorHarness(ProcessOperator(fn), clock=ManualClock(7))
    assert fn.calls == ["open 0/1"]
    h.process([1, 2])
    first = h.take()
    assert [r[:2] for r in first] == [(1, None), (2, None)]
    assert {r[3] for r in first} == {7}
    h.advance_watermark(100)
    assert h.watermarks[-1] == 100  # forwarded
    h.advance_processing_time(50)
    h.process([3])
    assert h.take() == [(3, None, 100, 50)]
    assert h.side_records("odd") == [1, 3]
    h.end_input()
    assert fn.calls == ["open 0/1", "close"]


def test_timestamps_come_from_the_upstream_assigner():
    strategy = rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    assigner = strategy.require_assigner("test")

    class Stamp(rs.ProcessFunction):
        def process_element(self, value, ctx):
            return [(value["v"], ctx.timestamp)]

    h = OperatorHarness(ProcessOperator(Stamp(), assigner))
    h.process([{"v": "a", "ts": 5}, {"v": "b", "ts": 5}, {"v": "é", "ts": 3}])
    assert h.records() == [("a", 5), ("b", 5), ("é", 3)]


@pytest.mark.parametrize("register", ["register_event_time_timer", "register_processing_time_timer",
                                      "delete_event_time_timer"])
def test_a_timer_is_refused_naming_the_operator(register):
    class Timer(rs.ProcessFunction):
        def process_element(self, value, ctx):
            getattr(ctx.timer_service(), register)(value + 10)
            yield value

    h = OperatorHarness(ProcessOperator(Timer()))
    with pytest.raises(UserCodeError) as info:
        h.process([1])
    assert isinstance(info.value.original, ConfigError)
    msg = str(info.value.original)
    assert "timers are only supported on keyed streams: key_by first" in msg
    assert repr(h.ctx.operator_name) in msg and "11" in msg
    assert info.value.record == 1


def test_keyed_state_is_refused_naming_the_operator():
    class Counting(rs.ProcessFunction):
        def open(self, runtime_context):
            self.count = runtime_context.get_state(ValueStateDescriptor("count", default=0))

        def process_element(self, value, ctx):
            yield value

    with pytest.raises(ConfigError, match=r"operator '.*' has no keyed state: keyed state needs a keyed stream"):
        OperatorHarness(ProcessOperator(Counting()))


def test_process_refuses_functions_of_other_kinds():
    env = rs.StreamEnvironment(parallelism=1)
    stream = env.from_collection([1])

    class Keyed(rs.KeyedProcessFunction):
        def process_element(self, value, ctx):
            yield value

    class Co(rs.CoProcessFunction):
        def process_element1(self, value, ctx):
            yield value

        def process_element2(self, value, ctx):
            yield value

    with pytest.raises(GraphError, match=r"process\(Keyed\) after 'from_collection': a KeyedProcessFunction needs a "
                                         r"keyed stream: key_by first"):
        stream.process(Keyed())
    with pytest.raises(GraphError, match=r"expects a ProcessFunction instance, got Co \(a function of two inputs"):
        stream.process(Co())
    with pytest.raises(GraphError, match="expects a ProcessFunction instance, got function"):
        stream.process(lambda v, ctx: [v])  # type: ignore[arg-type]


def test_process_is_chained_like_map():
    env = rs.StreamEnvironment(parallelism=2)
    out = env.from_collection([1]).map(lambda v: v).process(Clocks())
    assert out.node.name == "process" and out.node.inputs[0].partitioner is None
    assert not out.node.keyed


@pytest.mark.parametrize("result", [{"x": 1}, "ab", b"ab", 5])
def test_a_result_that_is_no_iterable_of_records_is_refused(result):
    """A dict, str or bytes returned as it is would emit its keys or characters one by one
    (a dict returned for one record, not yielded, came out as its keys)."""

    class One(rs.ProcessFunction):
        def process_element(self, value, ctx):
            return result

    h = OperatorHarness(ProcessOperator(One()))
    with pytest.raises(UserCodeError) as info:
        h.process([1])
    assert str(info.value.original) == (
        f"process_element() of One returned a {type(result).__name__}, not an iterable of records: yield each "
        "record (or return a list of them: [record] for one)")
    assert h.records() == []


def test_lists_tuples_and_generators_are_iterables_of_records():
    class Many(rs.ProcessFunction):
        def process_element(self, value, ctx):
            if value == 0:
                return [{"x": 0}]
            if value == 1:
                return ({"x": 1},)
            return iter([{"x": value}])

    h = OperatorHarness(ProcessOperator(Many()))
    h.process([0, 1, 2])
    assert h.records() == [{"x": 0}, {"x": 1}, {"x": 2}]
