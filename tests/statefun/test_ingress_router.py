"""The ingress router operator of ``with_ingress``: every record's messages as engine records,
the same records ``message_to_record`` makes, in order; a router that raises or returns
something other than messages fails naming the record."""

from __future__ import annotations

import pytest

from raystream.engine.errors import UserCodeError
from raystream.engine.records import Batch
from raystream.statefun_api import (
    IntType,
    StringType,
    make_json_type,
    message_builder,
)
from raystream.statefun_api.ingress import IngressRouter
from raystream.statefun_api.routing import message_to_record

Cart = make_json_type("demo/Cart")


def _router(record):
    kind, key = record
    if kind == "int":
        return message_builder("demo/counter", key, int_value=len(key))
    if kind == "str":
        return message_builder("demo/greeter", key, str_value=f"hi {key}")
    if kind == "json":  # a value held serialized
        return message_builder("demo/cart", key, value={"items": [key]}, value_type=Cart)
    if kind == "many":
        return [message_builder("demo/counter", f"{key}{i}", int_value=i) for i in range(3)]
    if kind == "gen":
        return (message_builder("demo/counter", f"{key}{i}", long_value=2**40 + i) for i in range(2))
    if kind == "none":
        return None
    if kind == "empty":
        return []
    raise AssertionError(kind)


RECORDS = [("int", "a"), ("str", "b"), ("json", "c"), ("many", "d"), ("none", "e"), ("gen", "f"), ("empty", "g"), ("int", "h")]


def _expected(records):
    out = []
    for r in records:
        routed = _router(r)
        if routed is None:
            continue
        for m in [routed] if not isinstance(routed, (list, type(m for m in ()))) else routed:
            out.append(message_to_record(m))
    return out


def test_the_records_are_those_of_message_to_record_in_order():
    got = IngressRouter(_router).route(RECORDS)
    assert got == _expected(RECORDS)
    assert [r[1] for r in got] == ["a", "b", "c", "d0", "d1", "d2", "f0", "f1", "h"]
    # values held decoded stay decoded; a JSON value is serialized once, by message_builder
    assert got[0][5] == 1 and got[1][5] == "hi b" and isinstance(got[2][5], bytes)
    assert [type(v) for v in (got[0][5], got[6][5])] == [int, int]


def test_the_operator_emits_one_batch_per_input_batch_and_nothing_for_no_messages():
    emitted = []

    class Out:
        def emit(self, batch):
            emitted.append(batch.records())

    op = IngressRouter(_router)
    op.output = Out()
    op.process_batch(Batch.of_records(RECORDS))
    op.process_batch(Batch.of_records([("none", "x"), ("empty", "y")]))
    assert emitted == [_expected(RECORDS)]


def _boom(record):
    raise KeyError("no such user")


@pytest.mark.parametrize("router, record, words", [
    (_boom, ("int", "k1"), ["KeyError", "no such user"]),
    (lambda r: "demo/counter", ("int", "k2"), ["TypeError", "returned 'demo/counter'", "('int', 'k2')", "Message"]),
    (lambda r: 42, ("int", "k3"), ["TypeError", "returned 42", "('int', 'k3')"]),
    (lambda r: [message_builder("demo/counter", "x", int_value=1), ("demo/counter", "x")], ("int", "k4"),
     ["TypeError", "among the messages", "('int', 'k4')"]),
    (lambda r: (1 // 0 for _ in range(1)), ("int", "k5"), ["ZeroDivisionError"]),
])
def test_a_failing_router_or_a_bad_return_names_the_record(router, record, words):
    def routing(r):  # good messages for the records before the bad one
        return message_builder("demo/counter", r[1], int_value=1) if r[1] == "ok" else router(r)

    op = IngressRouter(routing)
    with pytest.raises(UserCodeError) as err:
        op.route([("int", "ok"), record, ("int", "ok")])
    assert err.value.record == record
    text = f"{err.value} {err.value.original!r}"
    for word in words:
        assert word in text, (word, text)


def test_a_router_must_be_callable():
    from raystream.engine.errors import GraphError

    with pytest.raises(GraphError, match="router must be a function"):
        IngressRouter("demo/counter")  # type: ignore[arg-type]


def test_messages_with_every_builtin_value_type_keep_their_type():
    values = [dict(int_value=7), dict(long_value=-(2**50)), dict(str_value=""), dict(bool_value=False),
              dict(double_value=-0.0), dict(float_value=1.5), dict(value="x", value_type=StringType),
              dict(value=3, value_type=IntType)]
    records = [(i, v) for i, v in enumerate(values)]
    op = IngressRouter(lambda r: message_builder("demo/f", str(r[0]), **r[1]))
    got = op.route(records)
    assert got == [message_to_record(message_builder("demo/f", str(i), **v)) for i, v in records]
    assert [repr(r[5]) for r in got] == [repr(message_to_record(message_builder("demo/f", str(i), **v))[5]) for i, v in records]


def test_the_router_keeps_the_operator_ids_savepoints_were_taken_with():
    """The router's node is named and placed as the flat_map it replaced: the derived ids
    of the router and of the sinks after the dispatcher are those of earlier versions
    (pinned: a savepoint maps operator state by these ids)."""
    import raystream as rs
    from raystream.operators.sinks import CollectSink
    from raystream.statefun_api import StatefulFunctions
    from raystream.statefun_api.job import StatefulFunctionsJob

    env = rs.StreamEnvironment(parallelism=2)
    functions = StatefulFunctions()

    @functions.bind("a/b")
    def fn(context, message):
        pass

    sf = StatefulFunctionsJob(env, functions)
    sf.with_ingress(env.from_collection([1]), lambda n: message_builder("a/b", str(n), int_value=n))
    sf.egress_stream("a/out").sink_to(CollectSink())
    uids = sorted(n.stable_uid(env.graph) for n in env.graph.nodes)
    assert uids == ["collect-9463328a8ea3", "from_collection-2b60fbb6512d", "statefun-discard", "statefun-dispatcher",
                    "statefun-router-9bff54316feb"]
