"""Keyed state snapshots: one serialized blob per key group, plus a byte format with an index.

A :class:`KeyedStateSnapshot` holds, for every non-empty key group of one subtask, the
bytes of ``{state_name: {key: entry}}`` (see :mod:`checkpoint.state` for the entry
shapes). Because state is cut along key groups, a snapshot taken at parallelism p1 is
restored at parallelism p2 by giving each new subtask the key groups in its
:class:`~engine.keygroups.KeyGroupRange`.

Byte format (:func:`serialize_keyed_snapshot`), inside a ``"keyed-state"`` blob of
:mod:`checkpoint.format`::

    uint32 LE   header length H
    H bytes     JSON header: {"checkpoint_id", "max_parallelism", "key_group_range": [s, e],
                              "states": {name: {"kind", "ttl_ms"}},
                              "key_types": [type name, ...] (optional),
                              "index": [[key_group, offset, length], ...]}
    ...         key-group blobs; offsets are relative to the end of the header

:func:`deserialize_keyed_snapshot` with a ``key_group_range`` copies out only the key
groups in that range, so a restoring subtask never unpickles another subtask's state.

``key_types`` names the types of the keys the state is kept under (:func:`key_type_name`:
``"str"``, ``"number"``, ``"tuple"``...; absent in snapshots written before 2026-12-07): a
restored backend refuses a key of a type the snapshot does not hold until it saw one it does,
so that a job whose ``key_by`` now gives other keys (``str`` -> ``int``) does not start from
empty state silently (:class:`KeyTypeCheck`).

Example:
    >>> from raystream.engine.keygroups import KeyGroupRange
    >>> snap = KeyedStateSnapshot(1, 128, KeyGroupRange(0, 127), {}, {})
    >>> deserialize_keyed_snapshot(serialize_keyed_snapshot(snap)) == snap
    True
"""

from __future__ import annotations

import json
import numbers
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable

from raystream.engine.errors import CheckpointError, StateError, refusing_restore
from raystream.engine.keygroups import KeyGroupRange

from .format import decode_blob_view, encode_blob_parts

__all__ = [
    "StateMeta",
    "KeyedStateSnapshot",
    "serialize_keyed_snapshot",
    "deserialize_keyed_snapshot",
    "KEYED_STATE_KIND",
    "key_type_name",
    "key_type_names",
    "key_class_name",
    "KeyTypeCheck",
    "KeyTypeChecked",
]

KEYED_STATE_KIND = "keyed-state"
_LEN = struct.Struct("<I")

_TYPE_NAMES: dict[type, str] = {}


def _type_name(t: type) -> str:
    name = _TYPE_NAMES.get(t)
    if name is None:
        if t is type(None):
            name = "None"
        elif issubclass(t, str):  # (a str Enum, numpy's str_: equal to a str)
            name = "str"
        elif issubclass(t, (bytes, bytearray)):
            name = "bytes"
        elif issubclass(t, numbers.Number):  # bool, int, float, IntEnum, numpy numbers, Decimal...
            name = "number"
        elif issubclass(t, tuple):  # (a namedtuple is equal to its tuple)
            name = "tuple"
        elif issubclass(t, (frozenset, set)):
            name = "frozenset"
        else:
            name = f"{t.__module__}.{t.__qualname__}"
        if len(_TYPE_NAMES) < 4096:
            _TYPE_NAMES[t] = name
    return name


def key_type_name(key: Any) -> str:
    """The name a snapshot records for the type of ``key``: ``"str"``, ``"bytes"``,
    ``"number"`` (every number: ``3``, ``3.0``, ``True``, numpy numbers, ``Decimal``),
    ``"tuple"``, ``"frozenset"``, ``"None"``, else the class's ``module.qualname``.
    Types that a key may take in one job without changing meaning share a name.

    Example:
        >>> key_type_name("a"), key_type_name(3), key_type_name(2.5), key_type_name(("a", 1))
        ('str', 'number', 'number', 'tuple')
        >>> import datetime; key_type_name(datetime.date(2026, 1, 1))
        'datetime.date'
    """
    return _type_name(type(key))


def key_class_name(cls: type) -> str:
    """:func:`key_type_name` of a key of class ``cls``.

    Example:
        >>> key_class_name(bool), key_class_name(bytes)
        ('number', 'bytes')
    """
    return _type_name(cls)


