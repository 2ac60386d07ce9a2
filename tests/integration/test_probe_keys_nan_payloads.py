"""Every NaN is one key: ``nan``, ``-nan`` (what ``inf - inf`` gives on x86) and NaNs with
other payload bits, as Flink has it (``Double.hashCode`` and the double serializer go
through ``doubleToLongBits``, which makes every NaN the canonical one).

Before, ``stable_hash`` hashed a NaN by its bit pattern and the RocksDB backend encoded it
by its bits: records keyed by ``nan`` and by ``-nan`` went to different key groups (at p=2
maybe different subtasks) and were two keys, so a rolling count per key restarted for every
NaN of the other sign. Snapshots written before keep a ``-nan`` key's state in the key group
of its bit pattern: the heap backend (and a reduce's own heap state) move it on restore to
the NaN key group when this subtask owns that group, and fail the restore naming the remedy
(restore at parallelism 1) when another subtask owns it.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from collections import Counter

import pytest

import raystream as rs
from raystream.checkpoint import HeapKeyedStateBackend, ValueStateDescriptor
from raystream.checkpoint.rocksdb_keys import encode_key
from raystream.checkpoint.serde import dumps
from raystream.checkpoint.snapshot import KeyedStateSnapshot, StateMeta
from raystream.checkpoint.state import canonical_key
from raystream.engine.errors import CheckpointError
from raystream.engine.keygroups import KeyGroupRange, _mix64, key_group_for, stable_hash
from raystream.engine.operator import ManualClock

MAXP = 128
FULL = KeyGroupRange(0, MAXP - 1)


def nan_bits(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


NAN, NEG_NAN, PAYLOAD_NAN = nan_bits(0x7FF8000000000000), nan_bits(0xFFF8000000000000), nan_bits(0x7FF0000000000001)


def old_key_group(f: float) -> int:
    """The key group a float NaN had before: by its bit pattern."""
    return _mix64(zlib.crc32(struct.pack("<d", f)) ^ (0xF10A << 32)) % MAXP


def test_every_nan_hashes_encodes_and_canonicalizes_as_one():
    assert stable_hash(NEG_NAN) == stable_hash(NAN) == stable_hash(PAYLOAD_NAN)
    assert stable_hash((1, NEG_NAN)) == stable_hash((1, NAN))
    assert canonical_key(NEG_NAN) is canonical_key(PAYLOAD_NAN) is canonical_key(NAN)
    assert encode_key(NEG_NAN) == encode_key(NAN) == encode_key(PAYLOAD_NAN)
    assert encode_key(("a", NEG_NAN)) == encode_key(("a", NAN))
    assert key_group_for(NAN, MAXP) == old_key_group(NAN)  # the usual NaN kept its group
    assert old_key_group(NEG_NAN) != key_group_for(NEG_NAN, MAXP)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
@pytest.mark.parametrize("parallelism", [1, 2])
def test_nan_and_minus_nan_records_are_one_key(parallelism, backend):
    if backend == "rocksdb":
        pytest.importorskip("rocksdict")
    recs = [(f, 1) for f in (NAN, NEG_NAN, PAYLOAD_NAN, NEG_NAN)] + [("a", 1)]
    env = rs.StreamEnvironment(parallelism=parallelism)
    if backend == "rocksdb":
        env.set_state_backend("rocksdb")
    out = env.from_collection(recs).key_by(0).reduce(lambda x, y: (x[0], x[1] + y[1])).execute_and_collect()
    assert Counter((repr(k), v) for k, v in out) == Counter({("nan", 1): 1, ("nan", 2): 1, ("nan", 3): 1,
                                                            ("nan", 4): 1, ("'a'", 1): 1})


def old_snapshot(entries: dict[int, dict]) -> KeyedStateSnapshot:
    """A heap snapshot of value state ``count`` as a version that hashed NaN by its bits wrote it."""
    return KeyedStateSnapshot(1, MAXP, FULL, {"count": StateMeta("value")},
                              {kg: dumps({"count": e}) for kg, e in entries.items()})


def test_a_minus_nan_key_of_an_old_heap_snapshot_is_moved_to_the_nan_key_group():
    b = HeapKeyedStateBackend(FULL, MAXP, ManualClock(0))
    b.restore([old_snapshot({old_key_group(NEG_NAN): {pickle.loads(pickle.dumps(NEG_NAN)): 7}})])
    count = b.get_state(ValueStateDescriptor("count", default=0))
    b.set_current_key(NAN)
    assert count.value() == 7
    b.set_current_key(NEG_NAN)
    count.update(count.value() + 1)
    b.set_current_key(NAN)
    assert count.value() == 8
    assert len(list(b.keys("count"))) == 1


def test_an_old_minus_nan_key_owned_by_another_subtask_now_fails_the_restore_clearly():
    old, new = old_key_group(NEG_NAN), key_group_for(NEG_NAN, MAXP)
    mine = KeyGroupRange(old, old)  # owns the old group, not the new one
    assert new not in mine
    b = HeapKeyedStateBackend(mine, MAXP, ManualClock(0))
    with pytest.raises(CheckpointError, match=r"NaN.*parallelism 1"):
        b.restore([old_snapshot({old: {NEG_NAN: 7}})])


def test_old_nan_and_minus_nan_keys_with_values_each_fail_the_restore_clearly():
    b = HeapKeyedStateBackend(FULL, MAXP, ManualClock(0))
    with pytest.raises(CheckpointError, match="key groups"):
        b.restore([old_snapshot({old_key_group(NEG_NAN): {NEG_NAN: 7}, key_group_for(NAN, MAXP): {NAN: 1}})])


def test_a_reduce_restores_an_old_minus_nan_key_into_the_nan_key():
    from raystream.engine.partitioners import KeySelector
    from raystream.operators.keyed import ReduceOperator
    from raystream.operators.testing import OperatorHarness

    def op():
        return ReduceOperator(KeySelector(0), lambda x, y: (x[0], x[1] + y[1]))

    h = OperatorHarness(op())
    h.process([("a", 1)])
    snap = h.snapshot()
    # as the version that hashed NaN by its bits wrote a reduce's state of key -nan
    snap["operator"]["by_key_group"] = type(snap["operator"]["by_key_group"])(
        {old_key_group(NEG_NAN): {NEG_NAN: (NEG_NAN, 5)}})
    h2 = OperatorHarness(op(), restore=[snap])
    h2.process([(NAN, 1)])
    assert [v for _, v in h2.records()] == [6]
    # at p=4 subtask 0 owns key groups 0..31: the old group of -nan (8), not the NaN one (33)
    assert old_key_group(NEG_NAN) < 32 <= key_group_for(NAN, MAXP) < 64
    with pytest.raises(Exception, match=r"NaN key.*parallelism 1"):
        OperatorHarness(op(), subtask_index=0, parallelism=4, restore=[snap])
