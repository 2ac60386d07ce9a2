"""A source reader that says it is idle (``SourceReader.is_idle()``: no split to read) does
not hold the watermark back when the source has a watermark strategy.

``assign_timestamps_and_watermarks`` on a source wraps its reader to make watermarks per
split; the wrapper ignored the reader's own ``is_idle()``. With fewer splits than subtasks (one
Redis stream at parallelism 2), the subtask without a split held every downstream watermark
at its minimum: event-time windows never fired (0 windows after 15 s at p=2; 38 at p=1)."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.connectors import NOTHING_AVAILABLE
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import ManualClock, OperatorContext
from raystream.operators.time import WatermarkedSource, WatermarkStrategy
from tests.waiting import wait_for


class NoSplitsReader(rs.SourceReader):
    def __init__(self, idle: bool) -> None:
        self.idle = idle

    def add_splits(self, splits):
        pass

    def poll_next(self):
        return NOTHING_AVAILABLE

    def snapshot_state(self, checkpoint_id):
        return []

    def is_idle(self):
        return self.idle


class OneReaderSource(rs.Source):
    bounded = False

    def __init__(self, idle: bool) -> None:
        self.idle = idle

    def create_splits(self, parallelism):
        return []

    def create_reader(self, ctx):
        return NoSplitsReader(self.idle)


def context() -> OperatorContext:
    return OperatorContext(operator_name="src", operator_uid="src", task_name="src", subtask_index=1, parallelism=2,
                           max_parallelism=128, key_group_range=KeyGroupRange(64, 127), clock=ManualClock(0))


@pytest.mark.parametrize("idle", [True, False])
def test_the_watermarked_reader_is_idle_when_its_reader_is(idle):
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    reader = WatermarkedSource(OneReaderSource(idle), strategy).create_reader(context())
    assert reader.is_idle() is idle  # (no idleness timeout set: only the reader's word)


def test_event_time_windows_fire_with_fewer_redis_streams_than_subtasks(redis_url, redis_client, tmp_path):
    from raystream import RedisStreamSource

    for i in range(200):
        redis_client.xadd("ev", {"k": str(i % 2), "ts": str(i * 100)})
    env = rs.StreamEnvironment(parallelism=2, flush_ms=10)
    env.enable_checkpointing(100, checkpoint_dir=str(tmp_path))  # (the Redis sink commits on checkpoints)
    stream = env.from_source(RedisStreamSource("ev", redis_url, bounded=False)).assign_timestamps_and_watermarks(
        WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda d: int(d["ts"])))
    fired = (stream.key_by(lambda d: d["k"]).window(rs.TumblingEventTimeWindows.of(1000))
             .aggregate(n=("ts", "count")))
    fired.sink_to(rs.RedisStreamSink("win", redis_url))
    client = env.execute_async("idle-reader")
    try:
        # 20 windows of 1 s over 0..19.9 s, 2 keys: all but the last second's close
        wait_for(lambda: redis_client.xlen("win") >= 38, "38 windows of the first 19 s fired at p=2", 120)
    finally:
        client.cancel()
