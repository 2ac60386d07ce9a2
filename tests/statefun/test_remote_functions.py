"""Remote functions, end to end in one process: the FunctionDispatcher (LocalDispatchers)
calls functions written with the official ``statefun`` SDK, served by aiohttp on localhost.

A :class:`Recorder` sits in front of the SDK's handler: it decodes every request and reply
with the SDK's own protobuf classes (an independent implementation of the protocol), can
hold requests back (a "slow" function) and can inject HTTP errors.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import pytest

statefun = pytest.importorskip("statefun")
rr_pb2 = pytest.importorskip("statefun.request_reply_pb2")
pytest.importorskip("aiohttp")

from raystream.engine.errors import JobFailed, UserCodeError  # noqa: E402
from raystream.engine.operator import ManualClock  # noqa: E402
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
from raystream.statefun_api.testing import FunctionServer, free_port  # noqa: E402

EGRESS = "test/out"


# ---------------------------------------------------------------------------- the remote side
def sdk_functions() -> statefun.StatefulFunctions:
    """Functions written against the official SDK (they never import statefun_api)."""
    fns = statefun.StatefulFunctions()

    @fns.bind(
        typename="remote/greeter",
        specs=[statefun.ValueSpec(name="seen", type=statefun.IntType, expire_after_call=timedelta(days=1))],
    )
    async def greeter(context, message):
        seen = (context.storage.seen or 0) + 1
        context.storage.seen = seen
        context.send_egress(
            statefun.egress_message_builder(
                target_typename=EGRESS, value=f"hi {context.address.id} #{seen}", value_type=statefun.StringType
            )
        )

    @fns.bind(typename="remote/pinger", specs=[statefun.ValueSpec(name="pings", type=statefun.IntType)])
    async def pinger(context, message):
        if message.is_string():  # from the ingress: ping the embedded counter of the same id
            context.storage.pings = (context.storage.pings or 0) + 1
            context.send(
                statefun.message_builder(target_typename="local/counter", target_id=context.address.id, int_value=1)
            )
        else:  # the counter's answer
            assert context.caller.typename == "local/counter"
            context.send_egress(
                statefun.egress_message_builder(
                    target_typename=EGRESS,
                    value=f"{context.address.id} pings={context.storage.pings} count={message.as_int()}",
                    value_type=statefun.StringType,
                )
            )

    @fns.bind(typename="remote/timer")
    async def timer(context, message):
        op, _, arg = message.as_string().partition(":")
        if op == "later":  # later:<token>:<ms>
            token, ms = arg.split(":")
            context.send_after(
                timedelta(milliseconds=int(ms)),
                statefun.message_builder(
                    target_typename="remote/timer", target_id=context.address.id, str_value=f"fired:{token}"
                ),
                cancellation_token=token,
            )
        elif op == "cancel":
            context.cancel_delayed_message(arg)
        elif op == "fired":
            context.send_egress(
                statefun.egress_message_builder(
                    target_typename=EGRESS, value=f"{context.address.id} {arg}", value_type=statefun.StringType
                )
            )

    return fns


def embedded_functions() -> StatefulFunctions:
    """raystream's own (embedded) functions, mixed with the remote ones."""
    fns = StatefulFunctions()

    @fns.bind("local/counter", specs=[ValueSpec("n", IntType)])
    def counter(context, message):
        n = (context.storage.n or 0) + message.as_int()
        context.storage.n = n
        context.send(message_builder(context.caller.typename, context.caller.id, int_value=n))

    @fns.bind("local/starter")
    def starter(context, message):  # an embedded function messaging a remote one
        context.send(message_builder("remote/greeter", message.as_string(), str_value="from starter"))
        context.send_egress(egress_message_builder(EGRESS, f"started {message.as_string()}", StringType))

    return fns


class Recorder:
    """In front of a request-reply handler: records, holds back and fails requests."""

    def __init__(self, handler=None) -> None:
        self.handler = handler or statefun.RequestReplyHandler(sdk_functions())
        self.calls: list[tuple[str, int, list[str], str]] = []  # (target id, invocations, state names, reply kind)
        self.hold = threading.Event()
        self.hold.set()  # set: answer at once
        self.arrived = threading.Event()
        self.faults: list[tuple[int, bytes]] = []  # answered (status, body) instead, first come first served
        self.lock = threading.Lock()

    async def __call__(self, body: bytes):
        request = rr_pb2.ToFunction()
        request.ParseFromString(body)
        batch = request.invocation
        self.arrived.set()
        while not self.hold.is_set():
            await asyncio.sleep(0.005)
        with self.lock:
            fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            self.calls.append((batch.target.id, len(batch.invocations), [s.state_name for s in batch.state], f"HTTP {fault[0]}"))
            return fault
        reply_bytes = await self.handler.handle_async(body)
        reply = rr_pb2.FromFunction()
        reply.ParseFromString(reply_bytes)
        kind = reply.WhichOneof("response")
        self.calls.append((batch.target.id, len(batch.invocations), [s.state_name for s in batch.state], kind))
        return reply_bytes

    def invocations(self, target_id: str) -> list[int]:
        """Messages per answered request to ``target_id`` (handshake rounds excluded)."""
        return [n for t, n, _, kind in self.calls if t == target_id and kind == "invocation_result"]


