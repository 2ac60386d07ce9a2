"""The spans 840b086 left taking ints only take a ``datetime.timedelta`` too, as window sizes
and watermark strategies do: ``allowed_lateness`` (windows and window joins),
``IntervalJoin.between`` and ``TimeEvictor``. Before, each refused a timedelta."""

from __future__ import annotations

import datetime as dt

import pytest

import raystream as rs
from raystream.engine.errors import ConfigError, GraphError
from raystream.operators.evictors import TimeEvictor

SECOND = dt.timedelta(seconds=1)


def keyed(env: rs.StreamEnvironment, items: list) -> rs.KeyedStream:
    return env.from_collection(items).key_by(lambda x: x)


def test_allowed_lateness_takes_a_timedelta():
    env = rs.StreamEnvironment(parallelism=1)
    w = keyed(env, [1]).window(rs.TumblingEventTimeWindows.of(5_000)).allowed_lateness(SECOND)
    assert w._lateness == 1_000
    with pytest.raises(GraphError, match=r"allowed_lateness .*-1000 ms"):
        keyed(env, [1]).window(rs.TumblingEventTimeWindows.of(5_000)).allowed_lateness(-SECOND)


def test_window_join_allowed_lateness_takes_a_timedelta():
    env = rs.StreamEnvironment(parallelism=1)
    joined = (env.from_collection([1]).join(env.from_collection([2])).where(lambda x: x).equal_to(lambda x: x)
              .window(rs.TumblingEventTimeWindows.of(5_000)).allowed_lateness(2 * SECOND))
    assert joined._lateness == 2_000


def test_interval_join_bounds_take_timedeltas():
    env = rs.StreamEnvironment(parallelism=1)
    join = keyed(env, [1]).interval_join(keyed(env, [2])).between(-SECOND, dt.timedelta(milliseconds=500))
    assert join.bounds == (-1_000, 500)
    with pytest.raises(ConfigError, match="whole milliseconds"):
        keyed(env, [1]).interval_join(keyed(env, [2])).between(dt.timedelta(microseconds=1), SECOND)


def test_time_evictor_takes_a_timedelta():
    assert TimeEvictor(2 * SECOND).window_size == 2_000
    with pytest.raises(ConfigError, match=r"-2000 ms"):
        TimeEvictor(-2 * SECOND)
