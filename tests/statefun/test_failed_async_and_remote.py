"""A failed invocation of an ``async def`` function or of a remote function is all or
nothing and retried, as a sync function's is (tests/statefun/test_failed_invocations.py):
LocalDispatchers goes on like a job whose restarts never give up. The failed call's messages
go back to the head of the address's queue; every later ``send``, ``run``, ``advance`` or
``run_until_idle`` invokes them again from the same state (messages queued meanwhile on that
subtask wait behind them) and raises the same error while the cause stays; once it goes
away, the effects appear exactly once. Never a hang: every call here is bounded, so a call
that would wait forever fails the test instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from raystream.engine.errors import JobFailed, UserCodeError
from raystream.engine.keygroups import key_group_for, subtask_for_key_group
from raystream.statefun_api import (
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.endpoints import remote_endpoint
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.queued_state import restored_messages

OUT = "test/out"
BOUND_S = 30.0  # far above what any call here takes; reached only by a call that hangs


def bounded(call: Callable[[], Any], timeout_s: float = BOUND_S) -> Any:
    """``call()`` on a daemon thread, waited for at most ``timeout_s``: its result, or its
    exception raised here; a call still running then fails the test (it would hang)."""
    outcome: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=target, daemon=True, name="bounded-call")
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        pytest.fail(f"the call did not return within {timeout_s} s (it hangs)")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def same_subtask_id(typename: str, like: tuple[str, str], parallelism: int) -> str:
    """An id of ``typename`` owned by the same subtask as the address ``like``."""
    def owner(key: tuple[str, str]) -> int:
        return subtask_for_key_group(key_group_for(key, 128), parallelism, 128)

    return next(f"y{i}" for i in range(10_000) if owner((typename, f"y{i}")) == owner(like))


def g(functions: StatefulFunctions) -> None:
    """``test/g``: reports what it got on the egress (a sync function)."""
    @functions.bind("test/g")
    def report(context, message):
        context.send_egress(egress_message_builder(OUT, "g got: " + message.as_string(), StringType))


# ------------------------------------------------------------------ embedded async functions
def async_functions(broken: list[bool]) -> StatefulFunctions:
    """``test/f`` (async) emits an egress, sends a message and a delayed message to ``test/g``,
    counts its calls in its state, then raises while ``broken[0]``."""
    functions = StatefulFunctions()

    @functions.bind("test/f", specs=[ValueSpec("n", IntType)])
    async def f(context, message):
        await asyncio.sleep(0.001)
        context.send_egress(egress_message_builder(OUT, "f", StringType))
        context.send(message_builder("test/g", "x", str_value="sent by f"))
        context.send_after(timedelta(seconds=1), message_builder("test/g", "x", str_value="delayed by f"), "t")
        context.storage.n = (context.storage.n or 0) + 1
        if broken[0]:
            raise RuntimeError("the database is down")

    g(functions)
    return functions


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_failed_async_invocation_fails_again_with_the_same_error_and_has_no_effects(parallelism):
    run = LocalDispatchers(async_functions([True]), parallelism=parallelism, egresses=[OUT])
    try:
        with pytest.raises(UserCodeError) as first:
            bounded(lambda: run.send(message_builder("test/f", "a", str_value="go")))
        assert "the database is down" in str(first.value.original) and "test/f/a" in str(first.value.original)
        other = same_subtask_id("test/g", ("test/f", "a"), parallelism)
        for retry in (
            lambda: run.send(message_builder("test/g", other, str_value="later")),  # waits behind the failed one
            run.run,
            lambda: run.advance(5_000),
            run.run_until_idle,
        ):
            with pytest.raises(UserCodeError) as again:
                bounded(retry)
            assert str(again.value.original) == str(first.value.original)
            assert run.egress(OUT) == []  # neither f's egress nor what its messages would cause
            assert run.state("test/f", "a", "n") is None  # invoked again from the same state
            assert not run.is_idle()  # the failed messages are still queued
    finally:
        run.close()


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_failed_async_invocation_that_succeeds_on_retry_has_its_effects_once(parallelism):
    broken = [True]
    run = LocalDispatchers(async_functions(broken), parallelism=parallelism, egresses=[OUT])
    try:
        with pytest.raises(UserCodeError):
            bounded(lambda: run.send(message_builder("test/f", "a", str_value="go")))
        other = same_subtask_id("test/g", ("test/f", "a"), parallelism)
        with pytest.raises(UserCodeError):
            bounded(lambda: run.send(message_builder("test/g", other, str_value="later")))
        broken[0] = False  # the cause went away
        bounded(run.run_until_idle)
        assert sorted(run.egress(OUT)) == ["f", "g got: delayed by f", "g got: later", "g got: sent by f"]
        assert run.state("test/f", "a", "n") == 1
        assert run.counters()["invocations"] == 4  # f once (the failed attempts are not counted), g three times
    finally:
        run.close()


@pytest.mark.parametrize("parallelism", [1, 2])
def test_the_other_async_invocations_in_flight_when_one_fails_keep_their_effects_once(parallelism):
    """Invocations that finish while (or just before) one fails are applied once: none is
    dropped with the failed one's wake-up, and none waits forever for it."""
    broken = [True]
    functions = StatefulFunctions()

    @functions.bind("test/h", specs=[ValueSpec("n", IntType)])
    async def h(context, message):
        await asyncio.sleep(0.001)
        context.storage.n = (context.storage.n or 0) + 1
        if broken[0] and context.address.id == "k7":
            raise RuntimeError("k7 is broken")
        context.send_egress(egress_message_builder(OUT, f"{context.address.id}:{context.storage.n}", StringType))

    run = LocalDispatchers(functions, parallelism=parallelism, egresses=[OUT])
    try:
        ids = [f"k{i}" for i in range(40)]
        with pytest.raises(UserCodeError, match="k7 is broken"):
            bounded(lambda: run.send(*[message_builder("test/h", i, str_value="go") for i in ids]).run_until_idle())
        for _ in range(3):
            try:
                bounded(run.run_until_idle)
            except UserCodeError as error:
                assert "k7 is broken" in str(error.original)
        assert "k7:1" not in run.egress(OUT) and run.state("test/h", "k7", "n") is None
        broken[0] = False
        bounded(run.run_until_idle)
        assert sorted(run.egress(OUT)) == sorted(f"{i}:1" for i in ids)
    finally:
        run.close()


