"""A savepoint restored into a job whose ``key_by`` now gives keys of another type
(``key_by("name")`` -> ``key_by("id")``: str keys -> int keys) is refused at the first key
of such a type, naming both types and the remedies, instead of starting every key from
empty state silently (Flink refuses an incompatible key serializer on restore). Snapshots
record the types of their keys (``key_types``: the heap backend from the keys with state,
RocksDB from the keys made current), through a change of backend and a rescale too; keys
of several types are fine once a key of a restored type came; snapshots written before
(no ``key_types``) restore unchecked. Before 2026-12-07 the str-keyed counts restarted at 1.
Both backends (``make_backend``); no Ray."""

from __future__ import annotations

import pytest

from raystream.checkpoint import HeapStateBackend, ValueStateDescriptor
from raystream.checkpoint.snapshot import (
    KeyedStateSnapshot,
    deserialize_keyed_snapshot,
    serialize_keyed_snapshot,
)
from raystream.engine.errors import StateError
from raystream.engine.keygroups import KeyGroupRange

MAXP = 128
FULL = KeyGroupRange(0, MAXP - 1)
HALVES = [KeyGroupRange.for_subtask(i, 2, MAXP) for i in range(2)]
NAMES = [f"user-{i}" for i in range(20)]


def codec(kind: str):
    """The job's state backend (what serializes and reads back a task's keyed snapshot)."""
    if kind == "heap":
        return HeapStateBackend()
    from raystream.checkpoint import RocksDBStateBackend

    return RocksDBStateBackend()


def counted(make_backend, keys) -> bytes:
    """A savepoint-like keyed snapshot of one subtask at p=1 counting ``keys``, as bytes."""
    b = make_backend(FULL, MAXP)
    count = b.get_state(ValueStateDescriptor("count", default=0))
    for k in keys:
        b.set_current_key(k)
        count.update(count.value() + 1)
    return codec(make_backend.kind).serialize_snapshot(b.snapshot(1))


def restored(make_backend, data: bytes, kg: KeyGroupRange):
    """A backend of ``make_backend``'s kind for ``kg`` restored from ``data`` (written by
    either backend: the job's state backend reads both)."""
    b = make_backend(kg, MAXP)
    b.restore([codec(make_backend.kind).deserialize_snapshot(data, kg)])
    return b, b.get_state(ValueStateDescriptor("count", default=0))


def test_int_keys_after_a_str_keyed_savepoint_are_refused_naming_both_types(make_backend):
    data = counted(make_backend, NAMES * 3)
    for kg in HALVES:  # rescaled to p=2: every subtask refuses
        b, count = restored(make_backend, data, kg)
        key = next(i for i in range(1000) if _group(i) in kg)
        with pytest.raises(StateError) as err:
            b.set_current_key(key)
        message = str(err.value)
        assert "keys of type ['str']" in message and f"{key!r} of type 'number'" in message
        assert "uid()" in message and "allow_non_restored_state=True" in message
        name = next(n for n in NAMES if _group(n) in kg)
        b.set_current_key(name)  # the same keys as before: their state is there
        assert count.value() == 3
        b.set_current_key(key)  # a key of the restored type came: other types are the job's now
        assert count.value() == 0


def _group(key) -> int:
    from raystream.engine.keygroups import key_group_for

    return key_group_for(key, MAXP)


def test_equal_kinds_of_numbers_and_tuples_pass(make_backend):
    b, count = restored(make_backend, counted(make_backend, [1, 2, 3]), FULL)
    b.set_current_key(2.0)  # (a float, an int, a bool, numpy numbers: one type name)
    b, count = restored(make_backend, counted(make_backend, [("a", 1), ("b", 2)]), FULL)
    b.set_current_key(("a", 1))
    assert count.value() == 1


