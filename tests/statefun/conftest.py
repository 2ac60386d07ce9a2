"""Fixtures of the stateful-functions tests: function servers, and no thread left behind.

``serve(handler)`` starts a :class:`~raystream.statefun_api.testing.FunctionServer` (a
request-reply handler: ours or the official SDK's, an async ``bytes -> bytes`` callable that
may answer ``(status, body)``, or an aiohttp ``web.Application``) on an ephemeral localhost
port and stops it when the test ends, whatever the test did. ``no_remote_threads`` checks
that a test left no remote-call I/O thread or server thread running (a ``LocalDispatchers``
closes its caller, a server its loop).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

#: name prefixes of the threads the remote-function tests start
REMOTE_THREADS = ("statefun-remote", "FunctionServer")


def remote_threads() -> set[threading.Thread]:
    """The remote-call and function-server threads alive now."""
    return {t for t in threading.enumerate() if t.name.startswith(REMOTE_THREADS)}


@pytest.fixture
def no_remote_threads() -> Iterator[None]:
    """Fail the test if remote-call or function-server threads outlive it (waits up to 5 s
    for them to end: a closed caller's thread and a stopped server's loop end shortly after)."""
    before = remote_threads()  # (a module's server started earlier is not this test's)
    yield
    deadline = time.monotonic() + 5
    while remote_threads() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    left = sorted(t.name for t in remote_threads() - before)
    assert not left, f"threads left behind: {left}"


@pytest.fixture
def serve(no_remote_threads: None) -> Iterator[Callable[[Any], Any]]:
    """``serve(handler) -> FunctionServer``: started now, stopped at the end of the test
    (which must leave no remote-call or server thread behind: ``no_remote_threads``)."""
    from raystream.statefun_api.testing import FunctionServer

    servers: list[FunctionServer] = []

    def start(handler: Any) -> FunctionServer:
        server = FunctionServer(handler).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
