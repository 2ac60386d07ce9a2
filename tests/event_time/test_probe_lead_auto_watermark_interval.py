"""``env.set_auto_watermark_interval(ms)`` (Flink's ``ExecutionConfig.setAutoWatermarkInterval``)
reaches a user's ``WatermarkGenerator``: its periodic ``on_periodic_emit`` (a0abfd3) comes
every ``ms`` of processing time. Before, the interval was fixed at 200 ms, with no setting."""

from __future__ import annotations

import datetime as dt

import pytest

import raystream as rs
from raystream.engine.config import TaskConfig
from raystream.engine.errors import ConfigError
from raystream.operators.testing import ManualClock, OperatorHarness
from raystream.operators.time import (
    TimestampsAndWatermarksOperator,
    Watermark,
    WatermarkGenerator,
    WatermarkStrategy,
)


class TimeLag(WatermarkGenerator):
    """Flink's ``TimeLagWatermarkGenerator``: the clock minus ``lag``."""

    def __init__(self, clock: ManualClock, lag: int = 1_000) -> None:
        self.clock, self.lag = clock, lag

    def on_periodic_emit(self, output) -> None:
        output.emit_watermark(Watermark(self.clock.now_ms() - self.lag))


def test_the_environment_sets_the_interval_of_its_jobs():
    env = rs.StreamEnvironment(parallelism=1)
    assert env.get_auto_watermark_interval() == 200  # (Flink's default)
    assert env.set_auto_watermark_interval(dt.timedelta(milliseconds=50)) is env
    assert env.get_auto_watermark_interval() == 50
    assert env._job_config("job").task.auto_watermark_interval_ms == 50


@pytest.mark.parametrize("bad", [-1, 1.5, "200", dt.timedelta(milliseconds=-5), None])
def test_an_interval_that_is_no_span_is_refused(bad):
    with pytest.raises(ConfigError, match="auto_watermark_interval"):
        rs.StreamEnvironment().set_auto_watermark_interval(bad)
    with pytest.raises(ConfigError, match="auto_watermark_interval_ms"):
        TaskConfig(auto_watermark_interval_ms=bad)


@pytest.mark.parametrize("interval", [50, 1_000])
def test_the_task_config_interval_paces_the_periodic_emits(interval):
    clock = ManualClock(10_000)
    strategy = WatermarkStrategy.for_generator(lambda: TimeLag(clock)).with_timestamp_column("ts")
    h = OperatorHarness(TimestampsAndWatermarksOperator(strategy), clock=clock,
                        task_config=TaskConfig(auto_watermark_interval_ms=interval))
    assert h.pending_processing_timers == [10_000 + interval]
    h.advance_processing_time(10_000 + interval)
    assert h.output.watermarks[-1] == 10_000 + interval - 1_000
    assert h.pending_processing_timers == [10_000 + 2 * interval]


def test_interval_zero_emits_after_batches_only():
    clock = ManualClock(10_000)
    strategy = WatermarkStrategy.for_generator(lambda: TimeLag(clock)).with_timestamp_column("ts")
    h = OperatorHarness(TimestampsAndWatermarksOperator(strategy), clock=clock,
                        task_config=TaskConfig(auto_watermark_interval_ms=0))
    assert h.pending_processing_timers == []


def test_pyflinks_get_config_says_where_the_interval_is_set():
    with pytest.raises(AttributeError, match=r"set_auto_watermark_interval\(ms\)"):
        rs.StreamEnvironment().get_config()
