"""StateFun value types: a typename plus a serializer, and the typed-value envelope.

Built-in types use StateFun's typenames and wire formats: each value is wrapped in a
one-field protobuf message from StateFun's ``types.proto`` (field 1), so state and
messages interoperate with functions written with the official SDKs.

=========== ============================ ===================== ===========================
Type        typename                     wrapper (field 1)      example bytes
=========== ============================ ===================== ===========================
BoolType    ``io.statefun.types/bool``   ``bool`` (varint)      ``True -> 08 01``
IntType     ``io.statefun.types/int``    ``sfixed32``           ``1 -> 0d 01 00 00 00``
LongType    ``io.statefun.types/long``   ``sfixed64``           ``1 -> 09 01 00 .. 00``
FloatType   ``io.statefun.types/float``  ``float``              ``1.0 -> 0d 00 00 80 3f``
DoubleType  ``io.statefun.types/double`` ``double``             ``1.0 -> 09 .. f0 3f``
StringType  ``io.statefun.types/string`` ``string``             ``"a" -> 0a 01 61``
=========== ============================ ===================== ===========================

As in proto3, a default value (``0``, ``False``, ``""``, ``+0.0``) serializes to ``b""``.

Example:
    >>> IntType.serializer().serialize(1)
    b'\\r\\x01\\x00\\x00\\x00'
    >>> user = make_json_type("com.example/User")
    >>> user.serializer().deserialize(user.serializer().serialize({"name": "ann"}))
    {'name': 'ann'}
"""

from __future__ import annotations

import abc
import json
import math
import operator
import struct
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import raystream.statefun_api._protowire as _protowire
from raystream.statefun_api.address import parse_typename

__all__ = [
    "Type",
    "TypeSerializer",
    "TypedValue",
    "simple_type",
    "make_json_type",
    "make_protobuf_type",
    "BoolType",
    "IntType",
    "LongType",
    "FloatType",
    "DoubleType",
    "StringType",
    "to_typed_value",
    "from_typed_value",
    "decoded_typed_value",
    "holds_decoded",
    "builtin_type",
]

T = TypeVar("T")


class TypeSerializer(abc.ABC, Generic[T]):
    """Turns values of one type into bytes and back.

    Example:
        >>> StringType.serializer().deserialize(b"\\n\\x02hi")
        'hi'
    """

    __slots__ = ()

    @abc.abstractmethod
    def serialize(self, value: T) -> bytes:
        """Serialize ``value``; raise TypeError/ValueError for values of the wrong type."""

    @abc.abstractmethod
    def deserialize(self, data: bytes) -> T:
        """Deserialize a value from ``data``."""


