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


# ---------------------------------------------------------------- Arrow batches at parallelism > 1


class _Id(str):
    """An id of a str subclass: its key group is that of its repr, so it must stay a record."""


def _columnar(records):
    return IngressRouter(_router).route_batch(records, columnar=True)


def test_a_parallel_router_emits_the_same_records_as_one_arrow_batch():
    from raystream.engine.records import records_to_arrow

    records = [("int", f"k{i}") for i in range(300)]
    batch = _columnar(records)
    assert batch.is_arrow
    assert batch.records() == _expected(records)
    # the form a channel would make of the records: the dispatcher reads it the same way
    assert batch.arrow().schema == records_to_arrow(_expected(records)).schema
    assert [type(r[5]) for r in batch.records()] == [int] * 300


@pytest.mark.parametrize("tail", [
    [("str", "x")],  # another value type
    [("json", "x")],  # a value held serialized
    [("many", "x")],  # a list of messages
    [("gen", "x")],
    [("empty", "x")],
    [("none", "x"), ("int", "z")],  # no message: still one Arrow batch
])
def test_a_message_that_does_not_fit_the_columns_makes_records_from_there_on_in_order(tail):
    records = [("int", f"k{i}") for i in range(260)] + tail + [("int", f"t{i}") for i in range(5)]
    batch = _columnar(records)
    assert batch.records() == _expected(records)
    assert batch.is_arrow == (tail[0][0] == "none")


def test_every_builtin_value_type_round_trips_through_the_columns():
    for kw, value in [("int_value", -(2**31)), ("long_value", 2**62), ("str_value", "é"), ("bool_value", True),
                      ("double_value", 2.5)]:
        op = IngressRouter(lambda r, kw=kw, value=value: message_builder("demo/f", str(r), **{kw: value}))
        batch = op.route_batch(list(range(300)), columnar=True)
        assert batch.is_arrow, kw
        expected = [message_to_record(message_builder("demo/f", str(i), **{kw: value})) for i in range(300)]
        assert batch.records() == expected
        assert {repr(r[5]) for r in batch.records()} == {repr(value)}
    # a float (32 bits) is held serialized: records
    op = IngressRouter(lambda r: message_builder("demo/f", str(r), float_value=1.5))
    assert not op.route_batch(list(range(300)), columnar=True).is_arrow


def test_ids_of_a_str_subclass_stay_records():
    """(An id Arrow cannot hold, a lone surrogate, is refused by message_builder:
    tests/statefun/test_probe_sf_ids.py.)"""
    bad = _Id("sub")
    op = IngressRouter(lambda r: message_builder("demo/f", bad if r == 150 else str(r), int_value=1))
    batch = op.route_batch(list(range(300)), columnar=True)
    assert not batch.is_arrow
    assert batch.records()[150][1] is bad


def test_several_target_types_share_one_batch_and_few_records_stay_records():
    op = IngressRouter(lambda r: message_builder(f"demo/f{r % 3}", str(r), int_value=r))
    batch = op.route_batch(list(range(300)), columnar=True)
    assert batch.is_arrow and [r[0] for r in batch.records()[:4]] == ["demo/f0", "demo/f1", "demo/f2", "demo/f0"]
    assert not op.route_batch(list(range(10)), columnar=True).is_arrow
    assert not op.route_batch(list(range(300))).is_arrow  # parallelism 1: nothing to ship


def test_a_failing_router_names_the_record_on_the_columnar_path():
    def routing(r):
        if r == 200:
            raise KeyError("no such user")
        return message_builder("demo/f", str(r), int_value=1)

    with pytest.raises(UserCodeError) as err:
        IngressRouter(routing).route_batch(list(range(300)), columnar=True)
    assert err.value.record == 200 and "no such user" in repr(err.value.original)
    bad = IngressRouter(lambda r: 42 if r == 280 else message_builder("demo/f", str(r), int_value=1))
    with pytest.raises(UserCodeError, match="returned 42"):
        bad.route_batch(list(range(300)), columnar=True)


def test_the_key_groups_of_the_arrow_batch_are_those_of_its_records():
    from raystream.engine.keygroups import key_group_for
    from raystream.statefun_api.ingress import RoutedIngress

    op = IngressRouter(lambda r: message_builder(f"demo/f{r % 2}", f"user-{r}", int_value=r))
    rb = op.route_batch(list(range(1000)), columnar=True).arrow()
    groups = RoutedIngress.message_key_groups(rb, 128)
    assert groups.tolist() == [key_group_for((f"demo/f{r % 2}", f"user-{r}"), 128) for r in range(1000)]
