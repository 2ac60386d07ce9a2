"""Files of the RocksDB state backend: local snapshots, incremental uploads, the snapshot
manifest, and restoring a database from them (Flink's ``RocksIncrementalSnapshotStrategy``
and ``RocksDBIncrementalRestoreOperation``, reduced to what raystream needs).

A snapshot is a RocksDB checkpoint in a local directory: hard links of the immutable SST
files plus a few small files (``MANIFEST``, ``CURRENT``, ``OPTIONS``...). Writing it to
checkpoint storage (:func:`write_incremental`) uploads, as **shared files**, only the SST
files this backend has not uploaded before (an :class:`UploadRegistry` remembers which;
an upload is recorded only once it succeeded, and the snapshot writer runs one snapshot at
a time, so a later snapshot never points at a file an earlier one failed to write), and
writes one **manifest** per checkpoint: a ``"rocksdb-keyed-state"`` blob with the small
files inline and a reference (storage path, size, CRC-32, key-group range) per SST file.
Its header lists the shared files too (field ``shared``), which is how a savepoint of it
becomes self-contained (:meth:`CheckpointStorage.write_savepoint` copies them).

Manifest payload::

    uint32 LE  header length H
    H bytes    JSON: checkpoint_id, max_parallelism, key_group_range, states {name: {kind, ttl_ms}},
                     sst [{name, size, kg: [first, last], path, crc32 | inline: [offset, length]}],
                     private [[name, offset, length]]
    ...        inline bytes (small files; SST files too in a self-contained snapshot)

Example:
    >>> from raystream.engine.keygroups import KeyGroupRange
    >>> from raystream.checkpoint import ValueStateDescriptor
    >>> from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend
    >>> b = RocksDBKeyedStateBackend(KeyGroupRange(0, 127), 128)
    >>> b.set_current_key("k"); b.get_state(ValueStateDescriptor("v")).update(1)
    >>> data = serialize_full(b.snapshot(1))
    >>> source = parse_manifest(data)
    >>> source.checkpoint_id, sorted(source.states)
    (1, ['v'])
    >>> b.close()
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import uuid
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

from raystream.engine.errors import CheckpointError, ConfigError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.serde import dumps, loads

from .format import decode_blob_view, encode_blob_parts, read_blob_header
from .rocksdb_keys import KEY_GROUP_BYTES, encode_key, key_group_prefix, key_part, state_id
from .snapshot import KeyedStateSnapshot, StateMeta
from .storage import IncrementalStateHandle, StateHandle

__all__ = [
    "ROCKSDB_STATE_KIND",
    "LocalSnapshots",
    "RocksDBSnapshot",
    "SharedFileReader",
    "SnapshotSource",
    "SstFile",
    "UploadRegistry",
    "is_rocksdb_manifest",
    "parse_manifest",
    "rocksdict_module",
    "serialize_full",
    "write_incremental",
]

ROCKSDB_STATE_KIND = "rocksdb-keyed-state"
_LEN = struct.Struct("<I")
#: local snapshots a backend keeps at most (older ones were written, or will never be)
_KEEP_LOCAL = 3


def rocksdict_module() -> ModuleType:
    """The ``rocksdict`` module, or a ConfigError saying how to install it."""
    try:
        import rocksdict
    except ImportError as exc:
        raise ConfigError(
            "the RocksDB state backend needs the rocksdict package: pip install raystream[rocksdb] "
            "(or pip install rocksdict)"
        ) from exc
    return rocksdict


def open_db(rocksdict: ModuleType, path: str, *, write_buffer_bytes: int, block_cache_bytes: int,
            read_only: bool = False) -> Any:
    """Open (or create) a raw-mode RocksDB at ``path`` with bounded memory and no WAL."""
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(write_buffer_bytes)
    opts.set_max_write_buffer_number(2)
    opts.set_target_file_size_base(max(write_buffer_bytes, 8 << 20))
    opts.set_max_open_files(512)
    opts.set_keep_log_file_num(2)
    opts.set_max_background_jobs(2)
    # Universal compaction: new data stays in small sorted runs that merge with each other,
    # and the big oldest run is rewritten only when the newer ones reach twice its size
    # (max_size_amplification_percent). Leveled compaction would rewrite the whole first
    # level at every flush of keys spread over the key space, and an incremental checkpoint
    # would upload it again.
    opts.set_compaction_style(rocksdict.DBCompactionStyle.universal())
    universal = rocksdict.UniversalCompactOptions()
    universal.size_ratio = 10
    universal.max_size_amplification_percent = 200
    opts.set_universal_compaction_options(universal)
    table = rocksdict.BlockBasedOptions()
    table.set_block_cache(rocksdict.Cache(block_cache_bytes))
    table.set_bloom_filter(10, False)
    table.set_cache_index_and_filter_blocks(True)
    opts.set_block_based_table_factory(table)
    if read_only:
        db = rocksdict.Rdict(path, opts, access_type=rocksdict.AccessType.read_only())
    else:
        db = rocksdict.Rdict(path, opts)
    writes = rocksdict.WriteOptions()
    try:
        writes.disable_wal = True  # (a property in rocksdict 0.3)
    except AttributeError:  # pragma: no cover - older rocksdict: a method
        writes.disable_wal(True)
    db.set_write_options(writes)
    return db


@dataclass(frozen=True)
class SstFile:
    """One SST file of a snapshot: its local name, size, key-group range and, once
    uploaded, where it is (``path``/``crc32``; None while only local)."""

    name: str
    size: int
    kg_first: int
    kg_last: int
    path: str | None = None
    crc32: int | None = None

    def handle(self) -> StateHandle:
        assert self.path is not None and self.crc32 is not None
        return StateHandle(self.path, self.size, self.crc32)


class UploadRegistry:
    """The SST files a backend's database holds that are already in checkpoint storage
    (local name -> uploaded :class:`SstFile`); used by the snapshot writer's thread and
    reset by restores, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, SstFile] = {}

    def reset(self, files: dict[str, SstFile]) -> None:
        with self._lock:
            self._files = dict(files)

    def lookup(self, name: str, size: int) -> SstFile | None:
        with self._lock:
            found = self._files.get(name)
        return found if found is not None and found.size == size else None

    def record(self, files: list[SstFile]) -> None:
        """After a successful upload: the snapshot's files are what the database holds."""
        with self._lock:
            self._files = {f.name: f for f in files if f.path is not None}

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)


