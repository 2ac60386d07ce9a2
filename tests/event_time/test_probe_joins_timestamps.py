"""``ctx.timestamp`` in a CoProcessFunction and a BroadcastProcessFunction is the record's
event timestamp (Flink's ``Context.timestamp()``), as in the keyed process functions.

Before, ``a.connect(b).process(CoProcessFunction)`` and
``a.connect(b.broadcast(desc)).process(BroadcastProcessFunction)`` gave ``None`` for every
record, whatever the inputs' ``assign_timestamps_and_watermarks``. The operators are built
with the DataStream API (the graph builder finds each input's assigner) and run in a task
driven step by step.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import UserCodeError
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import WatermarkStrategy


class InputAndTimestamp(rs.CoProcessFunction):
    """Tags each record with its input and event timestamp."""

    def process_element1(self, value, ctx):  # noqa: ANN001
        yield ("left", value["v"], ctx.timestamp)

    def process_element2(self, value, ctx):  # noqa: ANN001
        yield ("right", value["v"], ctx.timestamp)


class RuleStamps(rs.BroadcastProcessFunction):
    def process_broadcast_element(self, value, ctx):  # noqa: ANN001
        ctx.get_broadcast_state("rules")[value["v"]] = ctx.timestamp

    def process_element(self, value, ctx):  # noqa: ANN001
        yield (value["v"], ctx.timestamp, dict(ctx.get_broadcast_state("rules")))


def operator_of(stream: rs.DataStream, **kw) -> OperatorHarness:  # noqa: ANN003
    factory = stream.node.operator_factory
    assert factory is not None
    return OperatorHarness(factory(), **kw)


def streams(env: rs.StreamEnvironment) -> tuple[rs.DataStream, rs.DataStream]:
    by_column = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    by_function = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r["at"] * 1000)
    a = env.from_collection([]).map(lambda r: r).assign_timestamps_and_watermarks(by_column)
    b = env.from_collection([]).map(lambda r: r).assign_timestamps_and_watermarks(by_function)
    return a, b


def test_co_process_function_sees_each_inputs_event_timestamps() -> None:
    env = rs.StreamEnvironment(parallelism=2)
    a, b = streams(env)
    h = operator_of(a.connect(b).process(InputAndTimestamp()))
    h.process([{"v": 1, "ts": 10}, {"v": 2, "ts": 7}], 0)
    h.process([{"v": 3, "at": 2}], 1)
    assert h.take() == [("left", 1, 10), ("left", 2, 7), ("right", 3, 2000)]


def test_co_process_without_timestamps_gives_none_and_needs_no_timestamp_field() -> None:
    env = rs.StreamEnvironment()
    a, _ = streams(env)
    plain = env.from_collection([]).map(lambda r: r)
    h = operator_of(a.map(lambda r: {"v": r["v"]}).connect(plain).process(InputAndTimestamp()))
    h.process([{"v": 5}], 1)  # no assigner upstream of input 1
    assert h.take() == [("right", 5, None)]
    with pytest.raises(UserCodeError, match="timestamp"):  # the function asks, the record has no "ts"
        h.process([{"v": 4}], 0)


def test_broadcast_process_function_sees_event_timestamps_on_both_inputs() -> None:
    env = rs.StreamEnvironment(parallelism=2)
    a, b = streams(env)
    h = operator_of(a.connect(b.broadcast("rules")).process(RuleStamps()))
    h.process([{"v": "r1", "at": 3}], 1)
    h.process([{"v": 1, "ts": 10}, {"v": 2, "ts": 11}], 0)
    assert h.take() == [(1, 10, {"r1": 3000}), (2, 11, {"r1": 3000})]


class CountPerKey(rs.KeyedCoProcessFunction):
    """Never reads ``ctx.timestamp``."""

    def process_element1(self, value, ctx):  # noqa: ANN001
        yield ("left", ctx.get_current_key())

    def process_element2(self, value, ctx):  # noqa: ANN001
        yield ("right", ctx.get_current_key())


class TimerAtTimestamp(CountPerKey):
    def process_element1(self, value, ctx):  # noqa: ANN001
        ctx.timer_service().register_event_time_timer(ctx.timestamp)
        yield ("left", ctx.get_current_key())

    def on_timer(self, timestamp, ctx):  # noqa: ANN001
        yield ("timer", ctx.get_current_key(), timestamp)


def test_keyed_co_process_reads_timestamps_only_when_asked(state_backend) -> None:
    """A keyed co-process function that never reads ``ctx.timestamp`` needs no timestamp
    field in its records (before, every batch's timestamps were extracted up front, and a
    record that a map had stripped of its ``ts`` failed the job); one that reads it gets it."""
    env = rs.StreamEnvironment(parallelism=2)
    a, b = streams(env)
    stripped = a.map(lambda r: {"k": r["k"]})  # (the assigner upstream still reads "ts")
    for function, records, want in [
        (CountPerKey(), [{"k": "x"}], [("left", "x")]),
        (TimerAtTimestamp(), [{"k": "x", "ts": 5}], [("left", "x"), ("timer", "x", 5)]),
    ]:
        source = a if isinstance(function, TimerAtTimestamp) else stripped
        h = operator_of(source.connect(b).key_by("k", "k").process(function), state_backend=state_backend)
        h.process(records, 0)
        h.advance_watermark(10, 0)
        h.advance_watermark(10, 1)
        assert h.take() == want
    h = operator_of(stripped.connect(b).key_by("k", "k").process(TimerAtTimestamp()), state_backend=state_backend)
    with pytest.raises(UserCodeError, match="timestamp"):
        h.process([{"k": "x"}], 0)
