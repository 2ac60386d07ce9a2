"""A keyed stream connected with a broadcast stream (Flink's KeyedBroadcastProcessFunction):
``a.key_by(k).connect(rules.broadcast("rules")).process(BroadcastProcessFunction)``.

``process_element`` sees the record's key, keyed state and timers; ``on_timer`` gets the
timers with their key and read-only broadcast state; all of it survives a snapshot restored
at another parallelism. Before, the function ran unkeyed: ``ctx.get_current_key()`` was None
for every record (silently), keyed state failed with "has no keyed state: keyed state needs
a keyed stream (key_by(...) before process())" although the stream was keyed, and
``ctx.timer_service()`` was None.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.engine.errors import ConfigError
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import WatermarkStrategy
from raystream.operators.timers import NonKeyedTimerService

STRATEGY = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")


class AboveLimit(rs.BroadcastProcessFunction):
    """Counts each key's records above the broadcast limit; reports the count at the end of
    each 100 ms bucket of event time (an event-time timer) and at processing time 5,000."""

    def open(self, ctx):  # noqa: ANN001
        self.above = ctx.get_state(ValueStateDescriptor("above", default=0))

    def process_broadcast_element(self, value, ctx):  # noqa: ANN001
        assert ctx.get_current_key() is None  # no key here, and no timers:
        assert isinstance(ctx.timer_service(), NonKeyedTimerService)
        ctx.get_broadcast_state("rules")["limit"] = value["limit"]

    def process_element(self, value, ctx):  # noqa: ANN001
        limit = ctx.get_broadcast_state("rules").get("limit", 0)
        if value["v"] > limit:
            self.above.update(self.above.value() + 1)
        ctx.timer_service().register_event_time_timer(ctx.timestamp - ctx.timestamp % 100 + 99)
        ctx.timer_service().register_processing_time_timer(5_000)
        yield ("seen", ctx.get_current_key(), value["v"])

    def on_timer(self, timestamp, ctx):  # noqa: ANN001
        yield (ctx.time_domain(), ctx.get_current_key(), timestamp, self.above.value(),
               ctx.get_broadcast_state("rules")["limit"])


def keyed_broadcast(function: rs.BroadcastProcessFunction) -> rs.DataStream:
    env = rs.StreamEnvironment(parallelism=2)
    events = env.from_collection([]).assign_timestamps_and_watermarks(STRATEGY).key_by("k")
    rules = env.from_collection([])
    return events.connect(rules.broadcast("rules")).process(function)


def harness(function: rs.BroadcastProcessFunction, **kw) -> OperatorHarness:  # noqa: ANN003
    factory = keyed_broadcast(function).node.operator_factory
    assert factory is not None
    return OperatorHarness(factory(), **kw)


EVENTS = [{"k": "a", "ts": 10, "v": 7}, {"k": "b", "ts": 20, "v": 2}, {"k": "a", "ts": 130, "v": 9},
          {"k": "é", "ts": 150, "v": 6}, {"k": None, "ts": 160, "v": 8}]


def test_keyed_broadcast_function_has_keys_keyed_state_and_timers(state_backend) -> None:
    assert keyed_broadcast(AboveLimit()).node.keyed
    h = harness(AboveLimit(), state_backend=state_backend)
    h.process([{"limit": 5}], 1)
    h.process(EVENTS, 0)
    assert h.take() == [("seen", "a", 7), ("seen", "b", 2), ("seen", "a", 9), ("seen", "é", 6), ("seen", None, 8)]
    h.advance_watermark(100, 0)
    h.advance_watermark(100, 1)
    assert sorted(h.take(), key=repr) == [("event_time", "a", 99, 2, 5), ("event_time", "b", 99, 0, 5)]
    h.advance_watermark(200, 0)
    h.advance_watermark(200, 1)
    assert sorted(h.take(), key=repr) == [("event_time", "a", 199, 2, 5), ("event_time", "é", 199, 1, 5),
                                          ("event_time", None, 199, 1, 5)]
    h.advance_processing_time(5_000)
    assert sorted(h.take(), key=repr) == sorted([("processing_time", k, 5_000, n, 5)
                                                 for k, n in (("a", 2), ("b", 0), ("é", 1), (None, 1))], key=repr)


def test_keyed_broadcast_state_timers_and_rules_restore_rescaled(state_backend) -> None:
    h = harness(AboveLimit(), state_backend=state_backend)
    h.process([{"limit": 5}], 1)
    h.process(EVENTS, 0)
    snap = h.snapshot()
    fired = []
    for i in range(2):
        r = harness(AboveLimit(), subtask_index=i, parallelism=2, restore=[snap], state_backend=state_backend)
        groups = KeyGroupRange.for_subtask(i, 2, 128)
        r.process([e for e in [{"k": "a", "ts": 170, "v": 1}, {"k": "b", "ts": 180, "v": 11}]
                   if key_group_for(e["k"], 128) in groups], 0)  # the restored limit (5) applies
        r.advance_watermark(300, 0)
        r.advance_watermark(300, 1)
        fired += [x for x in r.take() if x[0] == "event_time"]
    assert sorted(fired, key=repr) == sorted([("event_time", "a", 99, 2, 5), ("event_time", "a", 199, 2, 5),
                                              ("event_time", "b", 99, 1, 5), ("event_time", "b", 199, 1, 5),
                                              ("event_time", "é", 199, 1, 5), ("event_time", None, 199, 1, 5)],
                                             key=repr)


class TimersWithoutOnTimer(rs.BroadcastProcessFunction):
    def process_broadcast_element(self, value, ctx):  # noqa: ANN001
        pass

    def process_element(self, value, ctx):  # noqa: ANN001
        ctx.timer_service().register_event_time_timer(1)


def test_a_timer_without_on_timer_names_the_function_and_the_remedy() -> None:
    h = harness(TimersWithoutOnTimer())
    h.process([{"k": "a", "ts": 0}], 0)
    with pytest.raises(Exception, match="TimersWithoutOnTimer registered a timer .* no on_timer"):
        h.advance_watermark(5, 0)
        h.advance_watermark(5, 1)


def test_a_non_keyed_stream_still_runs_unkeyed() -> None:
    env = rs.StreamEnvironment(parallelism=2)
    s = env.from_collection([]).connect(env.from_collection([]).broadcast("rules")).process(AboveLimit())
    assert not s.node.keyed
    factory = s.node.operator_factory
    assert factory is not None
    with pytest.raises(ConfigError, match=r"has no keyed state: keyed state needs a keyed stream \(key_by"):
        OperatorHarness(factory())  # the function's open() asks for keyed state
