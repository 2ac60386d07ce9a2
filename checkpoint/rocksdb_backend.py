"""The RocksDB keyed state backend: state on local disk in an embedded RocksDB
(``rocksdict``), a bounded read cache for hot keys, incremental snapshots (Flink's
``EmbeddedRocksDBStateBackend``).

Layout: one RocksDB instance per keyed operator subtask, in a directory of its own under
the backend's local directory; entries as :mod:`checkpoint.rocksdb_keys` lays them out
(key group first, big-endian, so a key-group range is one contiguous key range and a
rescaled restore copies ranges). Values are serialized with :mod:`engine.serde`. The
write-ahead log is off: durability comes from checkpoints, as in Flink.

**Read cache.** The last ``cache_size`` entries used (values, lists, map entries, and
"no entry") stay deserialized in an LRU dict; writes go to the cache and are written to
RocksDB when their entry is evicted (in write batches) or before a snapshot, a scan of
keys, or a TTL sweep. A warm cache makes a state access about as cheap as on the heap
backend; memory is ``cache_size`` entries plus RocksDB's own bounded buffers
(``write_buffer_bytes``, ``block_cache_bytes``), never proportional to the state.

**Snapshots** (:meth:`RocksDBKeyedStateBackend.snapshot`, on the task thread) are mostly
*deltas*: the dirty cache entries are serialized and, with the change log (every entry
written to RocksDB since the previous snapshot, by evictions, timers and TTL cleanup),
handed to the snapshot writer, which writes them as one small zstd-compressed Arrow file
(two columns, key and value; no per-entry call) and uploads it on top of the last *materialized* snapshot. A materialization writes the dirty entries,
flushes the memtable and takes a RocksDB checkpoint (hard links of the immutable SST files)
into a local directory; the writer uploads only the SST files not uploaded before
(:mod:`checkpoint.rocksdb_files`). It happens for the first snapshot, after a failed write
or a restore, when the change log outgrew ``changelog_bytes``, and when the chain's deltas
reach :data:`DELTA_RATIO` of the base's bytes, :data:`MAX_DELTAS` deltas, or deleted more
than :data:`DELETED_RATIO` of the base's entries. The base's
local directory stays until the next materialization (its hard links may keep SST files
that compaction replaced: local disk up to twice the database).

**TTL** works as on the heap backend (expired entries are never visible; incremental
cleanup on access; ``cleanup(budget)`` sweeps in the background); an expired entry may
still be in a checkpoint until a sweep removes it, but is never returned after a restore.

Example:
    >>> from raystream.engine.keygroups import KeyGroupRange
    >>> from raystream.checkpoint import ValueStateDescriptor
    >>> b = RocksDBKeyedStateBackend(KeyGroupRange(0, 127), 128)
    >>> count = b.get_state(ValueStateDescriptor("count", default=0))
    >>> for word in ["a", "b", "a"]:
    ...     b.set_current_key(word); count.update(count.value() + 1)
    >>> b2 = RocksDBKeyedStateBackend(KeyGroupRange(0, 127), 128)
    >>> b2.restore([b.snapshot(checkpoint_id=1)])
    >>> c2 = b2.get_state(ValueStateDescriptor("count", default=0))
    >>> b2.set_current_key("a"); c2.value()
    2
    >>> b.close(); b2.close()
"""

from __future__ import annotations

import math
import operator
import os
import pickle
import shutil
import tempfile
import uuid
from collections import OrderedDict
from itertools import repeat
from typing import Any, Iterator, TypeVar, cast

from raystream.engine.errors import CheckpointError, ConfigError, StateError
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.operator import Clock, SystemClock
from raystream.engine.serde import dumps, loads

from .backend import KeyedStateBackend
from .descriptors import (
    StateDescriptor,
)
from .rocksdb_files import (
    DeltaSnapshot,
    LocalSnapshots,
    RocksDBSnapshot,
    SnapshotSource,
    UploadRegistry,
    open_db,
    parse_manifest,
    rocksdict_module,
    serialize_full,
    warm_up_delta_writer,
)
from .rocksdb_keys import (
    KEY_ENCODING,
    KEY_GROUP_BYTES,
    STATE_ID_BYTES,
    decode_key,
    encode_key,
    key_group_prefix,
    key_part,
    split_db_key,
    state_id,
)
from .rocksdb_restore import (
    copy_key_groups,
    import_heap_snapshot,
    materialize,
    refile_big_numbers,
    rekey_legacy,
)
from .rocksdb_state import ABSENT, ROCKSDB_STATE_CLASSES
from .rocksdb_timers import RocksDBTimerQueue
from .snapshot import KeyedStateSnapshot, KeyTypeCheck, KeyTypeChecked, StateMeta, key_class_name
from .state import KeyedState, no_current_key_error

