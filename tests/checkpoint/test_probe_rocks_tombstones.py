"""Keys that come and go on the RocksDB backend (count windows, a process function that
clears its state): a checkpoint's size follows the live state, not the keys ever deleted.

Every deleted key left a tombstone in the SST files that the next materialization flushed,
and universal compaction seldom merged those files with the oldest run, the only merge that
drops tombstones: 60,000 keys created and cleared next to 300 live ones gave a 67 kB
self-contained checkpoint (now 24 kB), growing with every key cleared. No Ray."""

from __future__ import annotations

import pytest

pytest.importorskip("rocksdict")

from raystream.checkpoint import (  # noqa: E402
    CheckpointStorage,
    RocksDBKeyedStateBackend,
    RocksDBStateBackend,
    ValueStateDescriptor,
)
from raystream.checkpoint.coordinator import METADATA_FORMAT  # noqa: E402
from raystream.checkpoint.rocksdb_files import RocksDBSnapshot  # noqa: E402
from raystream.engine.keygroups import KeyGroupRange, key_group_for  # noqa: E402

MAXP = 128
UID = "op"
VALUE = ValueStateDescriptor("v")
ROUNDS, PER_ROUND, LIVE = 30, 2000, 300  # 60,000 keys come and go, 300 stay


@pytest.fixture
def backends(tmp_path):
    made: list[RocksDBKeyedStateBackend] = []

    def make(rng: KeyGroupRange, **kwargs) -> RocksDBKeyedStateBackend:
        made.append(RocksDBKeyedStateBackend(rng, MAXP, local_dir=str(tmp_path / "local"), **kwargs))
        return made[-1]

    yield make
    for b in made:
        b.close()


def checkpoint_bytes(handle) -> int:
    """Bytes a checkpoint of one subtask references: its manifest and its shared files."""
    return handle.size + sum(h.size for h in handle.shared)


def churn(b: RocksDBKeyedStateBackend, v, first: int) -> None:
    """PER_ROUND new keys of this backend's key groups get a value, then lose it."""
    keys = [k for k in range(first, first + PER_ROUND) if key_group_for(f"gone-{k}", MAXP) in b.key_group_range]
    for k in keys:
        b.set_current_key(f"gone-{k}")
        v.update("x" * 40)
    for k in keys:
        b.set_current_key(f"gone-{k}")
        v.clear()


def live_values(b: RocksDBKeyedStateBackend) -> dict:
    v = b.get_state(VALUE)
    out = {}
    for k in list(b.keys("v")):
        b.set_current_key(k)
        out[k] = v.value()
    return out


@pytest.mark.parametrize("cache_size", [64, 100_000])  # evicted before the clear, or cleared in the cache
def test_a_checkpoint_of_keys_that_came_and_went_holds_the_live_keys_not_their_tombstones(
        backends, tmp_path, cache_size):
    storage, sb = CheckpointStorage(str(tmp_path / "chk")), RocksDBStateBackend()
    b = backends(KeyGroupRange(0, MAXP - 1), cache_size=cache_size, changelog_bytes=0)  # (every one materializes)
    v = b.get_state(VALUE)
    for k in range(LIVE):
        b.set_current_key(f"live-{k}")
        v.update(f"value-{k}")
    sizes = []
    for cid in range(1, ROUNDS + 1):
        churn(b, v, cid * PER_ROUND)
        snap = b.snapshot(cid)
        assert isinstance(snap, RocksDBSnapshot)
        sizes.append(checkpoint_bytes(sb.write_snapshot(storage, "job", cid, f"{UID}/0-keyed", snap)))
    full = b.snapshot(ROUNDS + 1, full=True)
    full_bytes = checkpoint_bytes(sb.write_snapshot(storage, "job", ROUNDS + 1, f"{UID}/0-keyed", full))
    # ~300 live entries and RocksDB's small files: ~24 kB; with 60,000 tombstones: 67 kB
    assert full_bytes < 30_000, full_bytes
    assert max(sizes) < 30_000, sizes
    assert len(sb.serialize_snapshot(b.snapshot(ROUNDS + 2, full=True))) < 30_000
    r = backends(KeyGroupRange(0, MAXP - 1))
    r.restore([sb.deserialize_snapshot(sb.serialize_snapshot(b.snapshot(ROUNDS + 3)), r.key_group_range)])
    assert live_values(r) == {f"live-{k}": f"value-{k}" for k in range(LIVE)}


