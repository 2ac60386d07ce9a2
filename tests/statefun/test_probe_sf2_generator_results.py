"""A stateful function that is a plain callable *returning* a generator (``lambda c, m:
gen(c, m)``, a decorator around a generator function) passes the registration check for
generator functions, and nobody iterated what it returned: its messages, egress and state
writes were dropped without a word. Every invocation path now refuses such a result with a
StatefulFunctionError naming the function type, the address and the remedy."""

from __future__ import annotations

import asyncio
import functools

import pytest

from raystream.engine.errors import UserCodeError
from raystream.statefun_api import (
    Address,
    IntType,
    StatefulFunctionError,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.invocation import invoke, invoke_async
from raystream.statefun_api.local import LocalDispatchers


def _gen(context, message):
    context.storage.n = (context.storage.n or 0) + 1
    yield context.send_egress(egress_message_builder("t/out", message.as_string(), StringType))


async def _agen(context, message):
    context.send_egress(egress_message_builder("t/out", message.as_string(), StringType))
    yield None


def _logged(fun):
    @functools.wraps(fun)
    def wrapper(context, message):
        return fun(context, message)

    return wrapper


def _registry(kind: str) -> StatefulFunctions:
    functions = StatefulFunctions()
    specs = [ValueSpec("n", IntType)]
    if kind == "lambda":
        functions.register("t/f", lambda c, m: _gen(c, m), specs=specs)
    elif kind == "decorator":
        functions.register("t/f", _logged(_gen), specs=specs)  # functools.wraps: a plain function
    else:
        functions.register("t/f", lambda c, m: _agen(c, m), specs=specs)
    return functions


KINDS = ["lambda", "decorator", "async-generator"]


def _check(error: BaseException, kind: str) -> None:
    text = str(error)
    assert "function type 't/f' at address t/f/a returned" in text, text
    assert ("an async generator" if kind == "async-generator" else "a generator") in text
    assert "context.send(...) / context.send_egress(...)" in text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("parallelism", [1, 2])
def test_the_dispatcher_fails_a_function_that_returns_a_generator(kind: str, parallelism: int) -> None:
    with LocalDispatchers(_registry(kind), parallelism=parallelism, egresses=["t/out"]) as run:
        with pytest.raises(UserCodeError) as err:
            run.send(message_builder("t/f", "a", str_value="x"))
        cause = err.value.__cause__
        assert isinstance(cause, StatefulFunctionError)
        _check(cause, kind)
        assert run.egress("t/out") == []


@pytest.mark.parametrize("kind", KINDS)
def test_invoke_and_invoke_async_fail_a_function_that_returns_a_generator(kind: str) -> None:
    functions = _registry(kind)
    target = Address.of("t/f", "a")
    message = message_builder("t/f", "a", str_value="x")
    with pytest.raises(StatefulFunctionError) as err:
        invoke(functions, target, {}, [message])
    _check(err.value, kind)
    with pytest.raises(StatefulFunctionError) as err:
        asyncio.run(invoke_async(functions, target, {}, [message]))
    _check(err.value, kind)


def test_an_async_function_returning_a_generator_is_refused_too() -> None:
    functions = StatefulFunctions()

    async def outer(context, message):
        return None

    functions.register("t/f", lambda c, m: _gen(c, m) if m.as_string() == "g" else outer(c, m), specs=[ValueSpec("n", IntType)])
    with LocalDispatchers(functions, egresses=["t/out"]) as run:
        run.send(message_builder("t/f", "a", str_value="coroutine"))  # a returned coroutine is awaited
        with pytest.raises(UserCodeError, match="returned a generator"):
            run.send(message_builder("t/f", "a", str_value="g"))


def test_functions_returning_other_values_still_run() -> None:
    functions = StatefulFunctions()

    @functions.bind("t/f", specs=[ValueSpec("n", IntType)])
    def f(context, message):
        context.storage.n = (context.storage.n or 0) + 1
        context.send_egress(egress_message_builder("t/out", message.as_string(), StringType))
        return [1, 2]  # ignored, as before

    with LocalDispatchers(functions, parallelism=2, egresses=["t/out"]) as run:
        run.send(*[message_builder("t/f", k, str_value=k) for k in ("a", "b", "a")])
        assert sorted(run.egress("t/out")) == ["a", "a", "b"]
        assert run.state("t/f", "a", "n") == 2


def _async_wrapped() -> StatefulFunctions:
    """An async decorator around a generator function: the coroutine's result is the generator."""
    functions = StatefulFunctions()

    def logged_async(fun):
        async def wrapper(context, message):
            return fun(context, message)

        return wrapper

    functions.register("t/f", logged_async(_gen), specs=[ValueSpec("n", IntType)])
    functions.register("t/g", lambda c, m: logged_async(_gen)(c, m), specs=[ValueSpec("n", IntType)])  # sync -> coroutine
    return functions


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("typename", ["t/f", "t/g"])
def test_a_coroutine_whose_result_is_a_generator_is_refused(parallelism: int, typename: str) -> None:
    functions = _async_wrapped()
    with LocalDispatchers(functions, parallelism=parallelism, egresses=["t/out"]) as run:
        with pytest.raises(UserCodeError, match=rf"function type '{typename}' at address {typename}/a returned a generator"):
            run.send(message_builder(typename, "a", str_value="x"))
        assert run.egress("t/out") == []
    target = Address.of(typename, "a")
    message = message_builder(typename, "a", str_value="x")
    with pytest.raises(StatefulFunctionError, match="returned a generator"):
        invoke(functions, target, {}, [message])
    with pytest.raises(StatefulFunctionError, match="returned a generator"):
        asyncio.run(invoke_async(functions, target, {}, [message]))