def key_type_names(keys: Iterable[Any]) -> set[str]:
    """The :func:`key_type_name` of each of ``keys``, as a set.

    Example:
        >>> sorted(key_type_names(["a", "b", 1]))
        ['number', 'str']
    """
    return {_type_name(t) for t in {type(k) for k in keys}}


class KeyTypeCheck:
    """What a restored keyed backend checks of the keys it is given: until a key of a type
    the restored state is kept under comes, a key of another type is refused (the job's
    ``key_by`` changed its keys' type since the snapshot, and every key would find empty
    state). Flink refuses a restored key serializer that the job's is incompatible with;
    a Python job declares no key type, so the snapshot records the types of its keys.

    Args:
        expected: the type names of the restored keys (:func:`key_type_name`).

    Example:
        >>> check = KeyTypeCheck({"str"})
        >>> check.passes("a")
        True
        >>> check.passes(3)
        False
        >>> print(check.message(3))  # doctest: +ELLIPSIS
        keyed state restored from a checkpoint or savepoint is kept under keys of type ['str'], but ...
    """

    __slots__ = ("expected",)

    def __init__(self, expected: Iterable[str]) -> None:
        self.expected = frozenset(expected)

    def settled_by(self, key: Any) -> bool:
        """Whether ``key`` ends the check: True for a key of a restored type; a ``None`` key
        (a record without the key field) says nothing of the type: False.

        Raises:
            StateError: ``key`` is of another type (:meth:`refuse`).
        """
        if key is None:
            return False
        if not self.passes(key):
            raise self.refuse(key)
        return True

    def passes(self, key: Any) -> bool:
        """True when ``key``'s type is among the restored keys' types."""
        return _type_name(type(key)) in self.expected

    def message(self, key: Any) -> str:
        """The refusal of ``key``, naming both types and the remedies."""
        return (
            f"keyed state restored from a checkpoint or savepoint is kept under keys of type "
            f"{sorted(self.expected)!r}, but this key is {key!r} of type {key_type_name(key)!r}: the job's "
            "key_by gives keys of another type than the job that took the snapshot, so every key would find "
            "empty state (a str key '3' is not the int key 3). Key the stream as before (e.g. "
            "key_by(lambda r: str(r['id']))), or give this operator a new uid() and restore with "
            "allow_non_restored_state=True to start its state empty"
        )

    def refuse(self, key: Any) -> StateError:
        """The :class:`StateError` for ``key``."""
        return refusing_restore(StateError(self.message(key)))


@dataclass(frozen=True)
class StateMeta:
    """What a snapshot records about one state: its kind and TTL (``ttl_ms`` or None).

    ``ttl_ms`` says how the entries are stored (with timestamps or not) and lets a
    backend drop expired entries of a restored state no operator has asked for yet.
    """

    kind: str
    ttl_ms: int | None = None


@dataclass(frozen=True)
class KeyedStateSnapshot:
    """An immutable, picklable copy of one keyed backend's state at a checkpoint.

    Attributes:
        checkpoint_id: the checkpoint it belongs to.
        max_parallelism: number of key groups of the job (must match on restore).
        key_group_range: the key groups the snapshotting backend owned.
        states: metadata of every state, by name.
        key_groups: serialized ``{state_name: {key: entry}}`` per non-empty key group.
        key_types: the :func:`key_type_name` of the keys the state is kept under; None:
            not recorded (a snapshot written before 2026-12-07).

    Example:
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> KeyedStateSnapshot(3, 128, KeyGroupRange(0, 63), {}, {}).size_bytes
        0
    """

    checkpoint_id: int
    max_parallelism: int
    key_group_range: KeyGroupRange
    states: dict[str, StateMeta] = field(default_factory=dict)
    key_groups: dict[int, bytes] = field(default_factory=dict)
    key_types: frozenset[str] | None = None

    @property
    def size_bytes(self) -> int:
        """Total size of the serialized key groups."""
        return sum(len(b) for b in self.key_groups.values())

    def __repr__(self) -> str:
        r = self.key_group_range
        return (
            f"KeyedStateSnapshot(checkpoint_id={self.checkpoint_id!r}, key_groups={r.start}.."
            f"{r.end} ({len(self.key_groups)} non-empty), states={sorted(self.states)!r}, "
            f"size_bytes={self.size_bytes})"
        )


