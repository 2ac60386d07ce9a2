"""Snapshots of the keyed backends: isolation, TTL, restore and rescaling; the tests that take
``make_backend`` run on the heap and the RocksDB backend, the others check heap specifics."""

from __future__ import annotations

import enum
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raystream.checkpoint import (
    HeapKeyedStateBackend,
    KeyedStateSnapshot,
    ListStateDescriptor,
    MapStateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
    deserialize_keyed_snapshot,
    serialize_keyed_snapshot,
)
from raystream.engine.errors import CheckpointError, StateError
from raystream.engine.keygroups import KeyGroupRange, key_group_for, stable_hash
from raystream.engine.operator import ManualClock

MAXP = 128
FULL = KeyGroupRange(0, MAXP - 1)
VALUE = ValueStateDescriptor("v")
LIST = ListStateDescriptor("l")
MAP = MapStateDescriptor("m")


def _restore_one(snaps, key_range=FULL, clock=None, make=None) -> HeapKeyedStateBackend:
    b = HeapKeyedStateBackend(key_range, MAXP, clock=clock) if make is None else make(key_range, MAXP, clock)
    b.restore(snaps)
    return b


def _read(b: HeapKeyedStateBackend, desc, key):
    s = b.get_state(desc)
    b.set_current_key(key)
    if isinstance(desc, ValueStateDescriptor):
        return s.value()
    if isinstance(desc, ListStateDescriptor):
        return s.get()
    return dict(s.items())


@pytest.mark.parametrize("reuse", [True, False])
def test_snapshot_is_isolated_from_later_mutation(reuse, make_backend):
    if make_backend.kind == "rocksdb" and not reuse:
        pytest.skip("reuse_snapshot_bytes is a heap backend option")
    b = make_backend(FULL, MAXP, **({"reuse_snapshot_bytes": reuse} if make_backend.kind == "heap" else {}))
    ser = serialize_keyed_snapshot if make_backend.kind == "heap" else _rocks_ser
    v, lst, m = b.get_state(VALUE), b.get_state(LIST), b.get_state(MAP)
    b.set_current_key("k")
    payload = {"nested": [1, 2]}
    v.update(payload)
    lst.add_all([1, 2])
    m.put("a", [1])
    snap = b.snapshot(1)
    before = ser(snap)
    # mutate in every way: in place, through the API, other keys, clear
    payload["nested"].append(3)
    lst.add(3)
    m.get("a").append(2)
    m.put("b", 2)
    b.set_current_key("other")
    v.update("x")
    b.set_current_key("k")
    v.clear()
    assert ser(snap) == before
    r = _restore_one([snap], make=make_backend)
    assert _read(r, VALUE, "k") == {"nested": [1, 2]}
    assert _read(r, LIST, "k") == [1, 2]
    assert _read(r, MAP, "k") == {"a": [1]}
    assert _read(r, VALUE, "other") is None


def test_reused_bytes_follow_changes():
    b = HeapKeyedStateBackend(FULL, MAXP)
    v = b.get_state(VALUE)
    for k in range(200):
        b.set_current_key(k)
        v.update(k)
    s1 = b.snapshot(1)
    b.set_current_key(7)
    v.update("changed")
    b.set_current_key(8)
    v.clear()
    s2 = b.snapshot(2)
    kg7, kg8 = key_group_for(7, MAXP), key_group_for(8, MAXP)
    unchanged = [kg for kg in s1.key_groups if kg not in (kg7, kg8)]
    assert all(s2.key_groups[kg] is s1.key_groups[kg] for kg in unchanged)  # reused
    r = _restore_one([s2])
    assert _read(r, VALUE, 7) == "changed"
    assert _read(r, VALUE, 8) is None
    assert _read(r, VALUE, 9) == 9
    assert r.num_keys() == 199


def test_snapshot_drops_expired_ttl_entries():
    clock = ManualClock(0)
    ttl = StateTtlConfig(100)
    b = HeapKeyedStateBackend(FULL, MAXP, clock=clock)
    v = b.get_state(ValueStateDescriptor("v", ttl=ttl))
    lst = b.get_state(ListStateDescriptor("l", ttl=ttl))
    for k in range(20):
        b.set_current_key(k)
        v.update(k)
        lst.add(k)
    b.snapshot(1)  # cache every key group
    clock.advance(50)
    b.set_current_key(0)
    v.update("fresh")
    lst.add("fresh")
    clock.advance(60)  # everything but key 0's new entries expired, nothing touched since
    snap = b.snapshot(2)
    assert len(snap.key_groups) == 1
    r = _restore_one([snap], clock=clock)
    rv = r.get_state(ValueStateDescriptor("v", ttl=ttl))
    rl = r.get_state(ListStateDescriptor("l", ttl=ttl))
    assert sorted(r.keys("v")) == [0]
    r.set_current_key(0)
    assert rv.value() == "fresh" and rl.get() == ["fresh"]
    clock.advance(100)
    r.set_current_key(0)
    assert rv.value() is None  # TTL timestamps survive the restore


