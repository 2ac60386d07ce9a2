"""Byte keys of the RocksDB state backend: a canonical key encoding and the key layout.

Every entry of the RocksDB backend lives under one byte key (Flink's layout, with a state id
where Flink uses a column family)::

    key group     2 bytes, big-endian     (so a key-group range is one contiguous key range)
    state id      8 bytes                 (BLAKE2b of the state's name)
    key length    4 bytes, big-endian
    key           the key, canonically encoded (:func:`encode_key`)
    [map key]     map state only: the entry's key, canonically encoded

Keys are compared by their encoding, as in Flink's RocksDB backend (by serialized bytes):
``encode_key`` is canonical for the key types of :mod:`checkpoint` (None, bool, int, float,
str, bytes, tuples, lists, sets, frozensets, dicts of those; numpy scalars as the Python
number they hold) so equal keys give equal bytes: set and dict members are sorted by their
encoding, never by iteration order. Keys that Python holds equal are one key, as in the
heap backend's dicts and as :func:`~engine.keygroups.stable_hash` hashes them: ``1``,
``True``, ``1.0``, ``Decimal(1)``, ``Fraction(1)``, ``complex(1, 0)`` and an ``IntEnum`` of 1
are all encoded as the int 1; a ``Decimal`` or ``Fraction`` that equals a float as that
float, else as its ratio in lowest terms (``Decimal("1.10") == Fraction(11, 10)``); a
subclass of str, bytes, tuple or frozenset (a ``str`` Enum, a namedtuple) as its plain value;
a set as the frozenset it equals; a tz-aware datetime as its instant. Every float NaN
(``-nan``, any payload) is encoded as the canonical NaN, one key. Other objects (naive
datetime, date, user classes) are pickled; their pickles are deterministic for the types
whose ``repr`` is. :func:`decode_key` gives the plain value back (``1`` for ``True``): what
keeps its type across the encoding is said by :func:`keeps_type`, and the timers keep
the key they were registered with (:mod:`checkpoint.rocksdb_timers`).

The encodings of str, int, bytes, None, non-integral floats, and tuples, lists, dicts and
frozensets of those, are those of snapshots written before 2026-12-07
(:data:`KEY_ENCODING` 1); keys of the other types changed, and a restore moves them
(:func:`checkpoint.rocksdb_restore.rekey_legacy`). Timer namespaces keep the encoding of
their own type (:func:`encode_namespace`, which never changed).

Example:
    >>> decode_key(encode_key(("user", 7, frozenset({"b", "a"})))) == ("user", 7, frozenset({"a", "b"}))
    True
    >>> encode_key({2, 1}) == encode_key({1, 2}) == encode_key(frozenset([1, 2.0]))
    True
    >>> import decimal, fractions
    >>> {encode_key(k) for k in (1, True, 1.0, decimal.Decimal("1.00"), fractions.Fraction(2, 2))}
    {b'i1'}
    >>> encode_key(decimal.Decimal("1.10")) == encode_key(fractions.Fraction(11, 10))
    True
    >>> key_group_prefix(3)
    b'\\x00\\x03'
"""

from __future__ import annotations

import datetime as dt
import decimal
import fractions
import hashlib
import operator
import struct
from typing import Any, Callable

import numpy as np

from raystream.engine.errors import StateError
from raystream.engine.keygroups import canonical_key
from raystream.engine.serde import dumps, loads

__all__ = [
    "KEY_ENCODING",
    "KEY_GROUP_BYTES",
    "STATE_ID_BYTES",
    "decode_key",
    "encode_key",
    "encode_namespace",
    "keeps_type",
    "key_group_prefix",
    "state_id",
    "split_db_key",
]

KEY_GROUP_BYTES = 2
STATE_ID_BYTES = 8
#: the key encoding snapshots are written with (in their manifests): 3 since 2026-12-07
#: (the same bytes as 2, and an integral float of 2**63 or more in magnitude, stored as the
#: int it equals, in that int's key group: before, ``stable_hash`` put it in the group of its
#: bits, and a restore moves it: ``rocksdb_restore.refile_big_numbers``); 2 from 2026-12-07
#: (keys Python holds equal are one key); 1 (no field): before, when ``1``, ``True``, ``1.0``
#: and ``Decimal(1)`` were four keys
KEY_ENCODING = 3
_LEN = struct.Struct(">I")
_F64 = struct.Struct(">d")
_HEAD = KEY_GROUP_BYTES + STATE_ID_BYTES  # offset of the key length in a db key


def key_group_prefix(key_group: int) -> bytes:
    """The 2-byte big-endian prefix of every entry of ``key_group``."""
    return key_group.to_bytes(KEY_GROUP_BYTES, "big")


def state_id(name: str) -> bytes:
    """The 8-byte id of state ``name`` in keys (BLAKE2b of its UTF-8 name)."""
    return hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=STATE_ID_BYTES).digest()