class Type(abc.ABC, Generic[T]):
    """A StateFun value type: a typename (``"namespace/name"``) and its serializer.

    Example:
        >>> IntType.typename
        'io.statefun.types/int'
    """

    __slots__ = ("typename",)

    def __init__(self, typename: str) -> None:
        if not typename:
            raise ValueError("typename can not be missing")
        parse_typename(typename)
        self.typename = typename

    @abc.abstractmethod
    def serializer(self) -> TypeSerializer[T]:
        """Return the serializer for values of this type."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.typename!r})"


class TypedValue:
    """A serialized value with its typename: StateFun's ``TypedValue`` envelope.

    ``has_value=False`` stands for "no value" (e.g. absent state).

    A value of a built-in immutable type (int, long, double, string, bool) may also be held
    *decoded* (:meth:`of`): embedded functions read it without decoding, and the bytes are
    produced only when something asks for :attr:`value` (a remote call, a snapshot, an
    egress). Equality, hashing, pickling and ``repr`` always use the bytes, so a decoded
    value and its encoded form are interchangeable.

    Example:
        >>> to_typed_value(StringType, "hi")
        TypedValue(typename='io.statefun.types/string', has_value=True, value=b'\\n\\x02hi')
        >>> TypedValue.of(IntType, 7) == to_typed_value(IntType, 7)
        True
    """

    __slots__ = ("typename", "has_value", "_value", "_type", "_obj")
    typename: str
    has_value: bool
    _value: bytes | None  # None: held decoded and not serialized yet
    _type: Type[Any] | None  # the built-in type of a value held decoded
    _obj: Any

    def __init__(self, typename: str = "", has_value: bool = False, value: bytes = b"") -> None:
        setattr_ = object.__setattr__
        setattr_(self, "typename", typename)
        setattr_(self, "has_value", has_value)
        setattr_(self, "_value", value)
        setattr_(self, "_type", None)
        setattr_(self, "_obj", None)

    @classmethod
    def of(cls, tpe: Type[Any], obj: Any) -> TypedValue:
        """A value held decoded: ``obj`` must be a valid, immutable value of ``tpe`` (the
        caller checked it); it is serialized only when :attr:`value` is read."""
        tv = _new_tv(cls)
        setattr_ = object.__setattr__
        setattr_(tv, "typename", tpe.typename)
        setattr_(tv, "has_value", True)
        setattr_(tv, "_value", None)
        setattr_(tv, "_type", tpe)
        setattr_(tv, "_obj", obj)
        return tv

    @property
    def value(self) -> bytes:
        """The serialized value (``b""`` when there is none)."""
        data = self._value
        if data is None:
            data = bytes(self._type.serializer().serialize(self._obj))  # type: ignore[union-attr]
            object.__setattr__(self, "_value", data)
        return data

    def decoded(self, tpe: Type[T]) -> T | None:
        """The value deserialized as ``tpe`` (the held object when it is held decoded as
        ``tpe``); ``None`` without a value. The typename is not checked here."""
        if self._type is tpe:
            return self._obj  # type: ignore[no-any-return]
        if not self.has_value:
            return None
        return tpe.serializer().deserialize(self.value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"TypedValue is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"TypedValue is immutable (cannot delete {name!r})")

    def __eq__(self, other: object) -> bool:
        if type(other) is not TypedValue:
            return NotImplemented
        return (self.typename, self.has_value, self.value) == (other.typename, other.has_value, other.value)

    def __hash__(self) -> int:
        return hash((self.typename, self.has_value, self.value))

    def __repr__(self) -> str:
        return f"TypedValue(typename={self.typename!r}, has_value={self.has_value!r}, value={self.value!r})"

    def __reduce__(self) -> Any:
        return (TypedValue, (self.typename, self.has_value, self.value))  # encoded at the boundary


_new_tv = object.__new__


def to_typed_value(tpe: Type[T], value: T | None) -> TypedValue:
    """Serialize ``value`` with ``tpe`` into a :class:`TypedValue` (``None`` -> no value)."""
    if value is None:
        return TypedValue(tpe.typename, False, b"")
    return TypedValue(tpe.typename, True, bytes(tpe.serializer().serialize(value)))


def decoded_typed_value(tpe: Type[T], value: Any) -> TypedValue | None:
    """``value`` held decoded when :func:`holds_decoded` says so; ``None`` otherwise (the
    caller serializes it now).

    Example:
        >>> decoded_typed_value(IntType, 3).decoded(IntType), decoded_typed_value(IntType, 2**40)
        (3, None)
    """
    return TypedValue.of(tpe, value) if holds_decoded(tpe, value) else None


def all_hold_decoded(tpe: Type[Any], values: list[Any]) -> bool:
    """Whether every one of ``values`` may be held decoded as ``tpe`` (:func:`holds_decoded`
    of each), checked a column at a time: types and ranges with C-level passes.

    Example:
        >>> all_hold_decoded(IntType, [1, 2, 3]), all_hold_decoded(IntType, [1, 2**40]), all_hold_decoded(DoubleType, [1.0, -0.0])
        (True, False, False)
    """
    check = _DECODABLE.get(tpe)
    if check is None:
        return False
    if not values:
        return True
    if operator.countOf(map(type, values), check[0]) != len(values):  # (by identity: no set built)
        return False
    lo = check[1]
    if lo is not None:
        return lo <= min(values) and max(values) <= check[2]  # type: ignore[no-any-return]
    if check[0] is str:
        return all(map(str.isascii, values)) or all(holds_decoded(tpe, v) for v in values)
    if check[0] is float:
        return 0.0 not in values or all(holds_decoded(tpe, v) for v in values)  # (-0.0 == 0.0)
    return True


def holds_decoded(tpe: Type[Any], value: Any) -> bool:
    """Whether ``value`` may be held decoded as ``tpe``: ``tpe`` is a built-in immutable
    type, ``value`` is exactly of its Python type and valid for it (so serializing it later
    cannot fail) and round-trips exactly (not ``-0.0``).

    Example:
        >>> holds_decoded(IntType, 3), holds_decoded(IntType, 2**40), holds_decoded(IntType, True)
        (True, False, False)
    """
    check = _DECODABLE.get(tpe)
    if check is None or type(value) is not check[0]:
        return False
    lo = check[1]
    if lo is not None:
        return lo <= value <= check[2]  # type: ignore[no-any-return]
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
        return True
    if isinstance(value, float):
        return bool(value) or math.copysign(1.0, value) > 0
    return True


def from_typed_value(tpe: Type[T], typed_value: TypedValue | None) -> T | None:
    """Deserialize a :class:`TypedValue` with ``tpe``; ``None`` when it holds no value.

    Raises:
        TypeError: the value's typename is not ``tpe.typename``.
    """
    if typed_value is None or not typed_value.has_value:
        return None
    if typed_value.typename != tpe.typename:
        raise TypeError(
            f"type mismatch: the value has type {typed_value.typename!r} "
            f"but is read as {tpe.typename!r}"
        )
    return typed_value.decoded(tpe)


# -- user-defined types ------------------------------------------------------------------


class _FunctionSerializer(TypeSerializer[T]):
    __slots__ = ("_serialize", "_deserialize")

    def __init__(
        self, serialize_fn: Callable[[T], bytes], deserialize_fn: Callable[[bytes], T]
    ) -> None:
        self._serialize = serialize_fn
        self._deserialize = deserialize_fn

    def serialize(self, value: T) -> bytes:
        data = self._serialize(value)
        if isinstance(data, str):  # the SDK's own docs use json.dumps, which returns str
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"serialize_fn returned {type(data).__name__}, expected bytes")
        return bytes(data)

    def deserialize(self, data: bytes) -> T:
        return self._deserialize(data)


class _SimpleType(Type[T]):
    __slots__ = ("_ser",)

    def __init__(self, typename: str, serializer: TypeSerializer[T]) -> None:
        super().__init__(typename)
        self._ser = serializer

    def serializer(self) -> TypeSerializer[T]:
        return self._ser


def simple_type(
    typename: str,
    serialize_fn: Callable[[T], bytes],
    deserialize_fn: Callable[[bytes], T],
) -> Type[T]:
    """Define a type from a pair of functions.

    ``serialize_fn`` may return ``str``; it is encoded as UTF-8.

    Example:
        >>> import json
        >>> User = simple_type("com.example/User", json.dumps, json.loads)
        >>> User.serializer().serialize({"a": 1})
        b'{"a": 1}'
    """
    if serialize_fn is None:
        raise ValueError("serialize_fn is missing")
    if deserialize_fn is None:
        raise ValueError("deserialize_fn is missing")
    return _SimpleType(typename, _FunctionSerializer(serialize_fn, deserialize_fn))


def _json_dumps_utf8(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def make_json_type(typename: str) -> Type[Any]:
    """Define a type whose values are stored as UTF-8 JSON (like the SDK's helper).

    Example:
        >>> make_json_type("com.example/Cart").serializer().serialize(["é"])
        b'["\\xc3\\xa9"]'
    """
    return simple_type(typename, _json_dumps_utf8, json.loads)


def make_protobuf_type(cls: type, namespace: str | None = None) -> Type[Any]:
    """Define a type for a generated protobuf message class.

    The typename is ``"<namespace>/<message full name>"``, the namespace defaulting to
    ``type.googleapis.com`` as in the SDK.
    """
    if cls is None:
        raise ValueError("the protobuf message class is missing")
    full_name = cls.DESCRIPTOR.full_name  # type: ignore[attr-defined]
    if not full_name:
        raise TypeError(f"unable to deduce the protobuf full name of {cls!r}")

    def parse(data: bytes) -> Any:
        message = cls()
        message.ParseFromString(data)
        return message

    def dump(message: Any) -> bytes:
        if not isinstance(message, cls):
            raise TypeError(f"expected a {full_name} message, got {message!r}")
        return message.SerializeToString()  # type: ignore[attr-defined]

    return simple_type(f"{namespace or 'type.googleapis.com'}/{full_name}", dump, parse)


# -- built-in primitive types ------------------------------------------------------------


class _WrapperSerializer(TypeSerializer[T]):
    """Encodes a value as field 1 of a one-field wrapper message."""

    __slots__ = ("_write", "_read", "_check")

    def __init__(
        self,
        write: Callable[[_protowire.Writer, int, Any], None],
        read: Callable[[_protowire.Fields, int], T],
        check: Callable[[Any], Any] | None = None,
    ) -> None:
        self._write = write
        self._read = read
        self._check = check

    def serialize(self, value: T) -> bytes:
        if self._check is not None:
            value = self._check(value)
        writer = _protowire.Writer()
        self._write(writer, 1, value)
        return writer.getvalue()

    def deserialize(self, data: bytes) -> T:
        return self._read(_protowire.Fields.parse(data), 1)


class _WrapperType(Type[T]):
    __slots__ = ("_ser",)

    def __init__(self, typename: str, serializer: TypeSerializer[T]) -> None:
        super().__init__(typename)
        self._ser = serializer

    def serializer(self) -> TypeSerializer[T]:
        return self._ser

    def __repr__(self) -> str:
        return f"<StateFun type {self.typename}>"

    def __reduce__(self) -> Any:
        # the built-in types unpickle as the module's singletons (identity-keyed caches
        # such as the storage's decoded-value cache keep working on workers)
        return (_builtin_type, (self.typename,))


def _builtin_type(typename: str) -> Type[Any]:
    return {t.typename: t for t in (BoolType, IntType, LongType, FloatType, DoubleType, StringType)}[typename]


def _check_bool(value: Any) -> bool:
    """``value`` as a bool, taking what protobuf's bool fields take (the SDK's BoolType
    serializes with them): a bool, a numpy bool scalar (numpy/pandas comparisons give them)
    or an integer of int64's range (an int, a numpy integer: anything with ``__index__``);
    not a float, a str, an array or an object that only has a truth value."""
    if isinstance(value, bool):
        return value
    tp = type(value)
    if tp.__module__ == "numpy":
        if tp.__name__ in ("bool", "bool_"):  # (no __index__ in numpy 2)
            return bool(value)
        if tp.__name__ == "ndarray":  # (a 0-d integer array has __index__; protobuf refuses arrays)
            raise TypeError(f"expected a bool, got an array {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"expected a bool, got {value!r}") from None
    if not -(1 << 63) <= number < 1 << 63:
        raise ValueError(f"value {number!r} out of range for a bool field (protobuf takes int64 values)")
    return bool(number)


def _check_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):  # accepted by protobuf when valid UTF-8
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"bytes value {value!r} is not valid UTF-8") from None
    raise TypeError(f"expected a str, got {value!r}")


class _FixedSerializer(_WrapperSerializer[T]):
    """A fixed-width wrapper (int, long, float, double) with a struct fast path; anything
    unusual (other value types, non-canonical encodings) takes the general path, so the
    bytes and the errors are exactly those of :class:`_WrapperSerializer`."""

    __slots__ = ("_tag", "_fmt", "_size", "_kinds", "_lo", "_hi")

    def __init__(self, write, read, tag: int, fmt: str, kinds: tuple[type, ...], lo=None, hi=None) -> None:
        super().__init__(write, read)
        self._tag = bytes((tag,))
        self._fmt = fmt  # a str, not a struct.Struct: types travel pickled with the job
        self._size = 1 + struct.calcsize(fmt)
        self._kinds = kinds
        self._lo = lo
        self._hi = hi

    def serialize(self, value: T) -> bytes:
        if type(value) in self._kinds and (self._lo is None or self._lo <= value <= self._hi):
            if not value:  # proto3 default (also -0.0 goes the general way below)
                return super().serialize(value)
            return self._tag + struct.pack(self._fmt, value)
        return super().serialize(value)

    def deserialize(self, data: bytes) -> T:
        if len(data) == self._size and data[0] == self._tag[0]:
            return struct.unpack_from(self._fmt, data, 1)[0]
        return super().deserialize(data)


class _StringSerializer(_WrapperSerializer[str]):
    """``string`` wrapper with a fast path for str values shorter than 128 UTF-8 bytes."""

    __slots__ = ()

    def serialize(self, value: Any) -> bytes:
        if type(value) is str:
            data = value.encode("utf-8")
            if 0 < len(data) < 0x80:
                return bytes((0x0A, len(data))) + data
        return super().serialize(value)

    def deserialize(self, data: bytes) -> str:
        if len(data) >= 2 and data[0] == 0x0A and data[1] == len(data) - 2:
            try:
                return data[2:].decode("utf-8")
            except UnicodeDecodeError:
                pass  # the general path raises the usual DecodeError
        return super().deserialize(data)


BoolType: Type[bool] = _WrapperType(
    "io.statefun.types/bool",
    _WrapperSerializer(_protowire.Writer.bool, _protowire.Fields.bool, _check_bool),
)
IntType: Type[int] = _WrapperType(
    "io.statefun.types/int",
    _FixedSerializer(_protowire.Writer.sfixed32, _protowire.Fields.sfixed32, 0x0D, "<i", (int,), -(1 << 31), (1 << 31) - 1),
)
LongType: Type[int] = _WrapperType(
    "io.statefun.types/long",
    _FixedSerializer(_protowire.Writer.sfixed64, _protowire.Fields.sfixed64, 0x09, "<q", (int,), -(1 << 63), (1 << 63) - 1),
)
FloatType: Type[float] = _WrapperType(
    "io.statefun.types/float",
    _WrapperSerializer(_protowire.Writer.float32, _protowire.Fields.float32),
)
DoubleType: Type[float] = _WrapperType(
    "io.statefun.types/double",
    _FixedSerializer(_protowire.Writer.double, _protowire.Fields.double, 0x09, "<d", (float,)),
)
StringType: Type[str] = _WrapperType(
    "io.statefun.types/string",
    _StringSerializer(_protowire.Writer.string, _protowire.Fields.string, _check_str),
)

#: built-in immutable types held decoded: type -> (exact Python type, min, max)
_DECODABLE: dict[Any, tuple[type, Any, Any]] = {
    IntType: (int, -(1 << 31), (1 << 31) - 1),
    LongType: (int, -(1 << 63), (1 << 63) - 1),
    DoubleType: (float, None, None),
    StringType: (str, None, None),
    BoolType: (bool, None, None),
}
_BY_TYPENAME: dict[str, Type[Any]] = {t.typename: t for t in (BoolType, IntType, LongType, FloatType, DoubleType, StringType)}


def builtin_type(typename: str) -> Type[Any] | None:
    """The built-in type of ``typename`` (``None`` for any other).

    Example:
        >>> builtin_type("io.statefun.types/int") is IntType
        True
    """
    return _BY_TYPENAME.get(typename)