def test_restore_keeps_only_own_key_groups_and_checks_max_parallelism(make_backend):
    b = make_backend(FULL, MAXP)
    v = b.get_state(VALUE)
    for k in range(100):
        b.set_current_key(k)
        v.update(k)
    snap = b.snapshot(5)
    half = KeyGroupRange.for_subtask(1, 2, MAXP)
    r = _restore_one([snap], half, make=make_backend)
    assert sorted(r.keys("v")) == sorted(k for k in range(100) if key_group_for(k, MAXP) in half)
    with pytest.raises(CheckpointError, match="max_parallelism 128"):
        make_backend(KeyGroupRange(0, 63), 64).restore([snap])
    with pytest.raises(CheckpointError, match="in two snapshots"):
        _restore_one([snap, snap], make=make_backend)


def test_restore_then_get_state_checks_kind(make_backend):
    b = make_backend(FULL, MAXP)
    b.get_state(VALUE)
    b.set_current_key("k")
    b.get_state(VALUE).update(1)
    r = _restore_one([b.snapshot(1)], make=make_backend)
    assert r.state_names() == ["v"]
    with pytest.raises(StateError, match="state 'v' was restored as 'value' state"):
        r.get_state(ListStateDescriptor("v"))


def test_unrequested_restored_state_survives_the_next_snapshot(make_backend):
    b = make_backend(FULL, MAXP)
    b.set_current_key("k")
    b.get_state(VALUE).update(1)
    r = _restore_one([b.snapshot(1)], make=make_backend)
    r2 = _restore_one([r.snapshot(2)], make=make_backend)
    assert _read(r2, VALUE, "k") == 1


def test_enabling_and_disabling_ttl_across_a_restore(make_backend):
    clock = ManualClock(0)
    b = make_backend(FULL, MAXP, clock=clock)
    b.set_current_key("k")
    b.get_state(MAP).put("a", 1)
    with_ttl = MapStateDescriptor("m", ttl=StateTtlConfig(10))
    r = _restore_one([b.snapshot(1)], clock=clock, make=make_backend)
    m = r.get_state(with_ttl)
    r.set_current_key("k")
    assert m.get("a") == 1
    clock.advance(10)
    assert m.get("a") is None
    m.put("b", 2)
    r3 = _restore_one([r.snapshot(2)], clock=clock, make=make_backend)
    assert _read(r3, MAP, "k") == {"b": 2}  # TTL removed: plain values again


def test_restore_into_backend_with_registered_states(make_backend):
    b = make_backend(FULL, MAXP)
    b.set_current_key("k")
    b.get_state(VALUE).update("old")
    snap = b.snapshot(1)
    b.get_state(VALUE).update("newer")
    b.restore([snap])
    b.set_current_key("k")
    assert b.get_state(VALUE).value() == "old"


def test_unpicklable_value_names_the_state(make_backend):
    import threading

    b = make_backend(FULL, MAXP)
    b.set_current_key("k")
    b.get_state(ValueStateDescriptor("lock")).update(threading.Lock())
    with pytest.raises(CheckpointError, match="state 'lock'"):
        b.snapshot(1)


def test_user_objects_fall_back_to_cloudpickle():
    b = HeapKeyedStateBackend(FULL, MAXP)
    b.set_current_key("k")
    b.get_state(VALUE).update(lambda x: x * 2)
    r = _restore_one([pickle.loads(pickle.dumps(b.snapshot(1)))])
    assert _read(r, VALUE, "k")(21) == 42


def test_serialized_snapshot_reads_only_requested_key_groups():
    b = HeapKeyedStateBackend(FULL, MAXP)
    v = b.get_state(VALUE)
    for k in range(300):
        b.set_current_key(k)
        v.update(str(k))
    snap = b.snapshot(9)
    data = serialize_keyed_snapshot(snap)
    assert deserialize_keyed_snapshot(data) == snap
    part = KeyGroupRange(10, 20)
    sub = deserialize_keyed_snapshot(data, part)
    assert set(sub.key_groups) == {kg for kg in snap.key_groups if kg in part}
    assert sub.checkpoint_id == 9 and sub.states == snap.states
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    with pytest.raises(CheckpointError, match="checksum"):
        deserialize_keyed_snapshot(bytes(corrupt), name="op-0")


# -- rescaling property ----------------------------------------------------------------