def _parts(items: Any) -> bytes:
    return b"".join(_LEN.pack(len(p)) + p for p in items)


def _enc_str(k: str) -> bytes:
    return b"s" + k.encode("utf-8", "surrogatepass")


def _enc_int(k: int) -> bytes:
    return b"i" + str(k).encode("ascii")


#: the bytes of every NaN key: the canonical NaN's (0x7ff8000000000000), as Flink's
#: serializer writes every NaN (doubleToLongBits)
_NAN_BYTES = b"f" + _F64.pack(canonical_key(float("nan")))


def _enc_float(k: float) -> bytes:
    if k != k:
        return _NAN_BYTES
    if k.is_integer():  # (finite: inf is not) 3.0 == 3: one key
        return _enc_int(int(k))
    return b"f" + _F64.pack(k)


def _enc_bool(k: bool) -> bytes:
    return b"i1" if k else b"i0"


#: Unix epoch, the origin of an aware datetime's instant
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)


def _enc_bytes(k: bytes) -> bytes:
    return b"b" + k


def _enc_tuple(k: tuple) -> bytes:
    return b"t" + _parts(encode_key(x) for x in k)


def _enc_list(k: list) -> bytes:
    return b"l" + _parts(encode_key(x) for x in k)


def _enc_set(k: set) -> bytes:  # (a set equals the frozenset of its members: one key)
    return b"Z" + _parts(sorted(encode_key(x) for x in k))


def _enc_frozenset(k: frozenset) -> bytes:
    return b"Z" + _parts(sorted(encode_key(x) for x in k))


def _enc_dict(k: dict) -> bytes:
    pairs = sorted((encode_key(a), encode_key(b)) for a, b in k.items())
    return b"d" + _parts(p for pair in pairs for p in pair)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    str: _enc_str,
    int: _enc_int,
    float: _enc_float,
    bytes: _enc_bytes,
    tuple: _enc_tuple,
    list: _enc_list,
    set: _enc_set,
    frozenset: _enc_frozenset,
    dict: _enc_dict,
    bool: _enc_bool,
    type(None): lambda k: b"N",
}


def encode_key(key: Any) -> bytes:
    """The canonical bytes of ``key``: keys that Python holds equal get the same bytes (see
    the module docstring).

    Raises:
        StateError: the key cannot be serialized.
    """
    enc = _ENCODERS.get(type(key))
    if enc is not None:
        return enc(key)
    if isinstance(key, np.generic):
        return encode_key(key.item())
    equal = _equal_value(key)
    if equal is not _NO_VALUE:
        return equal if type(equal) is bytes else encode_key(equal)
    return _pickled(key)


def _pickled(key: Any) -> bytes:
    try:
        return b"p" + dumps(key, "a key")  # (no repr per call: the error below names the key)
    except Exception as exc:
        raise StateError(f"key {key!r} of type {type(key).__name__} cannot be serialized for RocksDB state: {exc}") from exc


_NO_VALUE: Any = object()


def _equal_value(key: Any) -> Any:
    """The plain value that ``key`` equals (an int subclass's int, a namedtuple's tuple, a
    Decimal's int or float...), or the finished encoding (bytes) of a rational that equals no
    float or an aware datetime's instant, or ``_NO_VALUE``: pickle it as it is (as
    :func:`~engine.keygroups.stable_hash` hashes such keys)."""
    if isinstance(key, int):  # (an IntEnum, an IntFlag member; bool has its encoder)
        return operator.index(key)
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, float):
        return float.__float__(key)
    if isinstance(key, bytes):
        return bytes(memoryview(key))
    if isinstance(key, tuple):  # a namedtuple equals the plain tuple of its fields
        return tuple(key)
    if isinstance(key, frozenset):
        return frozenset(key)
    if isinstance(key, (decimal.Decimal, fractions.Fraction)):
        return _rational(key)
    if isinstance(key, complex):
        return key.real if key.imag == 0 else _NO_VALUE
    if isinstance(key, dt.datetime):
        offset = key.utcoffset()
        if offset is not None:  # aware: equal to the same instant in any zone
            micros = (key - _EPOCH) // _MICROSECOND
            return b"D" + _enc_int(micros)[1:]
    return _NO_VALUE


def _rational(key: decimal.Decimal | fractions.Fraction) -> Any:
    try:
        n, d = key.as_integer_ratio()
    except (ValueError, OverflowError):  # infinities equal float's; a NaN equals nothing
        return float(key) if not key.is_nan() else _NO_VALUE  # type: ignore[union-attr]
    if d == 1:
        return n
    try:
        if (n / d).as_integer_ratio() == (n, d):
            return n / d
    except OverflowError:  # (beyond any float: equal to none)
        pass
    return b"r" + _parts((_enc_int(n), _enc_int(d)))


#: types whose values :func:`decode_key` gives back as they were (as their own type)
_PLAIN_TYPES = frozenset([str, int, bytes, type(None)])


