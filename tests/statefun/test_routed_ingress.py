"""The routed ingress: StateFun's routable ingress (``targets:``) without a Python router.

Each record becomes one message per target with the id and value from the record's fields;
the messages are the records ``message_builder`` + ``message_to_record`` would make, so a
job gives the same egress with either ingress. Bad records fail naming the record.
"""

from __future__ import annotations

from itertools import repeat

import pyarrow as pa
import pytest

import raystream as rs
from raystream.engine.errors import GraphError, JobFailed, UserCodeError
from raystream.engine.records import Batch
from raystream.statefun_api import (
    BoolType,
    DoubleType,
    FloatType,
    IntType,
    LongType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    make_json_type,
    message_builder,
)
from raystream.statefun_api.ingress import RoutedIngress
from raystream.statefun_api.job import StatefulFunctionsJob
from raystream.statefun_api.routing import message_to_record

Cart = make_json_type("demo/Cart")


def _expected(target, pairs, kind):
    return [message_to_record(message_builder(target, i, **{kind: v})) for i, v in pairs]


@pytest.mark.parametrize(
    ("value_type", "kind", "values"),
    [
        (IntType, "int_value", [1, -(2**31), 2**31 - 1]),
        (LongType, "long_value", [2**40, -(2**63), 0]),
        (DoubleType, "double_value", [1.5, -0.0, 0.0]),  # -0.0 is held encoded, as message_builder holds it
        (FloatType, "float_value", [1.5, 2.0, -3.25]),
        (StringType, "str_value", ["a", "ü", "x" * 100]),
        (BoolType, "bool_value", [True, False, True]),
    ],
)
def test_records_equal_those_of_message_builder(value_type, kind, values):
    pairs = list(zip(["a", "b", "c"], values))
    records = RoutedIngress(["demo/f"], value_type).route(Batch.of_records(pairs))
    assert records == _expected("demo/f", pairs, kind)


def test_custom_type_values_are_serialized_with_the_type():
    pairs = [("a", {"items": [1]}), ("b", {"items": []})]
    records = RoutedIngress(["demo/f"], Cart).route(Batch.of_records(pairs))
    assert records == [message_to_record(message_builder("demo/f", i, value=v, value_type=Cart)) for i, v in pairs]


def test_fields_by_name_index_function_and_arrow_column():
    dicts = [{"user": "ann", "n": 1}, {"user": "bob", "n": 2}]
    by_name = RoutedIngress(["demo/f"], IntType, id_field="user", value_field="n")
    assert by_name.route(Batch.of_records(dicts)) == _expected("demo/f", [("ann", 1), ("bob", 2)], "int_value")
    arrow = Batch.of_arrow(pa.RecordBatch.from_pylist(dicts))
    assert by_name.route(arrow) == _expected("demo/f", [("ann", 1), ("bob", 2)], "int_value")
    triples = [(1, "ann", "x"), (2, "bob", "y")]
    by_index = RoutedIngress(["demo/f"], StringType, id_field=1, value_field=2)
    assert by_index.route(Batch.of_records(triples)) == _expected("demo/f", [("ann", "x"), ("bob", "y")], "str_value")
    whole = RoutedIngress(["demo/f"], StringType, id_field=str.upper, value_field=None)
    assert whole.route(Batch.of_records(["ann"])) == _expected("demo/f", [("ANN", "ann")], "str_value")


def test_every_record_goes_to_every_target():
    records = RoutedIngress(["demo/f", "demo/g"], IntType).route(Batch.of_records([("a", 1), ("b", 2)]))
    assert [(r[0], r[1]) for r in records] == [("demo/f", "a"), ("demo/f", "b"), ("demo/g", "a"), ("demo/g", "b")]


