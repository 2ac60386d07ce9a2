"""The ingress router's two calls a message, ``message_builder`` and ``message_to_record``,
took their cheap paths (stop 45): the value keywords are declared positional-or-keyword
(a missing keyword-only parameter costs Python a dict lookup, seven per call) yet still
taken by keyword only, and a message from an ingress becomes its record without a test
per caller field. These tests hold what the API promised before: keyword-only values with
a clear error for a value given by position, the same records, the same messages."""

from __future__ import annotations

import inspect

import pytest

from raystream.statefun_api import Address, StatefulFunctions, ValueSpec, message_builder
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.routing import message_to_record, record_to_invocation
from raystream.statefun_api.types import IntType, StringType, make_json_type


def test_message_builder_values_are_keyword_only():
    params = inspect.signature(message_builder).parameters
    assert list(params)[:2] == ["target_typename", "target_id"]
    assert [p.kind for p in params.values()][:2] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 2
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in params.items() if name not in ("target_typename", "target_id"))
    assert "_keywords_only" not in params


@pytest.mark.parametrize("args", [("hi",), (7,), (None,), ("hi", 7)])
def test_a_value_given_by_position_is_refused_with_the_remedy(args):
    with pytest.raises(TypeError, match=r"takes 2 positional arguments .* pass it by keyword, e\.g\. str_value="):
        message_builder("a/f", "1", *args)


def test_the_guard_parameter_given_by_keyword_is_refused_too():
    with pytest.raises(TypeError, match="by keyword"):
        message_builder("a/f", "1", _keywords_only="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"int_value": 7}, ("a/f", "1", "", "", "io.statefun.types/int", 7, True)),
        ({"int_value": 2**31}, None),  # out of int range: refused
        ({"str_value": "hé"}, ("a/f", "1", "", "", "io.statefun.types/string", "hé", True)),
        ({"long_value": 2**40}, ("a/f", "1", "", "", "io.statefun.types/long", 2**40, True)),
        ({"bool_value": False}, ("a/f", "1", "", "", "io.statefun.types/bool", False, True)),
    ],
)
def test_records_of_ingress_messages(kwargs, expected):
    if expected is None:
        with pytest.raises(ValueError):
            message_builder("a/f", "1", **kwargs)
        return
    record = message_to_record(message_builder("a/f", "1", **kwargs))
    assert record == expected and type(record) is tuple
    assert record_to_invocation(record).caller is None


def test_records_of_messages_with_a_caller_and_of_serialized_values():
    caller = Address("b", "g", "2")
    assert message_to_record(message_builder("a/f", "1", int_value=3), caller) == (
        "a/f", "1", "b/g", "2", "io.statefun.types/int", 3, True,
    )
    cart = make_json_type("a/Cart")
    record = message_to_record(message_builder("a/f", "1", value=["x"], value_type=cart))
    assert record[:5] == ("a/f", "1", "", "", "a/Cart") and type(record[5]) is bytes and record[6] is True
    assert record_to_invocation(message_to_record(message_builder("a/f", "1", value=["x"], value_type=cart), caller)).caller == caller


@pytest.mark.parametrize("parallelism", [1, 2])
def test_routed_messages_reach_their_functions(parallelism):
    functions = StatefulFunctions()
    seen: list[tuple[str, object]] = []

    @functions.bind("a/f", specs=[ValueSpec("n", IntType)])
    def f(context, message):
        context.storage.n = (context.storage.n or 0) + 1
        seen.append((context.address.id, message.as_int() if message.is_int() else message.as_string()))

    run = LocalDispatchers(functions, parallelism=parallelism)
    run.send(*[message_builder("a/f", f"k{i % 3}", int_value=i) for i in range(9)])
    run.send(message_builder("a/f", "k0", str_value="s"))
    assert sorted(seen, key=str) == sorted([(f"k{i % 3}", i) for i in range(9)] + [("k0", "s")], key=str)
    assert [run.state("a/f", f"k{i}", "n") for i in range(3)] == [4, 3, 3]
    assert StringType.typename == "io.statefun.types/string"
