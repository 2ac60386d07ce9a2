"""Window sizes, counts, bounds and lateness computed with numpy (``np.int64``, as
``arr.max()`` or ``np.int64(5) * 1000`` give) are ints to a user; they were refused with
"must be a positive int, got 5000" (the repr of np.int64 reads as an int). They are now
taken, and kept as plain ``int``. ``True`` is still refused: a bool is not a size."""

import numpy as np
import pytest

import raystream as rs
from raystream.engine.config import TaskConfig
from raystream.engine.errors import ConfigError, GraphError
from raystream.operators.windows import (
    CountTrigger,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)


@pytest.mark.parametrize("size", [np.int64(2), np.int32(2), np.uint8(2)])
def test_count_window_takes_a_numpy_integer_and_fires_every_size_records(size):
    rows = [{"k": i % 2, "v": i} for i in range(8)]
    env = rs.StreamEnvironment(parallelism=1)
    out = (env.from_collection(rows, batch_size=3).key_by("k").count_window(size)
           .aggregate(s=("v", "sum")).execute_and_collect())
    assert sorted(r["s"] for r in out) == sorted([0 + 2, 4 + 6, 1 + 3, 5 + 7])


def test_event_time_windows_and_bounds_take_numpy_integers_as_plain_ints():
    tumbling = TumblingEventTimeWindows.of(np.int64(5) * 1000, np.int64(-1000))
    assert (tumbling.size, tumbling.offset) == (5000, 4000)
    assert type(tumbling.size) is int and type(tumbling.offset) is int
    sliding = SlidingEventTimeWindows.of(np.int64(10), np.int16(5))
    assert [w.start for w in sliding.assign_windows(None, 12, 0)] == [10, 5]
    assert type(CountTrigger.of(np.int64(3)).count) is int
    env = rs.StreamEnvironment(parallelism=1)
    keyed = env.from_collection([{"k": 1, "ts": 1}]).key_by("k")
    joined = keyed.interval_join(keyed).between(np.int64(-5), np.int64(5))
    assert joined.bounds == (-5, 5) and all(type(b) is int for b in joined.bounds)
    windowed = keyed.window(tumbling).allowed_lateness(np.int64(100))
    assert windowed._lateness == 100 and type(windowed._lateness) is int
    assert type(TaskConfig(batch_size=np.int64(1024)).batch_size) is int


@pytest.mark.parametrize("bad", [True, 2.0, "2", np.float64(2.0), np.bool_(True)])
def test_what_is_not_an_integer_is_still_refused(bad):
    with pytest.raises(ConfigError, match="must be a positive int"):
        TumblingEventTimeWindows.of(bad)
    with pytest.raises(ConfigError, match="must be a positive int"):
        CountTrigger.of(bad)
    env = rs.StreamEnvironment(parallelism=1)
    keyed = env.from_collection([{"k": 1, "ts": 1}]).key_by("k")
    with pytest.raises(GraphError, match="count_window"):
        keyed.count_window(bad)
    with pytest.raises(GraphError, match="the lower bound must be an int"):
        keyed.interval_join(keyed).between(bad, 5)
    with pytest.raises(ConfigError, match="batch_size must be an int >= 1"):
        TaskConfig(batch_size=bad)


def test_watermark_bounds_and_idleness_take_numpy_integers_and_refuse_bools():
    from raystream.operators.time import WatermarkStrategy

    s = WatermarkStrategy.for_bounded_out_of_orderness(np.int64(2000)).with_idleness(np.int32(500))
    assert (s.bound_ms, s.idleness_ms) == (2000, 500)
    assert type(s.bound_ms) is int and type(s.idleness_ms) is int
    # with_idleness(True) was taken as an idleness of 1 ms
    with pytest.raises(ConfigError, match="idleness must be a positive int"):
        WatermarkStrategy.for_bounded_out_of_orderness(0).with_idleness(True)
    with pytest.raises(ConfigError, match="out-of-orderness bound must be a non-negative int"):
        WatermarkStrategy.for_bounded_out_of_orderness(True)
