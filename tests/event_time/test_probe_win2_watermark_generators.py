"""``WatermarkStrategy.for_generator(factory)`` with a user's ``WatermarkGenerator``
(Flink's ``forGenerator``): ``on_event(event, timestamp, output)`` per record,
``on_periodic_emit(output)`` after each batch, ``output.emit_watermark(Watermark(t))`` and
``output.mark_idle()``; punctuated and periodic generators, on the operator path and pushed
into the source reader (per split), compared with a plain-Python reference of a window
downstream at parallelism 1 and 2. Before, a strategy could only be bounded
out-of-orderness / monotonous: a Flink port's punctuated generator had no equivalent."""

from __future__ import annotations

from collections import Counter

import pytest

import raystream as rs
from raystream.engine.errors import ConfigError, UserCodeError
from raystream.engine.events import Watermark
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import (
    TimestampsAndWatermarksOperator,
    WatermarkGenerator,
    WatermarkStrategy,
)
from raystream.operators.windows import TumblingEventTimeWindows


class Punctuated(WatermarkGenerator):
    """A watermark at each record flagged ``eow`` (end of window), none otherwise."""

    def on_event(self, event, event_timestamp, output):
        if event.get("eow"):
            output.emit_watermark(Watermark(event_timestamp))

    def on_periodic_emit(self, output):
        pass


class Bounded(WatermarkGenerator):
    """Flink's BoundedOutOfOrdernessWatermarks, written as a user would."""

    def __init__(self, bound):
        self.bound = bound
        self.max_ts = None

    def on_event(self, event, event_timestamp, output):
        self.max_ts = event_timestamp if self.max_ts is None else max(self.max_ts, event_timestamp)

    def on_periodic_emit(self, output):
        if self.max_ts is not None:
            output.emit_watermark(self.max_ts - self.bound - 1)


def harness(factory):
    return OperatorHarness(TimestampsAndWatermarksOperator(
        WatermarkStrategy.for_generator(factory).with_timestamp_column("ts")))


def test_a_punctuated_generator_emits_at_its_records_only():
    h = harness(Punctuated)
    h.process([{"ts": 5}, {"ts": 9, "eow": True}, {"ts": 7}])
    h.process([{"ts": 12}])
    h.process([{"ts": 30, "eow": True}, {"ts": 20, "eow": True}])  # a smaller one never goes back
    assert h.watermarks == [9, 30]
    assert [r["ts"] for r in h.records()] == [5, 9, 7, 12, 30, 20]


def test_a_periodic_generator_equals_the_built_in_bounded_strategy():
    mine, built_in = harness(lambda: Bounded(3)), OperatorHarness(TimestampsAndWatermarksOperator(
        WatermarkStrategy.for_bounded_out_of_orderness(3).with_timestamp_column("ts")))
    for batch in ([{"ts": 10}, {"ts": 4}], [{"ts": 8}], [{"ts": 25}, {"ts": 30}], [{"ts": 29}]):
        mine.process(batch)
        built_in.process(batch)
    assert mine.watermarks == built_in.watermarks == [6, 26]


def test_mark_idle_announces_idle_and_the_next_records_make_it_active():
    class IdleOnFlag(WatermarkGenerator):
        def on_event(self, event, event_timestamp, output):
            if event.get("idle"):
                output.mark_idle()
            else:
                output.emit_watermark(event_timestamp - 1)

    h = harness(IdleOnFlag)
    h.process([{"ts": 5}])
    h.process([{"ts": 6, "idle": True}])
    h.process([{"ts": 9}])
    assert h.output.statuses == [True, False]
    assert h.watermarks == [4, 8]


def test_bad_generators_are_refused_naming_them():
    with pytest.raises(ConfigError, match="not a WatermarkGenerator"):
        harness(lambda: object())
    with pytest.raises(ConfigError, match="pass a function"):
        WatermarkStrategy.for_generator(Punctuated())

    class Broken(WatermarkGenerator):
        def on_event(self, event, event_timestamp, output):
            if event_timestamp == 7:
                raise ValueError("boom")

    h = harness(Broken)
    with pytest.raises(UserCodeError) as err:
        h.process([{"ts": 5}, {"ts": 7, "k": "x"}])
    assert "Broken.on_event of record {'ts': 7, 'k': 'x'}" == err.value.record
    with pytest.raises(ConfigError, match="emit_watermark"):
        harness(lambda: _Emits("soon")).process([{"ts": 1}])


class _Emits(WatermarkGenerator):
    def __init__(self, value):
        self.value = value

    def on_event(self, event, event_timestamp, output):
        output.emit_watermark(self.value)


def reference(rows, size):
    return sorted(Counter((r["k"], r["ts"] - r["ts"] % size) for r in rows).items())


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("on_source", [True, False])
def test_windows_downstream_of_a_user_generator_end_to_end(parallelism, on_source):
    rows = [{"k": f"k{i % 3}", "ts": 1000 + 7 * i, "eow": i % 10 == 9} for i in range(300)]
    env = rs.StreamEnvironment(parallelism=parallelism)
    stream = env.from_collection(rows)
    if not on_source:
        stream = stream.map(dict)  # the operator path (not pushed into the source reader)
    out = (stream.assign_timestamps_and_watermarks(
               WatermarkStrategy.for_generator(Punctuated).with_timestamp_column("ts"))
           .key_by("k").window(TumblingEventTimeWindows.of(100))
           .aggregate(n=("ts", "count")).execute_and_collect())
    got = sorted(((r["k"], r["window_start"]), r["n"]) for r in out)
    assert got == reference(rows, 100)  # in order per split: nothing is late, the final watermark fires the rest


class _FailsAt(WatermarkGenerator):
    def on_event(self, event, event_timestamp, output):
        if event_timestamp == 1070:
            raise ValueError("generator ran")


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("on_source", [True, False])
def test_the_user_generator_runs_on_both_paths(on_source):
    rows = [{"k": "a", "ts": 1000 + 7 * i} for i in range(20)]
    env = rs.StreamEnvironment(parallelism=2)
    stream = env.from_collection(rows)
    if not on_source:
        stream = stream.map(dict)
    stream = stream.assign_timestamps_and_watermarks(WatermarkStrategy.for_generator(_FailsAt).with_timestamp_column("ts"))
    with pytest.raises(rs.JobFailed, match="generator ran"):
        stream.key_by("k").window(TumblingEventTimeWindows.of(100)).aggregate(n=("ts", "count")).execute_and_collect()
