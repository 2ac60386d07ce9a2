"""The tiny protobuf codec: varints, field order, defaults, parsing rules, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raystream.statefun_api._protowire import (
    DecodeError,
    Fields,
    Writer,
    decode_varint,
    encode_varint,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (-1, "ffffffffffffffffff01"),  # negative int64/enum: ten bytes
    ],
)
def test_varint(value: int, encoded: str) -> None:
    assert encode_varint(value) == bytes.fromhex(encoded)
    decoded, pos = decode_varint(bytes.fromhex(encoded), 0)
    assert decoded == value % 2**64
    assert pos == len(bytes.fromhex(encoded))


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int64_round_trip(value: int) -> None:
    w = Writer()
    w.int64(1, value)
    assert Fields.parse(w.getvalue()).int64(1) == value


def test_writer_skips_defaults_unless_present() -> None:
    w = Writer()
    w.uint(1, 0)
    w.bool(2, False)
    w.string(3, "")
    w.bytes(4, b"")
    w.message(5, b"")  # an embedded message that is set but empty is still written
    assert w.getvalue() == bytes.fromhex("2a00")


def test_embedded_message_occurrences_merge() -> None:
    inner_a, inner_b = Writer(), Writer()
    inner_a.string(1, "ns")
    inner_b.string(3, "id")
    w = Writer()
    w.message(7, inner_a.getvalue())
    w.message(7, inner_b.getvalue())
    merged = Fields.parse(Fields.parse(w.getvalue()).message(7) or b"")
    assert (merged.string(1), merged.string(3)) == ("ns", "id")


def test_missing_fields_read_as_defaults() -> None:
    f = Fields.parse(b"")
    assert (f.uint(1), f.bool(1), f.string(1), f.bytes(1), f.message(1), f.repeated(1)) == (
        0,
        False,
        "",
        b"",
        None,
        [],
    )


def test_last_of_reports_wire_order() -> None:
    f = Fields.parse(bytes.fromhex("a20600aa0600a20600"))
    assert f.last_of(100, 101) == 100
    assert Fields.parse(b"").last_of(100, 101) is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("08", "truncated varint"),
        ("0a05616263", "declares 5 bytes"),
        ("09010203", "truncated 64-bit"),
        ("0d01", "truncated 32-bit"),
        ("0b", "wire type 3"),
        ("00", "field number 0"),
        ("08ffffffffffffffffffff01", "longer than 10 bytes"),
    ],
)
def test_malformed_input_raises(data: str, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        Fields.parse(bytes.fromhex(data))


def test_writer_type_checks() -> None:
    with pytest.raises(TypeError, match="expected a str"):
        Writer().string(1, b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        Writer().enum(1, 2**31)
