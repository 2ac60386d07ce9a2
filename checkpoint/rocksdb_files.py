"""Files of the RocksDB state backend: local snapshots, incremental uploads and the snapshot
manifest (Flink's ``RocksIncrementalSnapshotStrategy`` plus a changelog of deltas, reduced
to what raystream needs; restoring is :mod:`checkpoint.rocksdb_restore`).

A **materialized** snapshot is a RocksDB checkpoint in a local directory: hard links of the
immutable SST files plus a few small files (``MANIFEST``, ``CURRENT``, ``OPTIONS``...).
Writing it to checkpoint storage (:func:`write_incremental`) uploads, as **shared files**,
only the SST files this backend has not uploaded before (an :class:`UploadRegistry`
remembers which; an upload is recorded only once it succeeded, and the snapshot writer runs
one snapshot at a time, so a later snapshot never points at a file an earlier one failed to
write). It is the *base* of a chain of **delta** snapshots (:class:`DeltaSnapshot`): the
entries changed since the previous snapshot, written by the snapshot writer as one
zstd-compressed Arrow IPC file (:func:`write_delta`) and uploaded as a shared file; a delta's
manifest references the base's SST files and every delta of the chain so far, and a restore
applies the deltas in order on top of the base (chains written before the Arrow format have
SST deltas, which a restore still ingests). A failed or missing write breaks the chain (its later deltas are refused), and
the backend materializes again. Every checkpoint writes one **manifest**: a
``"rocksdb-keyed-state"`` blob with the small files inline and a reference (storage path,
size, CRC-32, key-group range) per SST file. Its header lists the shared files too (field
``shared``), which is how a savepoint of it becomes self-contained
(:meth:`CheckpointStorage.write_savepoint` copies them).

Manifest payload::

    uint32 LE  header length H
    H bytes    JSON: checkpoint_id, max_parallelism, key_group_range, states {name: {kind, ttl_ms}},
                     timers [timer queue names], key_encoding (rocksdb_keys.KEY_ENCODING;
                     absent: 1, written before 2026-12-07),
                     sst [{name, size, kg: [first, last], path, crc32 | inline: [offset, length]}],
                     deltas [the same, applied in order on top of sst],
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
from itertools import chain
from types import ModuleType
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from raystream.engine.errors import CheckpointError, ConfigError
from raystream.engine.keygroups import KeyGroupRange

from .format import decode_blob_view, encode_blob_parts, read_blob_header
from .rocksdb_keys import (
    KEY_ENCODING,
    KEY_GROUP_BYTES,
)
from .snapshot import StateMeta
from .storage import IncrementalStateHandle, StateHandle

__all__ = [
    "ROCKSDB_STATE_KIND",
    "DeltaSnapshot",
    "LocalSnapshots",
    "RocksDBSnapshot",
    "SharedFileReader",
    "SnapshotSource",
    "SstFile",
    "UploadRegistry",
    "drop_tombstones",
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


#: bytes of RocksDB's info log (``LOG``) before it rolls over; with :data:`LOG_FILES_KEPT` old
#: ones kept, a database's info logs take at most about 3 MiB however long the job runs
LOG_FILE_BYTES = 1 << 20
LOG_FILES_KEPT = 2
#: bytes of RocksDB's ``MANIFEST`` (the log of changes to the set of SST files) before RocksDB
#: starts a new one holding only the live files: every checkpoint carries it inline, and
#: with RocksDB's default (1 GiB) it grew by ~190 bytes a materialization without end
MANIFEST_FILE_BYTES = 32 << 10


def open_db(rocksdict: ModuleType, path: str, *, write_buffer_bytes: int, block_cache_bytes: int,
            read_only: bool = False, log_file_bytes: int = LOG_FILE_BYTES) -> Any:
    """Open (or create) a raw-mode RocksDB at ``path`` with bounded memory and no WAL,
    bounded info logs (``log_file_bytes`` a file, :data:`LOG_FILES_KEPT` old files kept:
    every flush of a checkpoint logs a few KB, and the ``LOG`` file grew without end) and a
    bounded ``MANIFEST`` (:data:`MANIFEST_FILE_BYTES`)."""
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(write_buffer_bytes)
    opts.set_max_write_buffer_number(2)
    opts.set_target_file_size_base(max(write_buffer_bytes, 8 << 20))
    opts.set_max_open_files(512)
    opts.set_max_log_file_size(log_file_bytes)
    opts.set_keep_log_file_num(LOG_FILES_KEPT)
    opts.set_max_manifest_file_size(MANIFEST_FILE_BYTES)
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
    """What of a backend's state is already in checkpoint storage: the SST files of its
    database (local name -> uploaded :class:`SstFile`), and the delta chain of the last
    materialized snapshot (its generation, base files, uploaded deltas). Written by the
    snapshot writer's thread, read by the task thread and reset by restores, hence the lock.

    A failure of any write of generation ``g`` breaks that chain (:attr:`failed_generation`):
    its later deltas cannot be written, and the backend materializes again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, SstFile] = {}
        self.base_generation = -1  # generation whose base snapshot was written
        self.base_files: list[SstFile] = []
        self.base_bytes = 0
        self.base_entries = 0  # entries in the base's files, less its deletions and what they hide
        self.deltas: list[SstFile] = []  # uploaded deltas of base_generation, in order
        self.delta_count = 0  # deltas written on top of the base (empty ones have no file)
        self.delta_bytes = 0
        self.delta_deletions = 0  # deletions in those deltas
        self.failed_generation = -1

    def reset(self, files: dict[str, SstFile]) -> None:
        with self._lock:
            self._files = dict(files)
            self.base_generation, self.base_files, self.base_bytes, self.base_entries = -1, [], 0, 0
            self.deltas, self.delta_count, self.delta_bytes, self.delta_deletions = [], 0, 0, 0

    def lookup(self, name: str, size: int) -> SstFile | None:
        with self._lock:
            found = self._files.get(name)
        return found if found is not None and found.size == size else None

    def record(self, files: list[SstFile], generation: int | None = None, entries: int = 0) -> None:
        """After a successful upload: the snapshot's files are what the database holds
        (and, with ``generation``, the base of that delta chain, of about ``entries`` live
        entries)."""
        with self._lock:
            self._files = {f.name: f for f in files if f.path is not None}
            if generation is not None and generation > self.failed_generation:
                self.base_generation, self.base_files = generation, list(files)
                self.base_bytes, self.base_entries = sum(f.size for f in files), entries
                self.deltas, self.delta_count, self.delta_bytes, self.delta_deletions = [], 0, 0, 0

    def chain(self, generation: int, seq: int) -> tuple[list[SstFile], list[SstFile]] | None:
        """``(base files, deltas)`` of chain ``generation`` before its delta number ``seq``
        (1 = the first after the base); None if the chain is broken, its base was not
        written, or an earlier delta of it was not (a snapshot taken but never written)."""
        with self._lock:
            if (generation != self.base_generation or generation <= self.failed_generation
                    or self.delta_count != seq - 1):
                return None
            return list(self.base_files), list(self.deltas)

    def add_delta(self, generation: int, delta: SstFile | None, deletions: int = 0) -> None:
        """After a delta of ``generation`` was written (None: an empty delta, no file) that
        holds ``deletions`` deleted entries."""
        with self._lock:
            if generation == self.base_generation:
                self.delta_count += 1
                self.delta_deletions += deletions
                if delta is not None:
                    self.deltas.append(delta)
                    self.delta_bytes += delta.size

    def fail(self, generation: int) -> None:
        with self._lock:
            self.failed_generation = max(self.failed_generation, generation)

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)


