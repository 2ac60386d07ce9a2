"""The dispatcher's storage keeps values of the built-in immutable types in plain slots
(``storage_class(..., fast=True)``): reading and assigning them runs no Python code, and the
dispatcher takes what changed when it stores the address. These tests hold it to the plain
storage's semantics: the values every read sees and the state left behind (against a model),
deletes, other types and TTLs beside fast names, and the errors of bad assignments."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.engine.errors import UserCodeError
from raystream.statefun_api import (
    IntType,
    LongType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    make_json_type,
    message_builder,
)
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.storage import StorageSlots, fast_names, storage_class

Cart = make_json_type("test/Cart")
SPECS = [
    ValueSpec("n", IntType),  # fast
    ValueSpec("big", LongType),  # fast
    ValueSpec("s", StringType),  # fast
    ValueSpec("cart", Cart),  # a property through its cell
    ValueSpec("t", IntType, expire_after_write=timedelta(hours=1)),  # through its cell: a write refreshes the TTL
]
VALUES = {
    "n": st.integers(-(2**31), 2**31 - 1) | st.sampled_from([0, 1, 5]),
    "big": st.integers(-(2**63), 2**63 - 1),
    "s": st.text(max_size=5),
    "cart": st.lists(st.integers(0, 9), max_size=3),
    "t": st.integers(0, 1000),
}


def _ops_functions(specs: list[ValueSpec]) -> StatefulFunctions:
    """``test/ops``: a message is a JSON list of operations ``["set", name, value]``,
    ``["del", name]``, ``["get", name]``, applied in order to ``context.storage``; every get
    is emitted as ``[id, name, value]``."""
    functions = StatefulFunctions()

    @functions.bind("test/ops", specs=specs)
    def ops(context, message):
        storage = context.storage
        for op in json.loads(message.as_string()):
            if op[0] == "set":
                setattr(storage, op[1], op[2])
            elif op[0] == "del":
                delattr(storage, op[1])
            else:
                value = getattr(storage, op[1])
                context.send_egress(egress_message_builder("test/reads", json.dumps([context.address.id, op[1], value]), StringType))

    return functions


_op = st.sampled_from(list(VALUES)).flatmap(
    lambda name: st.one_of(
        VALUES[name].map(lambda v: ["set", name, v]),
        st.just(["del", name]),
        st.just(["get", name]),
    )
)
_batches = st.lists(  # batches of messages (address id, operations)
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.lists(_op, max_size=6)), min_size=1, max_size=6),
    min_size=1, max_size=4,
)


@pytest.mark.parametrize("ttl", [True, False], ids=["generic-path", "direct-path"])
@settings(max_examples=60, deadline=None)
@given(batches=_batches)
def test_reads_and_the_state_left_behind_are_those_of_a_dict(ttl, batches):
    """With a TTL spec among them the function's values go through the state handles
    (``StorageSlots.load`` / ``changes``); without, straight in the backend's tables
    (``load_at`` / ``store_at``)."""
    specs = SPECS if ttl else [spec for spec in SPECS if spec.name != "t"]
    names = [spec.name for spec in specs]
    batches = [[(fid, [op for op in ops if op[1] in names]) for fid, ops in batch] for batch in batches]
    run = LocalDispatchers(_ops_functions(specs), egresses=["test/reads"])
    model: dict[str, dict[str, object]] = {}
    expected = []
    for batch in batches:
        for fid, operations in batch:
            values = model.setdefault(fid, {})
            for op in operations:
                if op[0] == "set":
                    values[op[1]] = op[2]
                elif op[0] == "del":
                    values.pop(op[1], None)
                else:
                    expected.append([fid, op[1], values.get(op[1])])
        run.send(*[message_builder("test/ops", fid, str_value=json.dumps(ops)) for fid, ops in batch])
    assert run.dispatchers[0]._layouts["test/ops"].slots.direct is not ttl
    # (messages of one address are invoked in order; addresses in any order)
    by_address = sorted((json.loads(r) for r in run.egress("test/reads")), key=lambda read: read[0])
    assert by_address == sorted(expected, key=lambda read: read[0])
    for fid, values in model.items():
        for name in names:
            assert run.state("test/ops", fid, name) == values.get(name), (fid, name)


def test_fast_names_are_the_built_in_immutable_types_without_a_write_ttl():
    assert fast_names(tuple(SPECS)) == ("n", "big", "s")
    assert fast_names((ValueSpec("n", IntType), ValueSpec("_hidden", IntType))) == ()  # (the plain class then)
    cls = storage_class(tuple(SPECS), fast=True)
    assert {name: type(cls.__dict__[name]).__name__ for name in VALUES} == {
        "n": "member_descriptor", "big": "member_descriptor", "s": "member_descriptor",
        "cart": "property", "t": "property",
    }
    assert storage_class(tuple(SPECS)) is not cls  # make_storage's class: every name through its cell


def test_a_slot_assigned_the_object_it_showed_is_not_a_change_and_a_deleted_one_reads_none():
    class Handle:
        def __init__(self, v):
            self.v = v

        def value(self):
            return self.v

    n, s = Handle(("io.statefun.types/int", 7)), Handle(None)
    slots = StorageSlots("test/f", (ValueSpec("n", IntType), ValueSpec("s", StringType)), [n, s])
    storage = slots.load()
    storage.n = storage.n  # the same object: nothing to write
    assert slots.changes() == []
    storage = slots.load()
    del storage.n
    assert storage.n is None
    storage.s = "x"
    assert slots.changes() == [(n, None), (s, ("io.statefun.types/string", "x"))]
    storage = slots.load()  # the next address: the slot holds its value again
    assert storage.n == 7 and storage.s is None


@pytest.mark.parametrize("assign, words", [
    (lambda s: setattr(s, "n", "seven"), ["TypeError", "state 'n'", "'test/bad'", "io.statefun.types/int"]),
    (lambda s: setattr(s, "n", 2**40), ["state 'n'", "'test/bad'"]),  # out of an int's range
    (lambda s: setattr(s, "n", None), ["ValueError", "del context.storage.n"]),
    (lambda s: setattr(s, "visits", 1), ["'visits' is not a declared ValueSpec of function 'test/bad'", "declared: n"]),
    (lambda s: delattr(s, "visits"), ["'visits' is not a declared ValueSpec of function 'test/bad'"]),
])
def test_a_bad_assignment_fails_naming_the_state_and_the_function(assign, words):
    functions = StatefulFunctions()

    @functions.bind("test/bad", specs=[ValueSpec("n", IntType)])
    def bad(context, message):
        if message.as_int() == 1:
            context.storage.n = 5
        else:
            context.storage.n = 6  # (not written: the invocation fails)
            assign(context.storage)

    run = LocalDispatchers(functions)
    run.send(message_builder("test/bad", "1", int_value=1))
    with pytest.raises(UserCodeError) as err:
        run.send(message_builder("test/bad", "1", int_value=2))
    text = f"{err.value} {err.value.original}"
    for word in words:
        assert word in text, (word, text)
    assert run.state("test/bad", "1", "n") == 5  # nothing of the failed invocation was written


def test_none_assigned_where_there_is_no_value_changes_nothing():
    """The one difference from the plain storage, where ``storage.n = None`` always raises:
    a fast slot that held None and holds None again shows no assignment."""
    functions = StatefulFunctions()

    @functions.bind("test/none", specs=[ValueSpec("n", IntType)])
    def none(context, message):
        context.storage.n = None

    run = LocalDispatchers(functions)
    run.send(message_builder("test/none", "1", int_value=1))
    assert run.state("test/none", "1", "n") is None
