"""The heap state backend: keyed state in Python dicts per key group, checkpoints written
to a :class:`~checkpoint.storage.CheckpointStorage` by the barrier-aligned coordinator.
Implements the engine's :class:`engine.state_backend.StateBackend` contract and registers
itself as the default when ``checkpoint`` is imported.

Example:
    >>> from raystream.engine.keygroups import KeyGroupRange
    >>> from raystream.engine.operator import OperatorContext
    >>> ctx = OperatorContext("sum", "sum", "sum (1/1)", 0, 1, 128, KeyGroupRange(0, 127))
    >>> type(HeapStateBackend().create_keyed_backend(ctx)).__name__
    'HeapKeyedStateBackend'
"""

from __future__ import annotations

from typing import Callable

from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext

from .coordinator import CheckpointConfig, CheckpointCoordinator, Ref, build_restore_plan
from .heap import HeapKeyedStateBackend
from .snapshot import KeyedStateSnapshot, deserialize_keyed_snapshot, serialize_keyed_snapshot
from .storage import CheckpointStorage, Location, StateHandle, resolve_storage

__all__ = ["HeapStateBackend"]


class HeapStateBackend:
    """Keyed state on the heap (Python dicts per key group); see the module docstring."""

    def create_keyed_backend(self, ctx: OperatorContext) -> HeapKeyedStateBackend:
        return HeapKeyedStateBackend(ctx.key_group_range, ctx.max_parallelism, ctx.clock)

    def serialize_snapshot(self, snapshot: KeyedStateSnapshot) -> bytes:
        return serialize_keyed_snapshot(snapshot)

    def deserialize_snapshot(self, data: bytes, key_group_range: KeyGroupRange) -> KeyedStateSnapshot:
        return deserialize_keyed_snapshot(data, key_group_range=key_group_range)

    def write_snapshot(self, storage: CheckpointStorage, job_id: str, checkpoint_id: int, name: str,
                       snapshot: KeyedStateSnapshot) -> StateHandle:
        return storage.write_state(job_id, checkpoint_id, name, self.serialize_snapshot(snapshot))

    def create_coordinator(self, config: CheckpointConfig, job_id: str,
                           tasks: list[tuple[int, int]]) -> CheckpointCoordinator:
        return CheckpointCoordinator(config, job_id, tasks)

    def restore_plan(self, metadata: dict, read: Callable[[Ref], bytes], vertices: list[dict], max_parallelism: int,
                     allow_non_restored_state: bool = True) -> tuple[dict, dict[str, list]]:
        return build_restore_plan(metadata, read, vertices, max_parallelism, allow_non_restored_state)

    def open_storage(self, location: CheckpointStorage | Location) -> CheckpointStorage:
        return resolve_storage(location)

    def __repr__(self) -> str:
        return "HeapStateBackend()"