def test_key_types_survive_a_savepoint_chain_and_a_change_of_backend(make_backend):
    pytest.importorskip("rocksdict")
    data = counted(make_backend, NAMES)
    other = "rocksdb" if make_backend.kind == "heap" else "heap"
    # restored into the other backend, a record of the same type, a snapshot; then back
    from raystream.checkpoint import HeapKeyedStateBackend, RocksDBKeyedStateBackend

    mid = (RocksDBKeyedStateBackend(FULL, MAXP) if other == "rocksdb" else HeapKeyedStateBackend(FULL, MAXP))
    try:
        mid.restore([codec(other).deserialize_snapshot(data, FULL)])
        c = mid.get_state(ValueStateDescriptor("count", default=0))
        mid.set_current_key(NAMES[0])
        c.update(c.value() + 1)
        again = codec(other).serialize_snapshot(mid.snapshot(2))
    finally:
        mid.close()
    b, count = restored(make_backend, again, FULL)
    with pytest.raises(StateError, match="keys of type \\['str'\\]"):
        b.set_current_key(7)
    b.set_current_key(NAMES[0])
    assert count.value() == 2


def test_a_snapshot_without_key_types_restores_unchecked(make_backend):
    b = make_backend(FULL, MAXP)
    count = b.get_state(ValueStateDescriptor("count", default=0))
    b.set_current_key("a")
    count.update(5)
    snap = b.snapshot(1)
    if make_backend.kind != "heap":  # (RocksDB: the check is the same; the heap format is the older one here)
        snap = deserialize_keyed_snapshot(codec("heap").serialize_snapshot(_as_heap(snap)))
    old = KeyedStateSnapshot(snap.checkpoint_id, snap.max_parallelism, snap.key_group_range, snap.states,
                             snap.key_groups)  # as written before 2026-12-07: no key_types
    data = serialize_keyed_snapshot(old)
    assert deserialize_keyed_snapshot(data).key_types is None
    b2 = make_backend(FULL, MAXP)
    b2.restore([deserialize_keyed_snapshot(data)])
    b2.set_current_key(1)  # not checked: nothing recorded


def _as_heap(snap):
    """A RocksDB snapshot in the heap format (the conversion a switch to the heap backend makes)."""
    from raystream.checkpoint import RocksDBStateBackend

    return HeapStateBackend().deserialize_snapshot(RocksDBStateBackend().serialize_snapshot(snap), FULL)


def test_an_empty_restored_state_checks_nothing(make_backend):
    b, _ = restored(make_backend, counted(make_backend, []), FULL)
    b.set_current_key(1)


def test_key_type_names():
    import datetime
    from enum import Enum, IntEnum

    import numpy as np

    from raystream.checkpoint.snapshot import key_type_name

    class Color(IntEnum):
        RED = 1

    class Tag(str, Enum):
        A = "a"

    assert {key_type_name(k) for k in (1, 1.5, True, np.int64(3), np.float32(2), Color.RED)} == {"number"}
    assert {key_type_name(k) for k in ("a", np.str_("b"), Tag.A)} == {"str"}
    assert key_type_name(None) == "None" and key_type_name(b"x") == "bytes"
    assert key_type_name(frozenset({1})) == "frozenset" and key_type_name(("a",)) == "tuple"
    assert key_type_name(datetime.datetime(2026, 1, 1)) == "datetime.datetime"


def test_a_none_key_neither_fails_nor_ends_the_check(make_backend):
    data = counted(make_backend, NAMES)
    b, count = restored(make_backend, data, FULL)
    b.set_current_key(None)  # (a record without the key field: says nothing of the key type)
    assert count.value() == 0
    with pytest.raises(StateError, match="of type 'number'"):
        b.set_current_key(3)


def test_the_jobs_own_restore_trusts_its_key_types(make_backend):
    """A restart or master takeover restores the job's own checkpoint: its code, and so its
    keys' types, did not change; a job that keys records by str and by int must recover
    whatever type its first key after the restore has."""
    data = counted(make_backend, NAMES)
    b, count = restored(make_backend, data, FULL)
    b.trust_restored_key_types()
    b.set_current_key(3)
    count.update(1)
    b.set_current_key(NAMES[0])
    assert count.value() == 1