def test_an_async_function_whose_stored_value_does_not_load_fails_again_on_every_call():
    """The failure comes before the invocation is handed to the function loop (the value is
    loaded on the mailbox thread): the call is queued again all the same."""
    ints = StatefulFunctions()

    @ints.bind("test/f", specs=[ValueSpec("n", IntType)])
    def f(context, message):
        context.storage.n = 1

    with LocalDispatchers(ints) as run:
        snapshot = run.send(message_builder("test/f", "a", str_value="go")).snapshot()
    strings = StatefulFunctions()

    @strings.bind("test/f", specs=[ValueSpec("n", StringType)])  # the spec's type changed
    async def f_again(context, message):
        context.storage.n = "never"

    run = LocalDispatchers.restore(strings, snapshot)
    try:
        for call in (lambda: run.send(message_builder("test/f", "a", str_value="again")), run.run, lambda: run.advance(10)):
            with pytest.raises(UserCodeError, match="stored value has type 'io.statefun.types/int'"):
                bounded(call)
        assert [r[:2] for r in restored_messages([run.dispatchers[0].snapshot_state(1)])[0]] == [("test/f", "a")]
    finally:
        run.close()


def test_a_snapshot_after_a_failed_async_invocation_holds_its_messages():
    run = LocalDispatchers(async_functions([True]), egresses=[OUT])
    try:
        with pytest.raises(UserCodeError):
            bounded(lambda: run.send(message_builder("test/f", "a", str_value="go")))
        state = run.dispatchers[0].snapshot_state(1)
        assert [r[:2] for r in restored_messages([state])[0]] == [("test/f", "a")]
    finally:
        run.close()


