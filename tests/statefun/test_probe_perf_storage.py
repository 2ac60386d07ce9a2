"""The dispatcher's straight-line storage access (``StorageSlots.load_at`` / ``store_at`` made
per function type when every value is of a built-in immutable type) keeps the semantics of the
general path: every value each type may hold, values only the cells accept (a float's
``-0.0``, a string that is not UTF-8, an int given to a double), refusals, deletions, no state
at all, a stored value in another form, a function that
keeps its storage; checked against the plain storage of the SDK-compatible path
(``make_storage``), at parallelism 1 and 2."""

from __future__ import annotations

import math

import pytest

from raystream.engine.errors import UserCodeError
from raystream.statefun_api import (
    BoolType,
    DoubleType,
    IntType,
    LongType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    message_builder,
)
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.storage import StorageSlots, make_storage, storage_changes
from raystream.statefun_api.types import TypedValue

SPECS = [
    ValueSpec("i", IntType),
    ValueSpec("big", LongType),
    ValueSpec("d", DoubleType),
    ValueSpec("s", StringType),
    ValueSpec("b", BoolType),
]
#: per name: values to assign in turn (each stays, and reads back as in the plain storage)
VALUES = {
    "i": [0, 1, -(2**31), 2**31 - 1, 7],
    "big": [2**40, -(2**63), 2**63 - 1, 0],
    "d": [1.5, -0.0, 0.0, math.inf, 3],  # (-0.0 and an int: only the cell holds them, serialized)
    "s": ["x", "", "h\u00e9llo", "\ud800", "z"],  # ("\ud800": not UTF-8, refused)
    "b": [True, False, True],
}


def _plain_outcome(name: str, value: object) -> tuple[str, object]:
    """What the plain storage (the SDK's path) does with ``storage.<name> = value``: ``("ok",
    value read back)`` or ``("error", exception type)``."""
    storage = make_storage("test/f", SPECS, {})
    try:
        setattr(storage, name, value)
    except (TypeError, ValueError) as exc:
        return "error", type(exc)
    return "ok", getattr(storage, name)


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and (a == b and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b)))


def _assigning_functions() -> StatefulFunctions:
    """``test/f``: a message ``"<name>:<index>"`` assigns ``VALUES[name][index]``, ``"del:<name>"``
    deletes it, ``"keep:"`` assigns nothing."""
    functions = StatefulFunctions()

    @functions.bind("test/f", specs=SPECS)
    def f(context, message):
        op, arg = message.as_string().split(":")
        if op == "del":
            delattr(context.storage, arg)
        elif op != "keep":
            setattr(context.storage, op, VALUES[op][int(arg)])

    return functions


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("name", list(VALUES))
def test_each_value_of_each_type_is_kept_refused_or_deleted_as_by_the_plain_storage(name, parallelism):
    first = VALUES[name][0]
    for index, value in enumerate(VALUES[name]):
        run = LocalDispatchers(_assigning_functions(), parallelism=parallelism)
        run.send(message_builder("test/f", "k", str_value=f"{name}:0"))
        outcome, read = _plain_outcome(name, value)
        if outcome == "error":  # refused as by the plain storage, nothing written
            with pytest.raises(UserCodeError, match=f"state '{name}'"):
                run.send(message_builder("test/f", "k", str_value=f"{name}:{index}"))
            assert _same(run.state("test/f", "k", name), first)
            continue
        run.send(message_builder("test/f", "k", str_value=f"{name}:{index}"))
        assert _same(run.state("test/f", "k", name), read), (value, run.state("test/f", "k", name))
        run.send(message_builder("test/f", "k", str_value="keep:"))  # unchanged: nothing written
        assert _same(run.state("test/f", "k", name), read)
        del_twice = [message_builder("test/f", "k", str_value=f"del:{name}")] * 2
        run.send(*del_twice, message_builder("test/f", "k", str_value="keep:"))
        assert all(run.state("test/f", "k", other) is None for other in VALUES)


def test_a_function_without_state_sends_to_one_with_two_values():
    functions = StatefulFunctions()
    seen = []

    @functions.bind("test/none")
    def none(context, message):
        seen.append(context.address.id)
        context.send(message_builder("test/kw", context.address.id, int_value=message.as_int()))

    @functions.bind("test/kw", specs=[ValueSpec("total", IntType), ValueSpec("n", IntType)])
    def kw(context, message):
        storage = context.storage
        storage.total = (storage.total or 0) + message.as_int()
        storage.n = (storage.n or 0) + 1

    for parallelism in (1, 2):
        run = LocalDispatchers(functions, parallelism=parallelism)
        run.send(*[message_builder("test/none", f"a{i % 3}", int_value=i) for i in range(9)])
        assert [run.state("test/kw", f"a{j}", "total") for j in range(3)] == [9, 12, 15]
        assert [run.state("test/kw", f"a{j}", "n") for j in range(3)] == [3, 3, 3]
    assert sorted(seen) == sorted([f"a{i % 3}" for i in range(9)] * 2)


def test_a_function_that_keeps_its_storage_sees_its_own_values_for_ever():
    functions = StatefulFunctions()
    kept = []

    @functions.bind("test/keep", specs=[ValueSpec("n", IntType)])
    def keep(context, message):
        context.storage.n = (context.storage.n or 0) + message.as_int()
        if context.address.id == "a":
            kept.append(context.storage)

    run = LocalDispatchers(functions)
    for fid, v in [("a", 1), ("b", 10), ("a", 2), ("b", 20), ("b", 100)]:  # (one invocation each)
        run.send(message_builder("test/keep", fid, int_value=v))
    assert [s.n for s in kept] == [1, 3]
    assert (run.state("test/keep", "a", "n"), run.state("test/keep", "b", "n")) == (3, 130)


def test_a_stored_value_in_another_form_is_read_and_written_through_the_cells():
    """A value held as a TypedValue in the table (a snapshot of another form) goes through the
    general path for its address; its neighbours keep the straight-line one."""
    specs = (ValueSpec("n", IntType), ValueSpec("s", StringType))
    serialized = make_storage("a/b", list(specs), {})
    serialized.n = 41
    tv = dict(storage_changes(serialized))["n"]
    assert isinstance(tv, TypedValue)
    ns, ss, touched = {0: {"x": TypedValue(tv.typename, True, tv.value), "y": ("io.statefun.types/int", 1)}}, {}, set()
    slots = StorageSlots("a/b", specs, [None, None])
    slots.bind_tables([ns, ss], touched)
    storage = slots.load_at(0, "x")
    assert (storage.n, storage.s) == (41, None)
    storage.n += 1
    storage.s = "t"
    slots.store_at(0, "x")
    storage = slots.load_at(0, "y")
    assert (storage.n, storage.s) == (1, None)
    slots.store_at(0, "y")  # nothing assigned: nothing written
    assert ns == {0: {"x": ("io.statefun.types/int", 42), "y": ("io.statefun.types/int", 1)}}
    assert ss == {0: {"x": ("io.statefun.types/string", "t")}} and touched == {0}
    ns[0]["y"] = ("io.statefun.types/long", 5)
    with pytest.raises(TypeError, match="declared as 'io.statefun.types/int'"):
        slots.load_at(0, "y")
