"""HTTP 408 (Request Timeout) from a function server is retried, as 429 and 5xx are.

RFC 9110 lets a client repeat a request answered 408, and Node.js and Go servers send it on
a keep-alive connection they close as idle: a request written on that connection at that
moment reads the 408. It used to fail the call at once as a refused request ("HTTP 408
(not retried)"), failing the job; other 4xx still fail at once.
"""

from __future__ import annotations

from typing import Any

import pytest

statefun = pytest.importorskip("statefun")
pytest.importorskip("aiohttp")

from raystream.engine.errors import JobFailed  # noqa: E402
from raystream.statefun_api import StatefulFunctions, message_builder  # noqa: E402
from raystream.statefun_api.endpoints import remote_endpoint  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402

EGRESS = "demo/out"


def faulty_handler(faults: list[tuple[int, bytes]]) -> tuple[Any, list[int]]:
    """The official SDK counter behind a handler that answers ``faults`` first, in order."""
    sdk = statefun.StatefulFunctions()

    @sdk.bind(typename="remote/count", specs=[statefun.ValueSpec(name="n", type=statefun.IntType)])
    async def count(context, message):
        context.storage.n = (context.storage.n or 0) + 1
        context.send_egress(statefun.egress_message_builder(
            target_typename=EGRESS, value=f"{context.address.id}:{context.storage.n}", value_type=statefun.StringType))

    handler = statefun.RequestReplyHandler(sdk)
    statuses: list[int] = []

    async def handle(body: bytes):
        if faults:
            status, text = faults.pop(0)
            statuses.append(status)
            return status, text
        statuses.append(200)
        return await handler.handle_async(body)

    return handle, statuses


def run_two(server) -> LocalDispatchers:
    run = LocalDispatchers(StatefulFunctions(), egresses=[EGRESS], endpoints=[
        remote_endpoint("remote/*", server.url + "/statefun", backoff_initial=0.01, call_timeout=30)])
    run.send(message_builder("remote/count", "ann", str_value="x"), message_builder("remote/count", "ann", str_value="y"))
    return run


def test_a_408_is_retried_and_the_call_succeeds(serve):
    handle, statuses = faulty_handler([(408, b"Request Timeout"), (408, b"Request Timeout")])
    with run_two(serve(handle)) as run:
        run.run_until_idle()
        assert run.egress(EGRESS) == ["ann:1", "ann:2"]
        assert run.counters()["remote_retries"] == 2
        assert run.counters()["remote_splits"] == 0  # (a counter from the start, as the others)
    assert statuses[:3] == [408, 408, 200]


@pytest.mark.parametrize("status", [400, 409, 422])
def test_other_4xx_still_fail_at_once(status, serve):
    handle, statuses = faulty_handler([(status, b"refused")])
    # (the reply can come back while send() still steps the dispatcher, so either call may fail)
    with pytest.raises(JobFailed, match=rf"remote/count/ann.*HTTP {status} \(not retried\), body 'refused'"):
        with run_two(serve(handle)) as run:
            run.run_until_idle()
    assert statuses == [status]
