"""Retries of remote calls stay inside the endpoint's request cap: a server that answers some
attempts 503 and holds every request until as many as the cap allows are in (or a short
while passed) never sees more requests at once than the endpoint's ``max_concurrent_requests``
(retries and backoff included), and every message is invoked once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

pytest.importorskip("aiohttp")

from raystream.statefun_api import (  # noqa: E402
    IntType,
    RequestReplyHandler,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.endpoints import remote_endpoint  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402

EGRESS = "probe/out"
CAP = 3


def _served() -> StatefulFunctions:
    functions = StatefulFunctions()

    @functions.bind("probe/counter", specs=[ValueSpec("n", IntType)])
    def counter(context, message):
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        context.send_egress(egress_message_builder(EGRESS, f"{context.address.id}:{message.as_int()}:{n}", StringType))

    return functions


class CappedServer:
    """Answers every third request 503; holds each request 0.05 s (so that a client over its
    cap would have more than ``CAP`` in at once), and records the most held at once."""

    def __init__(self) -> None:
        self.handler = RequestReplyHandler(_served())
        self.active = 0
        self.peak = 0
        self.seen = 0
        self.refused = 0

    async def __call__(self, body: bytes):
        self.seen += 1
        n = self.seen
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            for _ in range(10):  # (the server's own pace: at most 0.05 s a request)
                if self.active > CAP:  # (a client over its cap: answer, it is seen)
                    break
                await asyncio.sleep(0.005)
            if n % 3 == 0:
                self.refused += 1
                return 503, b"busy"
            return await self.handler.handle_async(body)
        finally:
            self.active -= 1


def test_retried_calls_never_pass_the_endpoints_max_concurrent_requests(serve):
    server = CappedServer()
    http = serve(server)
    endpoint = remote_endpoint("probe/*", http.url + "/{function.name}", max_concurrent_requests=CAP,
                               call_timeout=timedelta(seconds=60), read_timeout=None,
                               backoff_initial=timedelta(milliseconds=5), backoff_max=timedelta(milliseconds=20))
    ids = [f"a{i:02d}" for i in range(12)]
    with LocalDispatchers(StatefulFunctions(), parallelism=1, egresses=[EGRESS], endpoints=[endpoint]) as run:
        for round_ in range(2):
            run.send(*(message_builder("probe/counter", i, int_value=round_) for i in ids))
            run.run_until_idle()
        got = sorted(run.egress(EGRESS))
        retries = run.counters().get("remote_retries", 0)
    assert got == sorted(f"{i}:{r}:{r + 1}" for i in ids for r in range(2))
    assert server.refused > 0 and retries >= server.refused
    assert server.peak <= CAP, f"{server.peak} requests at once at the server, the endpoint allows {CAP}"
