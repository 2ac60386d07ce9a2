"""The state backends (the engine's :class:`engine.state_backend.StateBackend` contract):
the heap backend (keyed state in Python dicts per key group; the default, registered when
``checkpoint`` is imported) and the RocksDB backend (keyed state in an embedded RocksDB,
incremental checkpoints). Both write checkpoints to a
:class:`~checkpoint.storage.CheckpointStorage` through the barrier-aligned coordinator.

Example:
    >>> from raystream.engine.keygroups import KeyGroupRange
    >>> from raystream.engine.operator import OperatorContext
    >>> ctx = OperatorContext("sum", "sum", "sum (1/1)", 0, 1, 128, KeyGroupRange(0, 127))
    >>> type(HeapStateBackend().create_keyed_backend(ctx)).__name__
    'HeapKeyedStateBackend'
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Callable

from raystream.engine.errors import ConfigError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext

from .coordinator import CheckpointConfig, CheckpointCoordinator, Ref, build_restore_plan
from .heap import HeapKeyedStateBackend
from .rocksdb_backend import DEFAULT_CACHE_SIZE, DEFAULT_CHANGELOG_BYTES, RocksDBKeyedStateBackend
from .rocksdb_files import (
    DeltaSnapshot,
    RestoreInput,
    RocksDBSnapshot,
    SharedFileReader,
    SnapshotSource,
    is_rocksdb_manifest,
    parse_manifest,
    rocksdict_module,
    serialize_full,
    write_incremental,
)
from .rocksdb_restore import export_heap_snapshot
from .snapshot import KeyedStateSnapshot, deserialize_keyed_snapshot, serialize_keyed_snapshot
from .storage import CheckpointStorage, Location, StateHandle, resolve_storage

__all__ = ["HeapStateBackend", "RocksDBStateBackend", "STATE_BACKENDS", "state_backend_by_name"]


class HeapStateBackend:
    """Keyed state on the heap (Python dicts per key group); see the module docstring."""

    def create_keyed_backend(self, ctx: OperatorContext) -> HeapKeyedStateBackend:
        return HeapKeyedStateBackend(ctx.key_group_range, ctx.max_parallelism, ctx.clock)

    def serialize_snapshot(self, snapshot: KeyedStateSnapshot) -> bytes:
        return serialize_keyed_snapshot(snapshot)

    def deserialize_snapshot(self, data: bytes | RestoreInput, key_group_range: KeyGroupRange) -> KeyedStateSnapshot:
        """A snapshot to restore from: the heap format, or a RocksDB backend's manifest
        whose key groups in ``key_group_range`` are converted to it (switching a job back
        from RocksDB: its shared files are read, the database rebuilt in a temporary
        directory and read out; needs rocksdict).

        Raises:
            CheckpointError: the RocksDB snapshot holds operator state the heap operators
                do not read back (windows, joins, final field aggregates).
        """
        if isinstance(data, RestoreInput):
            source = parse_manifest(data.manifest, data.reader, from_checkpoint=data.reader.claimed)
        elif is_rocksdb_manifest(data):
            source = parse_manifest(data)
        else:
            return deserialize_keyed_snapshot(data, key_group_range=key_group_range)
        work = tempfile.mkdtemp(prefix="raystream-rocksdb-to-heap-")
        try:
            return export_heap_snapshot(rocksdict_module(), source, key_group_range, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def write_snapshot(self, storage: CheckpointStorage, job_id: str, checkpoint_id: int, name: str,
                       snapshot: KeyedStateSnapshot) -> StateHandle:
        return storage.write_state(job_id, checkpoint_id, name, self.serialize_snapshot(snapshot))

    def create_coordinator(self, config: CheckpointConfig, job_id: str,
                           tasks: list[tuple[int, int]]) -> CheckpointCoordinator:
        return CheckpointCoordinator(config, job_id, tasks)

    def restore_plan(self, metadata: dict, read: Callable[[Ref], bytes], vertices: list[dict], max_parallelism: int,
                     allow_non_restored_state: bool = True, claim: bool = True) -> tuple[dict, dict[str, list]]:
        """:func:`~checkpoint.coordinator.build_restore_plan`; a RocksDB job's manifests
        come with the reader of their shared files (``claim``: see the StateBackend contract)."""
        plan, committables = build_restore_plan(metadata, read, vertices, max_parallelism, allow_non_restored_state)
        return _with_shared_readers(plan, metadata, read, claim), committables

    def open_storage(self, location: CheckpointStorage | Location) -> CheckpointStorage:
        return resolve_storage(location)

    def __repr__(self) -> str:
        return "HeapStateBackend()"


def _with_shared_readers(plan: dict, metadata: dict, read: Callable[[Ref], bytes], claim: bool = True) -> dict:
    """``plan`` with every RocksDB manifest paired with the reader of its shared files (a
    checkpoint's, or a savepoint's copies); ``claim``: the restoring job may reference a
    checkpoint's files in its own checkpoints (its own checkpoint, restored on a restart)."""
    savepoint = any(isinstance(e.get("keyed"), str) for op in metadata["operators"].values()
                    for e in op["subtasks"].values())
    reader = SharedFileReader(read, savepoint, claimed=claim)
    wrapped: dict[int, object] = {}
    for task_plan in plan.values():
        for entry in task_plan.values():
            entry["keyed"] = [
                wrapped.setdefault(id(b), RestoreInput(b, reader)) if is_rocksdb_manifest(b) else b
                for b in entry["keyed"]
            ]
    return plan


