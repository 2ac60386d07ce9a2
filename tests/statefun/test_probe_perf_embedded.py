"""The embedded dispatcher's per-invocation shortcuts keep the semantics of plain objects.

``context.address`` is one Address object whose fields the dispatcher sets per invocation
for as long as no function keeps it (so an address met for the first time leaves no object
behind); a function that keeps it, or keeps the context, must see the address it was
invoked with for ever after. A function whose values are all of the built-in immutable
types reads and writes them in plain slots with the cells left as they were (``load_at`` /
``store_at`` only set the slots); reads, deletes, bad assignments and the state left behind
must be those of a dict, and of the generic path."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.engine.errors import UserCodeError
from raystream.statefun_api import (
    Address,
    IntType,
    LongType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.local import LocalDispatchers

# ---------------------------------------------------------------------------- context.address


def _keeping_functions(kept: list, keep) -> StatefulFunctions:
    """``test/keep``: appends what ``keep(context)`` returns to ``kept`` (``None``: nothing),
    sends a message of value ``n > 0`` on to the id one lower, with ``n - 1``, and emits
    ``[address id, caller id or ""]`` of each invocation."""
    functions = StatefulFunctions()

    @functions.bind("test/keep", specs=[ValueSpec("seen", IntType)])
    def keep_fn(context, message):
        context.storage.seen = (context.storage.seen or 0) + 1
        held = keep(context)
        if held is not None:
            kept.append((context.address.id, held))
        caller = context.caller
        context.send_egress(
            egress_message_builder("test/out", json.dumps([context.address.id, "" if caller is None else caller.id]), StringType)
        )
        n = message.as_int()
        if n > 0:
            context.send(message_builder("test/keep", str(int(context.address.id) - 1), int_value=n - 1))

    return functions


@pytest.mark.parametrize(
    "keep",
    [
        lambda context: None,
        lambda context: context.address,
        lambda context: context,
        lambda context: {context.address: 1},
        lambda context: context.address if context.address.id.endswith("3") else None,
    ],
    ids=["nothing", "the-address", "the-context", "the-address-as-a-dict-key", "some-addresses"],
)
@pytest.mark.parametrize("parallelism", [1, 2])
def test_kept_addresses_and_contexts_keep_the_address_they_were_invoked_with(keep, parallelism):
    kept: list = []
    run = LocalDispatchers(_keeping_functions(kept, keep), parallelism=parallelism, egresses=["test/out"])
    ids = [str(i) for i in range(40)] * 3
    run.send(*[message_builder("test/keep", i, int_value=int(i) % 4) for i in ids])
    expected = []
    for i in ids:  # each message to i with value v also invokes i-1 .. i-v, each called by the one before
        v = int(i) % 4
        expected.append([i, ""])
        expected += [[str(int(i) - d), str(int(i) - d + 1)] for d in range(1, v + 1)]
    assert sorted(json.loads(r) for r in run.egress("test/out")) == sorted(expected)
    for fid, held in kept:
        if isinstance(held, Address):
            assert held == Address("test", "keep", fid) and held.id == fid and held.typename == "test/keep"
        elif isinstance(held, dict):
            assert list(held) == [Address("test", "keep", fid)] and held[Address("test", "keep", fid)] == 1
        else:  # a kept context
            assert held.address == Address("test", "keep", fid)
    for i in {str(i) for i in range(40)}:
        assert run.state("test/keep", i, "seen") == sum(1 for e in expected if e[0] == i)


def test_a_second_function_type_gets_its_own_namespace_and_name():
    functions = StatefulFunctions()
    seen: list = []

    @functions.bind("a.b/first")
    def first(context, message):
        seen.append(str(context.address))
        context.send(message_builder("c/second", context.address.id + "x", int_value=1))

    @functions.bind("c/second")
    def second(context, message):
        seen.append((context.address.namespace, context.address.name, context.address.id, str(context.caller)))

    run = LocalDispatchers(functions)
    run.send(*[message_builder("a.b/first", f"id{i}", int_value=1) for i in range(5)])
    assert sorted(s for s in seen if isinstance(s, str)) == [f"a.b/first/id{i}" for i in range(5)]
    assert sorted(s for s in seen if isinstance(s, tuple)) == [("c", "second", f"id{i}x", f"a.b/first/id{i}") for i in range(5)]


# ---------------------------------------------------------------------------- all-fast storage

FAST_SPECS = [ValueSpec("n", IntType), ValueSpec("big", LongType), ValueSpec("s", StringType)]
VALUES = {
    "n": st.integers(-(2**31), 2**31 - 1) | st.sampled_from([0, 1, 5]),
    "big": st.integers(-(2**63), 2**63 - 1),
    "s": st.text(max_size=5),
}


def _ops_functions(specs: list[ValueSpec]) -> StatefulFunctions:
    """``test/ops``: a message is a JSON list of operations ``["set", name, value]``,
    ``["del", name]``, ``["get", name]``, applied in order; every get is emitted."""
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
                context.send_egress(
                    egress_message_builder("test/reads", json.dumps([context.address.id, op[1], getattr(storage, op[1])]), StringType)
                )

    return functions


_op = st.sampled_from(list(VALUES)).flatmap(
    lambda name: st.one_of(VALUES[name].map(lambda v: ["set", name, v]), st.just(["del", name]), st.just(["get", name]))
)
_batches = st.lists(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.lists(_op, max_size=6)), min_size=1, max_size=6),
    min_size=1, max_size=4,
)


@pytest.mark.parametrize("names", [("n",), ("n", "big"), ("n", "big", "s")], ids=["int", "int-long", "int-long-str"])
@settings(max_examples=50, deadline=None)
@given(batches=_batches)
def test_values_all_in_plain_slots_read_and_stay_as_in_a_dict(names, batches):
    specs = [spec for spec in FAST_SPECS if spec.name in names]
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
    by_address = sorted((json.loads(r) for r in run.egress("test/reads")), key=lambda read: read[0])
    assert by_address == sorted(expected, key=lambda read: read[0])
    for fid, values in model.items():
        for name in names:
            assert run.state("test/ops", fid, name) == values.get(name), (fid, name)


@pytest.mark.parametrize(
    "bad, error",
    [(("n", "x"), "io.statefun.types/int"), (("n", 2**40), "io.statefun.types/int"), (("n", None), "None")],
    ids=["str-for-int", "int-out-of-range", "none"],
)
def test_a_bad_assignment_after_good_ones_writes_nothing_of_the_invocation(bad, error):
    functions = StatefulFunctions()

    @functions.bind("test/f", specs=[ValueSpec("n", IntType), ValueSpec("big", LongType)])
    def f(context, message):
        context.storage.big = (context.storage.big or 0) + 1
        context.storage.n = (context.storage.n or 0) + 1
        if message.as_int() == 1:
            setattr(context.storage, *bad)

    run = LocalDispatchers(functions)
    run.send(message_builder("test/f", "k", int_value=0))
    with pytest.raises(UserCodeError, match=error):
        run.send(message_builder("test/f", "k", int_value=1))
    assert (run.state("test/f", "k", "n"), run.state("test/f", "k", "big")) == (1, 1)
