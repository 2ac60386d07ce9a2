"""Delta checkpoints of the RocksDB backend: most checkpoints upload one small SST file of the
entries changed since the previous one on top of a materialized base (its SST files, shared),
and every few checkpoints the state materializes again. Checked against a model of the state:
a restore from any checkpoint of a chain (and a rescale) gives exactly the state at that
checkpoint; a failed, slow or dropped write never yields a checkpoint that misses a file or a
change; retention keeps every file a retained checkpoint references. No Ray."""

from __future__ import annotations

import hashlib
import random
import shutil

import pytest

pytest.importorskip("rocksdict")

from raystream.checkpoint import (  # noqa: E402
    CheckpointStorage,
    ListStateDescriptor,
    MapStateDescriptor,
    RocksDBKeyedStateBackend,
    RocksDBStateBackend,
    ValueStateDescriptor,
    rocksdb_backend,  # noqa: E402
    rocksdb_files,
    rocksdb_restore,
)
from raystream.checkpoint.coordinator import METADATA_FORMAT  # noqa: E402
from raystream.checkpoint.faults import FaultRule, faulty_filesystem  # noqa: E402
from raystream.checkpoint.rocksdb_files import DeltaSnapshot, RocksDBSnapshot  # noqa: E402
from raystream.engine.errors import CheckpointError, ConfigError  # noqa: E402
from raystream.engine.keygroups import KeyGroupRange, key_group_for  # noqa: E402
from raystream.engine.snapshots import AsyncSnapshotWriter  # noqa: E402

MAXP = 128
FULL = KeyGroupRange(0, MAXP - 1)
UID = "op"
VALUE, MAP, LIST = ValueStateDescriptor("v"), MapStateDescriptor("m"), ListStateDescriptor("l")
TIMERS = "_timers/event_time"


@pytest.fixture
def backends(tmp_path):
    made: list[RocksDBKeyedStateBackend] = []

    def make(rng=FULL, **kwargs) -> RocksDBKeyedStateBackend:
        made.append(RocksDBKeyedStateBackend(rng, MAXP, local_dir=str(tmp_path / "local"), **kwargs))
        return made[-1]

    yield make
    for b in made:
        b.close()


class Model:
    """What the state should be: value, map and list state and a timer queue."""

    def __init__(self) -> None:
        self.value: dict = {}
        self.map: dict = {}
        self.list: dict = {}
        self.timers: set = set()

    def copy(self) -> dict:
        return {"v": dict(self.value), "m": {k: dict(m) for k, m in self.map.items() if m},
                "l": {k: list(x) for k, x in self.list.items()}, "t": set(self.timers)}


class Job:
    """One backend with a timer queue, driven by random operations mirrored in a model."""

    def __init__(self, backend: RocksDBKeyedStateBackend, keys: int, seed: int) -> None:
        self.b = backend
        self.v, self.m, self.l = backend.get_state(VALUE), backend.get_state(MAP), backend.get_state(LIST)
        self.q = backend.create_timer_queue(TIMERS)
        self.model = Model()
        self.keys = keys
        self.rng = random.Random(seed)

    def step(self, n: int) -> None:
        rng, model, b = self.rng, self.model, self.b
        for _ in range(n):
            k = rng.randrange(self.keys)
            b.set_current_key(k)
            op = rng.random()
            if op < 0.35:
                x = rng.randrange(1000)
                self.v.update(x)
                model.value[k] = x
            elif op < 0.45:
                self.v.clear()
                model.value.pop(k, None)
            elif op < 0.65:
                mk = rng.randrange(5)
                if rng.random() < 0.7:
                    self.m.put(mk, k * 10 + mk)
                    model.map.setdefault(k, {})[mk] = k * 10 + mk
                else:
                    self.m.remove(mk)
                    model.map.get(k, {}).pop(mk, None)
            elif op < 0.8:
                self.l.add(op)
                model.list.setdefault(k, []).append(op)
            elif op < 0.93:
                t = rng.randrange(100)
                self.q.add(k, None, t)
                model.timers.add((t, k))
            else:
                t = rng.randrange(100)
                self.q.remove(k, None, t)
                model.timers.discard((t, k))


