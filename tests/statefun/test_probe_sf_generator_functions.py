"""A stateful function written as a generator (``yield`` results, as a
``KeyedProcessFunction.process_element`` does) runs none of its body when called: its
messages, egress and state writes used to be dropped without a word. Registering one is
refused, naming the function and the remedy."""

from __future__ import annotations

import pytest

from raystream.statefun_api import (
    StatefulFunctions,
    StringType,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.local import LocalDispatchers


def test_a_generator_function_is_refused_naming_it_and_the_remedy() -> None:
    functions = StatefulFunctions()

    def greeter(context, message):
        yield egress_message_builder("t/out", f"hello {message.as_string()}", StringType)

    with pytest.raises(ValueError, match=r"function 't/greeter' \(.*greeter at .*\) is a generator function") as err:
        functions.bind("t/greeter")(greeter)
    assert "context.send_egress" in str(err.value)
    assert "t/greeter" not in functions


def test_an_async_generator_and_a_callable_object_that_yields_are_refused() -> None:
    functions = StatefulFunctions()

    async def agen(context, message):
        context.send_egress(egress_message_builder("t/out", "never", StringType))
        yield None

    class Yielding:
        def __call__(self, context, message):
            yield message

    with pytest.raises(ValueError, match="is an async generator function"):
        functions.register("t/agen", agen)
    with pytest.raises(ValueError, match="is a generator function"):
        functions.register("t/obj", Yielding())
    assert len(functions) == 0


def test_plain_and_async_functions_still_register_and_run() -> None:
    functions = StatefulFunctions()

    @functions.bind("t/sync")
    def sync(context, message):
        context.send_egress(egress_message_builder("t/out", "sync", StringType))

    @functions.bind("t/async")
    async def asynchronous(context, message):
        context.send_egress(egress_message_builder("t/out", "async", StringType))

    with LocalDispatchers(functions, egresses=["t/out"]) as run:
        run.send(message_builder("t/sync", "a", str_value="x"), message_builder("t/async", "a", str_value="x"))
        assert sorted(run.egress("t/out")) == ["async", "sync"]
