"""Joins and connected streams downstream of a window, fed records without a timestamp (a
processing-time timer's output, as Flink's): an interval join or an event-time window join
refuses such a record, naming it and the window, instead of reading a field of a window's
result as its time with the upstream assigner (the count of a (key, count) result); a
co-process or broadcast process function sees ``ctx.timestamp`` None for it, as Flink's; a
join downstream of a count window (whose results carry the largest watermark as their time)
is refused when the job is built. Records that carry their timestamps are taken as before."""
from __future__ import annotations

from typing import Any

import pytest

import raystream as rs
from raystream.engine.errors import ConfigError, GraphError
from raystream.engine.records import Batch
from raystream.operators.testing import OperatorHarness
from raystream.operators.windows import TumblingEventTimeWindows
from tests.event_time.test_probe_ts2_unstamped_after_window import Count, Debounce


class StampBoth(rs.KeyedCoProcessFunction):
    def process_element1(self, value: Any, ctx: Any) -> Any:
        yield ("1", value, ctx.timestamp)

    def process_element2(self, value: Any, ctx: Any) -> Any:
        yield ("2", value, ctx.timestamp)


def _streams() -> tuple[Any, Any]:
    """(the debounced window results, a plain stamped stream) of one environment."""
    env = rs.StreamEnvironment(parallelism=1)
    events = env.from_collection([("k1", 5), ("k1", 7), ("k1", 900)]).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1]))
    counts = events.key_by(lambda r: r[0]).window(TumblingEventTimeWindows.of(1000)).process(Count())
    return counts.key_by(lambda r: r[0]).process(Debounce()), events


def test_an_interval_join_refuses_a_record_without_a_timestamp_after_a_window() -> None:
    debounced, events = _streams()
    joined = debounced.key_by(lambda r: r[0]).interval_join(events.key_by(lambda r: r[0])).between(-1000, 1000).process(
        lambda a, b: (a, b))
    h = OperatorHarness(joined.node.operator_factory())
    h.process(Batch.stamped([("k1", 2)], [999]), input_index=0)  # (carries its time: taken)
    with pytest.raises(ConfigError, match=r"the record \('k1', 3\) carries no event timestamp.*window 'window_process'"):
        h.process(Batch.of_records([("k1", 3)]), input_index=0)  # (before: the count 3 read as its time)


def test_a_window_join_refuses_a_record_without_a_timestamp_after_a_window() -> None:
    debounced, events = _streams()
    joined = (debounced.join(events).where(lambda r: r[0]).equal_to(lambda r: r[0])
              .window(TumblingEventTimeWindows.of(1000)).apply(lambda a, b: (a, b)))
    h = OperatorHarness(joined.node.operator_factory())
    with pytest.raises(ConfigError, match=r"the record \('k1', 3\) carries no event timestamp"):
        h.process(Batch.of_records([("k1", 3)]), input_index=0)


def test_a_co_process_function_sees_no_timestamp_on_a_record_without_one_after_a_window() -> None:
    debounced, events = _streams()
    both = debounced.connect(events).key_by(lambda r: r[0], lambda r: r[0]).process(StampBoth())
    h = OperatorHarness(both.node.operator_factory())
    h.process(Batch.of_records([("k1", 3)]), input_index=0)
    h.process(Batch.stamped([("k1", 4)], [1999]), input_index=0)
    h.process(Batch.of_records([("k1", 7)]), input_index=1)  # (no window upstream: its assigner reads r[1])
    assert h.records() == [("1", ("k1", 3), None), ("1", ("k1", 4), 1999), ("2", ("k1", 7), 7)]


def test_a_join_after_a_count_window_is_refused_when_built() -> None:
    env = rs.StreamEnvironment(parallelism=1)
    events = env.from_collection([("k1", 5)]).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1]))
    pairs = events.key_by(lambda r: r[0]).count_window(2).reduce(lambda a, b: a)
    with pytest.raises(GraphError, match=r"interval_join \(first input\) reads the results of .*GlobalWindows"):
        pairs.key_by(lambda r: r[0]).interval_join(events.key_by(lambda r: r[0])).between(-1, 1).process(lambda a, b: a)
    with pytest.raises(GraphError, match=r"window_join \(first input\) reads the results of .*GlobalWindows"):
        (pairs.join(events).where(lambda r: r[0]).equal_to(lambda r: r[0])
         .window(TumblingEventTimeWindows.of(1000)).apply(lambda a, b: a))
