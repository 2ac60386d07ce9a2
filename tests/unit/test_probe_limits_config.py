"""The channel and buffer settings (``StreamEnvironment(batch_size=, flush_ms=, credits=,
buffer_bytes=)``, ``TaskConfig``) are refused when the job is built if no task could run
with them, naming the setting (no Ray).

Before, ``flush_ms=float("nan")`` was accepted and failed every task of the job with
``ValueError: Invalid value NaN (not a number)``, ``flush_ms=float("inf")`` with
``OverflowError: timestamp out of range for platform time_t``, and ``credits=2.5`` ran with
three sends in flight per channel."""

from __future__ import annotations

import math

import numpy as np
import pytest

import raystream as rs
from raystream.engine.config import JobConfig, TaskConfig
from raystream.engine.errors import ConfigError


@pytest.mark.parametrize("flush_ms", [math.nan, math.inf, -1, "50", None])
def test_a_flush_ms_no_task_can_wait_is_refused(flush_ms):
    with pytest.raises(ConfigError, match=r"flush_ms must be a (finite )?number >= 0 \(ms a partly filled batch may wait\)"):
        rs.StreamEnvironment(flush_ms=flush_ms)
    with pytest.raises(ConfigError, match="flush_ms must be a finite number >= 0"):
        TaskConfig(flush_ms=flush_ms)


@pytest.mark.parametrize("credits", [2.5, 0, True])
def test_credits_are_a_whole_number_of_sends(credits):
    with pytest.raises(ConfigError, match=r"credits must be (an int )?>= 1"):
        rs.StreamEnvironment(credits=credits)


@pytest.mark.parametrize("setting", ["batch_size", "buffer_bytes", "credits"])
def test_task_config_refuses_what_the_environment_refuses(setting):
    with pytest.raises(ConfigError, match=f"{setting} must be an int >= 1"):
        JobConfig(task=TaskConfig(**{setting: 0}))
    with pytest.raises(ConfigError, match="idle_poll_ms must be a finite number >= 0"):
        TaskConfig(idle_poll_ms=math.nan)
    with pytest.raises(ConfigError, match="channel_transport must be one of"):
        TaskConfig(channel_transport="tcp")


def test_settings_a_task_can_run_with_are_kept():
    env = rs.StreamEnvironment(flush_ms=0.5, credits=np.int64(2), buffer_bytes=1, batch_size=1)
    assert (env.task_config.flush_ms, env.task_config.credits) == (0.5, 2)
    assert TaskConfig(flush_ms=0, idle_poll_ms=0).flush_ms == 0