@dataclass
class RocksDBSnapshot:
    """A local snapshot (a RocksDB checkpoint directory) of one backend.

    Immutable files: processing goes on while the snapshot writer uploads them; the
    directory is deleted once written (:func:`write_incremental`), or when the backend
    took :data:`_KEEP_LOCAL` newer snapshots, or closes.
    """

    checkpoint_id: int
    max_parallelism: int
    key_group_range: KeyGroupRange
    states: dict[str, StateMeta]
    directory: str
    sst: list[SstFile]
    private: list[str]
    registry: UploadRegistry | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return dict(self.__dict__, registry=None)

    def read(self, name: str) -> bytes:
        try:
            with open(os.path.join(self.directory, name), "rb") as f:
                return f.read()
        except OSError as exc:
            raise CheckpointError(
                f"the local RocksDB snapshot of checkpoint {self.checkpoint_id} is gone ({exc}); a "
                "snapshot is readable until it was written or three newer ones were taken"
            ) from exc

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class LocalSnapshots:
    """Takes RocksDB checkpoints into numbered directories and deletes old ones."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._taken: list[RocksDBSnapshot] = []
        self._lock = threading.Lock()

    def take(self, rocksdict: ModuleType, db: Any, checkpoint_id: int, max_parallelism: int,
             key_group_range: KeyGroupRange, states: dict[str, StateMeta], registry: UploadRegistry) -> RocksDBSnapshot:
        db.flush()
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"chk-{checkpoint_id}-{uuid.uuid4().hex[:8]}")
        try:
            rocksdict.Checkpoint(db).create_checkpoint(path)
        except Exception as exc:
            raise CheckpointError(f"RocksDB could not take a checkpoint into {path!r}: {exc}") from exc
        ranges = {}
        for live in db.live_files():
            ranges[live["name"].lstrip("/")] = (_kg_of(live.get("start_key")), _kg_of(live.get("end_key")))
        sst, private = [], []
        for name in sorted(os.listdir(path)):
            if name.endswith(".sst"):
                first, last = ranges.get(name, (key_group_range.start, key_group_range.end))
                sst.append(SstFile(name, os.path.getsize(os.path.join(path, name)), first, last))
            else:
                private.append(name)
        snap = RocksDBSnapshot(checkpoint_id, max_parallelism, key_group_range, states, path, sst, private, registry)
        with self._lock:
            self._taken.append(snap)
            old, self._taken = self._taken[:-_KEEP_LOCAL], self._taken[-_KEEP_LOCAL:]
        for s in old:
            s.discard()
        return snap


def _kg_of(key: bytes | None) -> int:
    if not key or len(key) < KEY_GROUP_BYTES:
        return 0
    return int.from_bytes(key[:KEY_GROUP_BYTES], "big")


# -- manifests ---------------------------------------------------------------------------


def _manifest(snap: RocksDBSnapshot, sst: list[dict], inline: list[bytes], private: list[list]) -> list[bytes]:
    header = {
        "checkpoint_id": snap.checkpoint_id,
        "max_parallelism": snap.max_parallelism,
        "key_group_range": [snap.key_group_range.start, snap.key_group_range.end],
        "states": {n: {"kind": m.kind, "ttl_ms": m.ttl_ms} for n, m in snap.states.items()},
        "sst": sst,
        "private": private,
    }
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return [_LEN.pack(len(head)), head, *inline]


def _private_parts(snap: RocksDBSnapshot, offset: int) -> tuple[list[list], list[bytes], int]:
    entries, parts = [], []
    for name in snap.private:
        data = snap.read(name)
        entries.append([name, offset, len(data)])
        parts.append(data)
        offset += len(data)
    return entries, parts, offset


def serialize_full(snap: RocksDBSnapshot) -> bytes:
    """A self-contained manifest: every file inline (for in-process use and tests; a
    checkpoint uploads incrementally with :func:`write_incremental`)."""
    sst, parts, offset = [], [], 0
    for f in snap.sst:
        data = snap.read(f.name)
        sst.append({"name": f.name, "size": len(data), "kg": [f.kg_first, f.kg_last], "inline": [offset, len(data)]})
        parts.append(data)
        offset += len(data)
    private, private_parts, _ = _private_parts(snap, offset)
    return encode_blob_parts(ROCKSDB_STATE_KIND, _manifest(snap, sst, parts + private_parts, private))


def write_incremental(storage: Any, job_id: str, checkpoint_id: int, name: str, snap: RocksDBSnapshot) -> IncrementalStateHandle:
    """Upload the SST files of ``snap`` not uploaded before as shared files, then the
    manifest; returns its handle (listing every shared file it references). The local
    snapshot is deleted afterwards, written or not."""
    try:
        files: list[SstFile] = []
        registry = snap.registry
        for f in snap.sst:
            known = registry.lookup(f.name, f.size) if registry is not None else None
            if known is None:
                data = snap.read(f.name)
                h = storage.write_shared(job_id, checkpoint_id, f"{uuid.uuid4().hex[:16]}-{f.name}", data)
                known = SstFile(f.name, f.size, f.kg_first, f.kg_last, h.path, h.crc32)
            files.append(SstFile(f.name, f.size, f.kg_first, f.kg_last, known.path, known.crc32))
        sst = [{"name": f.name, "size": f.size, "kg": [f.kg_first, f.kg_last], "path": f.path, "crc32": f.crc32}
               for f in files]
        private, parts, _ = _private_parts(snap, 0)
        shared = [[f.path, f.size, f.crc32] for f in files]
        blob = encode_blob_parts(ROCKSDB_STATE_KIND, _manifest(snap, sst, parts, private), shared=shared)
        handle = storage.write_state(job_id, checkpoint_id, name, blob)
        if registry is not None:
            registry.record(files)
        return IncrementalStateHandle(handle.path, handle.size, handle.crc32, tuple(f.handle() for f in files))
    finally:
        snap.discard()


@dataclass
class SnapshotSource:
    """A snapshot read back from a manifest: what a restore needs to rebuild the files.

    ``fetch(sst)`` returns the bytes of an uploaded SST file (None: every file is inline).
    """

    checkpoint_id: int
    max_parallelism: int
    key_group_range: KeyGroupRange
    states: dict[str, StateMeta]
    sst: list[SstFile]
    inline: dict[str, tuple[int, int]]
    private: dict[str, tuple[int, int]]
    data: memoryview = field(repr=False)
    fetch: Callable[[SstFile], bytes] | None = field(default=None, repr=False)
    from_checkpoint: bool = False  # its shared files may be referenced again (not a savepoint)

    def read(self, name: str) -> bytes:
        where = self.private.get(name) or self.inline.get(name)
        if where is not None:
            return self.data[where[0] : where[0] + where[1]].tobytes()
        f = next((s for s in self.sst if s.name == name), None)
        if f is None or self.fetch is None:
            raise CheckpointError(
                f"the RocksDB snapshot of checkpoint {self.checkpoint_id} references file {name!r} in checkpoint "
                "storage; restore it through the state backend's restore_plan, which knows where to read it"
            )
        data = self.fetch(f)
        if len(data) != f.size:
            raise CheckpointError(f"shared file {f.path!r} has {len(data)} bytes, its manifest says {f.size}")
        return data


def is_rocksdb_manifest(data: bytes | memoryview) -> bool:
    """True if ``data`` is a manifest of this backend (not a heap snapshot)."""
    try:
        return read_blob_header(data).kind == ROCKSDB_STATE_KIND
    except CheckpointError:
        return False


def parse_manifest(data: bytes | memoryview, fetch: Callable[[SstFile], bytes] | None = None,
                   from_checkpoint: bool = False, name: str | None = None) -> SnapshotSource:
    """Read a manifest written by :func:`serialize_full` or :func:`write_incremental`.

    Raises:
        CheckpointError: corrupt, truncated, of another kind, or malformed.
    """
    payload = decode_blob_view(data, ROCKSDB_STATE_KIND, name)
    try:
        (size,) = _LEN.unpack_from(payload, 0)
        body = _LEN.size + size
        h = json.loads(payload[_LEN.size : body].tobytes().decode("utf-8"))
        sst, inline = [], {}
        for e in h["sst"]:
            first, last = e["kg"]
            sst.append(SstFile(str(e["name"]), int(e["size"]), int(first), int(last), e.get("path"), e.get("crc32")))
            if "inline" in e:
                inline[str(e["name"])] = (body + int(e["inline"][0]), int(e["inline"][1]))
        private = {str(n): (body + int(o), int(ln)) for n, o, ln in h["private"]}
        for lo, ln in [*inline.values(), *private.values()]:
            if lo + ln > len(payload):
                raise ValueError(f"inline file at {lo}+{ln} is past the end")
        start, end = h["key_group_range"]
        states = {n: StateMeta(str(m["kind"]), None if m.get("ttl_ms") is None else int(m["ttl_ms"]))
                  for n, m in h["states"].items()}
        return SnapshotSource(int(h["checkpoint_id"]), int(h["max_parallelism"]), KeyGroupRange(int(start), int(end)),
                              states, sst, inline, private, payload, fetch, from_checkpoint)
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        where = f" in {name!r}" if name else ""
        raise CheckpointError(f"RocksDB snapshot manifest{where} is malformed: {exc}") from exc


class SharedFileReader:
    """Reads the SST files of a manifest from where the restore found it: a checkpoint's
    shared files (by storage handle) or a savepoint's copies (``shared/<file name>``).
    Picklable: it travels to the restoring tasks with the restore plan."""

    def __init__(self, read: Callable[[Any], bytes], savepoint: bool) -> None:
        self.read = read
        self.savepoint = savepoint

    def __call__(self, f: SstFile) -> bytes:
        if f.path is None:
            raise CheckpointError(f"SST file {f.name!r} has no storage path")
        if self.savepoint:
            return self.read("shared/" + f.path.rsplit("/", 1)[-1])
        return self.read(f.handle())


@dataclass
class RestoreInput:
    """A manifest plus the reader of its shared files: what the restore plan hands a
    task for one old subtask's RocksDB state (instead of the manifest bytes alone)."""

    manifest: bytes
    reader: SharedFileReader


