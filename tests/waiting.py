"""Waiting for a condition in tests (never for a time)."""

from __future__ import annotations

import time
from typing import Callable


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``condition`` until it is true; the timeout only turns a hang into a failure
    that names ``what`` never happened."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout_s:.0f} s: {what}")
        time.sleep(0.01)