@pytest.fixture(autouse=True)
def _no_thread_left_behind(no_remote_threads):
    """(tests/statefun/conftest.py)"""


@pytest.fixture
def recorder(serve):
    rec = Recorder()
    rec.server = serve(rec)
    yield rec
    rec.hold.set()  # (before the server stops: a held request ends)


def endpoint(server, **kwargs):
    kwargs.setdefault("backoff_initial", timedelta(milliseconds=10))
    kwargs.setdefault("backoff_max", timedelta(milliseconds=100))
    kwargs.setdefault("call_timeout", timedelta(seconds=20))
    return remote_endpoint("remote/*", server.url + "/{function.name}", **kwargs)


def dispatchers(rec, parallelism=1, endpoints=None, **kwargs):
    return LocalDispatchers(
        embedded_functions(),
        parallelism=parallelism,
        egresses=[EGRESS],
        endpoints=endpoints or [endpoint(rec.server)],
        **kwargs,
    )


def greet(id_: str, text: str = "hello"):
    return message_builder("remote/greeter", id_, str_value=text)


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("parallelism", [1, 3])
def test_greeter_keeps_state_in_raystream_after_the_handshake(recorder, parallelism):
    names = ["ann", "bob", "ann", "cid", "ann", "bob"]
    with dispatchers(recorder, parallelism) as run:
        for name in names:  # one at a time: every message is its own request
            run.send(greet(name)).run_until_idle()
        assert sorted(run.egress(EGRESS)) == sorted(
            ["hi ann #1", "hi bob #1", "hi ann #2", "hi cid #1", "hi ann #3", "hi bob #2"]
        )
        counters = run.counters()
    # the first call of the function type (per subtask) carried no state: the SDK answered
    # with an IncompleteInvocationContext, and the same batch came again with 'seen'
    first = recorder.calls[0]
    assert first[2] == [] and first[3] == "incomplete_invocation_context"
    assert recorder.calls[1][:3] == (first[0], first[1], ["seen"])
    assert recorder.calls[1][3] == "invocation_result"
    assert 1 <= counters["remote_handshakes"] <= parallelism
    assert all(c[2] == ["seen"] for c in recorder.calls if c[3] == "invocation_result")
    assert counters["remote_requests"] == len(names)


def test_messages_arriving_during_a_call_go_out_as_one_batch(recorder):
    with dispatchers(recorder) as run:
        run.send(greet("warm")).run_until_idle()  # handshake done
        recorder.hold.clear()
        recorder.arrived.clear()
        run.send(greet("hot", "first"))
        assert recorder.arrived.wait(10), "the first request never reached the server"
        for i in range(5):  # 50 more messages while the first call is held by the server
            run.send(*[greet("hot", f"m{i}-{j}") for j in range(10)])
        op = run.dispatchers[0]
        assert op.remote_in_flight() == 1
        assert not op.is_idle()
        recorder.hold.set()
        run.run_until_idle()
        assert op.is_idle()
        out = run.egress(EGRESS)
    assert recorder.invocations("hot") == [1, 50]
    assert [o for o in out if o.startswith("hi hot")] == [f"hi hot #{i}" for i in range(1, 52)]


def test_a_full_address_queue_back_pressures_the_input(recorder):
    ep = endpoint(recorder.server, max_num_batch_requests=5)
    with dispatchers(recorder, endpoints=[ep]) as run:
        run.send(greet("warm")).run_until_idle()
        recorder.hold.clear()
        recorder.arrived.clear()
        run.send(greet("hot"))
        assert recorder.arrived.wait(10)
        op = run.dispatchers[0]
        run.send(*[greet("hot") for _ in range(3)])
        assert op.accepts_input()  # 3 queued < 5
        run.send(*[greet("hot") for _ in range(3)])  # 6 queued: the queue is full
        assert not op.accepts_input()
        run.send(*[greet("hot") for _ in range(4)])  # held back by LocalDispatchers, not taken
        assert op.pending_messages() == 0 and not run.is_idle()
        recorder.hold.set()
        run.run_until_idle()
        assert op.accepts_input()
        out = [o for o in run.egress(EGRESS) if o.startswith("hi hot")]
    sizes = recorder.invocations("hot")
    assert sum(sizes) == 11 and max(sizes) <= 5 and sizes[0] == 1
    assert out == [f"hi hot #{i}" for i in range(1, 12)]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_remote_and_embedded_functions_message_each_other(recorder, parallelism):
    pings = [message_builder("remote/pinger", k, str_value="go") for k in ["a", "b", "a"]]
    with dispatchers(recorder, parallelism, seed=4) as run:
        for p in pings:
            run.send(p).run_until_idle()
        run.send(message_builder("local/starter", "zed", str_value="zed")).run_until_idle()
        out = run.egress(EGRESS)
        assert run.state("local/counter", "a", "n") == 2
    assert sorted(out) == sorted(["a pings=1 count=1", "b pings=1 count=1", "a pings=2 count=2", "started zed", "hi zed #1"])


