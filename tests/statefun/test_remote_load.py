"""Remote functions under load and against misbehaving servers, in one process.

The dispatcher (LocalDispatchers) calls a greeter written with the official ``statefun`` SDK,
served by aiohttp on localhost behind a :class:`Gate` that counts concurrent requests, can
hold requests back or delay them, and can answer with injected statuses and bodies:

* a per-subtask cap on requests in flight (``max_concurrent_requests``) and a per-endpoint
  one (StateFun's ``pool_size``); calls beyond them wait, their messages keep batching;
* the call timeout runs from sending, not from waiting for a request slot;
* 4xx fails at once, 5xx and connection errors are retried with backoff, then fail clearly;
* replies above ``max_response_bytes`` fail while they are read (with a Content-Length and
  streamed without one).

No test asserts on durations: they wait for conditions.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

statefun = pytest.importorskip("statefun")
rr_pb2 = pytest.importorskip("statefun.request_reply_pb2")
aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from raystream.engine.errors import JobFailed  # noqa: E402
from raystream.statefun_api import StatefulFunctions, message_builder  # noqa: E402
from raystream.statefun_api.endpoints import remote_endpoint  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402
from raystream.statefun_api.testing import FunctionServer, free_port  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

EGRESS = "test/out"


def sdk_functions() -> statefun.StatefulFunctions:
    fns = statefun.StatefulFunctions()

    @fns.bind(typename="remote/greeter", specs=[statefun.ValueSpec(name="seen", type=statefun.IntType)])
    async def greeter(context, message):
        context.storage.seen = (context.storage.seen or 0) + 1
        context.send_egress(
            statefun.egress_message_builder(
                target_typename=EGRESS, value=f"{context.address.id}#{context.storage.seen}", value_type=statefun.StringType
            )
        )

    return fns


class Gate:
    """In front of the SDK's handler: concurrency count, hold/delay, injected replies."""

    def __init__(self) -> None:
        self.handler = statefun.RequestReplyHandler(sdk_functions())
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.arrivals: list[tuple[str, int, bool]] = []  # (target id, messages, carries state)
        self.hold = threading.Event()
        self.hold.set()
        self.delay_s = 0.0
        self.faults: list[tuple[int, bytes]] = []  # answered instead, first come first served

    def waiting(self) -> int:
        with self.lock:
            return self.active

    async def __call__(self, body: bytes):
        request = rr_pb2.ToFunction()
        request.ParseFromString(body)
        batch = request.invocation
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.arrivals.append((batch.target.id, len(batch.invocations), bool(batch.state)))
            fault = self.faults.pop(0) if self.faults else None
        try:
            while not self.hold.is_set():
                await asyncio.sleep(0.005)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if fault is not None:
                return fault
            return await self.handler.handle_async(body)
        finally:
            with self.lock:
                self.active -= 1

    def batches(self, target_id: str) -> list[int]:
        """Messages per request to ``target_id`` that carried state (handshakes excluded)."""
        with self.lock:
            return [n for t, n, state in self.arrivals if t == target_id and state]


@pytest.fixture
def gate(serve):
    g = Gate()
    g.server = serve(g)
    yield g
    g.hold.set()  # (before the server stops: a held request ends)


def endpoint(url: str, **kwargs):
    kwargs.setdefault("backoff_initial", timedelta(milliseconds=10))
    kwargs.setdefault("backoff_max", timedelta(milliseconds=80))
    kwargs.setdefault("call_timeout", timedelta(seconds=30))
    return remote_endpoint("remote/*", url + "/{function.name}", **kwargs)


def dispatchers(ep, parallelism: int = 1, **limits) -> LocalDispatchers:
    return LocalDispatchers(StatefulFunctions(), parallelism=parallelism, egresses=[EGRESS], endpoints=[ep], **limits)


def greet(id_: str):
    return message_builder("remote/greeter", id_, str_value="hi")


