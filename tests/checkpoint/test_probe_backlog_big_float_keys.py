"""An integral float of 2**63 or more in magnitude (``2.0**70``, ``-2.0**63``) is the key of the
int it equals, as in Python (``2.0**70 == 2**70``, one dict key): one key group, one state, one
subtask, on the scalar and the column paths, on both backends.

Before 2026-12-07 ``stable_hash`` hashed such a float by its bits (only floats below 2**63 went
the int way): a keyed reduce over ``[2**70, 2.0**70]`` kept two running values on two subtasks,
and the per-process cache of key groups served whichever of the two it met first (the key group
of a key depended on what the process had hashed before). Every other key hashes as before
(pinned below: key groups are persisted in snapshots), and a snapshot written before, which
holds such a float in the key group of its bits, is re-filed on restore (heap state and heap
timers). Backends without Ray; jobs ``run_in_process``."""

from __future__ import annotations

import decimal
import fractions
import struct
import zlib

import numpy as np
import pyarrow as pa
import pytest

import raystream as rs
from raystream.checkpoint import HeapKeyedStateBackend, ValueStateDescriptor
from raystream.checkpoint import heap as heap_module
from raystream.engine.keygroups import (
    KeyGroupRange,
    key_group_for,
    key_groups_of_array,
    key_groups_of_keys,
    stable_hash,
)
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.timers import _TimerQueue

#: (int, floats and other values equal to it)
EQUAL = [
    (2**70, [2.0**70, np.float64(2.0**70), np.float32(2.0**70), complex(2**70, 0), decimal.Decimal(2**70),
             fractions.Fraction(2**70)]),
    (-(2**70), [-(2.0**70)]),
    (2**63, [2.0**63]),
    (-(2**63), [-(2.0**63)]),
    (2**64, [2.0**64]),
    (3 * 2**80, [3 * 2.0**80]),
    (int(1e30), [1e30]),
]

#: stable_hash of keys that hashed correctly before the fix (1665d70): unchanged (persisted)
PINNED = [
    (0, 0xE220A8397B1DCDAF), (1, 0x910A2DEC89025CC1), (-1, 0xE4D971771B652C20),
    (2**62, 0xAA50EA8E0FA9EB), (2**63 - 1, 0x2A67D7552E039EA7), (-(2**63) + 1, 0xDC29F439BCBDDA2A),
    (2**64 + 5, 0x63033B0CA389C35A), (2**70, 0xE220A8397B1DCDAF), (-(2**70), 0xE220A8397B1DCDAF),
    (10**30, 0x7B0990FD03E22058), (1.5, 0x1250D0B60EB285F3), (-2.5, 0x2192DAD917F15027),
    (2.0**62, 0xAA50EA8E0FA9EB), (-(2.0**62), 0x9590F27F150C2B1), (9.007199254740993e15, 0xCEC3603A0C3EA1CF),
    (0.1, 0x942B9C7B671C010E), (float("inf"), 0xB21C6C699394B01A), (float("-inf"), 0x9D6814940361BCC1),
    (float("nan"), 0x448E684CD5415AA1), (True, 0x910A2DEC89025CC1), ("k", 0x6AD2713FB2D3B44A),
    (b"k", 0x34288C1C8FA90BCF), (None, 0xFD1BA8244D3247F1), ((1, 2.0), 0xA2A01C360AE48643),
    (decimal.Decimal("1e30"), 0x7B0990FD03E22058), (fractions.Fraction(2**70, 1), 0xE220A8397B1DCDAF),
]


@pytest.mark.parametrize("number, equal", EQUAL, ids=[str(n) for n, _ in EQUAL])
def test_equal_numbers_hash_equally(number, equal):
    for value in equal:
        assert value == number
        assert stable_hash(value) == stable_hash(number), value
        assert stable_hash((value, "x")) == stable_hash((number, "x")), value


@pytest.mark.parametrize("key, expected", PINNED, ids=[repr(k) for k, _ in PINNED])
def test_keys_that_hashed_correctly_hash_as_before(key, expected):
    assert stable_hash(key) == expected


def test_the_column_paths_and_the_cache_give_the_ints_key_groups():
    # (max_parallelism 97: a cache of its own, which no other test of this process filled)
    floats = [3.0 * 2**71, -(2.0**72), 2.0**63, 1.5, 7.0]
    ints = [int(f) if f.is_integer() else f for f in floats]
    expected = [key_group_for(k, 97) for k in ints]
    assert key_groups_of_array(pa.array(floats, pa.float64()), 97).tolist() == expected
    assert key_groups_of_array(pa.array(floats, pa.float32()).cast(pa.float64()), 97).tolist() == expected
    # the cache holds the float first (it is the int's dict entry too): the int gets the same group
    assert key_groups_of_keys(floats, 97).tolist() == expected
    assert key_groups_of_keys(ints, 97).tolist() == expected
    assert key_groups_of_keys([(f, "a") for f in floats], 97).tolist() == [key_group_for((k, "a"), 97) for k in ints]


