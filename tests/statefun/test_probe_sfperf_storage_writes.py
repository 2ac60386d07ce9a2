"""The dispatcher's storage of a sync function assigns its fast values with Python's own
attribute assignment (no Python ``__delattr__`` on the class, which would send every
``storage.n = v`` through ``object.__setattr__``'s wrapper: ~1,100 instructions instead of
~30), unless its code shows a deletion (``storage.may_delete_values``: then the class that
deletes idempotently from the start). Deleting a value twice in one batch through code the
check does not see (here a method of another object) then raises inside the function where
StateFun's storage does nothing; the dispatcher recognises it, gives the function type the
storage that deletes idempotently and invokes the batch again, so what a function sees, the
state it leaves and its effects through its context stay StateFun's (each message's effects once)."""

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

OUT = "test/out"


class _Eraser:
    """Deletes a storage value where ``may_delete_values`` does not look (a method of an object)."""

    def erase(self, storage: Any, name: str) -> None:
        delattr(storage, name)


ERASER = _Eraser()


def _functions(seen: list[type]) -> StatefulFunctions:
    """``test/ops``: a message is a string of operations, one character each, on the value
    ``n``: ``+`` adds one, ``d`` deletes it (through ERASER, unseen), ``r`` emits what it
    reads; every message ends with an egress record ``"<id>:<n>"``. ``test/count`` counts.
    Both note their storage's class in ``seen``."""
    functions = StatefulFunctions()

    @functions.bind("test/ops", specs=[ValueSpec("n", IntType)])
    def ops(context: Any, message: Any) -> None:
        storage = context.storage
        seen.append(type(storage))
        for op in message.as_string():
            if op == "+":
                storage.n = (storage.n or 0) + 1
            elif op == "d":
                ERASER.erase(storage, "n")
            elif op == "r":
                context.send_egress(egress_message_builder(OUT, f"read {storage.n}", StringType))
        context.send_egress(egress_message_builder(OUT, f"{context.address.id}:{storage.n}", StringType))

    @functions.bind("test/count", specs=[ValueSpec("n", IntType)])
    def count(context: Any, message: Any) -> None:
        seen.append(type(context.storage))
        context.storage.n = (context.storage.n or 0) + 1

    return functions


def _ops(address_id: str, ops: str) -> Any:
    return message_builder("test/ops", address_id, str_value=ops)


def test_a_sync_functions_storage_assigns_with_pythons_own_setattr() -> None:
    seen: list[type] = []
    with LocalDispatchers(_functions(seen), egresses=[OUT]) as run:
        run.send(_ops("a", "+"), message_builder("test/count", "a", int_value=1))
        assert run.state("test/count", "a", "n") == 1
    assert len(seen) == 2
    for cls in seen:  # (object's own __setattr__ and __delattr__: the type's assignment is Python's, in C)
        assert cls.__setattr__ is object.__setattr__ and cls.__delattr__ is object.__delattr__


def test_a_value_deleted_twice_in_one_message_is_deleted_once_with_each_effect_once() -> None:
    seen: list[type] = []
    with LocalDispatchers(_functions(seen), egresses=[OUT]) as run:
        run.send(_ops("a", "++"), _ops("a", "+ddr"), _ops("a", "r+"))
        assert run.egress(OUT) == ["a:2", "read None", "a:None", "read None", "a:1"]
        assert run.state("test/ops", "a", "n") == 1
        assert run.counters()["invocations"] == 1  # the batch invoked again counts once
        # from then on the function type's storage deletes idempotently; the other keeps its fast class
        run.send(_ops("b", "+dd"), message_builder("test/count", "b", int_value=1))
        assert run.egress(OUT)[5:] == ["b:None"]
        assert run.state("test/ops", "b", "n") is None
    assert seen[-2].__delattr__ is not object.__delattr__  # test/ops
    assert seen[-1].__delattr__ is object.__delattr__  # test/count


def test_a_value_deleted_in_one_message_and_again_in_the_next_of_the_batch() -> None:
    seen: list[type] = []
    with LocalDispatchers(_functions(seen), egresses=[OUT]) as run:
        run.send(_ops("a", "+++"))
        run.send(*[_ops("a", op) for op in ("d", "d", "r", "+", "d", "d")])
        assert run.egress(OUT) == ["a:3", "a:None", "a:None", "read None", "a:None", "a:1", "a:None", "a:None"]
        assert run.state("test/ops", "a", "n") is None
        run.send(_ops("a", "+"))
        assert run.state("test/ops", "a", "n") == 1


def test_a_value_deleted_then_read_in_the_same_batch_reads_none() -> None:
    seen: list[type] = []
    with LocalDispatchers(_functions(seen), egresses=[OUT]) as run:
        run.send(_ops("a", "++"), _ops("a", "dr"), _ops("a", "r+"))
        assert run.egress(OUT) == ["a:2", "read None", "a:None", "read None", "a:1"]
        assert run.state("test/ops", "a", "n") == 1
        assert run.counters()["invocations"] == 1  # (the unseen deletion's read: the batch invoked again)


def test_an_attribute_error_of_the_function_itself_still_fails_the_invocation() -> None:
    functions = StatefulFunctions()

    @functions.bind("test/raises", specs=[ValueSpec("n", IntType)])
    def raises(context: Any, message: Any) -> None:
        context.storage.n = 1
        raise AttributeError("n")  # (the text of a deletion again, but the value is there)

    with LocalDispatchers(functions) as run, pytest.raises(UserCodeError, match="AttributeError: n"):
        run.send(message_builder("test/raises", "a", int_value=1))