def keeps_type(key: Any) -> bool:
    """Whether :func:`decode_key` of ``encode_key(key)`` gives back a key of the same types
    (str, int, bytes, None, a non-integral float, and tuples, lists and frozensets of those),
    rather than the plain value it equals (``1`` for ``True``, a tuple for a namedtuple).

    Example:
        >>> keeps_type(("a", 1, 2.5)), keeps_type(True), keeps_type(2.0)
        (True, False, False)
    """
    t = type(key)
    if t in _PLAIN_TYPES:
        return True
    if t is float:
        return not key.is_integer()
    if t is tuple or t is list or t is frozenset:
        return all(map(keeps_type, key))
    return False


def _legacy_encode(key: Any) -> bytes:
    """The encoding of :data:`KEY_ENCODING` 1 (before 2026-12-07): each type apart, sets as
    their own kind; what timer namespaces keep (:func:`encode_namespace`) and what a restore
    recognises in older snapshots."""
    t = type(key)
    if t is bool:
        return b"T" if key else b"F"
    if t is float:
        return b"f" + _F64.pack(key) if key == key else _NAN_BYTES
    if t is set:
        return b"S" + _parts(sorted(_legacy_encode(x) for x in key))
    if t is tuple:
        return b"t" + _parts(_legacy_encode(x) for x in key)
    if t is list:
        return b"l" + _parts(_legacy_encode(x) for x in key)
    if t is frozenset:
        return b"Z" + _parts(sorted(_legacy_encode(x) for x in key))
    if t is dict:
        pairs = sorted((_legacy_encode(a), _legacy_encode(b)) for a, b in key.items())
        return b"d" + _parts(p for pair in pairs for p in pair)
    enc = _ENCODERS.get(t)
    if enc is not None:
        return enc(key)
    if isinstance(key, np.generic):
        return _legacy_encode(key.item())
    return _pickled(key)


def encode_namespace(namespace: Any) -> bytes:
    """The bytes of a timer's namespace: each type apart (``True`` and ``1`` are two
    namespaces), as before 2026-12-07, so that a namespace object decodes as the type it was
    (a window class, a namedtuple); :func:`decode_key` reads them.

    Example:
        >>> encode_namespace(True) != encode_namespace(1), decode_key(encode_namespace(True))
        (True, True)
    """
    return _legacy_encode(namespace)


def _split(data: memoryview) -> list[memoryview]:
    out = []
    i, n = 0, len(data)
    while i < n:
        (size,) = _LEN.unpack_from(data, i)
        out.append(data[i + 4 : i + 4 + size])
        i += 4 + size
    return out


def _decode(data: memoryview) -> Any:
    tag = data[0]
    body = data[1:]
    if tag == 0x73:  # s
        return body.tobytes().decode("utf-8", "surrogatepass")
    if tag == 0x69:  # i
        return int(body.tobytes())
    if tag == 0x66:  # f
        return _F64.unpack(body)[0]
    if tag == 0x62:  # b
        return body.tobytes()
    if tag == 0x74:  # t
        return tuple(_decode(p) for p in _split(body))
    if tag == 0x6C:  # l
        return [_decode(p) for p in _split(body)]
    if tag == 0x53:  # S
        return {_decode(p) for p in _split(body)}
    if tag == 0x5A:  # Z
        return frozenset(_decode(p) for p in _split(body))
    if tag == 0x64:  # d
        parts = _split(body)
        return {_decode(parts[i]): _decode(parts[i + 1]) for i in range(0, len(parts), 2)}
    if tag == 0x54:  # T
        return True
    if tag == 0x46:  # F
        return False
    if tag == 0x4E:  # N
        return None
    if tag == 0x70:  # p
        return loads(body, "a RocksDB state key")
    if tag == 0x72:  # r: a rational that equals no float
        n, d = (int(p.tobytes()[1:]) for p in _split(body))
        return fractions.Fraction(n, d)
    if tag == 0x44:  # D: an aware datetime's instant (microseconds since the epoch), in UTC
        return _EPOCH + int(body.tobytes()) * _MICROSECOND
    raise StateError(f"unknown key encoding tag {bytes([tag])!r}")


def decode_key(data: bytes | memoryview) -> Any:
    """The key :func:`encode_key` encoded."""
    return _decode(memoryview(data))


def split_db_key(db_key: bytes) -> tuple[int, bytes, bytes]:
    """``(key group, encoded key, rest)`` of a db key (rest: the map key of map state)."""
    kg = int.from_bytes(db_key[:KEY_GROUP_BYTES], "big")
    (size,) = _LEN.unpack_from(db_key, _HEAD)
    start = _HEAD + 4
    return kg, db_key[start : start + size], db_key[start + size :]


def key_part(encoded_key: bytes) -> bytes:
    """The length-prefixed key as it follows the state id in a db key."""
    return _LEN.pack(len(encoded_key)) + encoded_key
