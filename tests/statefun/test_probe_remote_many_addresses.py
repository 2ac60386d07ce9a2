"""Remote functions at issue 13's load: 20,000 addresses of a slow server, in one process.

The issue's scenario: a dispatcher sending to 20,000 addresses of a server that handles 64
requests at a time had 19,788 requests in flight (with ``max_in_flight=1000``), and its call
timeout counted the wait for a pooled connection, so a healthy but busy endpoint failed the
job. Here the official SDK's greeter is served by aiohttp behind a gate that works on at
most 64 requests at a time, each held a little; the dispatcher sends one message to each of
20,000 addresses (one ingress batch) with its default limits. Every address must be
greeted exactly once, the server must never see more requests at once than the subtask's
``max_concurrent_requests``, and no call may time out or be retried.

No test asserts on durations: they wait for conditions.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

statefun = pytest.importorskip("statefun")
pytest.importorskip("aiohttp")

from raystream.statefun_api import StatefulFunctions, message_builder  # noqa: E402
from raystream.statefun_api.endpoints import remote_endpoint  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402
from tests.statefun.test_remote_load import EGRESS, sdk_functions  # noqa: E402

ADDRESSES = 20_000
SERVER_SLOTS = 64  # requests the server works on at once
CAP = 128  # the subtask's max_concurrent_requests (its default is 256: half, to see the cap hold)


class SlowServer:
    """The SDK's handler behind a gate: at most ``SERVER_SLOTS`` requests worked on at once,
    each held ``hold_s``; counts the requests the server has at once (waiting included)."""

    def __init__(self, hold_s: float) -> None:
        self.handler = statefun.RequestReplyHandler(sdk_functions())
        self.hold_s = hold_s
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.requests = 0
        self.slots: asyncio.Semaphore | None = None  # (made on the server's loop)

    async def __call__(self, body: bytes) -> bytes:
        if self.slots is None:
            self.slots = asyncio.Semaphore(SERVER_SLOTS)
        with self.lock:
            self.active += 1
            self.requests += 1
            self.max_active = max(self.max_active, self.active)
        try:
            async with self.slots:
                await asyncio.sleep(self.hold_s)
                return await self.handler.handle_async(body)
        finally:
            with self.lock:
                self.active -= 1


def test_twenty_thousand_addresses_of_a_slow_server_finish_exactly_once_within_the_cap(serve):
    server = SlowServer(hold_s=0.002)
    url = serve(server).url
    # no retries: a call that timed out fails the run. The call timeout runs from sending, so
    # the wait of most addresses for one of the CAP request slots is not counted in it
    ep = remote_endpoint("remote/*", url + "/{function.name}", call_timeout=timedelta(seconds=20), max_retries=0)
    ids = [f"a{i:05d}" for i in range(ADDRESSES)]
    with LocalDispatchers(
        StatefulFunctions(), egresses=[EGRESS], endpoints=[ep], max_concurrent_requests=CAP
    ) as run:
        run.send(*[message_builder("remote/greeter", i, str_value="hi") for i in ids])
        op = run.dispatchers[0]
        assert op.remote_in_flight() <= CAP
        run.run_until_idle()
        out = run.egress(EGRESS)
        counters = run.counters()
    assert sorted(out) == [f"{i}#1" for i in ids]  # every address once, none twice
    assert server.max_active <= CAP, f"the server had {server.max_active} requests at once (cap {CAP})"
    assert counters["remote_retries"] == 0
    # one request per address, plus the type's one missing-state handshake
    assert counters["remote_requests"] == ADDRESSES and server.requests == ADDRESSES + 1
