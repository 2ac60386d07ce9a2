"""Message and EgressMessage accessors and builders."""

from __future__ import annotations

import pytest

from raystream.statefun_api import (
    Address,
    BoolType,
    DoubleType,
    EgressMessage,
    FloatType,
    IntType,
    LongType,
    Message,
    StringType,
    TypedValue,
    egress_message_builder,
    make_json_type,
    message_builder,
)


@pytest.mark.parametrize(
    ("keyword", "value", "tpe", "accessor"),
    [
        ("int_value", 5, IntType, "int"),
        ("long_value", 2**40, LongType, "long"),
        ("float_value", 0.5, FloatType, "float"),
        ("double_value", 0.1, DoubleType, "double"),
        ("str_value", "hi", StringType, "string"),
        ("bool_value", True, BoolType, "bool"),
    ],
)
def test_primitive_builders_and_accessors(keyword, value, tpe, accessor) -> None:
    m = message_builder("com.example/f", "id-1", **{keyword: value})
    assert (m.target_typename, m.target_id) == ("com.example/f", "id-1")
    assert m.target == Address("com.example", "f", "id-1")
    assert m.value_typename() == tpe.typename
    assert m.raw_value() == tpe.serializer().serialize(value)
    assert getattr(m, f"is_{accessor}")()
    assert getattr(m, f"as_{accessor}")() == value
    assert m.is_type(tpe) and m.as_type(tpe) == value
    others = [a for a in ("int", "long", "float", "double", "string", "bool") if a != accessor]
    assert not any(getattr(m, f"is_{a}")() for a in others)


def test_as_other_type_raises_a_clear_error() -> None:
    m = message_builder("com.example/f", "1", str_value="x")
    with pytest.raises(TypeError, match=r"'io.statefun.types/string', not 'io.statefun.types/int'"):
        m.as_int()


def test_custom_type() -> None:
    cart = make_json_type("com.example/Cart")
    m = message_builder("com.example/f", "1", value={"items": [1]}, value_type=cart)
    assert m.is_type(cart) and m.as_type(cart) == {"items": [1]}
    assert m.value_typename() == "com.example/Cart"


def test_message_without_value() -> None:
    m = Message("com.example/f", "1", TypedValue("io.statefun.types/int", False, b""))
    assert m.raw_value() is None and m.as_int() is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, TypeError, "exactly one"),
        ({"int_value": 1, "str_value": "x"}, TypeError, "exactly one"),
        ({"value": 1}, ValueError, "value_type"),
        ({"int_value": None}, ValueError, "can not be None"),
        ({"int_value": 1, "value_type": IntType}, TypeError, "only goes with value="),
        ({"int_value": "x"}, TypeError, "cannot serialize 'x' as 'io.statefun.types/int'"),
        ({"int_value": 2**31}, ValueError, "out of range"),
    ],
)
def test_message_builder_errors(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        message_builder("com.example/f", "1", **kwargs)


def test_message_validates_target() -> None:
    with pytest.raises(ValueError, match="target_id"):
        message_builder("com.example/f", "", int_value=1)
    with pytest.raises(ValueError):
        message_builder("nonamespace", "1", int_value=1)
    with pytest.raises(TypeError, match="TypedValue"):
        Message("a/b", "1", b"raw")  # type: ignore[arg-type]


def test_messages_compare_by_value() -> None:
    a = message_builder("com.example/f", "1", int_value=1)
    assert a == message_builder("com.example/f", "1", int_value=1)
    assert a != message_builder("com.example/f", "2", int_value=1)
    assert "com.example/f/1" in repr(a)


def test_egress_message_builder() -> None:
    e = egress_message_builder("com.example/out", "done", StringType)
    assert isinstance(e, EgressMessage)
    assert e.typename == "com.example/out"
    assert e.value_typename() == "io.statefun.types/string"
    assert e.raw_value() == bytes.fromhex("0a04646f6e65")
    assert e == egress_message_builder("com.example/out", "done", StringType)
    with pytest.raises(ValueError, match="None"):
        egress_message_builder("com.example/out", None, StringType)
    with pytest.raises(TypeError, match="value_type must be a Type"):
        egress_message_builder("com.example/out", "x", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing"):
        egress_message_builder("", "x", StringType)