@dataclass
class RocksDBSnapshot:
    """A local snapshot (a RocksDB checkpoint directory) of one backend: a *materialized*
    snapshot, the base of the delta snapshots that follow it (generation ``generation``).

    Immutable files: processing goes on while the snapshot writer uploads them. The
    directory is deleted once written (:func:`write_incremental`) unless it is the
    backend's current base (``pinned``: delta snapshots serialized self-contained read
    the base from it), or when the backend took :data:`_KEEP_LOCAL` newer snapshots, or
    closes.
    """

    checkpoint_id: int
    max_parallelism: int
    key_group_range: KeyGroupRange
    states: dict[str, StateMeta]
    directory: str
    sst: list[SstFile]
    private: list[str]
    registry: UploadRegistry | None = field(default=None, repr=False, compare=False)
    generation: int = 0
    timers: list[str] = field(default_factory=list)
    pinned: bool = field(default=False, repr=False, compare=False)
    written: bool = field(default=False, repr=False, compare=False)
    self_contained: bool = False  # upload every file, also those uploaded before
    users: int = field(default=0, repr=False, compare=False)  # deltas of this chain not written yet
    entries: int = field(default=0, compare=False)  # live entries in the SST files (RocksDB's estimate)
    key_types: frozenset[str] | None = None  # type names of the keys (snapshot.key_type_name); None: unknown
    #: how its keys are encoded (rocksdb_keys.KEY_ENCODING): 1, written before 2026-12-07, holds
    #: keys that Python holds equal apart (rocksdb_restore.rekey_legacy moves them)
    key_encoding: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("registry", "_lock")} | {"registry": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

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

    def done(self) -> None:
        """Written (or failed): the directory goes unless this is the current base or a
        delta of its chain still needs it."""
        with self._lock:
            self.written = True
        self._collect()

    def unpin(self) -> None:
        """No longer the current base: the directory goes once written and no delta of its
        chain needs it."""
        with self._lock:
            self.pinned = False
        self._collect()

    def acquire(self) -> None:
        """A delta of this chain was taken: its file will live in this directory."""
        with self._lock:
            self.users += 1

    def release(self) -> None:
        """A delta of this chain was written (or failed)."""
        with self._lock:
            self.users -= 1
        self._collect()

    def _collect(self) -> None:
        with self._lock:
            gone = self.written and not self.pinned and self.users <= 0
        if gone:
            self.discard()


class DeltaSnapshot:
    """A delta snapshot: the entries changed since the previous snapshot of the same chain
    (serialized values; None = deleted), on top of the materialized ``base`` and the
    deltas before it (``prev``). Taking one costs the serialization of the dirty cache
    entries on the task thread; the delta's file is written by the snapshot writer
    (:meth:`local_file`), off the task thread."""

    def __init__(self, checkpoint_id: int, base: RocksDBSnapshot, prev: DeltaSnapshot | None, seq: int,
                 states: dict[str, StateMeta], entries: list[dict[bytes, bytes | None]], timers: list[str],
                 registry: UploadRegistry | None, key_types: frozenset[str] | None = None) -> None:
        self.checkpoint_id = checkpoint_id
        self.key_types = key_types
        self.max_parallelism = base.max_parallelism
        self.key_group_range = base.key_group_range
        self.states = states
        self.timers = timers
        self.base = base
        self.prev = prev
        self.seq = seq
        self.generation = base.generation
        self.registry = registry
        self._entries: list[dict[bytes, bytes | None]] | None = entries  # in order: a later put of a key wins
        self.log_bytes = 0  # what the backend counted for these entries against its change log limit
        self.deletions = 0  # deleted entries in the delta's file (once written)
        self._file: SstFile | None = None
        self._lock = threading.Lock()
        base.acquire()

    def __getstate__(self) -> dict:
        raise CheckpointError("a RocksDB delta snapshot is local: write it with the state backend's write_snapshot "
                              "or serialize_snapshot")

    def local_file(self) -> SstFile | None:
        """The delta as a local file (written once; None: nothing changed)."""
        with self._lock:
            if self._file is None and self._entries and any(self._entries):
                name = f"delta-{self.checkpoint_id}-{uuid.uuid4().hex[:8]}{DELTA_SUFFIX}"
                path = os.path.join(self.base.directory, name)
                try:
                    self.deletions = sum(list(part.values()).count(None) for part in self._entries)
                    first, last = write_delta(path, self._entries)
                except Exception as exc:
                    raise CheckpointError(f"cannot write the RocksDB delta of checkpoint {self.checkpoint_id} "
                                          f"into {path!r}: {exc}") from exc
                self._file = SstFile(name, os.path.getsize(path), first, last)
            self._entries = None
            return self._file

    def take_entries(self) -> list[dict[bytes, bytes | None]] | None:
        """The entries of a delta that will never be written (None: already written or
        taken); the delta holds nothing afterwards."""
        with self._lock:
            entries, self._entries = (None, None) if self._file is not None else (self._entries, None)
            return entries

    def chain(self) -> list[DeltaSnapshot]:
        """The deltas of this chain up to this one, oldest first."""
        out: list[DeltaSnapshot] = []
        d: DeltaSnapshot | None = self
        while d is not None:
            out.append(d)
            d = d.prev
        return out[::-1]

    def read(self, name: str) -> bytes:
        return self.base.read(name)


#: the name suffix of a delta file (an Arrow IPC file); deltas of older chains were SST files
DELTA_SUFFIX = ".delta.arrow"
# (zstd: the keys and values of state compress ~9x; an SST file's block compression does as well, so a
# delta's bytes stay what they were, at a fraction of the time)
_DELTA_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd" if pa.Codec.is_available("zstd") else None)
_DELTA_SCHEMA = pa.schema([pa.field("key", pa.large_binary(), nullable=False), pa.field("value", pa.large_binary())])


def write_delta(path: str, entries: dict[bytes, bytes | None] | list[dict[bytes, bytes | None]]) -> tuple[int, int]:
    """Write ``entries`` (db key -> serialized value, None: deleted; or a list of such dicts
    in the order they were written: a key may recur, its last entry wins) as one Arrow IPC
    file of two columns, ``key`` and ``value`` (null: a deletion), in that order; returns
    the first and last key group in it. Two column conversions and one write, no per-entry
    Python call: the cost of a small checkpoint is the entries it changed, not a sorted SST
    file built entry by entry (a restore applies the entries in file order).
    """
    parts = [entries] if isinstance(entries, dict) else entries
    # (the system allocator: the first multi-MB arrays of mimalloc, Arrow's default pool, cost
    # ~0.1-0.2 s each in a process whose other memory is RocksDB's and Python's - the first
    # delta of bench_rocksdb: pa.array 92 + 165 ms -> 8 + 4 ms; later deltas equal)
    pool = pa.system_memory_pool()
    keys = pa.array(list(chain.from_iterable(parts)), pa.large_binary(), memory_pool=pool)
    values = pa.array(list(chain.from_iterable(part.values() for part in parts)), pa.large_binary(), memory_pool=pool)
    batch = pa.record_batch([keys, values], schema=_DELTA_SCHEMA)
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, _DELTA_SCHEMA, options=_DELTA_OPTIONS) as writer:
        writer.write_batch(batch)
    bounds = pc.min_max(keys)  # (in C: min() and max() over the Python list cost ~0.1 us per key each)
    return _kg_of(bounds["min"].as_py()), _kg_of(bounds["max"].as_py())