def test_delayed_messages_and_cancellation_from_a_remote_function(recorder):
    clock = ManualClock(0)
    timer = "remote/timer"
    with dispatchers(recorder, clock=clock) as run:
        run.send(
            message_builder(timer, "x", str_value="later:t1:1000"),
            message_builder(timer, "x", str_value="later:t2:2000"),
            message_builder(timer, "y", str_value="later:t3:500"),
        )
        run.wait_remote()
        run.send(message_builder(timer, "x", str_value="cancel:t2")).wait_remote()
        assert run.egress(EGRESS) == []
        assert run.dispatchers[0].pending_delayed() == 2
        run.run_until_idle()
        assert clock.now_ms() >= 1000
        assert run.egress(EGRESS) == ["y t3", "x t1"]
        assert run.counters()["delayed_cancelled"] == 1


def test_endpoint_down_then_up_is_retried():
    rec = Recorder()
    port = free_port()
    server = FunctionServer(rec, port=port)
    ep = remote_endpoint(
        "remote/*", f"http://127.0.0.1:{port}/{{function.name}}", backoff_initial=0.02, backoff_max=0.2
    )
    run = LocalDispatchers(embedded_functions(), egresses=[EGRESS], endpoints=[ep])
    try:
        run.send(greet("ann"))  # connection refused: the call retries in the background
        time.sleep(1.0)
        assert run.egress(EGRESS) == [] and run.dispatchers[0].remote_in_flight() == 1
        server.start()
        run.run_until_idle()
        assert run.egress(EGRESS) == ["hi ann #1"]
        assert run.counters()["remote_retries"] >= 1
    finally:
        run.close()
        server.stop()


def test_a_transient_http_500_is_retried_and_recovers(recorder):
    recorder.faults = [(500, b"database busy"), (429, b"slow down")]
    with dispatchers(recorder) as run:
        run.send(greet("ann"), greet("ann")).run_until_idle()
        assert run.egress(EGRESS) == ["hi ann #1", "hi ann #2"]
        assert run.counters()["remote_retries"] == 2
    assert [c[3] for c in recorder.calls[:2]] == ["HTTP 500", "HTTP 429"]


def test_waiting_for_calls_that_are_retried_names_their_last_failure(recorder):
    recorder.faults = [(500, b"boom: the function crashed")] * 1000  # retried until the call timeout
    with dispatchers(recorder) as run:
        run.send(greet("ann"))
        with pytest.raises(TimeoutError) as info:
            run.wait_remote(timeout_s=0.5)
    msg = str(info.value)
    assert "remote calls still in flight, no reply for 0.5 s; they are being retried" in msg
    assert f"127.0.0.1:{recorder.server.port}: attempt" in msg and "HTTP 500, body 'boom: the function crashed'" in msg


def test_http_500_until_the_retries_run_out_fails_the_job_naming_function_and_url(recorder):
    recorder.faults = [(500, b"boom: the function crashed")] * 3
    ep = endpoint(recorder.server, max_retries=2)
    with dispatchers(recorder, endpoints=[ep]) as run:
        with pytest.raises(JobFailed) as info:
            run.send(greet("ann")).run_until_idle()
    msg = str(info.value)
    assert "remote function 'remote/greeter'" in msg
    assert f"{recorder.server.url}/greeter" in msg
    assert "remote/greeter/ann" in msg
    assert "gave up after 3 attempt(s), 2 retries used up" in msg
    assert "HTTP 500" in msg and "boom: the function crashed" in msg
    assert len(recorder.calls) == 3


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ((200, b"<html>not protobuf</html>"), "not a StateFun FromFunction"),
        ((404, b"no such function"), "HTTP 404 (not retried)"),
    ],
    ids=["garbage-body", "http-404"],
)
def test_a_bad_reply_is_a_clear_error_without_retries(recorder, fault, expected):
    recorder.faults = [fault]
    with dispatchers(recorder) as run:
        with pytest.raises(JobFailed, match="remote function 'remote/greeter'") as info:
            run.send(greet("ann")).run_until_idle()
        assert run.counters()["remote_retries"] == 0
    assert expected in str(info.value)
    assert repr(fault[1].decode())[1:20] in str(info.value)  # a body excerpt
    assert len(recorder.calls) == 1