__all__ = ["RocksDBKeyedStateBackend", "DEFAULT_CACHE_SIZE", "DEFAULT_CHANGELOG_BYTES", "DELETED_RATIO", "DELTA_RATIO",
           "MAX_DELTAS"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
IN = TypeVar("IN")
ACC = TypeVar("ACC")
OUT = TypeVar("OUT")

_NO_KEY: Any = object()
_MISS: Any = object()
#: entries the read cache holds by default
DEFAULT_CACHE_SIZE = 65_536
#: str/int keys whose key group and encoding the backend remembers (cleared when full)
_KEY_CACHE = 65_536
#: evicted writes collected before one write batch goes to RocksDB
_BATCH = 1024
_pickle_dumps = pickle.dumps  # (the default protocol; loads reads every protocol)
#: bytes of changes since the last snapshot the change log holds by default (beyond it, the
#: log is dropped and the next snapshot materializes)
DEFAULT_CHANGELOG_BYTES = 64 << 20
#: a snapshot materializes once the deltas written on top of the last base reach this
#: share of the base's bytes ...
DELTA_RATIO = 0.25
#: ... or this many deltas (a restore applies every delta of the chain), or when they deleted
#: more entries than this share of the base's (deletions compress to a few bytes each: a chain
#: whose deltas deleted most of the base kept referencing the base's files until it ended)
MAX_DELTAS = 32
DELETED_RATIO = 0.5
#: bytes counted per change-log entry beyond its key and value (the dict's own memory)
_LOG_ENTRY = 100
_LIST, _MAP = "list", "map"


def _upper(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string starting with ``prefix``."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return b"\xff" * (len(prefix) + 1)
    p[-1] += 1
    return bytes(p)


class RocksDBKeyedStateBackend(KeyTypeChecked, KeyedStateBackend):
    """Keyed state of one operator subtask in an embedded RocksDB (see the module docstring).

    ``off_heap`` is True: keyed operators keep their reduce values and timers here too
    (:meth:`create_timer_queue`, :mod:`checkpoint.rocksdb_timers`).

    Args:
        key_group_range: the key groups this subtask owns.
        max_parallelism: the job's number of key groups.
        clock: processing-time source for TTL (default: wall clock).
        local_dir: where the RocksDB directories live (default: the temp dir's
            ``raystream-rocksdb``); must be a local disk.
        cache_size: entries of the read cache (>= 1).
        write_buffer_bytes: RocksDB memtable size (two at most are kept).
        block_cache_bytes: RocksDB block cache size.

    Raises:
        ConfigError: ``rocksdict`` is not installed, or a size is invalid.
    """

    off_heap = True

    def __init__(
        self,
        key_group_range: KeyGroupRange,
        max_parallelism: int,
        clock: Clock | None = None,
        *,
        local_dir: str | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        write_buffer_bytes: int = 16 << 20,
        block_cache_bytes: int = 32 << 20,
        changelog_bytes: int = DEFAULT_CHANGELOG_BYTES,
    ) -> None:
        if not isinstance(max_parallelism, int) or max_parallelism <= 0:
            raise StateError(f"max_parallelism must be a positive int, got {max_parallelism!r}")
        if not (0 <= key_group_range.start and key_group_range.end < max_parallelism):
            raise StateError(
                f"key group range {key_group_range!r} is outside 0..{max_parallelism - 1} "
                f"(max_parallelism {max_parallelism!r})"
            )
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ConfigError(f"cache_size must be an int >= 1 (entries), got {cache_size!r}")
        if isinstance(changelog_bytes, bool) or not isinstance(changelog_bytes, int) or changelog_bytes < 0:
            raise ConfigError(f"changelog_bytes must be an int >= 0 (0: every snapshot materializes), "
                              f"got {changelog_bytes!r}")
        for what, size in (("write_buffer_bytes", write_buffer_bytes), ("block_cache_bytes", block_cache_bytes)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1 << 16:
                raise ConfigError(f"{what} must be an int >= 65536, got {size!r}")
        self._rocksdict = rocksdict_module()
        self._range = key_group_range
        self._start, self._end = key_group_range.start, key_group_range.end
        self._max_par = max_parallelism
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._buffers = (write_buffer_bytes, block_cache_bytes)
        self._home = _instance_dir(local_dir)
        self._db_dir = os.path.join(self._home, "db")
        self._generation = 0
        self._db = self._open()
        self._capacity = cache_size
        self._cache: OrderedDict[bytes, Any] = OrderedDict()
        self._dirty: dict[bytes, Any] = {}  # written cache entries (as in the cache) not yet serialized
        # (_pending and _unwritten are replaced, never changed, once a delta snapshot holds them)
        self._pending: dict[bytes, bytes | None] = {}  # evicted dirty entries, not yet written
        self._unwritten: dict[bytes, bytes | None] = {}  # older than _pending, logged by a delta snapshot
        self._key: Any = _NO_KEY
        self._key_cache: dict[Any, tuple[int, bytes, bytes]] = {}  # str/int key -> (group, group bytes, key part)
        # the types of the keys made current (a superset of those of the keys with state: a
        # snapshot's key_types), the restored snapshots' key types (None: unknown, then the
        # snapshots record none), and the check of the first keys after a restore
        self._seen_types: set[type] = set()
        self._restored_types: frozenset[str] | None = frozenset()
        self._key_check: KeyTypeCheck | None = None
        self._kg = -1
        self._kg2 = b""
        self._kpart: bytes | None = None
        self._last_sid: bytes | None = None  # the state id of the last db key made, and that key
        self._last_key = b""
        self._states: dict[str, KeyedState] = {}
        self._restored: dict[str, StateMeta] = {}
        self._ids: dict[bytes, str] = {}
        self._cursors: dict[str, _TtlCursor] = {}
        self._queues: dict[str, RocksDBTimerQueue] = {}
        self._sweep = 0
        self._removed = 0
        self.uploads = UploadRegistry()
        self._local = LocalSnapshots(os.path.join(self._home, "snapshots"))
        # the change log: every db entry written since the last snapshot (serialized value,
        # None = deleted); None while the next snapshot must materialize anyway
        self._log: dict[bytes, bytes | None] | None = None
        self._log_bytes = 0
        self._log_limit = changelog_bytes
        self._chain_gen = 0  # generation of the current delta chain (its materialized base)
        self._base: RocksDBSnapshot | None = None
        self._last_delta: DeltaSnapshot | None = None
        # entries of a delta that was taken but never written (discard_snapshot): they go
        # first into the next delta, and count against the change log's limit
        self._carried: list[dict[bytes, bytes | None]] = []
        self._closed = False

    def _open(self) -> _LoggedDB:
        write_buffer, block_cache = self._buffers
        raw = open_db(self._rocksdict, self._db_dir, write_buffer_bytes=write_buffer, block_cache_bytes=block_cache)
        return _LoggedDB(raw, self)

    def _drop_log(self) -> None:
        """Stop logging changes: the next snapshot materializes."""
        self._log = None
        self._log_bytes = 0
        self._carried = []

    # -- keys --------------------------------------------------------------------------

    @property
    def cache_size(self) -> int:
        """Entries the read cache holds at most."""
        return self._capacity

    def set_current_key(self, key: Any) -> None:
        if self._key_check is not None:
            self._check_key_type(key)
        t = type(key)
        cacheable = t is str or t is int  # (exact types: True and 1 are equal, and would share an entry)
        if cacheable:
            hit = self._key_cache.get(key)
            if hit is not None:  # key group and encoding known: no hashing, no encoding
                if key is not self._key:
                    self._key = key
                    self._kg, self._kg2, self._kpart = hit
                    self._last_sid = None
                return
        kg = key_group_for(key, self._max_par)
        if not self._start <= kg <= self._end:
            raise StateError(
                f"key {key!r} belongs to key group {kg}, outside this backend's range "
                f"{self._start}..{self._end} (max_parallelism {self._max_par}); the record was "
                "routed to the wrong subtask, or max_parallelism differs between stages"
            )
        self._set(key, kg)
        if cacheable:
            cache = self._key_cache
            if len(cache) >= _KEY_CACHE:
                cache.clear()
            kpart = self._kpart = key_part(encode_key(key))
            cache[key] = (kg, self._kg2, kpart)

    def clear_current_key(self) -> None:
        self._key, self._kg, self._kg2, self._kpart, self._last_sid = _NO_KEY, -1, b"", None, None

    def _key_types(self) -> frozenset[str] | None:
        """What a snapshot records as its keys' types (None: unknown, restored from a snapshot
        that recorded none)."""
        if self._restored_types is None:
            return None
        return self._restored_types | {key_class_name(t) for t in self._seen_types}

    def set_current_key_with_group(self, key: Any, key_group: int) -> None:
        if self._key_check is not None:
            self._check_key_type(key)
        if not self._start <= key_group <= self._end:
            raise StateError(
                f"key {key!r} with key group {key_group!r} is outside this backend's range "
                f"{self._start}..{self._end}"
            )
        self._set(key, key_group)

    def _set(self, key: Any, kg: int) -> None:
        if type(key) not in self._seen_types:
            self._seen_types.add(type(key))
        if kg != self._kg or key is not self._key:
            self._key = key
            if kg != self._kg:
                self._kg = kg
                self._kg2 = kg.to_bytes(KEY_GROUP_BYTES, "big")
            self._kpart = None
            self._last_sid = None


    def _db_key(self, sid: bytes) -> bytes:
        """The db key of the current key in state ``sid`` (map state: the prefix of its entries)."""
        if sid is self._last_sid:  # (the same state again: its value() then update())
            return self._last_key
        kpart = self._kpart
        if kpart is None:
            if self._kg < 0:
                raise no_current_key_error(self._ids.get(sid, "?"))
            kpart = self._kpart = key_part(encode_key(self._key))
        k = self._last_key = self._kg2 + sid + kpart
        self._last_sid = sid
        return k

    # -- the read cache ----------------------------------------------------------------

    def _get(self, k: bytes) -> Any:
        cache = self._cache
        entry = cache.get(k, _MISS)
        if entry is not _MISS:
            cache.move_to_end(k)
            return entry
        raw = self._pending.get(k, _MISS) if self._pending else _MISS
        if raw is _MISS:
            raw = self._unwritten.get(k, _MISS) if self._unwritten else _MISS
            if raw is _MISS:
                raw = self._db.get(k)
        entry = ABSENT if raw is None else loads(raw, "a RocksDB state entry")
        cache[k] = entry
        if len(cache) > self._capacity:
            self._evict()
        return entry

    def _put(self, k: bytes, entry: Any) -> None:
        cache = self._cache
        if k in cache:
            cache[k] = entry
            if k is not self._last_key:  # (the last key made was just read: at the end already)
                cache.move_to_end(k)
        else:
            cache[k] = entry
            if len(cache) > self._capacity:
                self._dirty[k] = entry
                self._evict()
                return
        self._dirty[k] = entry

    def _evict(self) -> None:
        cache, dirty, pending = self._cache, self._dirty, self._pending
        while len(cache) > self._capacity:
            k, entry = cache.popitem(last=False)
            if dirty.pop(k, _MISS) is not _MISS:
                pending[k] = None if entry is ABSENT else self._dump(k, entry)
        if len(pending) >= _BATCH:
            self._write_pending()

    def _dump(self, k: bytes, entry: Any) -> bytes:
        try:
            return dumps(entry, "a state value")
        except CheckpointError as exc:
            name = self._ids.get(k[KEY_GROUP_BYTES : KEY_GROUP_BYTES + STATE_ID_BYTES], "?")
            raise CheckpointError(f"cannot serialize a value of state {name!r}: {exc}") from exc

    def _write_pending(self) -> None:
        """Write the pending entries (and those a delta snapshot logged already) to RocksDB."""
        if not self._pending and not self._unwritten:
            return
        self._log_pending()
        batch = self._rocksdict.WriteBatch(raw_mode=True)
        for entries in (self._unwritten, self._pending):  # (the later put of a key wins)
            for k, raw in entries.items():
                if raw is None:
                    batch.delete(k)
                else:
                    batch.put(k, raw)
        self._db.raw.write(batch)
        self._pending, self._unwritten = {}, {}

    def _log_pending(self, merge: bool = True) -> None:
        """Add the pending writes to the change log (``merge=False``: count them only; the
        caller hands the pending dict to a delta snapshot after the log)."""
        log = self._log
        if log is None or not self._pending:
            return
        pending = self._pending
        if merge:
            log.update(pending)
        size = self._log_bytes + len(pending) * _LOG_ENTRY + sum(map(len, pending))
        size += sum(map(len, filter(None, pending.values())))
        self._log_bytes = size
        if size > self._log_limit:
            self._drop_log()

    def _flush(self) -> None:
        """Write every dirty cache entry to RocksDB (they stay cached, clean)."""
        self._serialize_dirty()
        self._write_pending()

    def _serialize_dirty(self) -> None:
        """Move every dirty cache entry, serialized, to the pending writes (it stays cached, clean)."""
        dirty = self._dirty
        if not dirty:
            return
        keys, entries = list(dirty), list(dirty.values())  # (in insertion order: no lookups)
        try:  # (serde.dumps' first attempt, mapped over all entries: no Python-level loop)
            blobs: list[bytes | None] = list(map(_pickle_dumps, entries))
        except Exception:
            blobs = [None if e is ABSENT else self._dump(k, e) for k, e in zip(keys, entries)]
        pending = self._pending
        pending.update(zip(keys, blobs))
        if any(map(operator.is_, entries, repeat(ABSENT))):  # (deleted entries; by identity: values may be arrays)
            for k, e in zip(keys, entries):
                if e is ABSENT:
                    pending[k] = None
        dirty.clear()

    def cache_stats(self) -> dict[str, int]:
        """``{"entries", "dirty", "capacity"}`` of the read cache, for metrics and tests."""
        return {"entries": len(self._cache), "dirty": len(self._dirty), "capacity": self._capacity}

    # -- scans -------------------------------------------------------------------------

    def _iter_range(self, lower: bytes, upper: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        # (no ReadOptions bounds: rocksdict encodes them as typed keys even in raw mode)
        it = self._db.iter()
        it.seek(lower if start is None else start)
        while it.valid():
            k = it.key()
            if k >= upper:
                return
            yield k, it.value()
            it.next()

    def _scan_map_raw(self, prefix: bytes) -> list[tuple[Any, Any, bytes]]:
        """``(map key, entry, db key)`` of every entry under ``prefix`` (dirty ones written first)."""
        self._flush()
        n = len(prefix)
        return [(decode_key(k[n:]), loads(raw, "a RocksDB map entry"), k) for k, raw in self._iter_range(prefix, _upper(prefix))]

    def _scan_map(self, prefix: bytes, first_only: bool = False) -> list[tuple[Any, Any]]:
        self._flush()
        n = len(prefix)
        out = []
        for k, raw in self._iter_range(prefix, _upper(prefix)):
            out.append((decode_key(k[n:]), loads(raw, "a RocksDB map entry")))
            if first_only:
                break
        return out

    def _delete_prefix(self, prefix: bytes) -> None:
        self._flush()
        for k, _ in list(self._iter_range(prefix, _upper(prefix))):
            self._put(k, ABSENT)

    # -- states ------------------------------------------------------------------------

    def _new_state(self, descriptor: StateDescriptor) -> KeyedState:
        name = descriptor.name
        if name in self._queues:
            raise StateError(f"state {name!r}: a timer queue has that name")
        cls = self._state_class(ROCKSDB_STATE_CLASSES, descriptor)
        self._register_id(name)
        restored = self._restored.get(name)
        meta = _meta_of(descriptor)
        if restored is not None:
            self._check_restored_kind(name, restored.kind, descriptor)
            self._convert(name, restored, meta)
            del self._restored[name]
        state = cast(Any, cls)(self, descriptor)
        self._cursors.pop(name, None)
        if meta.ttl_ms is not None:
            self._cursors[name] = _TtlCursor(self, name, meta.kind, meta.ttl_ms)
        return state

    def create_timer_queue(self, name: str) -> RocksDBTimerQueue:
        """A queue of timers stored in this database under ``name`` (one per operator and
        time domain; part of the keyed snapshot, re-split by key group on rescaling).

        Raises:
            StateError: a state or another queue uses this name.
        """
        self._check_open()
        if name in self._queues:
            raise StateError(f"timer queue {name!r} exists already")
        if name in self._states or name in self._restored:
            raise StateError(f"timer queue {name!r}: a keyed state has that name")
        queue = self._queues[name] = RocksDBTimerQueue(self, self._register_id(name))
        return queue

    def _register_id(self, name: str) -> bytes:
        sid = state_id(name)
        other = self._ids.setdefault(sid, name)
        if other != name:
            raise StateError(f"states {other!r} and {name!r} have the same RocksDB state id; rename one")
        return sid

    def _metas(self) -> dict[str, StateMeta]:
        metas = dict(self._restored)
        for name, state in self._states.items():
            metas[name] = _meta_of(state.descriptor)
        return metas

    def _convert(self, name: str, old: StateMeta, new: StateMeta) -> None:
        """Add or strip TTL timestamps of a restored state whose TTL was switched on or off."""
        if (old.ttl_ms is None) == (new.ttl_ms is None):
            return
        now = self._clock.now_ms()
        self._flush()
        for k, raw in list(self._iter_state(state_id(name))):
            entry = loads(raw, f"state {name!r}")
            if old.ttl_ms is not None:
                entry = _strip(old.kind, entry, now - old.ttl_ms)
            else:
                entry = [(x, now) for x in entry] if old.kind == _LIST else (entry, now)
            self._put(k, ABSENT if entry is ABSENT else entry)
        self._flush()

    def _iter_state(self, sid: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """``(db key, raw value)`` of every entry of state ``sid``, in key-group order,
        from ``start`` (a db key) on."""
        first = self._start if start is None else int.from_bytes(start[:KEY_GROUP_BYTES], "big")
        for kg in range(first, self._end + 1):
            lower = key_group_prefix(kg) + sid
            yield from self._iter_range(lower, _upper(lower), start if start is not None and kg == first else None)

    def state_names(self) -> list[str]:
        """Names of all states: registered ones and restored ones not yet asked for."""
        return sorted(set(self._states) | set(self._restored))

    def keys(self, state_name: str) -> Iterator[Any]:
        """Iterate over the keys with a live value in ``state_name`` when called (key-group
        order): a snapshot, as Flink's ``applyToAllKeys``, so the caller may set the current
        key and change state while iterating; keys it adds are not visited, keys it clears
        are visited still (their state reads empty).

        The call writes the cached changes to RocksDB and opens one RocksDB iterator, which
        reads the database as of its creation (an implicit RocksDB snapshot); it is released
        when the iteration ends (or the iterator is closed or dropped). Memory stays bounded
        by RocksDB's blocks, however many keys there are.

        Raises:
            StateError: no state of that name exists.
        """
        meta = self._metas().get(state_name)
        if meta is None:
            raise StateError(f"unknown state {state_name!r}; states are {self.state_names()!r}")
        self._flush()
        limit = self._clock.now_ms() - meta.ttl_ms if meta.ttl_ms is not None else None
        return self._iter_keys(state_id(state_name), meta, self._db.iter(), limit)

    def _iter_keys(self, sid: bytes, meta: StateMeta, it: Any, limit: int | None) -> Iterator[Any]:
        try:
            for kg in range(self._start, self._end + 1):
                lower = key_group_prefix(kg) + sid
                upper = _upper(lower)
                last: bytes | None = None
                it.seek(lower)
                while it.valid():
                    k = it.key()
                    if k >= upper:
                        break
                    _, kbytes, _ = split_db_key(k)
                    if kbytes != last and (
                            limit is None
                            or _strip(meta.kind, loads(it.value(), "a state entry"), limit, meta.kind == _MAP) is not ABSENT):
                        last = kbytes
                        yield decode_key(kbytes)
                    it.next()
        finally:
            del it  # (releases the iterator's view of the database)

    def num_keys(self) -> int:
        """Number of distinct keys with a live value in any state."""
        seen: set = set()
        for name in self.state_names():
            seen.update(encode_key(k) for k in self.keys(name))
        return len(seen)

    def num_entries(self, state_name: str | None = None) -> int:
        """Entries stored for ``state_name`` (all states if None), expired TTL entries not
        removed yet included (one per key; one per map key for map state)."""
        if state_name is None:
            return sum(self.num_entries(n) for n in self.state_names())
        if state_name not in self._metas():
            raise StateError(f"unknown state {state_name!r}; states are {self.state_names()!r}")
        self._flush()
        return sum(1 for _ in self._iter_state(state_id(state_name)))

    # -- TTL cleanup -------------------------------------------------------------------

    def _ttl_step(self, name: str, budget: int, now: int, skip: bytes | None) -> int:
        cursor = self._cursors.get(name)
        return cursor.step(budget, now, skip) if cursor is not None else 0

    def cleanup(self, budget: int = 1000) -> int:
        """Background TTL cleanup: check up to ``budget`` entries of the TTL states and
        remove the expired ones, continuing where the previous call stopped; returns the
        work done (less than ``budget``: every TTL state finished a pass)."""
        cursors = self._cursors
        if not cursors or budget <= 0:
            return 0
        now = self._clock.now_ms()
        order = list(cursors.values())
        done = 0
        for _ in range(len(order)):
            done += order[self._sweep % len(order)].step(budget - done, now, None)
            if done >= budget:
                break
            self._sweep += 1
        return done

    def ttl_stats(self) -> dict[str, int]:
        """``{"states": TTL states, "removed": entries (or elements) removed by cleanup}``."""
        return {"states": len(self._cursors), "removed": self._removed}

    # -- snapshot / restore ------------------------------------------------------------

    def snapshot(self, checkpoint_id: int, *, full: bool = False) -> RocksDBSnapshot | DeltaSnapshot:  # type: ignore[override]  # (files, not key-group blobs)
        """A consistent snapshot, taken on the task thread; the snapshot writer uploads it
        (:meth:`RocksDBStateBackend.write_snapshot`).

        Usually a *delta*: the dirty cache entries are serialized and, with every entry
        written to RocksDB since the previous snapshot (the change log), become the delta
        the writer turns into one small Arrow file. No memtable flush, no RocksDB checkpoint.
        It *materializes* instead (dirty entries written, the memtable flushed, a RocksDB
        checkpoint of hard links taken; the writer uploads the SST files not uploaded
        before) when there is no base yet, the chain broke (a write failed, a restore), the
        change log overflowed ``changelog_bytes``, or the chain's deltas reached
        :data:`DELTA_RATIO` of the base's bytes, :data:`MAX_DELTAS` deltas, or deleted
        more than :data:`DELETED_RATIO` of the base's entries.

        ``full=True`` materializes, and the writer uploads every SST file even if it was
        uploaded before: a self-contained checkpoint (what a non-incremental checkpoint of
        this state costs; the chain continues from it).

        Raises:
            CheckpointError: a value cannot be serialized (the message names the state).
        """
        self._check_open()
        if full or self._must_materialize():
            self._flush()
            self._chain_gen += 1
            snap = self._local.take(self._rocksdict, self._db.raw, checkpoint_id, self._max_par, self._range,
                                    self._metas(), self.uploads, self._chain_gen, sorted(self._queues),
                                    self._key_types())
            snap.self_contained = full
            self._base, self._last_delta = snap, None
            self._log, self._log_bytes = ({} if self._log_limit > 0 else None), 0
            self._carried = []
            if self._log is not None:
                warm_up_delta_writer()  # (once per process: deltas follow)
            return snap
        assert self._base is not None and self._log is not None
        self._serialize_dirty()  # now: values may be mutated later; written to RocksDB later
        self._log_pending(merge=False)  # (the delta takes the pending dict itself, after the log: no copy)
        log = self._log
        if log is None:  # (the dirty entries overflowed it)
            return self.snapshot(checkpoint_id)
        pending = self._pending
        if not self._unwritten:  # (usually: an eviction batch wrote them since)
            self._unwritten = pending
        elif pending:
            self._unwritten = {**self._unwritten, **pending}
        self._pending = {}
        seq = 1 if self._last_delta is None else self._last_delta.seq + 1
        delta = DeltaSnapshot(checkpoint_id, self._base, self._last_delta, seq, self._metas(),
                              [*self._carried, log, pending], sorted(self._queues), self.uploads, self._key_types())
        delta.log_bytes = self._log_bytes
        self._last_delta = delta
        self._log, self._log_bytes, self._carried = {}, 0, []
        return delta

    def discard_snapshot(self, snap: Any) -> None:
        """A snapshot this backend took will never be written: its checkpoint was aborted
        before the task handed it to the snapshot writer (a stateful-functions task waits
        for its feedback barriers first). The newest delta hands its entries on to the next
        delta, so the chain goes on (they count against ``changelog_bytes`` again); any
        other snapshot makes the next one materialize. Task thread."""
        if isinstance(snap, DeltaSnapshot):
            entries = snap.take_entries()
            snap.base.release()  # (taken: it will not be written)
            if snap is self._last_delta and entries is not None and self._log is not None:
                self._last_delta = snap.prev
                self._carried = [*entries, *self._carried]
                self._log_bytes += snap.log_bytes
                if self._log_bytes > self._log_limit:
                    self._drop_log()
                return
        elif isinstance(snap, RocksDBSnapshot):
            snap.done()  # (its directory may go once it is no longer the base)
        self._drop_log()

    def _must_materialize(self) -> bool:
        if self._log is None or self._base is None or self._last_delta is not None and self._last_delta.seq >= MAX_DELTAS:
            return True
        up = self.uploads
        if up.failed_generation >= self._chain_gen:
            return True
        return up.base_generation == self._chain_gen and (
            up.delta_bytes > DELTA_RATIO * max(up.base_bytes, 1) or up.delta_deletions > DELETED_RATIO * up.base_entries)

    def restore(self, snapshots: list[Any]) -> None:
        """Replace all state with the key groups of ``snapshots`` that this backend owns.

        ``snapshots``: what :meth:`RocksDBStateBackend.deserialize_snapshot` returns, a
        :class:`RocksDBSnapshot`, or heap :class:`~checkpoint.snapshot.KeyedStateSnapshot`
        objects (switching a job from the heap backend). One snapshot covering exactly
        this backend's range is opened as the database itself; otherwise the key groups
        in range are copied from each.

        Raises:
            CheckpointError: max_parallelism differs, a key group is in two snapshots, or
                two snapshots disagree on a state's kind.
        """
        self._check_open()
        sources: list[Any] = []
        metas: dict[str, StateMeta] = {}
        owner: dict[int, int] = {}
        for i, snap in enumerate(snapshots):
            if isinstance(snap, (RocksDBSnapshot, DeltaSnapshot)):  # a local snapshot (in process)
                snap = parse_manifest(serialize_full(snap))
            if not isinstance(snap, (SnapshotSource, KeyedStateSnapshot)):
                raise CheckpointError(f"the RocksDB backend cannot restore {snap!r}")
            if snap.max_parallelism != self._max_par:
                raise CheckpointError(
                    f"cannot restore keyed state written with max_parallelism {snap.max_parallelism!r} "
                    f"into a job with max_parallelism {self._max_par!r}; key groups cannot be re-split"
                )
            for name, meta in snap.states.items():
                prev = metas.setdefault(name, meta)
                if prev.kind != meta.kind or (prev.ttl_ms is None) != (meta.ttl_ms is None):
                    raise CheckpointError(f"snapshots disagree on state {name!r}: {prev!r} vs {meta!r}")
            lo, hi = max(snap.key_group_range.start, self._start), min(snap.key_group_range.end, self._end)
            groups = snap.key_groups.keys() if isinstance(snap, KeyedStateSnapshot) else range(lo, hi + 1)
            for kg in groups:
                if kg in self._range:
                    if kg in owner:
                        raise CheckpointError(
                            f"key group {kg} is in two snapshots (#{owner[kg]} and #{i}); restore each "
                            "old subtask's snapshot exactly once"
                        )
                    owner[kg] = i
            if lo <= hi:
                sources.append(snap)
        self._reset_db()
        types: frozenset[str] | None = frozenset()
        for snap in sources:
            types = None if types is None or snap.key_types is None else types | snap.key_types
        self._restored_types = types
        self._key_check = KeyTypeCheck(types) if types else None
        write_buffer, block_cache = self._buffers
        options = {"write_buffer_bytes": write_buffer, "block_cache_bytes": block_cache}
        exact = [s for s in sources if not isinstance(s, KeyedStateSnapshot) and s.key_group_range == self._range]
        if len(sources) == 1 and exact:
            self._db.close()
            shutil.rmtree(self._db_dir, ignore_errors=True)
            self.uploads.reset(materialize(exact[0], self._db_dir, self._rocksdict, **options))
            self._db = self._open()
        else:
            for n, snap in enumerate(sources):
                if isinstance(snap, KeyedStateSnapshot):
                    import_heap_snapshot(self._rocksdict, self._db.raw, snap, self._range)
                else:
                    temp = os.path.join(self._home, f"restore-{n}")
                    materialize(snap, temp, self._rocksdict, **options)
                    copy_key_groups(self._rocksdict, temp, self._db.raw, self._range)
                    shutil.rmtree(temp, ignore_errors=True)
        for snap in sources:  # keys that Python holds equal were apart before 2026-12-07: one key now
            if isinstance(snap, SnapshotSource) and snap.key_encoding < 2:
                rekey_legacy(self._rocksdict, self._db.raw, snap, self._range)
            if isinstance(snap, SnapshotSource) and snap.key_encoding < KEY_ENCODING:  # (2.0**70: 2**70's group)
                refile_big_numbers(self._rocksdict, self._db.raw, snap, self._range, self._max_par)
        for name in metas:
            self._register_id(name)
        self._restored = {}
        self._cursors = {n: c for n, c in self._cursors.items() if n in self._states}
        for cursor in self._cursors.values():
            cursor.reset()
        for name, meta in metas.items():
            state = self._states.get(name)
            if state is None:
                self._restored[name] = meta
                if meta.ttl_ms is not None:  # swept in the background until get_state asks for it
                    self._cursors[name] = _TtlCursor(self, name, meta.kind, meta.ttl_ms)
            elif state.descriptor.kind != meta.kind:
                raise StateError(
                    f"state {name!r} is registered as {state.descriptor.kind!r} state but the "
                    f"snapshot holds {meta.kind!r} state"
                )
            else:
                self._convert(name, meta, _meta_of(state.descriptor))

    def _reset_db(self) -> None:
        """Drop all state: a fresh, empty database (registered state objects stay valid)."""
        self._cache.clear()
        self._dirty.clear()
        self._pending, self._unwritten = {}, {}
        self.clear_current_key()
        self._db.close()
        self._generation += 1
        shutil.rmtree(self._db_dir, ignore_errors=True)
        self._db = self._open()
        self.uploads.reset({})
        self._drop_log()  # the next snapshot materializes the restored state
        self._base, self._last_delta = None, None

    def _check_open(self) -> None:
        if self._closed:
            raise StateError("the RocksDB state backend was closed")

    def close(self) -> None:
        """Close RocksDB and delete this backend's local directory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._cache.clear()
        self._dirty.clear()
        self._pending, self._unwritten = {}, {}
        self._log, self._base, self._last_delta = None, None, None
        try:
            self._db.close()
        finally:
            shutil.rmtree(self._home, ignore_errors=True)

    @property
    def local_directory(self) -> str:
        """This backend's local directory (RocksDB files and local snapshots)."""
        return self._home

    def __repr__(self) -> str:
        return (
            f"RocksDBKeyedStateBackend(key_groups={self._start}..{self._end}, max_parallelism={self._max_par}, "
            f"states={self.state_names()!r}, cache_size={self._capacity})"
        )


def _meta_of(descriptor: StateDescriptor) -> StateMeta:
    ttl = getattr(descriptor, "ttl", None)
    return StateMeta(descriptor.kind, None if ttl is None else ttl.ttl_ms)


def _strip(kind: str, entry: Any, limit: int, map_entry: bool = False) -> Any:
    """``entry`` without what expired (timestamps <= ``limit``), unwrapped to plain
    values; ABSENT when nothing is left. ``map_entry``: one map entry ``(value, ts)``."""
    if kind == _LIST and not map_entry:
        kept = [x[0] for x in entry if x[1] > limit]
        return kept if kept else ABSENT
    return entry[0] if entry[1] > limit else ABSENT


class _TtlCursor:
    """Walks one TTL state's entries in RocksDB in passes, removing expired ones (the
    RocksDB counterpart of :class:`checkpoint.ttl.TtlCleanupCursor`); a cached entry is
    judged by its cached (newest) value. After a full pass it knows the oldest timestamp it
    saw, and until that one expires a step costs nothing."""

    def __init__(self, backend: RocksDBKeyedStateBackend, name: str, kind: str, ttl_ms: int) -> None:
        self.backend = backend
        self.sid = state_id(name)
        self.kind = kind
        self.ttl_ms = ttl_ms
        self.reset()

    def reset(self) -> None:
        self.position: bytes | None = None
        self.oldest = math.inf  # oldest timestamp seen in the current pass
        self.quiet_until = -math.inf  # nothing can expire before this time

    def step(self, budget: int, now: int, skip: bytes | None) -> int:
        if budget <= 0 or now < self.quiet_until:
            return 0
        b = self.backend
        if self.position is None:
            b._flush()  # a pass sees everything written before it started
        else:
            b._write_pending()
        limit = now - self.ttl_ms
        work = 0
        start = self.position
        cache, db = b._cache, b._db
        for k, raw in b._iter_state(self.sid, start):
            if k == start:
                continue
            if work >= budget:
                return work
            work += 1
            self.position = k
            if k == skip:  # the access itself handles it
                continue
            entry = cache.get(k, _MISS)
            if entry is ABSENT:
                continue
            if entry is _MISS:
                entry = loads(raw, "a RocksDB TTL entry")
            if self.kind == _LIST:
                kept = [x for x in entry if x[1] > limit]
                if len(kept) != len(entry):
                    b._removed += len(entry) - len(kept)
                    self._drop_cached(k)
                    db.put(k, dumps(kept)) if kept else db.delete(k)
                if kept:
                    self.oldest = min(self.oldest, min(x[1] for x in kept))
            elif entry[1] <= limit:
                b._removed += 1
                self._drop_cached(k)
                db.delete(k)
            else:
                self.oldest = min(self.oldest, entry[1])
        self.quiet_until = self.oldest + self.ttl_ms  # a full pass ended
        self.position, self.oldest = None, math.inf
        return work

    def _drop_cached(self, k: bytes) -> None:
        b = self.backend
        b._cache.pop(k, None)
        b._dirty.pop(k, None)


class _LoggedDB:
    """The backend's RocksDB with writes that also go to the backend's change log
    (``put``/``delete``, as timer queues and TTL cleanup use them; the backend logs its own
    write batches). Everything else is the database's own method."""

    __slots__ = ("raw", "_backend", "get", "iter", "write", "flush", "close", "live_files")

    def __init__(self, raw: Any, backend: RocksDBKeyedStateBackend) -> None:
        self.raw = raw
        self._backend = backend
        self.get, self.iter, self.write = raw.get, raw.iter, raw.write
        self.flush, self.close, self.live_files = raw.flush, raw.close, raw.live_files

    def put(self, k: bytes, v: bytes) -> None:
        self.raw.put(k, v)
        b = self._backend
        log = b._log
        if log is not None:
            log[k] = v
            b._log_bytes += len(k) + len(v) + _LOG_ENTRY
            if b._log_bytes > b._log_limit:
                b._drop_log()

    def delete(self, k: bytes) -> None:
        self.raw.delete(k)
        b = self._backend
        log = b._log
        if log is not None:
            log[k] = None
            b._log_bytes += len(k) + _LOG_ENTRY
            if b._log_bytes > b._log_limit:
                b._drop_log()


def _instance_dir(local_dir: str | None) -> str:
    """A new directory for one backend instance under ``local_dir``; directories that
    processes no longer alive left behind (a killed task) are deleted first."""
    base = local_dir or os.path.join(tempfile.gettempdir(), "raystream-rocksdb")
    os.makedirs(base, exist_ok=True)
    for name in os.listdir(base):
        pid = name.split("-", 1)[0]
        if pid.startswith("pid") and pid[3:].isdigit() and not _alive(int(pid[3:])):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    path = os.path.join(base, f"pid{os.getpid()}-{uuid.uuid4().hex[:12]}")
    os.makedirs(path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
