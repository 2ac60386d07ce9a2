"""Records that reach an event-time operator without a timestamp downstream of a window (a
processing-time timer's output: Flink erases its timestamp) are refused, naming the record and
the window, instead of being read with the upstream assigner, which would take a field of a
window's result as their time (the count of a (key, count) result: dropped as late, with only
a log warning). A process function sees ctx.timestamp None for them, as Flink's. Records
that carry their timestamps (a window's results) are taken as before."""
from __future__ import annotations

from typing import Any

import pytest

import raystream as rs
from raystream.engine.errors import ConfigError
from raystream.engine.records import Batch
from raystream.operators.testing import OperatorHarness
from raystream.operators.windows import TumblingEventTimeWindows


class Count(rs.ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Any) -> Any:
        yield (key, len(list(elements)))


class Debounce(rs.KeyedProcessFunction):
    """Emits the key's last record from a processing-time timer: without a timestamp."""

    def process_element(self, value: Any, ctx: Any) -> Any:
        self.last = value
        ctx.timer_service().register_processing_time_timer(ctx.timer_service().current_processing_time() + 10)

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        yield self.last


class Stamp(rs.ProcessFunction):
    def process_element(self, value: Any, ctx: Any) -> Any:
        yield (value, ctx.timestamp)


def _debounced() -> Any:
    env = rs.StreamEnvironment(parallelism=1)
    events = env.from_collection([("k1", 5), ("k1", 7), ("k1", 900)]).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1]))
    counts = events.key_by(lambda r: r[0]).window(TumblingEventTimeWindows.of(1000)).process(Count())
    return counts.key_by(lambda r: r[0]).process(Debounce())


def test_a_processing_time_timers_output_carries_no_timestamp() -> None:
    h = OperatorHarness(_debounced().node.operator_factory())
    h.process(Batch.stamped([("k1", 3)], [999]))
    h.advance_processing_time(10_000)
    assert h.records() == [("k1", 3)] and [b.timestamps for b in h.output.batches] == [None]


def test_an_event_time_window_refuses_a_record_without_a_timestamp_after_a_window() -> None:
    second = _debounced().key_by(lambda r: r[0]).window(TumblingEventTimeWindows.of(2000)).apply(
        lambda k, w, rs_: [(k, w.start, list(rs_))])
    h = OperatorHarness(second.node.operator_factory())
    h.process(Batch.stamped([("k1", 2)], [1999]))  # (a record with its timestamp: windowed by it)
    with pytest.raises(ConfigError, match=r"the record \('k1', 3\) carries no event timestamp.*window 'window_process'"):
        h.process(Batch.of_records([("k1", 3)]))  # (before: the count 3 taken as its time)
    h.advance_watermark(5_000)
    assert h.records() == [("k1", 0, [("k1", 2)])]


def test_a_vectorized_window_aggregate_refuses_a_record_without_a_timestamp_after_a_window() -> None:
    env = rs.StreamEnvironment(parallelism=2)
    events = env.from_collection([{"k": "a", "ts": 5}]).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts"))
    firsts = events.key_by("k").window(TumblingEventTimeWindows.of(1000)).reduce(lambda a, b: a)
    debounced = firsts.key_by("k").process(Debounce())
    for combine in (False, True):
        out = debounced.key_by("k").window(TumblingEventTimeWindows.of(2000)).aggregate(n=("ts", "count"), combine=combine)
        node = out.node.inputs[0].source if combine else out.node  # (the combiner: the first to read the time)
        h = OperatorHarness(node.operator_factory())
        with pytest.raises(ConfigError, match=r"the record \{'k': 'a', 'ts': 5\} carries no event timestamp.*'window_reduce'"):
            h.process(Batch.of_records([{"k": "a", "ts": 5}]))


def test_a_process_function_sees_no_timestamp_on_a_record_without_one_after_a_window() -> None:
    stamped = _debounced().process(Stamp())
    h = OperatorHarness(stamped.node.operator_factory())
    h.process(Batch.of_records([("k1", 3)]))
    h.process(Batch.stamped([("k1", 4)], [1999]))
    assert h.records() == [(("k1", 3), None), (("k1", 4), 1999)]  # (before: the count 3 as ctx.timestamp)


def test_with_timestamp_or_an_assigner_after_the_window_reads_the_records_field() -> None:
    debounced = _debounced()
    given = debounced.key_by(lambda r: r[0]).window(TumblingEventTimeWindows.of(2000)).with_timestamp(
        lambda r: 1000 + r[1]).apply(lambda k, w, rs_: [(k, w.start, list(rs_))])
    restamped = debounced.assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: 1000 + r[1])).key_by(
        lambda r: r[0]).window(TumblingEventTimeWindows.of(2000)).apply(lambda k, w, rs_: [(k, w.start, list(rs_))])
    for out in (given, restamped):
        h = OperatorHarness(out.node.operator_factory())
        h.process(Batch.of_records([("k1", 3)]))
        h.advance_watermark(5_000)
        assert h.records() == [("k1", 0, [("k1", 3)])]