def _running_sums(backend: str, parallelism: int) -> dict:
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.set_state_backend(backend)
    keys = [2**70, 2.0**70, -(2.0**63), -(2**63), 2**70, 2.0**64, 2**64]
    (env.from_collection([(k, 1) for k in keys], batch_size=1)
     .key_by(lambda r: r[0])
     .reduce(lambda a, b: (a[0], a[1] + b[1]))
     .collect())
    [result] = run_in_process(env.get_job_graph(), env._job_config("big-float-keys"), timeout_s=120)["results"].values()
    sums: dict = {}
    for key, n in collected_records(result):
        sums[key] = max(sums.get(key, 0), n)
    return sums


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
def test_a_keyed_reduce_keeps_one_state_per_key(backend):
    assert _running_sums(backend, 2) == {2**70: 3, -(2**63): 2, 2**64: 2}


def _old_key_group(key, max_parallelism: int) -> int:
    """The key group snapshots written before 2026-12-07 gave a big integral float (by its bits)."""
    if type(key) is float and key.is_integer() and abs(key) >= 2**63:
        crc = zlib.crc32(struct.pack("<d", key))
        from raystream.engine.keygroups import _TAG_FLOAT, _mix64
        return _mix64(crc ^ (_TAG_FLOAT << 32)) % max_parallelism
    return key_group_for(key, max_parallelism)


def test_a_heap_snapshot_written_before_is_refiled_on_restore(monkeypatch):
    old = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
    monkeypatch.setattr(heap_module, "key_group_for", _old_key_group)  # (the hash of that release)
    count = old.get_state(ValueStateDescriptor("count", default=0))
    for key, n in [(2.0**70, 5), ("a", 1), (-(2.0**63), 2)]:
        old.set_current_key(key)
        count.update(n)
    snapshot = old.snapshot(1)
    monkeypatch.undo()
    assert _old_key_group(2.0**70, 128) != key_group_for(2.0**70, 128)  # (the case: another group)

    restored = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
    restored.restore([snapshot])
    count = restored.get_state(ValueStateDescriptor("count", default=0))
    for key, n in [(2**70, 5), (2.0**70, 5), ("a", 1), (-(2**63), 2)]:
        restored.set_current_key(key)
        assert count.value() == n, key
    restored.set_current_key(2**70)
    count.update(6)
    restored.set_current_key(2.0**70)
    assert count.value() == 6


def test_a_heap_snapshot_whose_moved_key_belongs_to_another_subtask_is_refused(monkeypatch):
    key = next(k for k in (2.0**63 + 2048.0 * i for i in range(1, 2000))
               if _old_key_group(k, 128) < 64 <= key_group_for(k, 128))
    old = HeapKeyedStateBackend(KeyGroupRange(0, 63), 128)
    monkeypatch.setattr(heap_module, "key_group_for", _old_key_group)
    old.get_state(ValueStateDescriptor("count", default=0))
    old.set_current_key(key)
    old.get_state(ValueStateDescriptor("count", default=0)).update(1)
    snapshot = old.snapshot(1)
    monkeypatch.undo()
    restored = HeapKeyedStateBackend(KeyGroupRange(0, 63), 128)
    with pytest.raises(rs.CheckpointError, match="restore it at parallelism 1"):
        restored.restore([snapshot])


def test_heap_timers_of_a_snapshot_written_before_are_refiled_on_restore():
    key = 2.0**70
    old_group = _old_key_group(key, 128)
    queue = _TimerQueue(128)
    queue.restore({old_group: [(7, key, None)], key_group_for("a", 128): [(8, "a", None)]}, KeyGroupRange(0, 127))
    assert queue.timers_of(2**70) == [(7, None)]
    assert not queue.add(2**70, None, 7)  # (the restored timer is found: not a second one)
    assert len(queue) == 2


FULL = KeyGroupRange(0, 127)
#: keys of the older snapshots below and their counts (2.0**70 and a tuple holding a big float moved)
OLD_KEYS = [(2.0**70, 5), ("a", 1), ((2.0**64, "x"), 3)]