# -- restoring ---------------------------------------------------------------------------


def materialize(snap: RocksDBSnapshot | SnapshotSource, directory: str) -> dict[str, SstFile]:
    """Write every file of ``snap`` into ``directory`` (an openable RocksDB directory);
    returns its SST files that are in checkpoint storage and may be referenced again."""
    os.makedirs(directory, exist_ok=True)
    reusable: dict[str, SstFile] = {}
    names = [f.name for f in snap.sst] + list(snap.private)
    for name in names:
        with open(os.path.join(directory, name), "wb") as out:
            out.write(snap.read(name))
    if isinstance(snap, SnapshotSource) and snap.from_checkpoint:
        reusable = {f.name: f for f in snap.sst if f.path is not None}
    return reusable


def copy_key_groups(rocksdict: ModuleType, source_dir: str, db: Any, key_groups: KeyGroupRange) -> None:
    """Copy the entries of ``key_groups`` from the database in ``source_dir`` into ``db``."""
    opts = rocksdict.Options(raw_mode=True)
    src = rocksdict.Rdict(source_dir, opts, access_type=rocksdict.AccessType.read_only())
    try:
        end = key_groups.end + 1
        upper = key_group_prefix(end) if end < 1 << 16 else b"\xff\xff\xff"
        it = src.iter()  # (no ReadOptions bounds: rocksdict encodes them as typed keys)
        it.seek(key_group_prefix(key_groups.start))
        batch, n = rocksdict.WriteBatch(raw_mode=True), 0
        while it.valid():
            key = it.key()
            if key >= upper:
                break
            batch.put(key, it.value())
            n += 1
            if n % 10_000 == 0:
                db.write(batch)
                batch = rocksdict.WriteBatch(raw_mode=True)
            it.next()
        db.write(batch)
    finally:
        src.close()


def import_heap_snapshot(rocksdict: ModuleType, db: Any, snap: KeyedStateSnapshot, key_groups: KeyGroupRange) -> None:
    """Load the key groups of a heap backend's snapshot (switching a job to RocksDB)."""
    for kg, blob in sorted(snap.key_groups.items()):
        if kg not in key_groups:
            continue
        batch = rocksdict.WriteBatch(raw_mode=True)
        prefix = key_group_prefix(kg)
        for name, entries in loads(blob, f"key group {kg}").items():
            meta = snap.states.get(name)
            if meta is None:
                raise CheckpointError(f"key group {kg} holds state {name!r} with no metadata")
            sid = state_id(name)
            for key, entry in entries.items():
                base = prefix + sid + key_part(encode_key(key))
                if meta.kind == "map":
                    for map_key, value in entry.items():
                        batch.put(base + encode_key(map_key), dumps(value, f"state {name!r}"))
                else:
                    batch.put(base, dumps(entry, f"state {name!r}"))
        db.write(batch)

