"""Built-in types: StateFun typenames and exact wire bytes; user-defined types."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raystream.statefun_api import (
    BoolType,
    DoubleType,
    FloatType,
    IntType,
    LongType,
    StringType,
    Type,
    TypedValue,
    make_json_type,
    simple_type,
)
from raystream.statefun_api.types import from_typed_value, to_typed_value


@pytest.mark.parametrize(
    ("tpe", "typename"),
    [
        (BoolType, "io.statefun.types/bool"),
        (IntType, "io.statefun.types/int"),
        (LongType, "io.statefun.types/long"),
        (FloatType, "io.statefun.types/float"),
        (DoubleType, "io.statefun.types/double"),
        (StringType, "io.statefun.types/string"),
    ],
)
def test_builtin_typenames(tpe: Type, typename: str) -> None:
    assert tpe.typename == typename


# (type, value, hand-computed bytes: tag = field 1 << 3 | wire type, then the payload)
WIRE_CASES = [
    (BoolType, True, bytes.fromhex("0801")),
    (BoolType, False, b""),
    (IntType, 1, bytes.fromhex("0d01000000")),  # sfixed32: tag 0x0d, 4 bytes LE
    (IntType, -1, bytes.fromhex("0dffffffff")),
    (IntType, 2**31 - 1, bytes.fromhex("0dffffff7f")),
    (IntType, -(2**31), bytes.fromhex("0d00000080")),
    (IntType, 0, b""),
    (LongType, 1, bytes.fromhex("090100000000000000")),  # sfixed64: tag 0x09, 8 bytes LE
    (LongType, -2, bytes.fromhex("09feffffffffffffff")),
    (LongType, 2**40, bytes.fromhex("090000000000010000")),
    (LongType, 0, b""),
    (FloatType, 1.0, bytes.fromhex("0d0000803f")),  # IEEE-754 single 0x3f800000
    (FloatType, -2.5, bytes.fromhex("0d000020c0")),  # 0xc0200000
    (FloatType, -0.0, bytes.fromhex("0d00000080")),  # sign bit set: not the default
    (FloatType, 0.0, b""),
    (DoubleType, 1.0, bytes.fromhex("09000000000000f03f")),
    (DoubleType, 0.5, bytes.fromhex("09000000000000e03f")),
    (DoubleType, 0.0, b""),
    (StringType, "hi", bytes.fromhex("0a026869")),  # tag 0x0a, length 2, UTF-8
    (StringType, "é", bytes.fromhex("0a02c3a9")),
    (StringType, "x" * 200, bytes.fromhex("0ac801") + b"x" * 200),  # 2-byte varint length
    (StringType, "", b""),
]


@pytest.mark.parametrize(("tpe", "value", "expected"), WIRE_CASES)
def test_builtin_wire_bytes(tpe: Type, value: object, expected: bytes) -> None:
    ser = tpe.serializer()
    assert ser.serialize(value) == expected
    back = ser.deserialize(expected)
    assert back == value
    if isinstance(value, float):
        assert math.copysign(1.0, back) == math.copysign(1.0, value)


def test_float_is_single_precision_and_overflow_saturates() -> None:
    ser = FloatType.serializer()
    assert ser.deserialize(ser.serialize(0.1)) == pytest.approx(0.1, rel=1e-7)
    assert ser.deserialize(ser.serialize(0.1)) != 0.1
    assert ser.serialize(1e40) == bytes.fromhex("0d0000807f")  # +inf, as protobuf does
    assert ser.serialize(1) == bytes.fromhex("0d0000803f")  # ints are accepted


def test_double_nan_round_trips() -> None:
    ser = DoubleType.serializer()
    assert math.isnan(ser.deserialize(ser.serialize(math.nan)))


def test_decoder_follows_protobuf_rules() -> None:
    ser = IntType.serializer()
    # last value wins; unknown fields and mismatched wire types are skipped
    assert ser.deserialize(bytes.fromhex("0d010000000d02000000")) == 2
    assert ser.deserialize(bytes.fromhex("10050d07000000")) == 7
    assert ser.deserialize(bytes.fromhex("0805")) == 0
    assert StringType.serializer().deserialize(bytes.fromhex("0a01610a0162")) == "b"


@pytest.mark.parametrize(
    ("tpe", "bad", "error"),
    [
        (IntType, "1", TypeError),
        (IntType, 1.5, TypeError),
        (IntType, True, TypeError),
        (IntType, 2**31, ValueError),
        (LongType, 2**63, ValueError),
        (LongType, None, TypeError),
        (FloatType, "1.0", TypeError),
        (DoubleType, b"1", TypeError),
        (StringType, 5, TypeError),
        (StringType, b"\xff", ValueError),
        (BoolType, "yes", TypeError),
    ],
)
def test_builtin_rejects_wrong_values(tpe: Type, bad: object, error: type) -> None:
    with pytest.raises(error):
        tpe.serializer().serialize(bad)


def test_string_rejects_invalid_utf8_on_the_wire() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        StringType.serializer().deserialize(bytes.fromhex("0a01ff"))


def test_truncated_wire_bytes_raise() -> None:
    with pytest.raises(ValueError, match="truncated"):
        IntType.serializer().deserialize(bytes.fromhex("0d0100"))


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_int_round_trip(value: int) -> None:
    assert IntType.serializer().deserialize(IntType.serializer().serialize(value)) == value


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_long_round_trip(value: int) -> None:
    assert LongType.serializer().deserialize(LongType.serializer().serialize(value)) == value


@given(st.floats(allow_nan=False))
def test_double_round_trip(value: float) -> None:
    assert DoubleType.serializer().deserialize(DoubleType.serializer().serialize(value)) == value


@given(st.text())
def test_string_round_trip(value: str) -> None:
    assert StringType.serializer().deserialize(StringType.serializer().serialize(value)) == value


def test_json_type() -> None:
    cart = make_json_type("com.example/Cart")
    assert cart.typename == "com.example/Cart"
    data = cart.serializer().serialize({"items": ["é"], "n": 2})
    assert data == '{"items": ["é"], "n": 2}'.encode()
    assert cart.serializer().deserialize(data) == {"items": ["é"], "n": 2}
    with pytest.raises(TypeError):
        cart.serializer().serialize({1, 2})


def test_simple_type_accepts_str_returning_serializer() -> None:
    upper = simple_type("com.example/Upper", str.upper, lambda b: b.decode().lower())
    assert upper.serializer().serialize("ab") == b"AB"
    assert upper.serializer().deserialize(b"AB") == "ab"


@pytest.mark.parametrize("typename", ["", "noslash", "/name", "ns/"])
def test_simple_type_validates_typename(typename: str) -> None:
    with pytest.raises(ValueError):
        simple_type(typename, str.encode, bytes.decode)


def test_simple_type_requires_functions() -> None:
    with pytest.raises(ValueError, match="serialize_fn"):
        simple_type("a/b", None, bytes.decode)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="deserialize_fn"):
        simple_type("a/b", str.encode, None)  # type: ignore[arg-type]


def test_typed_value_helpers() -> None:
    tv = to_typed_value(IntType, 3)
    assert tv == TypedValue("io.statefun.types/int", True, bytes.fromhex("0d03000000"))
    assert from_typed_value(IntType, tv) == 3
    assert to_typed_value(IntType, None) == TypedValue("io.statefun.types/int", False, b"")
    assert from_typed_value(IntType, TypedValue("x/y", False, b"")) is None
    with pytest.raises(TypeError, match="io.statefun.types/string"):
        from_typed_value(StringType, tv)


def test_make_protobuf_type() -> None:
    from google.protobuf import wrappers_pb2

    from raystream.statefun_api import make_protobuf_type

    tpe = make_protobuf_type(wrappers_pb2.Int32Value)
    assert tpe.typename == "type.googleapis.com/google.protobuf.Int32Value"
    data = tpe.serializer().serialize(wrappers_pb2.Int32Value(value=5))
    assert data == bytes.fromhex("0805")
    assert tpe.serializer().deserialize(data).value == 5
    assert (
        make_protobuf_type(wrappers_pb2.Int32Value, "com.example").typename
        == "com.example/google.protobuf.Int32Value"
    )
    with pytest.raises(TypeError, match="google.protobuf.Int32Value"):
        tpe.serializer().serialize(5)
