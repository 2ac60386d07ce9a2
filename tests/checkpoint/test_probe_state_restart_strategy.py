"""Restart strategies take whole numbers of attempts and milliseconds, and refuse anything
else naming the setting: ``fixed_delay(2.5, 10)`` was accepted (a job then restarted a
number of times nobody asked for), ``fixed_delay("3", 10)`` and ``fixed_delay(3, None)``
raised a bare ``TypeError`` from a comparison."""

from __future__ import annotations

import numpy as np
import pytest

import raystream as rs
from raystream.engine.errors import ConfigError


@pytest.mark.parametrize("make, setting", [
    (lambda: rs.RestartStrategy.fixed_delay(2.5, 10), "attempts"),
    (lambda: rs.RestartStrategy.fixed_delay("3", 10), "attempts"),
    (lambda: rs.RestartStrategy.fixed_delay(True, 10), "attempts"),
    (lambda: rs.RestartStrategy.fixed_delay(3, None), "delay_ms"),
    (lambda: rs.RestartStrategy.fixed_delay(3, -1), "delay_ms"),
    (lambda: rs.RestartStrategy.exponential_backoff(initial_ms="100"), "initial_ms"),
    (lambda: rs.RestartStrategy.exponential_backoff(attempts=1.5), "attempts"),
    (lambda: rs.RestartStrategy.exponential_backoff(multiplier="2"), "multiplier"),
    (lambda: rs.RestartStrategy.exponential_backoff(initial_ms=500, max_ms=100), "max_ms"),
])
def test_a_bad_setting_is_a_config_error_naming_it(make, setting):
    with pytest.raises(ConfigError, match=setting):
        make()


def test_good_settings_keep_their_meaning():
    s = rs.RestartStrategy.fixed_delay(np.int64(2), 100)
    assert (s.attempts, type(s.attempts)) == (2, int)
    assert [s.next_delay_s(n) for n in (1, 2, 3)] == [0.1, 0.1, None]
    e = rs.RestartStrategy.exponential_backoff(100, 1000, 3, attempts=4)
    assert [e.next_delay_s(n) for n in (1, 2, 3, 4, 5)] == [0.1, 0.3, 0.9, 1.0, None]