def read_state(b: RocksDBKeyedStateBackend) -> dict:
    """Everything in a restored backend (its timers are popped)."""
    v, m, lst = b.get_state(VALUE), b.get_state(MAP), b.get_state(LIST)
    out: dict = {"v": {}, "m": {}, "l": {}, "t": set()}
    for k in b.keys("v"):
        b.set_current_key(k)
        out["v"][k] = v.value()
    for k in b.keys("m"):
        b.set_current_key(k)
        out["m"][k] = dict(m.items())
    for k in b.keys("l"):
        b.set_current_key(k)
        out["l"][k] = list(lst.get())
    q = b.create_timer_queue(TIMERS)
    while (t := q.pop_due(10**9)) is not None:
        out["t"].add((t[0], t[1]))
    return out


def metadata(job: str, cid: int, subtasks: dict) -> dict:
    return {"format": METADATA_FORMAT, "job_id": job, "checkpoint_id": cid, "max_parallelism": MAXP,
            "operators": {UID: {"parallelism": len(subtasks), "subtasks": subtasks}}, "carried_committables": {}}


def write(storage, sb, cid, snap, job="job") -> dict:
    handle = sb.write_snapshot(storage, job, cid, f"{UID}/0-keyed", snap)
    md = metadata(job, cid, {0: {"keyed": handle, "committables": []}})
    storage.write_metadata(job, cid, md)
    return md


def restore(sb, md, read, parallelism, make) -> list[RocksDBKeyedStateBackend]:
    vertices = [{"id": 0, "parallelism": parallelism, "uids": [UID], "source_uid": None}]
    plan, _ = sb.restore_plan(md, read, vertices, MAXP)
    out = []
    for s in range(parallelism):
        rng = KeyGroupRange.for_subtask(s, parallelism, MAXP)
        b = make(rng)
        b.restore([sb.deserialize_snapshot(x, rng) for x in plan[(0, s)][UID]["keyed"]])
        out.append(b)
    return out


def merged(parts: list[dict]) -> dict:
    out: dict = {"v": {}, "m": {}, "l": {}, "t": set()}
    for p in parts:
        for name in ("v", "m", "l"):
            assert not set(out[name]) & set(p[name])
            out[name].update(p[name])
        out["t"] |= p["t"]
    return out


def kind(snap) -> str:
    return "delta" if isinstance(snap, DeltaSnapshot) else "materialized"


def shared_files(tmp_path, job="job") -> set[str]:
    d = tmp_path / "chk" / job / "shared"
    return {p.name for p in d.iterdir()} if d.exists() else set()


# -- restore exactness over chains -------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cache_size", [8, 5000])
def test_every_checkpoint_of_delta_chains_restores_exactly(backends, tmp_path, monkeypatch, seed, cache_size):
    monkeypatch.setattr(rocksdb_backend, "MAX_DELTAS", 3)  # several chains in one test
    monkeypatch.setattr(rocksdb_backend, "DELTA_RATIO", 100.0)  # (small state: deltas are a large share)
    if seed == 1:  # (a restore merges few delta entries at a time: later ones win across merges)
        monkeypatch.setattr(rocksdb_restore, "_MERGE_ENTRIES", 7)
    if seed == 2:  # (evicted entries are written in small batches, also between a snapshot and its upload)
        monkeypatch.setattr(rocksdb_backend, "_BATCH", 4)
    storage = CheckpointStorage(str(tmp_path / "chk"))
    sb = RocksDBStateBackend()
    job = Job(backends(cache_size=cache_size, write_buffer_bytes=1 << 16), 300, seed)
    job.step(2000)
    expected, mds, kinds = {}, {}, []
    for cid in range(1, 10):
        snap = job.b.snapshot(cid)
        kinds.append(kind(snap))
        expected[cid] = job.model.copy()
        job.step(150)  # the task goes on before the snapshot is written
        mds[cid] = write(storage, sb, cid, snap)
        storage.retain("job", 3)
        job.step(150)
    assert kinds == ["materialized", "delta", "delta", "delta"] * 2 + ["materialized"]
    for cid in storage.list_complete("job"):
        assert storage.missing_shared(mds[cid]) == []
        [r] = restore(sb, mds[cid], storage.read_state, 1, backends)
        assert read_state(r) == expected[cid], cid
    # rescale from the middle of a chain (checkpoint 8: a base and three deltas)
    assert storage.list_complete("job") == [7, 8, 9]
    assert merged([read_state(r) for r in restore(sb, mds[8], storage.read_state, 3, backends)]) == expected[8]


