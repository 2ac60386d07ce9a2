"""Restart strategies: how often and how soon a failed job is restarted from its latest
complete checkpoint (Flink names: no restart, fixed delay, exponential backoff).

Example:
    >>> s = RestartStrategy.fixed_delay(attempts=3, delay_ms=100)
    >>> [s.next_delay_s(n) for n in (1, 2, 3, 4)]
    [0.1, 0.1, 0.1, None]
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["RestartStrategy"]


@dataclass(frozen=True)
class RestartStrategy:
    """``kind`` is "none", "fixed_delay" or "exponential_backoff"."""

    kind: str = "none"
    attempts: int = 0
    delay_ms: int = 0
    max_delay_ms: int = 0
    multiplier: float = 2.0

    @staticmethod
    def none() -> "RestartStrategy":
        """Fail the job at the first task failure."""
        return RestartStrategy("none")

    @staticmethod
    def fixed_delay(attempts: int = 3, delay_ms: int = 500) -> "RestartStrategy":
        """Restart up to ``attempts`` times, waiting ``delay_ms`` before each restart."""
        attempts, delay_ms = _count("fixed_delay", "attempts", attempts), _count("fixed_delay", "delay_ms", delay_ms)
        return RestartStrategy("fixed_delay", attempts, delay_ms)

    @staticmethod
    def exponential_backoff(initial_ms: int = 100, max_ms: int = 10_000, multiplier: float = 2.0,
                            attempts: int = 10) -> "RestartStrategy":
        """Restart up to ``attempts`` times, the delay growing by ``multiplier`` up to ``max_ms``."""
        initial_ms, max_ms = _count("exponential_backoff", "initial_ms", initial_ms), _count("exponential_backoff", "max_ms", max_ms)
        attempts = _count("exponential_backoff", "attempts", attempts)
        if isinstance(multiplier, bool) or not isinstance(multiplier, numbers.Real) or max_ms < initial_ms or multiplier < 1:
            raise ConfigError("exponential_backoff needs 0 <= initial_ms <= max_ms, multiplier >= 1, attempts >= 0; "
                              f"got initial_ms={initial_ms!r}, max_ms={max_ms!r}, multiplier={multiplier!r}")
        return RestartStrategy("exponential_backoff", attempts, initial_ms, max_ms, float(multiplier))

    def next_delay_s(self, failures: int) -> float | None:
        """Seconds to wait before restart number ``failures`` (1-based), or None to give up."""
        if self.kind == "none" or failures > self.attempts:
            return None
        if self.kind == "fixed_delay":
            return self.delay_ms / 1000.0
        return min(self.max_delay_ms, self.delay_ms * self.multiplier ** (failures - 1)) / 1000.0


def _count(strategy: str, name: str, value: object) -> int:
    """``value`` as an int >= 0, else a ConfigError naming the setting (a float number of
    attempts was accepted, a str or None failed with a bare TypeError)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(f"{strategy} needs {name} as an int >= 0, got {value!r}")
    return int(value)