# ------------------------------------------------------------------ remote functions
class FaultyServer:
    """An official-SDK function ``remote/greeter`` (counts its calls in ``seen``, emits an
    egress, messages the embedded ``test/g``) behind a handler that answers ``fault``
    (status, body) instead while it is set."""

    def __init__(self, statefun: Any) -> None:
        functions = statefun.StatefulFunctions()

        @functions.bind(typename="remote/greeter", specs=[statefun.ValueSpec(name="seen", type=statefun.IntType)])
        async def greeter(context, message):
            seen = (context.storage.seen or 0) + 1
            context.storage.seen = seen
            context.send_egress(
                statefun.egress_message_builder(target_typename=OUT, value=f"hi #{seen}", value_type=statefun.StringType)
            )
            context.send(statefun.message_builder(target_typename="test/g", target_id="x", str_value=f"from greeter #{seen}"))

        self.handler = statefun.RequestReplyHandler(functions)
        self.fault: tuple[int, bytes] | None = None
        self.requests = 0

    async def __call__(self, body: bytes) -> Any:
        self.requests += 1
        fault = self.fault
        if fault is not None:
            return fault
        return await self.handler.handle_async(body)


FAULTS = {
    "http-500": ((500, b"boom: the function crashed"), "gave up after 1 attempt(s)"),
    "invalid-body": ((200, b"<html>not protobuf</html>"), "not a StateFun FromFunction"),
}


@pytest.fixture
def faulty():
    statefun = pytest.importorskip("statefun")  # (the official SDK serves the function)
    pytest.importorskip("aiohttp")
    from raystream.statefun_api.testing import FunctionServer

    server = FaultyServer(statefun)
    with FunctionServer(server) as http:
        server.url = http.url  # type: ignore[attr-defined]
        yield server


def remote_dispatchers(server: FaultyServer, parallelism: int) -> LocalDispatchers:
    functions = StatefulFunctions()
    g(functions)
    ep = remote_endpoint(
        "remote/*", server.url + "/{function.name}",  # type: ignore[attr-defined]
        max_retries=0, call_timeout=timedelta(seconds=10), backoff_initial=timedelta(milliseconds=10),
    )
    return LocalDispatchers(functions, parallelism=parallelism, egresses=[OUT], endpoints=[ep])


def greet(id_: str) -> Any:
    return message_builder("remote/greeter", id_, str_value="hello")


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_failed_remote_call_fails_again_with_the_same_error_and_has_no_effects(faulty, fault, parallelism):
    faulty.fault, expected = FAULTS[fault]
    run = remote_dispatchers(faulty, parallelism)
    try:
        with pytest.raises(JobFailed) as first:  # (from send if the reply came while it ran, else from the wait)
            bounded(lambda: run.send(greet("ann")).wait_remote(timeout_s=BOUND_S / 2))
        message = str(first.value)
        assert "remote function 'remote/greeter'" in message and expected in message
        other = same_subtask_id("test/g", ("remote/greeter", "ann"), parallelism)
        for retry in (
            lambda: run.send(message_builder("test/g", other, str_value="later")),  # waits behind the failed call
            run.run,
            lambda: run.advance(5_000),
            run.run_until_idle,
        ):
            before = faulty.requests
            with pytest.raises(JobFailed) as again:
                bounded(retry)
            assert str(again.value) == message
            assert faulty.requests == before + 1  # the failed call was sent again, once
            assert run.egress(OUT) == []
            assert run.state("remote/greeter", "ann", "seen") is None
            assert not run.is_idle()
    finally:
        run.close()


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_failed_remote_call_that_succeeds_on_retry_has_its_effects_once(faulty, fault, parallelism):
    faulty.fault = FAULTS[fault][0]
    run = remote_dispatchers(faulty, parallelism)
    try:
        with pytest.raises(JobFailed):
            bounded(lambda: run.send(greet("ann")).wait_remote(timeout_s=BOUND_S / 2))
        other = same_subtask_id("test/g", ("remote/greeter", "ann"), parallelism)
        with pytest.raises(JobFailed):
            bounded(lambda: run.send(message_builder("test/g", other, str_value="later")))
        faulty.fault = None  # the function is back
        bounded(run.run_until_idle)
        assert sorted(run.egress(OUT)) == ["g got: from greeter #1", "g got: later", "hi #1"]
        assert run.state("remote/greeter", "ann", "seen") == 1
        assert run.counters()["remote_requests"] == 1
    finally:
        run.close()