keys = st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=8), st.binary(max_size=6))
values = st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.dictionaries(keys, values, max_size=60),
    p1=st.integers(1, 8),
    p2=st.integers(1, 8),
    serialize=st.booleans(),
)
def test_rescale_preserves_every_key_exactly_once(data, p1, p2, serialize):
    _check_rescale(data, p1, p2, serialize, None)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    data=st.dictionaries(keys, values, max_size=60),
    p1=st.integers(1, 4),
    p2=st.integers(1, 4),
    serialize=st.booleans(),
)
def test_rescale_preserves_every_key_exactly_once_on_rocksdb(data, p1, p2, serialize, tmp_path):
    pytest.importorskip("rocksdict")
    from raystream.checkpoint import RocksDBKeyedStateBackend

    made = []

    def make(rng, maxp, clock=None):
        made.append(RocksDBKeyedStateBackend(rng, maxp, clock, local_dir=str(tmp_path)))
        return made[-1]

    try:
        _check_rescale(data, p1, p2, serialize, make)
    finally:
        for b in made:
            b.close()


def _rocks_ser(snap) -> bytes:
    from raystream.checkpoint import RocksDBStateBackend

    return RocksDBStateBackend().serialize_snapshot(snap)


def _check_rescale(data, p1, p2, serialize, make):
    # snapshot at parallelism p1: each key goes to the subtask owning its key group
    new_backend = make or (lambda rng, maxp, clock=None: HeapKeyedStateBackend(rng, maxp))
    old = [new_backend(KeyGroupRange.for_subtask(i, p1, MAXP), MAXP) for i in range(p1)]
    for key, value in data.items():
        kg = key_group_for(key, MAXP)
        owner = next(b for b in old if kg in b.key_group_range)
        owner.set_current_key(key)
        owner.get_state(VALUE).update(value)
        owner.get_state(LIST).add_all([value, key])
    snaps: list[KeyedStateSnapshot] = [b.snapshot(3) for b in old]
    # restore at parallelism p2
    new = []
    for j in range(p2):
        rng = KeyGroupRange.for_subtask(j, p2, MAXP)
        mine = snaps
        if serialize and make is None:
            mine = [deserialize_keyed_snapshot(serialize_keyed_snapshot(s), rng) for s in snaps]
        elif serialize:
            from raystream.checkpoint import RocksDBStateBackend

            sb = RocksDBStateBackend()
            mine = [sb.deserialize_snapshot(sb.serialize_snapshot(s), rng) for s in snaps]
        new.append(_restore_one(mine, rng, make=make))
    restored: dict = {}
    for b in new:
        if "v" not in b.state_names():
            continue
        for key in b.keys("v"):
            assert key not in restored, f"key {key!r} restored twice"
            assert key_group_for(key, MAXP) in b.key_group_range
            restored[key] = (_read(b, VALUE, key), _read(b, LIST, key))
    assert restored == {k: (v, [v, k]) for k, v in data.items()}


class _Level(enum.IntEnum):
    LOW = 1


def _old_snapshot_with_an_enum_key(old_group: int):
    """A snapshot as raystream wrote it before IntEnum keys hashed as their int: the key
    filed under the group of its repr hash."""
    b = HeapKeyedStateBackend(FULL, MAXP)
    state = b.get_state(VALUE)
    b.set_current_key_with_group(_Level.LOW, old_group)
    state.update("old")
    b.set_current_key("plain")
    state.update("kept")
    return b.snapshot(1)


def test_a_restored_key_whose_group_changed_is_moved_to_its_group_where_the_backend_owns_it():
    old_group = stable_hash("_Level:<_Level.LOW: 1>") % MAXP  # the repr hash of earlier versions
    assert old_group != key_group_for(_Level.LOW, MAXP)
    b = _restore_one([_old_snapshot_with_an_enum_key(old_group)])
    assert _read(b, VALUE, _Level.LOW) == "old" and _read(b, VALUE, 1) == "old"  # one key, as in Python
    assert _read(b, VALUE, "plain") == "kept"
    again = _restore_one([b.snapshot(2)])  # the next snapshot holds it in its new group
    assert _read(again, VALUE, _Level.LOW) == "old"


def test_a_restored_key_whose_new_group_is_another_subtasks_fails_the_restore_with_the_remedy():
    old_group = stable_hash("_Level:<_Level.LOW: 1>") % MAXP
    new_group = key_group_for(_Level.LOW, MAXP)
    owner = KeyGroupRange(old_group, old_group)
    assert new_group not in owner
    with pytest.raises(CheckpointError, match=r"key <_Level.LOW: 1> in key group .* restore it at parallelism 1"):
        _restore_one([_old_snapshot_with_an_enum_key(old_group)], key_range=owner)
