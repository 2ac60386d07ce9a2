"""A sync function that deletes state runs once per message, and one that does not reads its
fast values with Python's own attribute access.

Before, every sync function got the storage class whose second ``del`` of a value raises
(fa3502f), and the dispatcher invoked the whole batch again when it did: the function's own
side effects outside its context (a print, a list it appends to, a call to another
service) for the messages of that batch happened twice. Now a function whose code shows a
deletion (``storage.may_delete_values``) gets the class that deletes idempotently from the
start; the others get a class without ``__getattr__`` (reads specialize in CPython).
"""

from __future__ import annotations

from typing import Any

import pytest

from raystream.engine.errors import UserCodeError
from raystream.statefun_api import (
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.storage import may_delete_values

OUT = "test/out"


def _forget(storage: Any) -> None:
    del storage.n


def _functions(effects: list[Any], classes: list[type]) -> StatefulFunctions:
    functions = StatefulFunctions()

    @functions.bind("test/reset", specs=[ValueSpec("n", IntType)])
    def reset(context: Any, message: Any) -> None:
        effects.append(("reset", context.address.id, message.as_int()))
        classes.append(type(context.storage))
        if message.as_int() > 0:
            context.storage.n = message.as_int()
        else:
            del context.storage.n
            del context.storage.n  # (StateFun: deleting again does nothing)
        context.send_egress(egress_message_builder(OUT, f"{context.address.id}:{context.storage.n}", StringType))

    @functions.bind("test/helper", specs=[ValueSpec("n", IntType)])
    def helper(context: Any, message: Any) -> None:
        effects.append(("helper", context.address.id, message.as_int()))
        _forget(context.storage)

    @functions.bind("test/count", specs=[ValueSpec("n", IntType)])
    def count(context: Any, message: Any) -> None:
        classes.append(type(context.storage))
        context.storage.n = (context.storage.n or 0) + 1

    return functions


def test_a_function_deleting_a_value_twice_in_a_batch_has_its_side_effects_once() -> None:
    effects: list[Any] = []
    classes: list[type] = []
    with LocalDispatchers(_functions(effects, classes), egresses=[OUT]) as run:
        run.send(*[message_builder("test/reset", "a", int_value=v) for v in (3, 0, 0, 5, 0)])
        assert effects == [("reset", "a", v) for v in (3, 0, 0, 5, 0)]  # (was each twice: the batch invoked again)
        assert run.egress(OUT) == ["a:3", "a:None", "a:None", "a:5", "a:None"]
        assert run.state("test/reset", "a", "n") is None
        assert run.counters()["invocations"] == 1


def test_a_deletion_in_a_helper_function_is_seen_too() -> None:
    effects: list[Any] = []
    with LocalDispatchers(_functions(effects, []), egresses=[OUT]) as run:
        run.send(*[message_builder("test/helper", "b", int_value=v) for v in (1, 2, 3)])
        assert effects == [("helper", "b", v) for v in (1, 2, 3)]
        assert run.state("test/helper", "b", "n") is None


def test_a_function_that_never_deletes_reads_with_pythons_own_attribute_access() -> None:
    classes: list[type] = []
    with LocalDispatchers(_functions([], classes), egresses=[OUT]) as run:
        run.send(*[message_builder("test/count", "c", int_value=1) for _ in range(3)])
        assert run.state("test/count", "c", "n") == 3
    assert classes and all(not hasattr(cls, "__getattr__") for cls in classes)
    assert all(cls.__setattr__ is object.__setattr__ and cls.__delattr__ is object.__delattr__ for cls in classes)


def test_reading_an_undeclared_name_still_names_the_declared_ones() -> None:
    functions = StatefulFunctions()

    @functions.bind("test/typo", specs=[ValueSpec("n", IntType)])
    def typo(context: Any, message: Any) -> None:
        context.storage.n = (context.storage.m or 0) + 1

    with LocalDispatchers(functions) as run, pytest.raises(UserCodeError) as info:
        run.send(message_builder("test/typo", "a", int_value=1))
    assert "'m' is not a declared ValueSpec of function 'test/typo' (declared: n)" in str(info.value)


def test_what_may_delete_values_sees() -> None:
    def plain(context: Any, message: Any) -> None:
        context.storage.n = 1

    def nested(context: Any, message: Any) -> None:
        def inner() -> None:
            del context.storage.n

        inner()

    def by_name(context: Any, message: Any) -> None:
        delattr(context.storage, "n")

    def closure_helper(context: Any, message: Any) -> None:
        plain(context, message)
        nested(context, message)

    class Callable_:
        def __call__(self, context: Any, message: Any) -> None:
            pass

    def with_default(context: Any, message: Any) -> None:
        context.storage.n = getattr(context.storage, "n", 0) + 1

    assert not may_delete_values(plain)
    assert may_delete_values(with_default)  # (getattr with a default would read an unseen deletion as missing)
    assert may_delete_values(nested) and may_delete_values(by_name) and may_delete_values(closure_helper)
    assert may_delete_values(Callable_())  # (not a plain function: unknown, so the idempotent class)


def test_a_bound_method_is_read_through_its_function() -> None:
    class Counter:
        def count(self, context: Any, message: Any) -> None:
            context.storage.n = (context.storage.n or 0) + 1

        def reset(self, context: Any, message: Any) -> None:
            del context.storage.n

    assert not may_delete_values(Counter().count)
    assert may_delete_values(Counter().reset)


def test_a_function_that_keeps_its_storage_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher makes new storage slots after each invocation of a function that keeps
    its storage; its code is read once per function type, not each time."""
    kept: list[Any] = []
    calls: list[Any] = []
    functions = StatefulFunctions()

    @functions.bind("test/keeps", specs=[ValueSpec("n", IntType)])
    def keeps(context: Any, message: Any) -> None:
        kept.append(context.storage)
        context.storage.n = (context.storage.n or 0) + 1

    import raystream.statefun_api.dispatcher as dispatcher_module

    def counting(fun: Any) -> bool:
        calls.append(fun)
        return may_delete_values(fun)

    monkeypatch.setattr(dispatcher_module, "may_delete_values", counting)
    with LocalDispatchers(functions) as run:
        for i in range(5):
            run.send(message_builder("test/keeps", str(i), int_value=1))
        assert run.state("test/keeps", "4", "n") == 1
    assert len(kept) == 5 and len(calls) == 1
