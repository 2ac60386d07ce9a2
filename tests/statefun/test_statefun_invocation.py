"""The sans-I/O invocation core: effects, batches, async functions and errors."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from raystream.engine.errors import RaystreamError
from raystream.statefun_api import (
    Address,
    DelayedCancellation,
    DelayedMessage,
    FunctionNotFound,
    IntType,
    Invocation,
    StatefulFunctionError,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    invoke,
    invoke_async,
    message_builder,
)
from raystream.statefun_api.testing import run_function

GREETER = Address.of("com.example/greeter", "alice")
OTHER = Address.of("com.example/other", "bob")


def to_greeter(text: str = "hi"):
    return message_builder(GREETER.typename, GREETER.id, str_value=text)


@pytest.fixture
def functions() -> StatefulFunctions:
    functions = StatefulFunctions()

    @functions.bind(
        GREETER.typename, specs=[ValueSpec("seen", IntType), ValueSpec("last", StringType)]
    )
    def greeter(context, message):
        context.storage.seen = (context.storage.seen or 0) + 1
        context.storage.last = message.as_string()
        if message.as_string() == "forget":
            del context.storage.last
        context.send(message_builder(OTHER.typename, OTHER.id, int_value=context.storage.seen))
        context.send_after(
            timedelta(seconds=1, microseconds=1500),
            message_builder(OTHER.typename, OTHER.id, str_value="later"),
            cancellation_token="t-1",
        )
        context.send_after(
            timedelta(minutes=1), message_builder(GREETER.typename, "x", str_value="self")
        )
        context.cancel_delayed_message("t-0")
        context.send_egress(
            egress_message_builder("com.example/out", f"hi {context.address.id}", StringType)
        )

    return functions


def test_effects_of_one_message(functions) -> None:
    result = invoke(functions, GREETER, {}, [to_greeter()])
    assert result.state_mutations == {
        "seen": IntType.serializer().serialize(1),
        "last": StringType.serializer().serialize("hi"),
    }
    [out] = result.outgoing
    assert (out.target, out.caller, out.message.as_int()) == (OTHER, GREETER, 1)
    first, second, cancel = result.delayed_actions
    assert first == DelayedMessage(
        1001, OTHER, message_builder(OTHER.typename, OTHER.id, str_value="later"), "t-1", GREETER
    )
    assert (second.delay_ms, second.cancellation_token, second.target.id) == (60000, "", "x")
    assert cancel == DelayedCancellation("t-0")
    assert result.delayed == [first, second]
    assert result.cancellations == ["t-0"]
    assert [e.raw_value() for e in result.egress] == [StringType.serializer().serialize("hi alice")]


def test_batch_shares_state_and_deletes(functions) -> None:
    state = {
        "seen": IntType.serializer().serialize(10),
        "last": StringType.serializer().serialize("x"),
    }
    result = invoke(functions, GREETER, state, [to_greeter("a"), to_greeter("forget")])
    assert result.state_mutations == {"seen": IntType.serializer().serialize(12), "last": None}
    assert [o.message.as_int() for o in result.outgoing] == [11, 12]
    assert len(result.egress) == 2


def test_untouched_state_is_not_reported() -> None:
    functions = StatefulFunctions()
    functions.register(
        "ns/reader",
        lambda c, m: c.storage.a,
        specs=[ValueSpec("a", IntType), ValueSpec("b", IntType)],
    )
    result = invoke(
        functions,
        Address.of("ns/reader", "1"),
        {"a": IntType.serializer().serialize(1)},
        [message_builder("ns/reader", "1", int_value=0)],
    )
    assert result.state_mutations == {}


def test_caller_is_none_for_ingress_and_set_per_message() -> None:
    seen = []
    functions = StatefulFunctions()
    functions.register("ns/f", lambda context, message: seen.append(context.caller))
    target = Address.of("ns/f", "1")
    msg = message_builder("ns/f", "1", int_value=1)
    invoke(functions, target, None, [msg, Invocation(msg, caller=OTHER), Invocation(msg)])
    assert seen == [None, OTHER, None]


def test_async_function_runs_to_completion_on_a_private_loop() -> None:
    functions = StatefulFunctions()

    @functions.bind("ns/slow", specs=[ValueSpec("n", IntType)])
    async def slow(context, message):
        await asyncio.sleep(0.001)
        context.storage.n = (context.storage.n or 0) + message.as_int()
        context.send(message_builder("ns/sink", "1", int_value=context.storage.n))

    target = Address.of("ns/slow", "1")
    messages = [message_builder("ns/slow", "1", int_value=n) for n in (1, 2, 3)]
    result = invoke(functions, target, {}, messages)
    assert [o.message.as_int() for o in result.outgoing] == [1, 3, 6]
    assert result.state_mutations == {"n": IntType.serializer().serialize(6)}
    assert asyncio.run(invoke_async(functions, target, {}, messages)) == result


def test_sync_invoke_of_async_function_inside_a_running_loop_is_refused() -> None:
    functions = StatefulFunctions()

    async def f(context, message):
        pass

    functions.register("ns/a", f)
    msg = message_builder("ns/a", "1", int_value=1)

    async def main():
        with pytest.raises(StatefulFunctionError, match="invoke_async"):
            invoke(functions, msg.target, {}, [msg])
        return await invoke_async(functions, msg.target, {}, [msg])

    assert asyncio.run(main()).outgoing == []


def test_sync_callable_returning_a_coroutine_is_awaited() -> None:
    calls = []

    async def real(context, message):
        calls.append(message.as_int())

    functions = StatefulFunctions()
    functions.register("ns/w", lambda context, message: real(context, message))
    msg = message_builder("ns/w", "1", int_value=7)
    invoke(functions, msg.target, {}, [msg])
    assert calls == [7]


def test_unregistered_function() -> None:
    msg = message_builder("ns/missing", "1", str_value="x")
    with pytest.raises(FunctionNotFound) as info:
        invoke(StatefulFunctions(), msg.target, {}, [msg])
    err = info.value
    assert isinstance(err, StatefulFunctionError) and isinstance(err, RaystreamError)
    assert "ns/missing/1" in str(err) and "'io.statefun.types/string'" in str(err)
    assert err.address == msg.target and err.message_typename == "io.statefun.types/string"


@pytest.mark.parametrize("is_async", [False, True])
def test_user_exception_is_wrapped_and_chained(is_async: bool) -> None:
    functions = StatefulFunctions()
    boom = ZeroDivisionError("division by zero")

    def sync_f(context, message):
        if message.as_int() == 2:
            raise boom
        context.send(message_builder("ns/sink", "1", int_value=1))

    async def async_f(context, message):
        sync_f(context, message)

    functions.register("ns/f", async_f if is_async else sync_f)
    msgs = [message_builder("ns/f", "1", int_value=n) for n in (1, 2)]
    with pytest.raises(StatefulFunctionError) as info:
        invoke(functions, msgs[0].target, {}, [msgs[0], Invocation(msgs[1], caller=OTHER)])
    err = info.value
    assert err.__cause__ is boom
    assert err.address == Address.of("ns/f", "1")
    assert err.message_typename == "io.statefun.types/int"
    assert (
        "ns/f/1" in str(err)
        and "message 2 of 2" in str(err)
        and "com.example/other/bob" in str(err)
    )
    assert "ZeroDivisionError" in str(err)


def test_storage_type_error_surfaces_with_spec_name() -> None:
    functions = StatefulFunctions()

    @functions.bind("ns/f", specs=[ValueSpec("count", IntType)])
    def f(context, message):
        context.storage.count = "many"

    msg = message_builder("ns/f", "1", int_value=1)
    with pytest.raises(StatefulFunctionError) as info:
        invoke(functions, msg.target, {}, [msg])
    assert isinstance(info.value.__cause__, TypeError)
    assert "'count'" in str(info.value.__cause__) and "io.statefun.types/int" in str(
        info.value.__cause__
    )


def test_misaddressed_message_and_bad_state() -> None:
    functions = StatefulFunctions()
    functions.register("ns/f", lambda c, m: None, specs=[ValueSpec("a", IntType)])
    with pytest.raises(StatefulFunctionError, match="delivered to ns/f/1"):
        invoke(functions, Address.of("ns/f", "1"), {}, [message_builder("ns/f", "2", int_value=1)])
    from raystream.statefun_api import TypedValue

    with pytest.raises(StatefulFunctionError, match="cannot load the state of ns/f/1"):
        invoke(functions, Address.of("ns/f", "1"), {"a": TypedValue("x/y", True, b"")}, [])
    with pytest.raises(TypeError, match="Message or Invocation"):
        invoke(functions, Address.of("ns/f", "1"), {}, ["hello"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda c: c.send("x"), TypeError, "send expects a Message"),
        (
            lambda c: c.send(egress_message_builder("a/b", "x", StringType)),
            TypeError,
            "use send_egress",
        ),
        (
            lambda c: c.send_after(5, message_builder("a/b", "1", int_value=1)),
            TypeError,
            "timedelta",
        ),
        (
            lambda c: c.send_after(timedelta(seconds=-1), message_builder("a/b", "1", int_value=1)),
            ValueError,
            "negative",
        ),
        (lambda c: c.cancel_delayed_message(""), ValueError, "non-empty"),
        (
            lambda c: c.send_egress(message_builder("a/b", "1", int_value=1)),
            TypeError,
            "EgressMessage",
        ),
    ],
)
def test_context_argument_errors(call, error, match) -> None:
    functions = StatefulFunctions()
    functions.register("ns/f", lambda context, message: call(context))
    with pytest.raises(StatefulFunctionError) as info:
        invoke(functions, Address.of("ns/f", "1"), {}, [message_builder("ns/f", "1", int_value=1)])
    assert isinstance(info.value.__cause__, error)
    assert info.value.__cause__.args[0].find(match) >= 0


def test_error_pickles_with_attributes() -> None:
    import pickle

    err = FunctionNotFound("x", address=GREETER, message_typename="a/b")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is FunctionNotFound
    assert (back.args[0], back.address, back.message_typename) == ("x", GREETER, "a/b")


def test_run_function_helper(functions) -> None:
    run = run_function(
        functions, GREETER.typename, GREETER.id, [to_greeter("yo")], state={"seen": 41}
    )
    assert run.state == {"seen": 42, "last": "yo"}
    assert [m.message.as_int() for m in run.sent] == [42]
    assert [d.cancellation_token for d in run.delayed] == ["t-1", ""]
    assert run.cancellations == ["t-0"]
    assert len(run.egress) == 1
    with pytest.raises(KeyError, match="not a declared ValueSpec"):
        run_function(functions, GREETER.typename, GREETER.id, [], state={"nope": 1})
