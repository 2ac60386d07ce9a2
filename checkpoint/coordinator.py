"""The checkpoint coordinator: triggers checkpoints, collects acks, completes them, and plans
restores. Plain Python (no Ray): the job master drives it and does the remote calls.

Protocol (barrier-aligned snapshots, Chandy-Lamport / ABS):

1. :meth:`CheckpointCoordinator.trigger` opens checkpoint n; the master asks every source
   task to snapshot its position and emit ``Barrier(n)``.
2. Every task acknowledges n with handles of the state it wrote (:meth:`acknowledge`).
3. When all tasks acked, the metadata is written atomically (temp + rename) and only then
   is n **complete**; the master commits the sinks' committables and notifies the tasks.
4. A decline or a timeout aborts n without failing the job.

:func:`build_restore_plan` turns a complete checkpoint (or a savepoint) into the state each
task of a possibly *different* graph parallelism starts from: operators are matched by uid,
keyed state is re-split by key group, source splits and union operator state are shared out.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from engine.errors import CheckpointError, ConfigError

from .storage import CheckpointStorage, resolve_storage

__all__ = [
    "CheckpointConfig",
    "CheckpointCoordinator",
    "PendingCheckpoint",
    "build_restore_plan",
    "METADATA_FORMAT",
]

log = logging.getLogger(__name__)

METADATA_FORMAT = 1


@dataclass
class CheckpointConfig:
    """How often and how checkpoints are taken (``env.enable_checkpointing``).

    Example:
        >>> CheckpointConfig(interval_ms=1000).mode
        'exactly_once'
    """

    interval_ms: int
    mode: str = "exactly_once"
    checkpoint_dir: str | None = None
    timeout_ms: int = 60_000
    min_pause_ms: int = 0
    max_concurrent: int = 1
    retained: int = 3
    tolerable_failures: int | None = None  # None: checkpoint failures never fail the job

    def __post_init__(self) -> None:
        if not isinstance(self.interval_ms, int) or self.interval_ms < 10:
            raise ConfigError(f"checkpoint interval must be an int >= 10 ms, got {self.interval_ms!r}")
        if self.mode not in ("exactly_once", "at_least_once"):
            raise ConfigError(f"checkpoint mode must be 'exactly_once' or 'at_least_once', got {self.mode!r}")
        if self.max_concurrent != 1:
            raise ConfigError(f"max_concurrent checkpoints must be 1 (got {self.max_concurrent!r})")
        if self.retained < 1:
            raise ConfigError(f"retained checkpoints must be >= 1, got {self.retained!r}")
        if self.timeout_ms <= 0 or self.min_pause_ms < 0 or (self.tolerable_failures or 0) < 0:
            raise ConfigError("checkpoint timeout must be > 0, min pause and tolerable failures >= 0")
        if self.checkpoint_dir is None:
            self.checkpoint_dir = os.path.join(tempfile.gettempdir(), "raystream-checkpoints")


@dataclass
class PendingCheckpoint:
    """A checkpoint that was triggered and is waiting for acks."""

    checkpoint_id: int
    triggered_at: float
    waiting: set
    acks: dict = field(default_factory=dict)
    savepoint: str | None = None
    carried: dict = field(default_factory=dict)  # committables of aborted checkpoints before it


class CheckpointCoordinator:
    """Tracks pending and completed checkpoints of one job (see module docstring)."""

    def __init__(self, config: CheckpointConfig, job_id: str, tasks: list[tuple[int, int]],
                 storage: CheckpointStorage | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.job_id = job_id
        self.tasks = list(tasks)
        if not storage:
            assert config.checkpoint_dir is not None  # CheckpointConfig.__post_init__ fills it in
            storage = resolve_storage(config.checkpoint_dir)
        self.storage = storage
        self.clock = clock
        self.next_id = 1
        self.pending: PendingCheckpoint | None = None
        self.last_completed_at: float | None = None
        self.completed: list[int] = []
        self.failures = 0
        self.history: list[dict] = []

    # ------------------------------------------------------------------ triggering
    def can_trigger(self) -> bool:
        if self.pending is not None:
            return False
        if self.last_completed_at is not None:
            return self.clock() - self.last_completed_at >= self.config.min_pause_ms / 1000.0
        return True

    def trigger(self, savepoint: str | None = None) -> PendingCheckpoint:
        """Open the next checkpoint; the caller sends ``Barrier(id)`` through the sources."""
        if self.pending is not None:
            raise CheckpointError(f"checkpoint {self.pending.checkpoint_id} is still in progress")
        cid = self.next_id
        self.next_id += 1
        self.pending = PendingCheckpoint(cid, self.clock(), set(self.tasks), savepoint=savepoint)
        return self.pending

    # ------------------------------------------------------------------ acks
    def acknowledge(self, checkpoint_id: int, task: tuple[int, int], state: dict) -> PendingCheckpoint | None:
        """Record a task's ack; returns the checkpoint once every task has acked."""
        p = self.pending
        if p is None or p.checkpoint_id != checkpoint_id or task not in p.waiting:
            return None  # late ack of an aborted checkpoint
        p.waiting.discard(task)
        p.acks[task] = state
        return p if not p.waiting else None

    def complete(self, p: PendingCheckpoint, graph_info: dict) -> dict:
        """Write the metadata of a fully acknowledged checkpoint; returns it."""
        metadata = self.metadata_for(p, graph_info)
        if p.savepoint is None:
            self.storage.write_metadata(self.job_id, p.checkpoint_id, metadata)
            self.completed.append(p.checkpoint_id)
            try:
                self.storage.retain(self.job_id, self.config.retained)
            except Exception:  # cleaning old checkpoints must never fail the job
                log.warning("could not discard old checkpoints of %s", self.job_id, exc_info=True)
        self.pending = None
        self.last_completed_at = self.clock()
        self.failures = 0
        duration = self.clock() - p.triggered_at
        size = sum(h.size for ack in p.acks.values() for e in ack.values() for h in (e.get("keyed"), e.get("op")) if h is not None)
        self.history.append({"id": p.checkpoint_id, "status": "COMPLETED", "duration_s": round(duration, 4), "bytes": size, "savepoint": p.savepoint})
        return metadata

    def abort(self, reason: str) -> PendingCheckpoint | None:
        """Abort the pending checkpoint (decline, timeout, task end); True if one was pending."""
        p = self.pending
        if p is None:
            return None
        self.pending = None
        self.failures += 1
        self.history.append({"id": p.checkpoint_id, "status": "ABORTED", "reason": reason, "savepoint": p.savepoint})
        log.warning("checkpoint %s of %s aborted: %s", p.checkpoint_id, self.job_id, reason)
        limit = self.config.tolerable_failures
        if limit is not None and self.failures > limit and p.savepoint is None:
            raise CheckpointError(
                f"{self.failures} consecutive checkpoint failures exceed tolerable_failures="
                f"{self.config.tolerable_failures} (last: {reason})"
            )
        return p

    def timed_out(self) -> bool:
        p = self.pending
        return p is not None and self.clock() - p.triggered_at > self.config.timeout_ms / 1000.0

    def metadata_for(self, p: PendingCheckpoint, graph_info: dict) -> dict:
        """Checkpoint metadata: per operator uid, the handles and committables of every subtask."""
        operators: dict[str, dict] = {}
        for (vid, subtask), state in p.acks.items():
            for uid, entry in state.items():
                op = operators.setdefault(uid, {"parallelism": graph_info["parallelism"][vid], "subtasks": {}})
                op["subtasks"][subtask] = entry
        return {
            "format": METADATA_FORMAT,
            "job_id": self.job_id,
            "checkpoint_id": p.checkpoint_id,
            "timestamp": time.time(),
            "max_parallelism": graph_info["max_parallelism"],
            "operators": operators,
            # committables of earlier, aborted checkpoints committed with this one
            "carried_committables": p.carried,
        }

    def stats(self) -> dict:
        done = [h for h in self.history if h["status"] == "COMPLETED"]
        return {
            "completed": len(done),
            "aborted": len(self.history) - len(done),
            "last": self.history[-1] if self.history else None,
            "in_progress": self.pending.checkpoint_id if self.pending else None,
            "latest_completed": self.completed[-1] if self.completed else None,
        }

    # ------------------------------------------------------------------ restore
    def latest_restorable(self) -> tuple[int, dict] | None:
        """The newest complete checkpoint whose files all read back intact (older ones are
        tried when the newest is missing files or corrupt, each skip logged)."""
        for cid in reversed(self.storage.list_complete(self.job_id)):
            try:
                metadata = self.storage.read_metadata(self.job_id, cid)
                verify_files(metadata, self.storage.read_state)
                return cid, metadata
            except CheckpointError as exc:
                log.warning("skipping checkpoint %s of %s: %s", cid, self.job_id, exc)
        return None


