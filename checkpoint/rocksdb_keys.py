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
encoding, never by iteration order. Other objects (datetime, Decimal, user classes) are
pickled; their pickles are deterministic for the types whose ``repr`` is. Every float NaN
(``-nan``, any payload) is encoded as the canonical NaN, one key. Unlike the heap
backend, ``1``, ``1.0`` and ``True`` are three keys here (Flink's typed keys never mix).

Example:
    >>> decode_key(encode_key(("user", 7, frozenset({"b", "a"})))) == ("user", 7, frozenset({"a", "b"}))
    True
    >>> encode_key({2, 1}) == encode_key({1, 2})
    True
    >>> key_group_prefix(3)
    b'\\x00\\x03'
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Callable

import numpy as np

from raystream.engine.errors import StateError
from raystream.engine.keygroups import canonical_key
from raystream.engine.serde import dumps, loads

__all__ = [
    "KEY_GROUP_BYTES",
    "STATE_ID_BYTES",
    "decode_key",
    "encode_key",
    "key_group_prefix",
    "state_id",
    "split_db_key",
]

KEY_GROUP_BYTES = 2
STATE_ID_BYTES = 8
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
    return b"f" + _F64.pack(k) if k == k else _NAN_BYTES


def _enc_bytes(k: bytes) -> bytes:
    return b"b" + k


def _enc_tuple(k: tuple) -> bytes:
    return b"t" + _parts(encode_key(x) for x in k)


def _enc_list(k: list) -> bytes:
    return b"l" + _parts(encode_key(x) for x in k)


def _enc_set(k: set) -> bytes:
    return b"S" + _parts(sorted(encode_key(x) for x in k))


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
    bool: lambda k: b"T" if k else b"F",
    type(None): lambda k: b"N",
}


def encode_key(key: Any) -> bytes:
    """The canonical bytes of ``key`` (see the module docstring).

    Raises:
        StateError: the key cannot be serialized.
    """
    enc = _ENCODERS.get(type(key))
    if enc is not None:
        return enc(key)
    if isinstance(key, np.generic):
        return encode_key(key.item())
    try:
        return b"p" + dumps(key, "a key")  # (no repr per call: the error below names the key)
    except Exception as exc:
        raise StateError(f"key {key!r} of type {type(key).__name__} cannot be serialized for RocksDB state: {exc}") from exc


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