def serialize_keyed_snapshot(snap: KeyedStateSnapshot) -> bytes:
    """Encode ``snap`` as a checksummed ``"keyed-state"`` blob with a key-group index.

    Example:
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> data = serialize_keyed_snapshot(KeyedStateSnapshot(1, 128, KeyGroupRange(0, 127)))
        >>> deserialize_keyed_snapshot(data).checkpoint_id
        1
    """
    index = []
    parts: list[bytes] = []
    offset = 0
    for kg in sorted(snap.key_groups):
        blob = snap.key_groups[kg]
        index.append([kg, offset, len(blob)])
        parts.append(blob)
        offset += len(blob)
    header = {
        "checkpoint_id": snap.checkpoint_id,
        "max_parallelism": snap.max_parallelism,
        "key_group_range": [snap.key_group_range.start, snap.key_group_range.end],
        "states": {n: {"kind": m.kind, "ttl_ms": m.ttl_ms} for n, m in snap.states.items()},
        "index": index,
    }
    if snap.key_types is not None:
        header["key_types"] = sorted(snap.key_types)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return encode_blob_parts(KEYED_STATE_KIND, [_LEN.pack(len(header_bytes)), header_bytes, *parts])


def deserialize_keyed_snapshot(
    data: bytes | memoryview,
    key_group_range: KeyGroupRange | None = None,
    name: str | None = None,
) -> KeyedStateSnapshot:
    """Decode bytes written by :func:`serialize_keyed_snapshot`.

    Args:
        data: the blob.
        key_group_range: if given, only key groups in this range are copied out (the
            result's ``key_group_range`` stays the writer's).
        name: file name or path for error messages.

    Raises:
        CheckpointError: the blob is corrupt, truncated, of another kind or too new.

    Example:
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> snap = KeyedStateSnapshot(1, 4, KeyGroupRange(0, 3), {}, {0: b"a", 3: b"b"})
        >>> data = serialize_keyed_snapshot(snap)
        >>> deserialize_keyed_snapshot(data, KeyGroupRange(2, 3)).key_groups
        {3: b'b'}
    """
    payload = decode_blob_view(data, KEYED_STATE_KIND, name)
    where = f" in {name!r}" if name else ""
    try:
        (header_len,) = _LEN.unpack_from(payload, 0)
        body_start = _LEN.size + header_len
        header = json.loads(payload[_LEN.size : body_start].tobytes().decode("utf-8"))
        start, end = header["key_group_range"]
        states = {
            n: StateMeta(str(m["kind"]), None if m.get("ttl_ms") is None else int(m["ttl_ms"]))
            for n, m in header["states"].items()
        }
        types = header.get("key_types")
        key_types = None if types is None else frozenset(str(t) for t in types)
        groups: dict[int, bytes] = {}
        body_len = len(payload) - body_start
        for kg, offset, length in header["index"]:
            if offset < 0 or length < 0 or offset + length > body_len:
                raise ValueError(f"key group {kg} at {offset}+{length} is past the end")
            if key_group_range is None or kg in key_group_range:
                lo = body_start + offset
                groups[int(kg)] = payload[lo : lo + length].tobytes()
        return KeyedStateSnapshot(
            int(header["checkpoint_id"]),
            int(header["max_parallelism"]),
            KeyGroupRange(int(start), int(end)),
            states,
            groups,
            key_types,
        )
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise CheckpointError(f"keyed state snapshot{where} is malformed: {exc}") from exc


class KeyTypeChecked:
    """The key-type check of a restored keyed backend (heap, RocksDB): ``_key_check`` is
    the :class:`KeyTypeCheck` of its restored keys (None: nothing to check); the backend
    calls :meth:`_check_key_type` with each key it is given while one is set."""

    _key_check: KeyTypeCheck | None = None

    def _check_key_type(self, key: Any) -> None:
        """The first keys after a restore: refuse a key of a type the restored state is not
        kept under, until one of such a type came (see :class:`KeyTypeCheck`)."""
        check = self._key_check
        if check is not None and check.settled_by(key):
            self._key_check = None

    def trust_restored_key_types(self) -> None:
        """The restore was the job's own (a restart, a master takeover): nothing to check."""
        self._key_check = None