# ---------------------------------------------------------------- bounded concurrency
@pytest.mark.parametrize("parallelism", [1, 2])
def test_requests_in_flight_per_subtask_are_capped_and_every_call_completes(gate, parallelism):
    gate.delay_s = 0.002
    ids = [f"a{i}" for i in range(400)]
    with dispatchers(endpoint(gate.server.url), parallelism, max_concurrent_requests=8) as run:
        run.send(*[greet(i) for i in ids])
        assert all(op.remote_in_flight() <= 8 for op in run.dispatchers)
        run.run_until_idle()
        out = run.egress(EGRESS)
    assert sorted(out) == sorted(f"{i}#1" for i in ids)
    assert gate.max_active <= 8 * parallelism


def test_the_endpoint_pool_size_caps_its_requests(gate):
    ep = endpoint(gate.server.url, max_concurrent_requests=3)  # module.yaml: transport.pool_size
    ids = [f"b{i}" for i in range(120)]
    with dispatchers(ep, max_concurrent_requests=50) as run:
        run.send(*[greet(i) for i in ids]).run_until_idle()
        assert sorted(run.egress(EGRESS)) == sorted(f"{i}#1" for i in ids)
    assert 1 <= gate.max_active <= 3


def test_calls_beyond_the_cap_wait_and_their_messages_batch(gate):
    with dispatchers(endpoint(gate.server.url), max_concurrent_requests=2) as run:
        run.send(greet("warm")).run_until_idle()  # the handshake is done
        gate.hold.clear()
        run.send(greet("x"), greet("y"))
        wait_for(lambda: gate.waiting() == 2, what="two requests at the server")
        for _ in range(3):  # z and w wait for a slot; x and y get messages behind their calls
            run.send(greet("x"), greet("y"), greet("z"), greet("w"))
        op = run.dispatchers[0]
        assert op.remote_in_flight() == 2 and gate.waiting() == 2
        gate.hold.set()
        run.run_until_idle()
        out = run.egress(EGRESS)
    # nothing was dropped; z and w went out once, with all their messages in one batch
    expected = [f"{k}#{n}" for k in "xy" for n in (1, 2, 3, 4)] + [f"{k}#{n}" for k in "zw" for n in (1, 2, 3)]
    assert sorted(o for o in out if o != "warm#1") == sorted(expected)
    assert gate.batches("z") == [3] and gate.batches("w") == [3]
    assert gate.batches("x") == [1, 3] and gate.max_active <= 2


def test_the_call_timeout_does_not_count_the_wait_for_a_request_slot(gate):
    """One request at a time, each taking 0.6 s at the server, a 1.5 s call timeout: the
    fourth address waits longer than the call timeout for its turn, and still succeeds."""
    ep = endpoint(gate.server.url, call_timeout=timedelta(seconds=1.5), max_retries=0)
    with dispatchers(ep, max_concurrent_requests=1) as run:
        run.send(greet("warm")).run_until_idle()
        gate.delay_s = 0.6
        run.send(*[greet(f"t{i}") for i in range(4)]).run_until_idle()
        assert sorted(run.egress(EGRESS)) == sorted(["warm#1"] + [f"t{i}#1" for i in range(4)])
        assert run.counters()["remote_retries"] == 0
    assert gate.max_active == 1


def test_the_first_request_of_a_function_type_goes_alone(gate):
    """A fresh dispatcher does not know the type's value specs: it sends ONE request, and the
    other 49 addresses wait for its answer (the missing-values handshake) and go out with
    their state, instead of 50 requests without state that are all refused and sent again."""
    gate.hold.clear()
    with dispatchers(endpoint(gate.server.url)) as run:
        run.send(*[greet(f"a{i}") for i in range(50)])
        wait_for(lambda: gate.waiting() == 1, "the first request at the server")
        gate.hold.set()
        run.run_until_idle()
        assert sorted(run.egress(EGRESS)) == sorted(f"a{i}#1" for i in range(50))
        assert run.counters()["remote_handshakes"] == 1
    without_state = [a for a in gate.arrivals if not a[2]]
    assert len(without_state) == 1  # only the first request went out before the specs were known
    assert len(gate.arrivals) == 51  # 50 addresses + the first one's resend with its state