@pytest.mark.parametrize(
    ("records", "record", "message"),
    [
        ([("a", 1), ("", 2)], ("", 2), "must be a non-empty string, got ''"),
        ([("a", 1), (7, 2)], (7, 2), "must be a non-empty string, got 7"),
        ([("a", 1), ("b", None)], ("b", None), "int_value can not be None"),
        ([("a", 1), ("b", 2**40)], ("b", 2**40), "out of range for sfixed32"),
        ([("a", 1), ("b",)], ("b",), "cannot take the value (index 1): IndexError"),
    ],
)
def test_a_bad_record_fails_naming_it(records, record, message):
    with pytest.raises(UserCodeError) as info:
        RoutedIngress(["demo/f"], IntType).route(Batch.of_records(records))
    assert info.value.record == record
    assert message in str(info.value.original)


def test_a_missing_column_or_null_id_names_the_column():
    op = RoutedIngress(["demo/f"], IntType, id_field="user", value_field="n")
    with pytest.raises(UserCodeError, match=r"'user' is not in the stream; its columns are \['name', 'n'\]"):
        op.route(Batch.of_arrow(pa.RecordBatch.from_pylist([{"name": "a", "n": 1}])))
    with pytest.raises(UserCodeError, match="'user' is null") as info:
        op.route(Batch.of_arrow(pa.RecordBatch.from_pylist([{"user": "a", "n": 1}, {"user": None, "n": 2}])))
    assert info.value.record == {"user": None, "n": 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(targets=[], value_type=IntType), "at least one target"),
        (dict(targets=["nonamespace"], value_type=IntType), "'nonamespace'"),
        (dict(targets=["demo/f"], value_type=int), "value_type must be a statefun_api Type"),
        (dict(targets=["demo/f"], value_type=IntType, id_field=1.5), "id_field must be"),
    ],
)
def test_bad_arguments_fail_when_the_job_is_built(kwargs, message):
    env = rs.StreamEnvironment()
    sf = StatefulFunctionsJob(env, StatefulFunctions())
    with pytest.raises(GraphError, match=message):
        sf.with_routed_ingress(env.from_collection([("a", 1)]), **kwargs)


def _counter_functions() -> StatefulFunctions:
    functions = StatefulFunctions()

    @functions.bind("demo/counter", specs=[ValueSpec("n", IntType)])
    def counter(context, message):
        n = (context.storage.n or 0) + message.as_int()
        context.storage.n = n
        if n % 10 == 0:  # a message through the loop, to another subtask's address
            context.send(message_builder("demo/counter", f"f{context.address.id}", int_value=1))
        context.send_egress(egress_message_builder("demo/out", f"{context.address.id}:{n}", StringType))

    return functions


def _run(parallelism: int, routed: bool, records: list) -> list[str]:
    env = rs.StreamEnvironment(parallelism=parallelism)
    sf = StatefulFunctionsJob(env, _counter_functions())
    stream = env.from_collection(records)
    if routed:
        sf.with_routed_ingress(stream, "demo/counter", IntType)
    else:
        sf.with_ingress(stream, lambda r: message_builder("demo/counter", r[0], int_value=r[1]))
    return sorted(sf.egress_stream("demo/out").execute_and_collect())


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_routed_job_equals_the_routed_by_hand_job(ray_session, parallelism):
    records = list(zip((f"k{i % 37}" for i in range(2000)), repeat(1)))
    expected = _run(1, False, records)
    assert len(expected) > 2000  # forwarded messages too
    assert _run(parallelism, True, records) == expected


def test_a_bad_record_fails_the_job_naming_operator_and_record(ray_session):
    env = rs.StreamEnvironment(parallelism=1)
    sf = StatefulFunctionsJob(env, _counter_functions())
    sf.with_routed_ingress(env.from_collection([("a", 1), ("b", "two")]), "demo/counter", IntType)
    with pytest.raises(JobFailed) as info:
        sf.egress_stream("demo/out").execute_and_collect()
    text = str(info.value)
    assert "statefun-ingress" in text and "('b', 'two')" in text