def test_delta_chains_and_a_rescaled_restore_of_keys_that_came_and_went_stay_bounded(backends, tmp_path):
    storage, sb = CheckpointStorage(str(tmp_path / "chk")), RocksDBStateBackend()
    old = [backends(KeyGroupRange.for_subtask(s, 2, MAXP), cache_size=256) for s in range(2)]
    states = [b.get_state(VALUE) for b in old]
    for k in range(LIVE):
        for b, v in zip(old, states):
            if key_group_for(k, MAXP) in b.key_group_range:
                b.set_current_key(k)
                v.update(k * 3)
    sizes: list[int] = []
    for cid in range(1, 2 * ROUNDS + 1):  # (several delta chains: each materializes again at some point)
        subtasks = {}
        for s, (b, v) in enumerate(zip(old, states)):
            churn(b, v, cid * PER_ROUND)
            handle = sb.write_snapshot(storage, "job", cid, f"{UID}/{s}-keyed", b.snapshot(cid))
            subtasks[s] = {"keyed": handle, "committables": []}
        sizes.append(sum(checkpoint_bytes(x["keyed"]) for x in subtasks.values()))
    # two subtasks, each a manifest and its files of ~150 live entries plus at most a chain of deltas
    # of churn (a chain materializes once its deltas reach a quarter of the base); before: ~0.5 MB
    assert max(sizes[-ROUNDS // 2:]) < 120_000, sizes
    md = {"format": METADATA_FORMAT, "job_id": "job", "checkpoint_id": cid, "max_parallelism": MAXP,
          "operators": {UID: {"parallelism": 2, "subtasks": subtasks}}, "carried_committables": {}}
    storage.write_metadata("job", cid, md)
    vertices = [{"id": 0, "parallelism": 1, "uids": [UID], "source_uid": None}]
    plan, _ = sb.restore_plan(md, storage.read_state, vertices, MAXP)
    r = backends(KeyGroupRange(0, MAXP - 1), cache_size=256)
    r.restore([sb.deserialize_snapshot(x, r.key_group_range) for x in plan[(0, 0)][UID]["keyed"]])
    assert live_values(r) == {k: k * 3 for k in range(LIVE)}
    after = checkpoint_bytes(sb.write_snapshot(storage, "job2", 1, f"{UID}/0-keyed", r.snapshot(1, full=True)))
    assert after < 30_000, after


def test_keys_written_in_one_checkpoint_and_cleared_in_a_later_one_leave_nothing_behind(backends, tmp_path):
    """As count windows do: a key's entries reach an SST file at one materialization and its
    tombstones at a later one (10,000 count windows done, none open: a 0.77 MB savepoint)."""
    storage, sb = CheckpointStorage(str(tmp_path / "chk")), RocksDBStateBackend()
    b = backends(KeyGroupRange(0, MAXP - 1), cache_size=256, changelog_bytes=0)
    v, trigger = b.get_state(VALUE), b.get_state(ValueStateDescriptor("trigger"))
    for k in range(LIVE):
        b.set_current_key(f"live-{k}")
        v.update(k)
    sizes = []
    for cid in range(1, 11):
        opened = range(cid * PER_ROUND, (cid + 1) * PER_ROUND)
        for k in opened:  # windows opened in this interval: contents and trigger state
            b.set_current_key(f"window-{k}")
            v.update([k, k + 1])
            trigger.update(1)
        for k in range((cid - 1) * PER_ROUND, cid * PER_ROUND) if cid > 1 else ():  # those of the last one fire
            b.set_current_key(f"window-{k}")
            v.clear()
            trigger.clear()
        sizes.append(checkpoint_bytes(sb.write_snapshot(storage, "job", cid, f"{UID}/0-keyed", b.snapshot(cid))))
    for k in range(10 * PER_ROUND, 11 * PER_ROUND):
        b.set_current_key(f"window-{k}")
        v.clear()
        trigger.clear()
    full = checkpoint_bytes(sb.write_snapshot(storage, "job", 11, f"{UID}/0-keyed", b.snapshot(11, full=True)))
    assert full < 30_000, (full, sizes)  # ~300 live entries; with the deleted entries: 107 kB
    assert max(sizes) < 150_000, sizes  # (2,000 open windows, 4,000 entries, and what is live)
    r = backends(KeyGroupRange(0, MAXP - 1))
    r.restore([sb.deserialize_snapshot(sb.serialize_snapshot(b.snapshot(12)), r.key_group_range)])
    assert live_values(r) == {f"live-{k}": k for k in range(LIVE)}
    assert list(r.keys("trigger")) == []


def test_a_delta_chain_that_deleted_most_of_its_base_materializes_again(backends, tmp_path):
    """Deletions compress to a few bytes each, so a chain whose deltas deleted the whole base
    stayed far below the bytes share that ends a chain: every checkpoint (and a savepoint of
    it) kept the base's files, the state's peak, for up to 32 more checkpoints."""
    storage, sb = CheckpointStorage(str(tmp_path / "chk")), RocksDBStateBackend()
    b = backends(KeyGroupRange(0, MAXP - 1), cache_size=256)
    v = b.get_state(VALUE)
    for k in range(10_000):
        b.set_current_key(f"window-{k}")
        v.update(f"contents of window {k} " * 4)
    first = checkpoint_bytes(sb.write_snapshot(storage, "job", 1, f"{UID}/0-keyed", b.snapshot(1)))
    sizes = []
    for cid in range(2, 12):  # 1,000 of them close per checkpoint, none opens
        for k in range((cid - 2) * 1000, (cid - 1) * 1000):
            b.set_current_key(f"window-{k}")
            v.clear()
        sizes.append(checkpoint_bytes(sb.write_snapshot(storage, "job", cid, f"{UID}/0-keyed", b.snapshot(cid))))
    assert first > 200_000, first  # (10,000 live entries)
    assert sizes[-1] < 30_000, (first, sizes)  # none live: the chain materialized again; before: > 200 kB