_warmed_up = False


def warm_up_delta_writer() -> None:
    """Write a small delta to memory, once per process. The first zstd-compressed Arrow IPC
    write of a process costs more than later ones (the codec and Arrow's thread pool start:
    a 100k-entry delta written first took ~207 ms cold vs ~48 ms after this, medians of 6
    fresh processes); the backend calls this with its first materialized checkpoint (which
    takes seconds anyway). (The larger one-time cost of the first delta, its first
    multi-MB arrays from mimalloc, is avoided in :func:`write_delta`.)"""
    global _warmed_up
    if _warmed_up:
        return
    _warmed_up = True
    keys = [i.to_bytes(4, "big") + bytes(12) + os.urandom(16) for i in range(2048)]
    batch = pa.record_batch([pa.array(keys, pa.large_binary()), pa.array(keys, pa.large_binary())], schema=_DELTA_SCHEMA)
    with pa.ipc.new_file(pa.BufferOutputStream(), _DELTA_SCHEMA, options=_DELTA_OPTIONS) as writer:
        writer.write_batch(batch)
    pc.min_max(batch.column(0))


def read_delta(data: bytes) -> Iterator[tuple[list[bytes], list[bytes | None]]]:
    """The ``(keys, values)`` of a delta file written by :func:`write_delta`, in chunks.

    Raises:
        CheckpointError: ``data`` is not such a file.
    """
    try:
        reader = pa.ipc.open_file(pa.py_buffer(data))
        if not reader.schema.equals(_DELTA_SCHEMA):
            raise ValueError(f"schema {reader.schema} is not a delta's")
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            for at in range(0, batch.num_rows, _APPLY_CHUNK):
                part = batch.slice(at, _APPLY_CHUNK)
                yield part.column(0).to_pylist(), part.column(1).to_pylist()
    except (pa.ArrowException, ValueError) as exc:
        raise CheckpointError(f"not a RocksDB delta file: {exc}") from exc


