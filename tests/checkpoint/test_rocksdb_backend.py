"""What only the RocksDB backend has: the bounded read cache, incremental checkpoints with
shared files (and their retention under failures), self-contained savepoints, rescaling from
checkpoint storage, configuration errors. No Ray: storage and restore plans are driven
directly, as the job master and the snapshot writer drive them."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("rocksdict")

from raystream.checkpoint import (  # noqa: E402
    CheckpointStorage,
    IncrementalStateHandle,
    MapStateDescriptor,
    RocksDBKeyedStateBackend,
    RocksDBStateBackend,
    ValueStateDescriptor,
    state_backend_by_name,
)
from raystream.checkpoint.coordinator import METADATA_FORMAT  # noqa: E402
from raystream.checkpoint.faults import FaultRule, faulty_filesystem  # noqa: E402
from raystream.engine.errors import CheckpointError, ConfigError  # noqa: E402
from raystream.engine.keygroups import KeyGroupRange, key_group_for  # noqa: E402

MAXP = 128
FULL = KeyGroupRange(0, MAXP - 1)
VALUE = ValueStateDescriptor("v")
UID = "sum"


@pytest.fixture
def backends(tmp_path):
    made: list[RocksDBKeyedStateBackend] = []

    def make(rng=FULL, **kwargs) -> RocksDBKeyedStateBackend:
        made.append(RocksDBKeyedStateBackend(rng, MAXP, local_dir=str(tmp_path / "local"), **kwargs))
        return made[-1]

    yield make
    for b in made:
        b.close()


def fill(b: RocksDBKeyedStateBackend, keys, value=lambda k: k) -> None:
    s = b.get_state(VALUE)
    for k in keys:
        if key_group_for(k, MAXP) in b.key_group_range:
            b.set_current_key(k)
            s.update(value(k))


def read_all(b: RocksDBKeyedStateBackend) -> dict:
    s = b.get_state(VALUE)
    out = {}
    for k in b.keys("v"):
        b.set_current_key(k)
        out[k] = s.value()
    return out


class CountingStorage(CheckpointStorage):
    """Checkpoint storage that counts the bytes of shared files it writes."""

    shared_bytes = 0

    def write_shared(self, job_id, checkpoint_id, name, data):
        CountingStorage.shared_bytes += len(data)
        return super().write_shared(job_id, checkpoint_id, name, data)


def checkpoint(storage, sb, job, cid, backends_by_subtask) -> dict:
    """Write every subtask's snapshot and the metadata, as the writer and coordinator do."""
    subtasks = {
        s: {"keyed": sb.write_snapshot(storage, job, cid, f"{UID}/{s}-keyed", b.snapshot(cid)), "committables": []}
        for s, b in backends_by_subtask.items()
    }
    metadata = {"format": METADATA_FORMAT, "job_id": job, "checkpoint_id": cid, "max_parallelism": MAXP,
                "operators": {UID: {"parallelism": len(subtasks), "subtasks": subtasks}}, "carried_committables": {}}
    storage.write_metadata(job, cid, metadata)
    return metadata


def restore(sb, metadata, read, parallelism, make) -> list[RocksDBKeyedStateBackend]:
    vertices = [{"id": 0, "parallelism": parallelism, "uids": [UID], "source_uid": None}]
    plan, _ = sb.restore_plan(metadata, read, vertices, MAXP)
    out = []
    for s in range(parallelism):
        rng = KeyGroupRange.for_subtask(s, parallelism, MAXP)
        b = make(rng)
        b.restore([sb.deserialize_snapshot(x, rng) for x in plan[(0, s)][UID]["keyed"]])
        out.append(b)
    return out


def shared_files(tmp_path, job="job") -> set[str]:
    d = tmp_path / "chk" / job / "shared"
    return {p.name for p in d.iterdir()} if d.exists() else set()


# -- the read cache ---------------------------------------------------------------------


def test_the_cache_holds_at_most_cache_size_entries_and_evicted_writes_are_kept(backends):
    b = backends(cache_size=50)
    m = b.get_state(MapStateDescriptor("m"))
    fill(b, range(2000))
    for k in range(300):
        b.set_current_key(k)
        m.put("a", k)
        assert b.cache_stats()["entries"] <= 50
    assert read_all(b) == {k: k for k in range(2000)}
    assert b.cache_stats()["entries"] <= 50
    b.set_current_key(7)
    assert m.items() == [("a", 7)]
    with pytest.raises(ConfigError, match="cache_size"):
        RocksDBKeyedStateBackend(FULL, MAXP, cache_size=0)


