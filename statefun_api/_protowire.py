"""A tiny protobuf wire-format codec: just what StateFun's messages need.

Why a hand-written codec rather than ``google.protobuf`` message classes built at import
time from a ``FileDescriptorProto``:

* The schemas involved (``types.proto`` wrappers and ``request-reply.proto``) are small,
  proto3, and frozen since StateFun 3.0; they use only varints, ``sfixed32/64``, ``float``,
  ``double``, strings, bytes, embedded messages and one ``oneof`` each.
* No dependency on the installed protobuf runtime: descriptor-pool collisions with the
  official ``statefun`` package (which registers the very same full names) and
  runtime-version quirks simply cannot happen.
* The encoder emits fields in field-number order and skips proto3 defaults, so its output
  is byte-identical to ``SerializeToString()``; the decoder follows protobuf's parsing
  rules (last value wins for scalars, repeated occurrences of an embedded message merge,
  unknown fields and fields with an unexpected wire type are skipped). The test suite checks
  both directions against ``google.protobuf``.

Example:
    >>> w = Writer()
    >>> w.sfixed32(1, 7)
    >>> w.getvalue()
    b'\\r\\x07\\x00\\x00\\x00'
    >>> Fields.parse(b"\\r\\x07\\x00\\x00\\x00").sfixed32(1)
    7
"""

from __future__ import annotations

import builtins
import math
import operator
import struct

__all__ = [
    "DecodeError",
    "Writer",
    "Fields",
    "encode_varint",
    "decode_varint",
    "VARINT",
    "I64",
    "LEN",
    "I32",
]

VARINT = 0
I64 = 1
LEN = 2
I32 = 5

_U64 = 1 << 64
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


class DecodeError(ValueError):
    """The bytes are not a valid protobuf encoding of the expected message."""


def encode_varint(value: int) -> bytes:
    """Encode a non-negative int (negative ones as 64-bit two's complement) as a varint."""
    if value < 0:
        value += _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode an unsigned varint starting at ``pos``; return ``(value, next_pos)``."""
    result = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise DecodeError(f"truncated varint at byte {pos}")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & (_U64 - 1), pos
        shift += 7
        if shift >= 70:
            raise DecodeError(f"varint longer than 10 bytes ending at byte {pos}")


def _check_int(value: object, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"expected an int for {what}, got a bool {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"expected an int for {what}, got {value!r}") from None
    if not lo <= number <= hi:
        raise ValueError(f"value {number!r} out of range for {what} [{lo}, {hi}]")
    return number


def _check_real(value: object, what: str) -> float:
    if isinstance(value, (str, bytes, bytearray)) or not hasattr(value, "__float__"):
        raise TypeError(f"expected a float for {what}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


class Writer:
    """Append-only encoder for one message; fields must be written in field-number order.

    Scalar writers skip proto3 default values (0, ``False``, ``""``, ``b""``, ``+0.0``)
    unless ``always=True`` (used for ``oneof`` members and set sub-messages, which have
    explicit presence).
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def getvalue(self) -> builtins.bytes:
        """Return the bytes written so far."""
        return bytes(self._buf)

    def _tag(self, field: int, wire_type: int) -> None:
        self._buf += encode_varint((field << 3) | wire_type)

    def uint(self, field: int, value: int, *, always: builtins.bool = False) -> None:
        """Write a varint field (int32/int64/enum; negative values use 10 bytes)."""
        value = _check_int(value, _INT64_MIN, _U64 - 1, f"field {field}")
        if value or always:
            self._tag(field, VARINT)
            self._buf += encode_varint(value)

    def int64(self, field: int, value: int) -> None:
        """Write an ``int64`` field."""
        self.uint(field, _check_int(value, _INT64_MIN, _INT64_MAX, f"int64 field {field}"))

    def enum(self, field: int, value: int) -> None:
        """Write an enum (``int32``) field."""
        self.uint(field, _check_int(value, _INT32_MIN, _INT32_MAX, f"enum field {field}"))

    def bool(self, field: int, value: builtins.bool) -> None:
        """Write a ``bool`` field."""
        if value:
            self._tag(field, VARINT)
            self._buf.append(1)

    def sfixed32(self, field: int, value: int) -> None:
        """Write an ``sfixed32`` field."""
        value = _check_int(value, _INT32_MIN, _INT32_MAX, f"sfixed32 field {field}")
        if value:
            self._tag(field, I32)
            self._buf += struct.pack("<i", value)

    def sfixed64(self, field: int, value: int) -> None:
        """Write an ``sfixed64`` field."""
        value = _check_int(value, _INT64_MIN, _INT64_MAX, f"sfixed64 field {field}")
        if value:
            self._tag(field, I64)
            self._buf += struct.pack("<q", value)

    def float32(self, field: int, value: float) -> None:
        """Write a ``float`` field (rounded to single precision; overflow becomes ±inf)."""
        value = _check_real(value, f"float field {field}")
        try:
            packed = struct.pack("<f", value)
        except OverflowError:
            packed = struct.pack("<f", math.copysign(math.inf, value))
        if packed != b"\x00\x00\x00\x00":
            self._tag(field, I32)
            self._buf += packed

    def double(self, field: int, value: float) -> None:
        """Write a ``double`` field."""
        packed = struct.pack("<d", _check_real(value, f"double field {field}"))
        if packed != b"\x00" * 8:
            self._tag(field, I64)
            self._buf += packed

    def bytes(self, field: int, value: builtins.bytes, *, always: builtins.bool = False) -> None:
        """Write a ``bytes`` field (also used for embedded messages, with ``always=True``)."""
        if value or always:
            self._tag(field, LEN)
            self._buf += encode_varint(len(value))
            self._buf += value

    def string(self, field: int, value: str) -> None:
        """Write a ``string`` field (UTF-8)."""
        if not isinstance(value, str):
            raise TypeError(f"expected a str for string field {field}, got {value!r}")
        self.bytes(field, value.encode("utf-8"))

    def message(self, field: int, encoded: builtins.bytes) -> None:
        """Write an embedded message that is present (even if it encodes to nothing)."""
        self.bytes(field, encoded, always=True)