def test_a_request_in_flight_at_a_snapshot_is_sent_again_after_restore(recorder):
    with dispatchers(recorder) as run:
        run.send(greet("ann")).run_until_idle()
        recorder.hold.clear()
        recorder.arrived.clear()
        run.send(greet("ann", "in flight"))
        assert recorder.arrived.wait(10)
        run.send(greet("ann", "queued"))
        snapshot = run.snapshot()  # the request is in flight: its effects are not applied
        assert run.egress(EGRESS) == ["hi ann #1"]
    recorder.hold.set()  # the first attempt's reply is dropped (its dispatcher is closed)
    with LocalDispatchers.restore(
        embedded_functions(), snapshot, parallelism=2, egresses=[EGRESS], endpoints=[endpoint(recorder.server)]
    ) as restored:
        restored.run_until_idle()
        assert sorted(restored.egress(EGRESS)) == ["hi ann #2", "hi ann #3"]
    # the restored dispatcher sent the in-flight message and the queued one as one batch
    # (whether the server still answered the held first attempt, nobody was listening)
    assert 2 in recorder.invocations("ann")


def test_end_input_waits_for_calls_in_flight(recorder):
    with dispatchers(recorder) as run:
        run.send(greet("warm")).run_until_idle()  # the type's values are known: no first-request wait
        recorder.hold.clear()
        recorder.arrived.clear()
        run.send(greet("ann"), greet("bob"))
        assert recorder.arrived.wait(10)
        op = run.dispatchers[0]
        assert op.remote_in_flight() == 2 and not op.is_idle()
        threading.Timer(0.1, recorder.hold.set).start()  # answer while end_input() waits
        op.end_input()
        assert op.is_idle()
        assert sorted(run.egress(EGRESS)) == ["hi ann #1", "hi bob #1", "hi warm #1"]


def test_functions_served_by_raystreams_own_handler():
    """raystream's RequestReplyHandler + server answer raystream's runtime (the serving side)."""
    served = StatefulFunctions()

    @served.bind("remote/greeter", specs=[ValueSpec("seen", IntType)])
    async def greeter(context, message):
        context.storage.seen = (context.storage.seen or 0) + 1
        context.send_egress(egress_message_builder(EGRESS, f"ours {context.address.id} #{context.storage.seen}", StringType))

    with FunctionServer(RequestReplyHandler(served)) as server:
        ep = remote_endpoint("remote/greeter", server.url + "/statefun")
        with LocalDispatchers(embedded_functions(), egresses=[EGRESS], endpoints=[ep]) as run:
            run.send(greet("a"), greet("a")).run_until_idle()
            run.send(greet("a")).run_until_idle()
            assert run.egress(EGRESS) == ["ours a #1", "ours a #2", "ours a #3"]
            assert run.counters()["remote_handshakes"] == 1


def test_an_egress_that_was_not_declared_fails_clearly(recorder):
    with LocalDispatchers(embedded_functions(), endpoints=[endpoint(recorder.server)]) as run:
        with pytest.raises(JobFailed, match="egress 'test/out', which does not exist"):
            run.send(greet("a")).run_until_idle()


def test_unknown_function_type_lists_the_endpoints(recorder):
    with dispatchers(recorder) as run:
        with pytest.raises(UserCodeError, match="remote endpoints: 'remote/\\*'"):
            run.send(message_builder("nowhere/f", "1", int_value=1)).run_until_idle()


class OneAtATime(Recorder):
    """An endpoint that answers one request at a time, each after ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self._one: asyncio.Lock | None = None

    async def __call__(self, body: bytes):
        if self._one is None:
            self._one = asyncio.Lock()
        async with self._one:
            await asyncio.sleep(self.delay_s)
            return await super().__call__(body)


def test_waiting_for_remote_calls_times_out_on_no_progress_not_on_their_total():
    """60 addresses of an endpoint serving one request at a time, 30 ms each, take ~1.8 s in
    all: a wait of ``timeout_s=1`` keeps going while replies come (before, it raised
    'still in flight after 1 s' with replies arriving every 30 ms)."""
    rec = OneAtATime(0.03)
    server = FunctionServer(rec).start()
    rec.server = server
    try:
        with dispatchers(rec) as run:
            run.send(*[greet(f"user-{i}") for i in range(60)])
            run.wait_remote(timeout_s=1.0)
            assert sorted(run.egress(EGRESS)) == sorted(f"hi user-{i} #1" for i in range(60))
    finally:
        server.stop()