def test_missing_rocksdict_is_a_config_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rocksdict", None)
    with pytest.raises(ConfigError, match=r"pip install raystream\[rocksdb\]"):
        RocksDBStateBackend()
    with pytest.raises(ConfigError, match="unknown state backend 'lsm'"):
        state_backend_by_name("lsm")


def test_the_environment_selects_the_backend_per_job():
    from raystream.operators import StreamEnvironment

    env = StreamEnvironment().set_state_backend("rocksdb")
    assert isinstance(env._job_config("j").state_backend, RocksDBStateBackend)
    with pytest.raises(ConfigError, match="set_state_backend"):
        StreamEnvironment().set_state_backend(object())


# -- incremental checkpoints ------------------------------------------------------------


def test_a_checkpoint_uploads_only_new_files_and_restores_exactly(backends, tmp_path):
    storage = CountingStorage(str(tmp_path / "chk"))
    sb = RocksDBStateBackend(cache_size=1000)
    # one memtable holds it all: each checkpoint adds one level-0 file, too few for a
    # compaction to rewrite files between the two (what it may do in general)
    b = backends(cache_size=1000)
    fill(b, range(20_000), lambda k: f"value-{k}" * 3)
    md1 = checkpoint(storage, sb, "job", 1, {0: b})
    full = CountingStorage.shared_bytes
    handle = md1["operators"][UID]["subtasks"][0]["keyed"]
    assert isinstance(handle, IncrementalStateHandle) and len(handle.shared) == 1
    fill(b, range(0, 20_000, 100), lambda k: "changed")  # 1% of the keys
    md2 = checkpoint(storage, sb, "job", 2, {0: b})
    delta = CountingStorage.shared_bytes - full
    assert 0 < delta < full * 0.2, (delta, full)
    reused = {h.path for h in handle.shared} & {h.path for h in md2["operators"][UID]["subtasks"][0]["keyed"].shared}
    assert reused  # shared by both checkpoints
    [r] = restore(sb, md2, storage.read_state, 1, backends)
    # checkpoint 2 is a delta: the base's files plus one small delta file
    shared2 = md2["operators"][UID]["subtasks"][0]["keyed"].shared
    assert [h.path for h in shared2[:-1]] == [h.path for h in handle.shared] and "delta-2" in shared2[-1].path
    # the restored backend continues incrementally: it knows the base files already uploaded
    assert len(r.uploads) == len(handle.shared)
    expected = {k: ("changed" if k % 100 == 0 else f"value-{k}" * 3) for k in range(20_000)}
    assert read_all(r) == expected


def test_rescale_from_incremental_checkpoints_by_key_group_range(backends, tmp_path):
    storage = CheckpointStorage(str(tmp_path / "chk"))
    sb = RocksDBStateBackend()
    old = [backends(KeyGroupRange.for_subtask(s, 2, MAXP)) for s in range(2)]
    for b in old:
        fill(b, range(3000))
    md = checkpoint(storage, sb, "job", 1, dict(enumerate(old)))
    for p in (1, 3):
        new = restore(sb, md, storage.read_state, p, backends)
        got: dict = {}
        for b in new:
            part = read_all(b)
            assert all(key_group_for(k, MAXP) in b.key_group_range for k in part)
            assert not set(part) & set(got)
            got.update(part)
        assert got == {k: k for k in range(3000)}


def test_savepoints_are_self_contained(backends, tmp_path):
    storage = CheckpointStorage(str(tmp_path / "chk"), secret="s3cret")
    sb = RocksDBStateBackend()
    b = backends()
    fill(b, range(500))
    md = checkpoint(storage, sb, "job", 1, {0: b})
    handle = md["operators"][UID]["subtasks"][0]["keyed"]
    where = storage.write_savepoint(str(tmp_path / "sp"), {**md, "operators": {UID: {
        "parallelism": 1, "subtasks": {0: {"keyed": "keyed-0", "committables": []}}}}},
        {"keyed-0": storage.read_state(handle)})
    import shutil

    shutil.rmtree(tmp_path / "chk")  # the checkpoint and its shared files are gone
    metadata, reader = CheckpointStorage(str(tmp_path / "other"), secret="s3cret").read_savepoint(where)
    assert len([n for n in reader.names() if n.startswith("shared/")]) == len(handle.shared)
    [r] = restore(sb, metadata, reader.read, 1, backends)
    assert read_all(r) == {k: k for k in range(500)}