def _old_rocksdb_snapshot(tmp_path, monkeypatch) -> bytes:
    """A RocksDB snapshot as the release before wrote it: key encoding 2, a big float's state
    and timer under the key group of its bits."""
    pytest.importorskip("rocksdict")
    from raystream.checkpoint import (
        RocksDBStateBackend,
        rocksdb_backend,
        rocksdb_files,
        rocksdb_timers,
    )

    monkeypatch.setattr(rocksdb_backend, "key_group_for", _old_key_group)
    monkeypatch.setattr(rocksdb_timers, "key_group_for", _old_key_group)
    monkeypatch.setattr(rocksdb_files, "KEY_ENCODING", 2)
    b = rocksdb_backend.RocksDBKeyedStateBackend(FULL, 128, local_dir=str(tmp_path / "old"))
    try:
        count = b.get_state(ValueStateDescriptor("count", default=0))
        for key, n in OLD_KEYS:
            b.set_current_key(key)
            count.update(n)
        queue = b.create_timer_queue("_timers/event_time")
        b.set_current_key(2.0**70)
        queue.add(2.0**70, None, 100)
        data = RocksDBStateBackend().serialize_snapshot(b.snapshot(1))
    finally:
        b.close()
        monkeypatch.undo()
    return data


def _assert_refiled(backend) -> None:
    count = backend.get_state(ValueStateDescriptor("count", default=0))
    for key, n in [*OLD_KEYS, (2**70, 5), ((2**64, "x"), 3)]:
        backend.set_current_key(key)
        assert count.value() == n, key


def test_an_older_rocksdb_snapshot_is_refiled_on_restore(tmp_path, monkeypatch):
    from raystream.checkpoint import RocksDBStateBackend
    from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend

    data = _old_rocksdb_snapshot(tmp_path, monkeypatch)
    b = RocksDBKeyedStateBackend(FULL, 128, local_dir=str(tmp_path / "new"))
    try:
        b.restore([RocksDBStateBackend().deserialize_snapshot(data, FULL)])
        _assert_refiled(b)
        queue = b.create_timer_queue("_timers/event_time")
        b.set_current_key(2**70)
        assert not queue.add(2**70, None, 100)  # (the restored timer, in the int's key group: found)
        assert queue.pop_due(1000) == (100, 2.0**70, None) and queue.pop_due(1000) is None
    finally:
        b.close()


def test_an_older_rocksdb_snapshot_restored_on_the_heap_is_refiled(tmp_path, monkeypatch):
    from raystream.checkpoint import HeapStateBackend

    data = _old_rocksdb_snapshot(tmp_path, monkeypatch)
    b = HeapKeyedStateBackend(FULL, 128)
    b.restore([HeapStateBackend().deserialize_snapshot(data, FULL)])
    _assert_refiled(b)


def test_an_older_heap_snapshot_restored_on_rocksdb_is_refiled(tmp_path, monkeypatch):
    pytest.importorskip("rocksdict")
    from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend

    old = HeapKeyedStateBackend(FULL, 128)
    monkeypatch.setattr(heap_module, "key_group_for", _old_key_group)
    count = old.get_state(ValueStateDescriptor("count", default=0))
    for key, n in OLD_KEYS:
        old.set_current_key(key)
        count.update(n)
    snapshot = old.snapshot(1)
    monkeypatch.undo()
    b = RocksDBKeyedStateBackend(FULL, 128, local_dir=str(tmp_path / "new"))
    try:
        b.restore([snapshot])
        _assert_refiled(b)
    finally:
        b.close()


def test_heap_timers_of_an_older_snapshot_restored_on_rocksdb_find_their_key_group(tmp_path):
    """(A KeyedProcessFunction's heap-format timers, from a heap job's savepoint, into RocksDB's
    queues, which file each timer by its key: one whose key group another subtask owns now is
    refused, not filed outside this backend's range.)"""
    pytest.importorskip("rocksdict")
    from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend

    key = next(k for k in (2.0**63 + 2048.0 * i for i in range(1, 2000))
               if _old_key_group(k, 128) < 64 <= key_group_for(k, 128))
    b = RocksDBKeyedStateBackend(KeyGroupRange(0, 63), 128, local_dir=str(tmp_path / "new"))
    try:
        queue = b.create_timer_queue("_timers/event_time")
        queue.restore({_old_key_group(2.0**70, 128): [(100, 2.0**70, None)]}, KeyGroupRange(0, 63))
        assert queue.timers_of(2**70) == [(100, None)]
        with pytest.raises(rs.CheckpointError, match="restore at parallelism 1"):
            queue.restore({_old_key_group(key, 128): [(100, key, None)]}, KeyGroupRange(0, 63))
    finally:
        b.close()