_APPLY_CHUNK = 65_536


class LocalSnapshots:
    """Takes RocksDB checkpoints into numbered directories and deletes old ones; the newest
    is pinned as the current base."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._taken: list[RocksDBSnapshot] = []
        self._lock = threading.Lock()

    def take(self, rocksdict: ModuleType, db: Any, checkpoint_id: int, max_parallelism: int,
             key_group_range: KeyGroupRange, states: dict[str, StateMeta], registry: UploadRegistry,
             generation: int = 0, timers: list[str] | None = None,
             key_types: frozenset[str] | None = None) -> RocksDBSnapshot:
        db.flush()
        drop_tombstones(db)
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"chk-{checkpoint_id}-{uuid.uuid4().hex[:8]}")
        try:
            rocksdict.Checkpoint(db).create_checkpoint(path)
        except Exception as exc:
            raise CheckpointError(f"RocksDB could not take a checkpoint into {path!r}: {exc}") from exc
        ranges, entries = {}, 0
        for live in db.live_files():
            ranges[live["name"].lstrip("/")] = (_kg_of(live.get("start_key")), _kg_of(live.get("end_key")))
            entries += int(live.get("num_entries") or 0) - 2 * int(live.get("num_deletions") or 0)
        sst, private = [], []
        for name in sorted(os.listdir(path)):
            if name.endswith(".sst"):
                first, last = ranges.get(name, (key_group_range.start, key_group_range.end))
                sst.append(SstFile(name, os.path.getsize(os.path.join(path, name)), first, last))
            else:
                private.append(name)
        snap = RocksDBSnapshot(checkpoint_id, max_parallelism, key_group_range, states, path, sst, private, registry,
                               generation, list(timers or []), pinned=True, entries=max(entries, 0),
                               key_types=key_types)
        with self._lock:
            if self._taken:
                self._taken[-1].unpin()
            self._taken.append(snap)
            old, self._taken = self._taken[:-_KEEP_LOCAL], self._taken[-_KEEP_LOCAL:]
        for s in old:
            s.discard()
        return snap


#: a materialization compacts the whole database first when deleted entries (a tombstone and,
#: at most, the older entry it hides) make up at least this share of its SST files' entries
DELETED_SHARE = 0.5


def drop_tombstones(db: Any) -> bool:
    """Compact the whole database (``db``, flushed) into one sorted run when deleted entries
    make up :data:`DELETED_SHARE` or more of its SST files' entries (each deletion counted
    twice: its tombstone and the entry it hides in an older file); True if it did.

    A deletion is a tombstone in an SST file, and the entry it deleted stays in an older
    file, until a compaction that includes the oldest sorted run drops both. Keys that come
    and go (count windows, a process function that clears its state, timers) leave both for
    every key that ever lived: flushes before materializations wrote them into new files
    that universal compaction, counting files and sizes, seldom merged with the oldest run,
    so a materialized snapshot (and a savepoint, a restore, local disk) grew with the keys
    ever deleted, not with the live ones (10,000 count windows done, none open: 0.77 MB;
    the heap backend's: 1.5 kB). After this compaction no deleted entry is left; the next
    one needs a quarter of the entries to be new deletions, so the rewriting costs at most
    about four entries per deletion written. A database without deletions is never
    compacted here (a delta checkpoint compacts nothing).
    """
    deletions = entries = 0
    for f in db.live_files():
        deletions += int(f.get("num_deletions") or 0)
        entries += int(f.get("num_entries") or 0)
    if deletions == 0 or 2 * deletions < DELETED_SHARE * entries:
        return False
    db.compact_range(None, None)
    return True


def _kg_of(key: bytes | None) -> int:
    if not key or len(key) < KEY_GROUP_BYTES:
        return 0
    return int.from_bytes(key[:KEY_GROUP_BYTES], "big")


# -- manifests ---------------------------------------------------------------------------


def _manifest(snap: RocksDBSnapshot | DeltaSnapshot, sst: list[dict], inline: list[bytes], private: list[list],
              deltas: list[dict]) -> list[bytes]:
    header = {
        "checkpoint_id": snap.checkpoint_id,
        "max_parallelism": snap.max_parallelism,
        "key_group_range": [snap.key_group_range.start, snap.key_group_range.end],
        "states": {n: {"kind": m.kind, "ttl_ms": m.ttl_ms} for n, m in snap.states.items()},
        "timers": list(snap.timers),
        "sst": sst,
        "private": private,
        "deltas": deltas,
        "key_encoding": KEY_ENCODING,
    }
    if snap.key_types is not None:
        header["key_types"] = sorted(snap.key_types)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return [_LEN.pack(len(head)), head, *inline]


def _base_of(snap: RocksDBSnapshot | DeltaSnapshot) -> RocksDBSnapshot:
    return snap.base if isinstance(snap, DeltaSnapshot) else snap


def _private_parts(snap: RocksDBSnapshot, offset: int) -> tuple[list[list], list[bytes], int]:
    entries, parts = [], []
    for name in snap.private:
        data = snap.read(name)
        entries.append([name, offset, len(data)])
        parts.append(data)
        offset += len(data)
    return entries, parts, offset


def _ref(f: SstFile) -> dict:
    return {"name": f.name, "size": f.size, "kg": [f.kg_first, f.kg_last], "path": f.path, "crc32": f.crc32}


def serialize_full(snap: RocksDBSnapshot | DeltaSnapshot) -> bytes:
    """A self-contained manifest: every file inline, the base's and, for a delta snapshot,
    every delta of its chain (for in-process use and tests; a checkpoint uploads
    incrementally with :func:`write_incremental`)."""
    base = _base_of(snap)
    sst, parts, offset = [], [], 0
    for f in base.sst:
        data = base.read(f.name)
        sst.append({"name": f.name, "size": len(data), "kg": [f.kg_first, f.kg_last], "inline": [offset, len(data)]})
        parts.append(data)
        offset += len(data)
    deltas: list[dict] = []
    if isinstance(snap, DeltaSnapshot):
        for d in snap.chain():
            df = d.local_file()
            if df is None:
                continue
            data = base.read(df.name)
            deltas.append({"name": df.name, "size": len(data), "kg": [df.kg_first, df.kg_last],
                           "inline": [offset, len(data)]})
            parts.append(data)
            offset += len(data)
    private, private_parts, _ = _private_parts(base, offset)
    return encode_blob_parts(ROCKSDB_STATE_KIND, _manifest(snap, sst, parts + private_parts, private, deltas))


def write_incremental(storage: Any, job_id: str, checkpoint_id: int, name: str,
                      snap: RocksDBSnapshot | DeltaSnapshot) -> IncrementalStateHandle:
    """Write ``snap`` to checkpoint storage; returns the manifest's handle (listing every
    shared file it references).

    A materialized snapshot uploads its SST files not uploaded before as shared files; a
    delta snapshot uploads its delta as one shared file and references its chain's
    base files and earlier deltas. Then the manifest. A failure breaks the snapshot's
    chain (:meth:`UploadRegistry.fail`): no later delta of it is written.
    """
    if isinstance(snap, DeltaSnapshot):
        return _write_delta(storage, job_id, checkpoint_id, name, snap)
    registry = snap.registry
    try:
        files: list[SstFile] = []
        for f in snap.sst:
            known = registry.lookup(f.name, f.size) if registry is not None and not snap.self_contained else None
            if known is None:
                data = snap.read(f.name)
                h = storage.write_shared(job_id, checkpoint_id, f"{uuid.uuid4().hex[:16]}-{f.name}", data)
                known = SstFile(f.name, f.size, f.kg_first, f.kg_last, h.path, h.crc32)
            files.append(SstFile(f.name, f.size, f.kg_first, f.kg_last, known.path, known.crc32))
        private, parts, _ = _private_parts(snap, 0)
        shared = [[f.path, f.size, f.crc32] for f in files]
        blob = encode_blob_parts(ROCKSDB_STATE_KIND, _manifest(snap, [_ref(f) for f in files], parts, private, []),
                                 shared=shared)
        handle = storage.write_state(job_id, checkpoint_id, name, blob)
        if registry is not None:
            registry.record(files, snap.generation, snap.entries)
        return IncrementalStateHandle(handle.path, handle.size, handle.crc32, tuple(f.handle() for f in files))
    except BaseException:
        if registry is not None:
            registry.fail(snap.generation)
        raise
    finally:
        snap.done()


def _write_delta(storage: Any, job_id: str, checkpoint_id: int, name: str, snap: DeltaSnapshot) -> IncrementalStateHandle:
    registry = snap.registry
    if registry is None:
        raise CheckpointError(f"the RocksDB delta snapshot of checkpoint {checkpoint_id} has no upload registry")
    try:
        chain = registry.chain(snap.generation, snap.seq)
        if chain is None:
            raise CheckpointError(
                f"the RocksDB delta snapshot of checkpoint {checkpoint_id} builds on a snapshot that was not "
                f"written (its base, checkpoint {snap.base.checkpoint_id}, or an earlier delta failed or was "
                "dropped); the next checkpoint materializes the state again"
            )
        base_files, deltas = chain
        f = snap.local_file()
        if f is not None:
            data = snap.base.read(f.name)
            h = storage.write_shared(job_id, checkpoint_id, f"{uuid.uuid4().hex[:16]}-{f.name}", data)
            f = SstFile(f.name, f.size, f.kg_first, f.kg_last, h.path, h.crc32)
            deltas = [*deltas, f]
        private, parts, _ = _private_parts(snap.base, 0)
        files = base_files + deltas
        shared = [[x.path, x.size, x.crc32] for x in files]
        blob = encode_blob_parts(ROCKSDB_STATE_KIND, _manifest(snap, [_ref(x) for x in base_files], parts, private,
                                                               [_ref(x) for x in deltas]), shared=shared)
        handle = storage.write_state(job_id, checkpoint_id, name, blob)
        registry.add_delta(snap.generation, f, snap.deletions)
        return IncrementalStateHandle(handle.path, handle.size, handle.crc32, tuple(x.handle() for x in files))
    except BaseException:
        registry.fail(snap.generation)
        raise
    finally:
        snap.base.release()


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
    deltas: list[SstFile] = field(default_factory=list)  # applied on top of the base files, in order
    timers: list[str] = field(default_factory=list)  # names of the timer queues in it
    key_types: frozenset[str] | None = None  # type names of the keys (snapshot.key_type_name); None: unknown
    #: how its keys are encoded (rocksdb_keys.KEY_ENCODING): 1, written before 2026-12-07, holds
    #: keys that Python holds equal apart (rocksdb_restore.rekey_legacy moves them)
    key_encoding: int = 1

    def read(self, name: str) -> bytes:
        where = self.private.get(name) or self.inline.get(name)
        if where is not None:
            return self.data[where[0] : where[0] + where[1]].tobytes()
        f = next((s for s in [*self.sst, *self.deltas] if s.name == name), None)
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
        sst: list[SstFile] = []
        deltas: list[SstFile] = []
        inline: dict[str, tuple[int, int]] = {}
        for files, entries in ((sst, h["sst"]), (deltas, h.get("deltas", []))):
            for e in entries:
                first, last = e["kg"]
                files.append(SstFile(str(e["name"]), int(e["size"]), int(first), int(last), e.get("path"),
                                     e.get("crc32")))
                if "inline" in e:
                    inline[str(e["name"])] = (body + int(e["inline"][0]), int(e["inline"][1]))
        private = {str(n): (body + int(o), int(ln)) for n, o, ln in h["private"]}
        for lo, ln in [*inline.values(), *private.values()]:
            if lo + ln > len(payload):
                raise ValueError(f"inline file at {lo}+{ln} is past the end")
        start, end = h["key_group_range"]
        states = {n: StateMeta(str(m["kind"]), None if m.get("ttl_ms") is None else int(m["ttl_ms"]))
                  for n, m in h["states"].items()}
        types = h.get("key_types")
        return SnapshotSource(int(h["checkpoint_id"]), int(h["max_parallelism"]), KeyGroupRange(int(start), int(end)),
                              states, sst, inline, private, payload, fetch, from_checkpoint, deltas,
                              [str(t) for t in h.get("timers", [])],
                              None if types is None else frozenset(str(t) for t in types),
                              int(h.get("key_encoding", 1)))
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        where = f" in {name!r}" if name else ""
        raise CheckpointError(f"RocksDB snapshot manifest{where} is malformed: {exc}") from exc


class SharedFileReader:
    """Reads the SST files of a manifest from where the restore found it: a checkpoint's
    shared files (by storage handle) or a savepoint's copies (``shared/<file name>``).
    Picklable: it travels to the restoring tasks with the restore plan.

    ``claimed``: the files are the restoring job's own checkpoint files (a restart), which its
    next checkpoints may reference instead of uploading them again. Files of a savepoint or of
    another job's retained checkpoint are not (Flink's NO_CLAIM restore): they live where the
    restoring job's checkpoint storage does not look and its user may delete them, so its
    first checkpoint uploads everything (default: claimed unless a savepoint)."""

    def __init__(self, read: Callable[[Any], bytes], savepoint: bool, claimed: bool | None = None) -> None:
        self.read = read
        self.savepoint = savepoint
        self.claimed = (not savepoint) if claimed is None else (claimed and not savepoint)

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
