"""Waiting for a condition in tests (never for a time)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout_s: float = 60.0, poll_s: float = 0.01) -> T:
    """Poll ``condition`` until it returns something true, and return that; the timeout only
    turns a hang into a failure that names ``what`` never happened."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout_s:.0f} s: {what}")
        time.sleep(poll_s)