# ---------------------------------------------------------------- failures
@pytest.mark.parametrize(
    ("status", "body", "hint"),
    [
        (400, b"bad request: unknown field 17", "request itself was refused"),
        (404, b"no route", "the request-reply endpoint that serves this function type?"),
        (413, b"Request Entity Too Large", "send smaller batches"),
    ],
)
def test_a_4xx_reply_fails_at_once_naming_address_url_status_and_body(gate, status, body, hint):
    gate.faults = [(status, body)]
    with dispatchers(endpoint(gate.server.url)) as run:
        with pytest.raises(JobFailed) as info:
            run.send(greet("ann")).run_until_idle()
        assert run.counters()["remote_retries"] == 0
    msg = str(info.value)
    assert "remote function 'remote/greeter'" in msg
    assert f"{gate.server.url}/greeter" in msg
    assert "remote/greeter/ann" in msg
    assert f"HTTP {status} (not retried)" in msg
    assert body.decode()[:20] in msg and hint in msg
    assert len(gate.arrivals) == 1


def test_a_5xx_is_retried_with_backoff_and_recovers(gate):
    gate.faults = [(503, b"warming up")] * 3
    with dispatchers(endpoint(gate.server.url)) as run:
        run.send(greet("ann")).run_until_idle()
        assert run.egress(EGRESS) == ["ann#1"]
        assert run.counters()["remote_retries"] == 3


def test_a_5xx_until_the_retries_run_out_fails_clearly(gate):
    gate.faults = [(503, b"service unavailable: overloaded")] * 10
    with dispatchers(endpoint(gate.server.url, max_retries=3)) as run:
        with pytest.raises(JobFailed) as info:
            run.send(greet("ann")).run_until_idle()
    msg = str(info.value)
    assert "gave up after 4 attempt(s), 3 retries used up; last error: HTTP 503" in msg
    assert "service unavailable: overloaded" in msg and "remote/greeter/ann" in msg
    assert len(gate.arrivals) == 4


def test_connection_errors_are_retried_then_fail_clearly():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with dispatchers(endpoint(url, max_retries=2)) as run:
        with pytest.raises(JobFailed) as info:
            run.send(greet("ann")).run_until_idle()
        assert run.counters()["remote_retries"] == 2
    msg = str(info.value)
    assert f"{url}/greeter" in msg and "gave up after 3 attempt(s), 2 retries used up" in msg
    assert "ClientConnectorError" in msg or "Cannot connect" in msg


def test_a_reply_above_max_response_bytes_fails_while_read(gate):
    gate.faults = [(200, b"\x00" * 4096)]
    with dispatchers(endpoint(gate.server.url, max_response_bytes=1024)) as run:
        with pytest.raises(JobFailed) as info:
            run.send(greet("ann")).run_until_idle()
        assert run.counters()["remote_retries"] == 0
    msg = str(info.value)
    assert "larger than max_response_bytes=1024 (Content-Length 4096; not retried)" in msg
    assert "remote/greeter/ann" in msg and f"{gate.server.url}/greeter" in msg


def test_a_streamed_reply_is_cut_off_at_max_response_bytes():
    """No Content-Length: the limit is enforced while the chunks arrive; the server was
    still sending when the client gave up."""
    finished = threading.Event()

    async def endless(request):
        await request.read()
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(2000):  # 2000 x 1 KiB, far beyond the limit
                await response.write(b"\x01" * 1024)
                await asyncio.sleep(0.001)
            finished.set()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    app = web.Application()
    app.router.add_post("/{tail:.*}", endless)
    with FunctionServer(app) as server:
        with dispatchers(endpoint(server.url, max_response_bytes=8 * 1024)) as run:
            with pytest.raises(JobFailed) as info:
                run.send(greet("ann")).run_until_idle()
    assert "larger than max_response_bytes=8192 (more bytes received; not retried)" in str(info.value)
    assert not finished.is_set()