class RocksDBStateBackend:
    """Keyed state in an embedded RocksDB per keyed operator subtask, with incremental
    checkpoints (Flink's ``EmbeddedRocksDBStateBackend``): state may be far larger than
    memory, and a checkpoint uploads only the SST files created since the previous one.
    Select it per job with ``env.set_state_backend("rocksdb")`` (or an instance, to
    configure it); needs ``pip install raystream[rocksdb]``. See docs/state.md.

    Args:
        local_dir: local directory for the databases (default: the temp dir).
        cache_size: entries of each keyed backend's read cache.
        write_buffer_bytes: RocksDB memtable size per keyed backend.
        block_cache_bytes: RocksDB block cache size per keyed backend.
        changelog_bytes: memory for the changes between two checkpoints that a delta
            checkpoint uploads (0: every checkpoint materializes: flush + new SST files).

    Raises:
        ConfigError: rocksdict is not installed, or a setting is invalid.

    Example:
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> from raystream.engine.operator import OperatorContext
        >>> ctx = OperatorContext("sum", "sum", "sum (1/1)", 0, 1, 128, KeyGroupRange(0, 127))
        >>> keyed = RocksDBStateBackend(cache_size=1000).create_keyed_backend(ctx)
        >>> type(keyed).__name__, keyed.cache_size
        ('RocksDBKeyedStateBackend', 1000)
        >>> keyed.close()
    """

    def __init__(self, local_dir: str | None = None, *, cache_size: int = DEFAULT_CACHE_SIZE,
                 write_buffer_bytes: int = 16 << 20, block_cache_bytes: int = 32 << 20,
                 changelog_bytes: int = DEFAULT_CHANGELOG_BYTES) -> None:
        rocksdict_module()  # fail at configuration time, not in a task
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ConfigError(f"cache_size must be an int >= 1 (entries), got {cache_size!r}")
        self.local_dir = local_dir
        self.cache_size = cache_size
        self.write_buffer_bytes = write_buffer_bytes
        self.block_cache_bytes = block_cache_bytes
        self.changelog_bytes = changelog_bytes

    def create_keyed_backend(self, ctx: OperatorContext) -> RocksDBKeyedStateBackend:
        return RocksDBKeyedStateBackend(
            ctx.key_group_range, ctx.max_parallelism, ctx.clock, local_dir=self.local_dir, cache_size=self.cache_size,
            write_buffer_bytes=self.write_buffer_bytes, block_cache_bytes=self.block_cache_bytes,
            changelog_bytes=self.changelog_bytes,
        )

    def serialize_snapshot(self, snapshot: RocksDBSnapshot | DeltaSnapshot | KeyedStateSnapshot) -> bytes:
        """Self-contained bytes of a snapshot (every file inline): for in-process use;
        checkpoints go through :meth:`write_snapshot`."""
        if isinstance(snapshot, KeyedStateSnapshot):
            return serialize_keyed_snapshot(snapshot)
        return serialize_full(snapshot)

    def deserialize_snapshot(self, data: bytes | RestoreInput,
                             key_group_range: KeyGroupRange) -> SnapshotSource | KeyedStateSnapshot:
        """A snapshot to restore from: a manifest (with the reader of its shared files when
        it comes from :meth:`restore_plan`), or a heap backend's snapshot bytes."""
        if isinstance(data, RestoreInput):
            return parse_manifest(data.manifest, data.reader, from_checkpoint=data.reader.claimed)
        if is_rocksdb_manifest(data):
            return parse_manifest(data)
        return deserialize_keyed_snapshot(data, key_group_range=key_group_range)

    def write_snapshot(self, storage: CheckpointStorage, job_id: str, checkpoint_id: int, name: str,
                       snapshot: RocksDBSnapshot | DeltaSnapshot | KeyedStateSnapshot) -> StateHandle:
        """Upload the SST files not uploaded before (or the delta), then the manifest (incremental)."""
        if isinstance(snapshot, KeyedStateSnapshot):
            return storage.write_state(job_id, checkpoint_id, name, serialize_keyed_snapshot(snapshot))
        return write_incremental(storage, job_id, checkpoint_id, name, snapshot)

    def create_coordinator(self, config: CheckpointConfig, job_id: str,
                           tasks: list[tuple[int, int]]) -> CheckpointCoordinator:
        return CheckpointCoordinator(config, job_id, tasks)

    def restore_plan(self, metadata: dict, read: Callable[[Ref], bytes], vertices: list[dict], max_parallelism: int,
                     allow_non_restored_state: bool = True, claim: bool = True) -> tuple[dict, dict[str, list]]:
        """:func:`~checkpoint.coordinator.build_restore_plan`, with every RocksDB manifest
        paired with the reader of its shared files (a checkpoint's, or a savepoint's copies).
        ``claim=False`` (a savepoint, or a retained checkpoint of another job): the restored
        files are not referenced by the new job's checkpoints, whose first one is self-contained."""
        plan, committables = build_restore_plan(metadata, read, vertices, max_parallelism, allow_non_restored_state)
        return _with_shared_readers(plan, metadata, read, claim), committables

    def open_storage(self, location: CheckpointStorage | Location) -> CheckpointStorage:
        return resolve_storage(location)

    def __repr__(self) -> str:
        return f"RocksDBStateBackend(local_dir={self.local_dir!r}, cache_size={self.cache_size!r})"


#: state backends by the name ``env.set_state_backend`` accepts
STATE_BACKENDS: dict[str, Callable[[], HeapStateBackend | RocksDBStateBackend]] = {
    "heap": HeapStateBackend, "rocksdb": RocksDBStateBackend,
}


def state_backend_by_name(name: str) -> HeapStateBackend | RocksDBStateBackend:
    """A new state backend for ``name`` (``"heap"`` or ``"rocksdb"``).

    Raises:
        ConfigError: an unknown name, or rocksdict is missing for ``"rocksdb"``.

    Example:
        >>> state_backend_by_name("heap")
        HeapStateBackend()
    """
    factory = STATE_BACKENDS.get(name) if isinstance(name, str) else None
    if factory is None:
        raise ConfigError(f"unknown state backend {name!r}; use one of {sorted(STATE_BACKENDS)!r} or a StateBackend object")
    return factory()