# -- retention of shared files under failures -----------------------------------------


def test_retention_deletes_only_files_no_retained_checkpoint_references(backends, tmp_path):
    storage = CheckpointStorage(str(tmp_path / "chk"))
    sb = RocksDBStateBackend()
    b = backends(write_buffer_bytes=1 << 16)
    mds = {}
    for cid in range(1, 6):
        fill(b, range(cid * 1000, cid * 1000 + 3000))
        mds[cid] = checkpoint(storage, sb, "job", cid, {0: b})
        storage.retain("job", 2)
        kept = {c for c in storage.list_complete("job")}
        referenced = {h.path.rsplit("/", 1)[-1] for c in kept
                      for h in mds[c]["operators"][UID]["subtasks"][0]["keyed"].shared}
        assert referenced <= shared_files(tmp_path)  # nothing a retained checkpoint needs is gone
        assert shared_files(tmp_path) == referenced  # and nothing else is left
        assert storage.missing_shared(mds[max(kept)]) == []
    [r] = restore(sb, mds[5], storage.read_state, 1, backends)
    assert read_all(r) == {k: k for k in range(1000, 8000)}


def test_failed_and_aborted_uploads_never_leave_a_retained_checkpoint_without_its_files(backends, tmp_path):
    # checkpoint 2's shared uploads fail (storage fault), checkpoint 3's manifest write fails
    # after its shared files were uploaded (an aborted checkpoint), 4 completes
    rules = [FaultRule("write", path_glob="*/shared/2-*", fail=True),
             FaultRule("write_state", path_glob="*/chk-3/*", fail=True)]
    storage = CheckpointStorage((faulty_filesystem(rules=rules, seed=1), str(tmp_path / "chk")))
    sb = RocksDBStateBackend()
    b = backends(write_buffer_bytes=1 << 16)
    fill(b, range(2000))
    checkpoint(storage, sb, "job", 1, {0: b})
    fill(b, range(2000, 4000))
    with pytest.raises(CheckpointError):
        checkpoint(storage, sb, "job", 2, {0: b})
    fill(b, range(4000, 6000))
    with pytest.raises(CheckpointError):
        checkpoint(storage, sb, "job", 3, {0: b})
    uploaded_for_3 = {n for n in shared_files(tmp_path) if n.startswith("3-")}
    assert uploaded_for_3  # uploaded before the manifest failed
    fill(b, range(6000, 6500))
    md4 = checkpoint(storage, sb, "job", 4, {0: b})
    storage.retain("job", 1)
    needed = {h.path.rsplit("/", 1)[-1] for h in md4["operators"][UID]["subtasks"][0]["keyed"].shared}
    assert needed <= shared_files(tmp_path)
    # what the failed checkpoints uploaded and no retained one references is gone
    assert not (uploaded_for_3 - needed) & shared_files(tmp_path)
    assert not {n for n in shared_files(tmp_path) if n.startswith(("2-", "3-"))} - needed
    assert storage.missing_shared(md4) == []
    [r] = restore(sb, md4, storage.read_state, 1, backends)
    assert read_all(r) == {k: k for k in range(6500)}


def test_a_checkpoint_with_a_missing_shared_file_is_not_restorable(backends, tmp_path):
    from raystream.checkpoint.coordinator import CheckpointConfig, CheckpointCoordinator

    storage = CheckpointStorage(str(tmp_path / "chk"))
    sb = RocksDBStateBackend()
    b = backends()
    fill(b, range(100))
    checkpoint(storage, sb, "job", 1, {0: b})
    fill(b, range(100, 200))
    md2 = checkpoint(storage, sb, "job", 2, {0: b})
    coordinator = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path / "chk")), "job", [(0, 0)],
                                        storage=storage)
    assert coordinator.latest_restorable()[0] == 2
    newest = md2["operators"][UID]["subtasks"][0]["keyed"].shared[-1]
    (tmp_path / "chk" / newest.path).unlink()
    assert coordinator.latest_restorable()[0] == 1  # falls back, logged