class Fields:
    """The fields of one decoded message, indexed by number, in wire order.

    Accessors implement proto3 semantics: a missing field reads as its default, the last
    occurrence of a scalar wins, and occurrences with an unexpected wire type are ignored
    (protobuf keeps them as unknown fields).
    """

    __slots__ = ("_fields", "_order")

    def __init__(self, fields: dict[int, list[tuple[int, object]]], order: list[int]) -> None:
        self._fields = fields
        self._order = order

    @classmethod
    def parse(cls, data: builtins.bytes | bytearray | memoryview) -> Fields:
        """Split ``data`` into fields. Raises DecodeError on malformed input."""
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        fields: dict[int, list[tuple[int, object]]] = {}
        order: list[int] = []
        pos, end = 0, len(view)
        while pos < end:
            key, pos = decode_varint(view, pos)
            number, wire_type = key >> 3, key & 7
            if number == 0 or number >= (1 << 29):
                raise DecodeError(f"invalid field number {number} at byte {pos}")
            value: object
            if wire_type == VARINT:
                value, pos = decode_varint(view, pos)
            elif wire_type == I64:
                if pos + 8 > end:
                    raise DecodeError(f"truncated 64-bit field {number}")
                value, pos = bytes(view[pos : pos + 8]), pos + 8
            elif wire_type == I32:
                if pos + 4 > end:
                    raise DecodeError(f"truncated 32-bit field {number}")
                value, pos = bytes(view[pos : pos + 4]), pos + 4
            elif wire_type == LEN:
                length, pos = decode_varint(view, pos)
                if pos + length > end:
                    raise DecodeError(
                        f"field {number} declares {length} bytes but only {end - pos} remain"
                    )
                value, pos = bytes(view[pos : pos + length]), pos + length
            else:
                raise DecodeError(f"unsupported wire type {wire_type} for field {number}")
            fields.setdefault(number, []).append((wire_type, value))
            order.append(number)
        return cls(fields, order)

    def _last(self, field: int, wire_type: int) -> object | None:
        found = None
        for wt, value in self._fields.get(field, ()):
            if wt == wire_type:
                found = value
        return found

    def has(self, field: int) -> builtins.bool:
        """Whether a length-delimited field (e.g. an embedded message) is present."""
        return any(wt == LEN for wt, _ in self._fields.get(field, ()))

    def last_of(self, *fields: int) -> int | None:
        """Which of ``fields`` (e.g. the members of a ``oneof``) occurs last on the wire."""
        for number in reversed(self._order):
            if number in fields:
                return number
        return None

    def uint(self, field: int) -> int:
        """Read a varint field as unsigned 64-bit."""
        value = self._last(field, VARINT)
        return 0 if value is None else value  # type: ignore[return-value]

    def int64(self, field: int) -> int:
        """Read an ``int64`` field."""
        value = self.uint(field)
        return value - _U64 if value > _INT64_MAX else value

    def enum(self, field: int) -> int:
        """Read an enum (``int32``) field."""
        value = self.uint(field) & 0xFFFFFFFF
        return value - (1 << 32) if value > _INT32_MAX else value

    def bool(self, field: int) -> builtins.bool:
        """Read a ``bool`` field."""
        return self.uint(field) != 0

    def sfixed32(self, field: int) -> int:
        """Read an ``sfixed32`` field."""
        value = self._last(field, I32)
        return 0 if value is None else struct.unpack("<i", value)[0]  # type: ignore[arg-type]

    def sfixed64(self, field: int) -> int:
        """Read an ``sfixed64`` field."""
        value = self._last(field, I64)
        return 0 if value is None else struct.unpack("<q", value)[0]  # type: ignore[arg-type]

    def float32(self, field: int) -> float:
        """Read a ``float`` field."""
        value = self._last(field, I32)
        return 0.0 if value is None else struct.unpack("<f", value)[0]  # type: ignore[arg-type]

    def double(self, field: int) -> float:
        """Read a ``double`` field."""
        value = self._last(field, I64)
        return 0.0 if value is None else struct.unpack("<d", value)[0]  # type: ignore[arg-type]

    def bytes(self, field: int) -> builtins.bytes:
        """Read a ``bytes`` field."""
        value = self._last(field, LEN)
        return b"" if value is None else value  # type: ignore[return-value]

    def string(self, field: int) -> str:
        """Read a ``string`` field; invalid UTF-8 raises DecodeError."""
        try:
            return self.bytes(field).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"string field {field} is not valid UTF-8") from exc

    def message(self, field: int) -> builtins.bytes | None:
        """Read a singular embedded message: None if absent, else all occurrences merged."""
        chunks = [v for wt, v in self._fields.get(field, ()) if wt == LEN]
        if not chunks:
            return None
        return b"".join(chunks)  # type: ignore[arg-type]

    def repeated(self, field: int) -> list[builtins.bytes]:
        """Read a repeated embedded message (or string/bytes) field, in wire order."""
        return [v for wt, v in self._fields.get(field, ()) if wt == LEN]  # type: ignore[misc]