def test_a_delta_checkpoint_uploads_only_the_changed_entries(backends, tmp_path, monkeypatch):
    from raystream.checkpoint import rocksdb_files

    monkeypatch.setattr(rocksdb_files, "_warmed_up", False)
    storage, sb, b, v = filled(backends, tmp_path, 20_000, 1000, lambda k: f"value-{k}" * 3)
    md1 = write(storage, sb, 1, b.snapshot(1))
    assert rocksdb_files._warmed_up  # the delta writer warmed up with the base, before the first delta
    base = md1["operators"][UID]["subtasks"][0]["keyed"].shared
    for k in range(0, 20_000, 100):  # 1% of the keys
        b.set_current_key(k)
        v.update("changed")
    snap = b.snapshot(2)
    assert isinstance(snap, DeltaSnapshot)
    md2 = write(storage, sb, 2, snap)
    shared = md2["operators"][UID]["subtasks"][0]["keyed"].shared
    assert shared[: len(base)] == base and len(shared) == len(base) + 1
    assert shared[-1].size < 0.05 * sum(h.size for h in base)
    snap3 = b.snapshot(3)  # nothing changed: a delta without a file
    assert isinstance(snap3, DeltaSnapshot)
    md3 = write(storage, sb, 3, snap3)
    assert md3["operators"][UID]["subtasks"][0]["keyed"].shared == shared
    [r] = restore(sb, md3, storage.read_state, 1, backends)
    s = r.get_state(VALUE)
    got = {}
    for k in r.keys("v"):
        r.set_current_key(k)
        got[k] = s.value()
    assert got == {k: ("changed" if k % 100 == 0 else f"value-{k}" * 3) for k in range(20_000)}


def filled(backends, tmp_path, n: int, cache_size: int = 50, value=lambda k: k):
    """A backend with ``value(k)`` under keys 0..n-1, no checkpoint taken:
    ``(storage, state backend, keyed backend, value state)``."""
    storage = CheckpointStorage(str(tmp_path / "chk"))
    sb = RocksDBStateBackend()
    b = backends(cache_size=cache_size)
    v = b.get_state(VALUE)
    for k in range(n):
        b.set_current_key(k)
        v.update(value(k))
    return storage, sb, b, v


def checkpointed_values(backends, tmp_path, n: int):
    """A backend with values 0..n-1 under keys 0..n-1 and checkpoint 1 of it written:
    ``(storage, state backend, keyed backend, value state)``."""
    storage, sb, b, v = filled(backends, tmp_path, n)
    write(storage, sb, 1, b.snapshot(1))
    return storage, sb, b, v