def verify_files(metadata: dict, read: Callable[[Any], bytes]) -> None:
    """Read every state file of ``metadata`` (checksums are verified by ``read``)."""
    for op in metadata["operators"].values():
        for entry in op["subtasks"].values():
            for ref in (entry.get("keyed"), entry.get("op"), entry.get("log")):
                if ref is not None:
                    read(ref)


def build_restore_plan(
    metadata: dict,
    read: Callable[[Any], bytes],
    vertices: list[dict],
    max_parallelism: int,
    allow_non_restored_state: bool = True,
) -> tuple[dict, dict[str, list]]:
    """The restore input of every new task, and the committables to commit again.

    Args:
        metadata: checkpoint or savepoint metadata (see :meth:`CheckpointCoordinator.metadata_for`).
        read: reads a state reference (checkpoint handle or savepoint file name) to bytes.
        vertices: per job vertex: ``{"id", "parallelism", "uids": [...], "source_uid": uid|None}``.
        allow_non_restored_state: if False, state of a uid that no operator of the new graph
            has is an error (like Flink's ``--allowNonRestoredState``).

    Returns:
        ``(plan, committables)``: ``plan[(vertex, subtask)][uid]`` holds ``keyed`` (list of
        serialized keyed snapshots), ``operator`` (union list of operator states),
        ``splits`` (source splits of this subtask) and ``feedback_log`` (Arrow batches to
        replay); ``committables`` maps sink uid -> committables of the restored checkpoint.
    """
    from .serde import loads

    if metadata.get("format") != METADATA_FORMAT:
        raise CheckpointError(f"unsupported checkpoint metadata format {metadata.get('format')!r}")
    if metadata["max_parallelism"] != max_parallelism:
        raise CheckpointError(
            f"the checkpoint was taken with max_parallelism {metadata['max_parallelism']}, the job "
            f"has {max_parallelism}; keyed state cannot be re-split across a different number of key groups"
        )
    known = {uid for v in vertices for uid in v["uids"]}
    unknown = sorted(set(metadata["operators"]) - known)
    if unknown and not allow_non_restored_state:
        raise CheckpointError(
            f"the savepoint has state for operators {unknown} that the job does not have; set "
            "uid() on the operators or pass allow_non_restored_state=True to drop that state"
        )
    plan: dict = {}
    committables: dict[str, list] = {uid: list(c) for uid, c in (metadata.get("carried_committables") or {}).items()}
    for v in vertices:
        for uid in v["uids"]:
            op = metadata["operators"].get(uid)
            if op is None:
                continue
            keyed: list[bytes] = []
            states: list[Any] = []
            splits: list[Any] = []
            logs: list[Any] = []
            for subtask in sorted(op["subtasks"]):
                entry = op["subtasks"][subtask]
                if entry.get("keyed") is not None:
                    keyed.append(read(entry["keyed"]))
                if entry.get("op") is not None:
                    blob = loads(read(entry["op"]), what=f"operator state of {uid!r}")
                    states.append(blob.get("operator"))
                    splits.extend(blob.get("splits") or [])
                if entry.get("log") is not None:
                    logs.extend(loads(read(entry["log"]), what=f"feedback log of {uid!r}"))
                if entry.get("committables"):
                    committables.setdefault(uid, []).extend(entry["committables"])
            for s in range(v["parallelism"]):
                task_plan = plan.setdefault((v["id"], s), {})
                task_plan[uid] = {
                    "keyed": keyed,
                    "operator": states,
                    "splits": splits[s :: v["parallelism"]] if uid == v.get("source_uid") else [],
                    "feedback_log": logs,
                }
    return plan, committables