def test_a_delta_file_holds_puts_and_deletions_and_a_chain_with_sst_deltas_still_restores(backends, tmp_path):
    """Deltas are Arrow files now; a chain written before (SST deltas) restores the same."""
    entries = {b"\x00\x03" + bytes([i]) * 5: (None if i % 3 == 0 else bytes([i]) * i) for i in range(1, 40)}
    path = str(tmp_path / f"d{rocksdb_files.DELTA_SUFFIX}")
    assert rocksdb_files.write_delta(path, entries) == (3, 3)
    with open(path, "rb") as f:
        data = f.read()
    got = {k: v for keys, values in rocksdb_files.read_delta(data) for k, v in zip(keys, values)}
    assert got == entries
    with pytest.raises(CheckpointError, match="not a RocksDB delta file"):
        list(rocksdb_files.read_delta(data[: len(data) // 2]))
    spread = {b"\x01\x07xyz": b"a", b"\x00\x02abc": None, b"\x00\xffq": b"b"}  # key groups 263, 2, 255
    assert rocksdb_files.write_delta(str(tmp_path / "spread"), spread) == (2, 263)
    # parts in write order (the change log, then the pending writes): a key may recur, its last entry wins
    parts = [{b"\x00\x03a": b"old", b"\x00\x03b": b"kept"}, {b"\x00\x03a": None, b"\x00\x04c": b"new"}]
    rocksdb_files.write_delta(str(tmp_path / "parts"), parts)
    with open(tmp_path / "parts", "rb") as f:
        rows = [kv for keys, values in rocksdb_files.read_delta(f.read()) for kv in zip(keys, values)]
    assert rows == [(b"\x00\x03a", b"old"), (b"\x00\x03b", b"kept"), (b"\x00\x03a", None), (b"\x00\x04c", b"new")]
    # the same chain with its delta rewritten as an SST file, as earlier versions wrote it
    storage, sb, b, v = checkpointed_values(backends, tmp_path, 500)
    for k in range(0, 500, 7):
        b.set_current_key(k)
        if k % 2:
            v.clear()
        else:
            v.update(-k)
    snap = b.snapshot(2)
    assert isinstance(snap, DeltaSnapshot)
    md = write(storage, sb, 2, snap)
    expected = {k: -k if k % 7 == 0 else k for k in range(500) if not (k % 7 == 0 and k % 2)}
    [r] = restore(sb, md, storage.read_state, 1, backends)
    assert read_state(r)["v"] == expected
    [delta] = [h for h in md["operators"][UID]["subtasks"][0]["keyed"].shared if h.path.endswith(rocksdb_files.DELTA_SUFFIX)]
    rows = {k: val for keys, values in rocksdb_files.read_delta(storage.read_state(delta)) for k, val in zip(keys, values)}
    rocksdict = rocksdb_files.rocksdict_module()
    old_root = tmp_path / "old"
    old_root.mkdir()
    sst = str(old_root / "delta.sst")
    writer = rocksdict.SstFileWriter(rocksdict.Options(raw_mode=True))
    writer.open(sst)
    for k in sorted(rows):
        if rows[k] is None:
            del writer[k]
        else:
            writer[k] = rows[k]
    writer.finish()
    db_dir = str(old_root / "db")
    source = rocksdb_files.parse_manifest(sb.serialize_snapshot(snap))
    rocksdb_restore.materialize(source, db_dir, rocksdict)  # the Arrow chain
    db = rocksdb_files.open_db(rocksdict, db_dir, write_buffer_bytes=1 << 20, block_cache_bytes=1 << 20)
    arrow_rows = {bytes(k): bytes(val) for k, val in db.items()}
    db.close()
    sst_bytes = open(sst, "rb").read()
    read = source.read
    source.read = lambda name: sst_bytes if name == "delta.sst" else read(name)  # type: ignore[method-assign]
    source.deltas = [rocksdb_files.SstFile("delta.sst", len(sst_bytes), 0, MAXP - 1)]
    db_dir2 = str(old_root / "db2")
    rocksdb_restore.materialize(source, db_dir2, rocksdict)  # the base, then the SST delta ingested
    db = rocksdb_files.open_db(rocksdict, db_dir2, write_buffer_bytes=1 << 20, block_cache_bytes=1 << 20)
    sst_rows = {bytes(k): bytes(val) for k, val in db.items()}
    db.close()
    assert sst_rows == arrow_rows and len(arrow_rows) > 400


def test_a_corrupt_delta_fails_the_restore_naming_the_delta_and_checkpoint(backends, tmp_path):
    storage, sb, b, v = checkpointed_values(backends, tmp_path, 300)
    for k in range(0, 300, 10):
        b.set_current_key(k)
        v.update("changed")
    source = rocksdb_files.parse_manifest(sb.serialize_snapshot(b.snapshot(2)))
    [name] = [d.name for d in source.deltas]
    off, size = source.inline[name]
    source.data = memoryview(bytes(source.data[:off]) + b"\x00" * size + bytes(source.data[off + size:]))
    with pytest.raises(CheckpointError, match=f"cannot apply delta '{name}' of the RocksDB snapshot of checkpoint 2"):
        rocksdb_restore.materialize(source, str(tmp_path / "db"), rocksdb_files.rocksdict_module())


def test_a_local_delta_snapshot_serializes_self_contained(backends):
    job = Job(backends(cache_size=16), 200, 5)
    sb = RocksDBStateBackend()
    job.step(800)
    job.b.snapshot(1)
    job.step(300)
    job.b.snapshot(2)
    job.step(300)
    snap = job.b.snapshot(3)
    assert isinstance(snap, DeltaSnapshot) and snap.seq == 2
    expected = job.model.copy()
    data = sb.serialize_snapshot(snap)
    job.step(300)
    r = backends()
    r.restore([sb.deserialize_snapshot(data, FULL)])
    assert read_state(r) == expected


def test_a_savepoint_of_a_delta_checkpoint_is_self_contained(backends, tmp_path):
    storage = CheckpointStorage(str(tmp_path / "chk"), secret="s3cret")
    sb = RocksDBStateBackend()
    job = Job(backends(cache_size=16), 200, 3)
    job.step(800)
    write(storage, sb, 1, job.b.snapshot(1))
    job.step(300)
    md = write(storage, sb, 2, job.b.snapshot(2))
    expected = job.model.copy()
    handle = md["operators"][UID]["subtasks"][0]["keyed"]
    where = storage.write_savepoint(str(tmp_path / "sp"), {**md, "operators": {UID: {
        "parallelism": 1, "subtasks": {0: {"keyed": "keyed-0", "committables": []}}}}},
        {"keyed-0": storage.read_state(handle)})
    shutil.rmtree(tmp_path / "chk")
    meta, reader = CheckpointStorage(str(tmp_path / "other"), secret="s3cret").read_savepoint(where)
    assert len([n for n in reader.names() if n.startswith("shared/")]) == len(handle.shared)
    assert any("delta-2" in n for n in reader.names())
    parts = [read_state(r) for r in restore(sb, meta, reader.read, 2, backends)]
    assert merged(parts) == expected


# -- failures ----------------------------------------------------------------------------


def test_a_failed_delta_upload_fails_that_checkpoint_and_the_next_materializes(backends, tmp_path, monkeypatch):
    monkeypatch.setattr(rocksdb_backend, "DELTA_RATIO", 100.0)  # (small state: deltas are a large share)
    rules = [FaultRule("write", path_glob="*/shared/3-*", fail=True)]
    storage = CheckpointStorage((faulty_filesystem(rules=rules, seed=1), str(tmp_path / "chk")))
    sb = RocksDBStateBackend()
    job = Job(backends(cache_size=32, write_buffer_bytes=1 << 16), 300, 7)
    mds, expected = {}, {}
    for cid in range(1, 6):
        job.step(400)
        snap = job.b.snapshot(cid)
        expected[cid] = job.model.copy()
        if cid == 3:
            assert kind(snap) == "delta"
            with pytest.raises(CheckpointError):
                write(storage, sb, cid, snap)
            continue
        assert kind(snap) == ("materialized" if cid in (1, 4) else "delta")
        mds[cid] = write(storage, sb, cid, snap)
        storage.retain("job", 1)
        kept = storage.list_complete("job")
        referenced = {h.path.rsplit("/", 1)[-1] for c in kept
                      for h in mds[c]["operators"][UID]["subtasks"][0]["keyed"].shared}
        assert referenced == shared_files(tmp_path)
        assert storage.missing_shared(mds[cid]) == []
    [r] = restore(sb, mds[5], storage.read_state, 1, backends)
    assert read_state(r) == expected[5]


def test_deltas_taken_before_a_failure_or_after_a_dropped_snapshot_are_never_written(backends, tmp_path):
    # 2 and 3 are taken before 2's write fails: 3 must not be written without 2's changes;
    # 5 is taken and dropped (never written): 6 must not be written without its changes
    rules = [FaultRule("write", path_glob="*/shared/2-*", fail=True)]
    storage = CheckpointStorage((faulty_filesystem(rules=rules, seed=1), str(tmp_path / "chk")))
    sb = RocksDBStateBackend()
    job = Job(backends(cache_size=32), 300, 11)
    job.step(500)
    write(storage, sb, 1, job.b.snapshot(1))
    job.step(200)
    snap2 = job.b.snapshot(2)
    job.step(200)
    snap3 = job.b.snapshot(3)
    with pytest.raises(CheckpointError):
        write(storage, sb, 2, snap2)
    with pytest.raises(CheckpointError, match="builds on a snapshot that was not written"):
        write(storage, sb, 3, snap3)
    job.step(200)
    snap4 = job.b.snapshot(4)
    assert kind(snap4) == "materialized"
    write(storage, sb, 4, snap4)
    job.step(200)
    assert kind(job.b.snapshot(5)) == "delta"  # dropped
    job.step(200)
    with pytest.raises(CheckpointError, match="builds on a snapshot that was not written"):
        write(storage, sb, 6, job.b.snapshot(6))
    job.step(200)
    snap7 = job.b.snapshot(7)
    expected = job.model.copy()
    assert kind(snap7) == "materialized"
    md7 = write(storage, sb, 7, snap7)
    assert storage.missing_shared(md7) == []
    [r] = restore(sb, md7, storage.read_state, 1, backends)
    assert read_state(r) == expected


@pytest.mark.parametrize("failing", [None, 4])
def test_the_snapshot_writer_uploads_on_its_thread_with_slow_storage(backends, tmp_path, failing):
    # slow shared-file uploads: every snapshot is taken while earlier ones are still being
    # written; the writer acks what it wrote and declines the rest
    rules = [FaultRule("write", path_glob="*/shared/*", delay_s=0.02)]
    if failing is not None:
        rules.append(FaultRule("write", path_glob=f"*/shared/{failing}-*", fail=True))
    storage = CheckpointStorage((faulty_filesystem(rules=rules, seed=1), str(tmp_path / "chk")))
    sb = RocksDBStateBackend()
    writer = AsyncSnapshotWriter(storage, "job", state_backend=sb)
    acked: dict[int, dict] = {}
    declined: dict[int, str] = {}
    job = Job(backends(cache_size=64, write_buffer_bytes=1 << 16), 400, 13)
    expected = {}
    try:
        for cid in range(1, 9):
            job.step(300)
            expected[cid] = job.model.copy()
            writer(cid, 0, 0, {UID: {"keyed": job.b.snapshot(cid)}},
                   lambda c, v, s, handles: acked.__setitem__(c, handles),
                   lambda c, reason, committables: declined.__setitem__(c, reason))
        writer.drain()
    finally:
        writer.close()
    assert set(acked) | set(declined) == set(range(1, 9)) and not set(acked) & set(declined)
    if failing is not None:
        assert failing in declined
    for cid, handles in acked.items():
        md = metadata("job", cid, {0: {"keyed": handles[UID]["keyed"], "committables": []}})
        storage.write_metadata("job", cid, md)
        assert storage.missing_shared(md) == []
        [r] = restore(sb, md, storage.read_state, 1, backends)
        assert read_state(r) == expected[cid], cid


# -- when a snapshot materializes --------------------------------------------------------


def test_a_change_log_beyond_its_budget_makes_the_next_snapshot_materialize(backends):
    b = backends(cache_size=8, changelog_bytes=20_000)
    v = b.get_state(VALUE)
    for k in range(100):
        b.set_current_key(k)
        v.update(k)
    assert kind(b.snapshot(1)) == "materialized"
    for k in range(10):
        b.set_current_key(k)
        v.update(-k)
    assert kind(b.snapshot(2)) == "delta"
    for k in range(1000):  # far more than 20 kB of changes
        b.set_current_key(k)
        v.update("x" * 50)
    assert kind(b.snapshot(3)) == "materialized"
    never = backends(changelog_bytes=0)
    never.get_state(VALUE)
    assert [kind(never.snapshot(c)) for c in (1, 2)] == ["materialized", "materialized"]
    with pytest.raises(ConfigError, match="changelog_bytes"):
        backends(changelog_bytes=-1)


def test_deltas_reaching_a_share_of_the_base_make_the_next_snapshot_materialize(backends, tmp_path):
    storage, sb, b, v = filled(backends, tmp_path, 5000, 100, lambda k: f"{k:08d}-{k * 7919 % 10007:05d}")
    kinds, shares = [], []
    for cid in range(1, 60):  # (until a delta chain reached the share and the next one began)
        share = b.uploads.delta_bytes / max(b.uploads.base_bytes, 1)  # what the writer reported so far
        for k in range(cid * 50 % 4750, cid * 50 % 4750 + 250):  # 5% of the keys per checkpoint
            b.set_current_key(k)
            v.update(hashlib.sha256(f"changed-{cid}-{k}".encode()).hexdigest())  # (compresses as badly as the base)
        snap = b.snapshot(cid)
        kinds.append(kind(snap))
        shares.append(share)
        write(storage, sb, cid, snap)
        if kinds.count("materialized") == 2 and kinds[-1] == "delta":
            break
    assert kinds[0] == "materialized"
    assert kinds[1:] == ["materialized" if x > rocksdb_backend.DELTA_RATIO else "delta" for x in shares[1:]]
    assert "materialized" in kinds[1:] and kinds[1] == "delta"


def test_restore_and_a_rescaled_restore_start_a_new_chain(backends, tmp_path):
    storage = CheckpointStorage(str(tmp_path / "chk"))
    sb = RocksDBStateBackend()
    old = [backends(KeyGroupRange.for_subtask(s, 2, MAXP), cache_size=16) for s in range(2)]
    for b in old:
        v = b.get_state(VALUE)
        for k in range(500):
            if key_group_for(k, MAXP) in b.key_group_range:
                b.set_current_key(k)
                v.update(k)
    subtasks = {s: {"keyed": sb.write_snapshot(storage, "job", 1, f"{UID}/{s}-keyed", b.snapshot(1)),
                    "committables": []} for s, b in enumerate(old)}
    md = metadata("job", 1, subtasks)
    storage.write_metadata("job", 1, md)
    for p in (1, 2):
        for r in restore(sb, md, storage.read_state, p, backends):
            assert isinstance(r.snapshot(2), RocksDBSnapshot)
            assert isinstance(r.snapshot(3), DeltaSnapshot)


def test_a_delta_of_array_values_with_deletions_restores(backends, tmp_path):
    """Arrays compare elementwise: the snapshot finds deleted entries by identity."""
    np = pytest.importorskip("numpy")
    storage, sb, b, v = checkpointed_values(backends, tmp_path, 50)
    for k in range(10):
        b.set_current_key(k)
        if k % 3 == 0:
            v.clear()
        else:
            v.update(np.arange(4) + k)
    md = write(storage, sb, 2, b.snapshot(2))
    [r] = restore(sb, md, storage.read_state, 1, backends)
    got = read_state(r)["v"]
    assert sorted(got) == [k for k in range(50) if k >= 10 or k % 3]
    assert all((got[k] == np.arange(4) + k).all() for k in range(10) if k % 3)


def _values(b, n: int) -> dict:
    s = b.get_state(VALUE)
    got = {}
    for k in range(n):
        b.set_current_key(k)
        got[k] = s.value()
    return got


def test_a_discarded_delta_hands_its_entries_to_the_next_delta(backends, tmp_path):
    """A delta taken but never written (its checkpoint aborted while a stateful-functions task
    waited for its feedback barriers): the next delta carries its changes, and the chain
    goes on instead of the next delta failing and its checkpoint declining."""
    storage, sb, b, v = checkpointed_values(backends, tmp_path, 500)
    for k in range(0, 100):
        b.set_current_key(k)
        v.update(-k)
    dropped = b.snapshot(2)
    assert isinstance(dropped, DeltaSnapshot)
    b.discard_snapshot(dropped)
    for k in range(50, 150):  # (overwrites half of the dropped delta's keys)
        b.set_current_key(k)
        v.update(1000 + k)
    snap = b.snapshot(3)
    assert isinstance(snap, DeltaSnapshot) and snap.seq == 1
    md = write(storage, sb, 3, snap)  # (raises if the chain were broken)
    [r] = restore(sb, md, storage.read_state, 1, backends)
    want = {k: (-k if k < 50 else 1000 + k if k < 150 else k) for k in range(500)}
    assert _values(r, 500) == want


def test_a_discarded_base_makes_the_next_snapshot_materialize(backends, tmp_path):
    storage, sb, b, v = filled(backends, tmp_path, 300)
    base = b.snapshot(1)
    assert isinstance(base, RocksDBSnapshot)
    b.discard_snapshot(base)
    b.set_current_key(7)
    v.update(70)
    snap = b.snapshot(2)
    assert isinstance(snap, RocksDBSnapshot)
    md = write(storage, sb, 2, snap)
    [r] = restore(sb, md, storage.read_state, 1, backends)
    assert _values(r, 300) == {k: (70 if k == 7 else k) for k in range(300)}


def test_a_discarded_delta_that_is_not_the_newest_breaks_the_chain_cleanly(backends, tmp_path):
    storage, sb, b, v = checkpointed_values(backends, tmp_path, 200)
    b.set_current_key(1)
    v.update(-1)
    older = b.snapshot(2)
    b.set_current_key(2)
    v.update(-2)
    newer = b.snapshot(3)
    b.discard_snapshot(older)
    with pytest.raises(CheckpointError, match="not written"):
        write(storage, sb, 3, newer)  # (it builds on the discarded delta: declined, as before)
    snap = b.snapshot(4)
    assert isinstance(snap, RocksDBSnapshot)  # the next one materializes
    md = write(storage, sb, 4, snap)
    [r] = restore(sb, md, storage.read_state, 1, backends)
    assert _values(r, 200) == {k: (-k if k in (1, 2) else k) for k in range(200)}
