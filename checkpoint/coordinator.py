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

import hashlib
import logging
import numbers
import os
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from raystream.engine.connectors import assign_split_indices
from raystream.engine.errors import CheckpointError, ConfigError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import KeyGroupedState, key_group_sharer

from .operator_state import DroppableState
from .serde import loads
from .storage import CheckpointStorage, CheckpointStorageUnavailable, resolve_storage

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "CheckpointConfig",
    "ExternalizedCheckpointRetention",
    "CheckpointCoordinator",
    "PendingCheckpoint",
    "build_restore_plan",
    "METADATA_FORMAT",
]

log = logging.getLogger(__name__)

#: a reference to a state file in checkpoint metadata: a checkpoint's StateHandle, or the
#: file name inside a savepoint (whatever the ``read`` function given with it accepts)
Ref = TypeVar("Ref")

METADATA_FORMAT = 1

#: consecutive checkpoint failures at which a job without ``tolerable_failures`` logs an error
#: that says its output is not committed (then every tenfold more)
_LOUD_FAILURES = frozenset(10**k for k in range(1, 10))

#: checkpoints the coordinator remembers for statistics (`history`, `completed`; ``stats()`` and
#: ``JobClient.info()["checkpoints"]["history"]`` show them): a job that checkpoints every 100 ms
#: for a week keeps the last ones and counts, not six million entries
HISTORY_KEPT = 100


class ExternalizedCheckpointRetention(str, Enum):
    """What becomes of a job's checkpoints (``<checkpoint_dir>/<job id>/``) when the job ends
    (Flink's ``ExternalizedCheckpointRetention``). A job that **finished** deletes them in every
    mode (it has nothing left to resume); savepoints are never deleted.

    Example:
        >>> ExternalizedCheckpointRetention("RETAIN_ON_CANCELLATION").keeps("CANCELLED")
        True
        >>> [ExternalizedCheckpointRetention.DELETE_ON_CANCELLATION.keeps(s) for s in ("FINISHED", "FAILED")]
        [False, True]
    """

    #: kept when the job fails or is cancelled (the default: a cancelled job can be resumed
    #: from its newest checkpoint, as a failed one)
    RETAIN_ON_CANCELLATION = "RETAIN_ON_CANCELLATION"
    #: kept only when the job fails; deleted when it is cancelled
    DELETE_ON_CANCELLATION = "DELETE_ON_CANCELLATION"
    #: never kept: deleted however the job ends
    NO_EXTERNALIZED_CHECKPOINTS = "NO_EXTERNALIZED_CHECKPOINTS"

    def keeps(self, status: str) -> bool:
        """Whether a job that ended with ``status`` (``FINISHED``, ``CANCELLED``, ``FAILED``) keeps
        its checkpoints."""
        if status == "FINISHED" or self is ExternalizedCheckpointRetention.NO_EXTERNALIZED_CHECKPOINTS:
            return False
        return status != "CANCELLED" or self is ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION


def _retention(value: object) -> ExternalizedCheckpointRetention:
    try:
        return ExternalizedCheckpointRetention(value.upper() if isinstance(value, str) else value)
    except (ValueError, TypeError):
        raise ConfigError(
            f"checkpoint externalized_checkpoint_retention must be one of "
            f"{[m.value for m in ExternalizedCheckpointRetention]!r} (or an ExternalizedCheckpointRetention), "
            f"got {value!r}"
        ) from None


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
    #: signs every checkpoint/savepoint file (HMAC-SHA256); None: $RAYSTREAM_CHECKPOINT_SECRET
    secret: bytes | str | None = field(default=None, repr=False)
    #: what becomes of the job's checkpoints when it ends (see ExternalizedCheckpointRetention)
    externalized_checkpoint_retention: ExternalizedCheckpointRetention = (
        ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION)

    def set_externalized_checkpoint_retention(self, retention: ExternalizedCheckpointRetention | str) -> CheckpointConfig:
        """What becomes of the job's checkpoints when it ends (Flink's
        ``CheckpointConfig.setExternalizedCheckpointRetention``): ``"RETAIN_ON_CANCELLATION"``
        (the default: kept when the job fails or is cancelled), ``"DELETE_ON_CANCELLATION"``
        (kept only when it fails) or ``"NO_EXTERNALIZED_CHECKPOINTS"`` (never kept). A job that
        finished deletes them in every mode. Raises ConfigError for anything else.

        Example:
            >>> CheckpointConfig(1000).set_externalized_checkpoint_retention("DELETE_ON_CANCELLATION").keeps("CANCELLED")
            False
        """
        self.externalized_checkpoint_retention = _retention(retention)
        return self

    def keeps(self, status: str) -> bool:
        """Whether a job that ended with ``status`` keeps its checkpoints."""
        return _retention(self.externalized_checkpoint_retention).keeps(status)

    def __post_init__(self) -> None:
        self.externalized_checkpoint_retention = _retention(self.externalized_checkpoint_retention)
        # every count and duration is a plain int (a float retained= used to be accepted, and
        # every completion then failed to discard old checkpoints: disk grew without bound)
        for name, low, what in (("interval_ms", 10, "ms"), ("timeout_ms", 1, "ms"), ("min_pause_ms", 0, "ms"),
                                ("retained", 1, "complete checkpoints to keep"), ("max_concurrent", 1, "checkpoints")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ConfigError(f"checkpoint {name} must be an int >= {low} ({what}), got {value!r}")
            setattr(self, name, int(value))  # (a numpy int is one)
        tolerable = self.tolerable_failures
        if tolerable is not None and (isinstance(tolerable, bool) or not isinstance(tolerable, numbers.Integral)
                                      or tolerable < 0):
            raise ConfigError(f"checkpoint tolerable_failures must be None or an int >= 0, got {tolerable!r}")
        if self.mode not in ("exactly_once", "at_least_once"):
            raise ConfigError(f"checkpoint mode must be 'exactly_once' or 'at_least_once', got {self.mode!r}")
        if self.max_concurrent != 1:
            raise ConfigError(f"max_concurrent checkpoints must be 1 (got {self.max_concurrent!r})")
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, (str, os.PathLike, tuple, CheckpointStorage)):
            raise ConfigError(
                f"checkpoint_dir must be a path, a URI, a (filesystem, path) pair or a CheckpointStorage, "
                f"got {self.checkpoint_dir!r}"
            )
        if self.secret is not None and (not isinstance(self.secret, (bytes, str)) or not self.secret):
            raise ConfigError(  # the value is never shown: it is a secret
                f"the checkpoint secret must be a non-empty str or bytes, got a {type(self.secret).__name__}"
            )
        if self.checkpoint_dir is None:
            self.checkpoint_dir = os.path.join(tempfile.gettempdir(), "raystream-checkpoints")


@dataclass
class PendingCheckpoint:
    """One triggered checkpoint, owned by its id: only the code path holding this object may
    complete or abort it (no shared "current checkpoint" slot).

    ``status`` goes ``PENDING`` (waiting for acks) -> ``FINALIZING`` (every task acked, the
    metadata is being written) -> ``COMPLETED`` or ``ABORTED``. ``commit`` holds, once
    finalizing, every committable this checkpoint makes visible: its own acks' and the ones
    retained from earlier checkpoints that never completed (Sink V2 committer state).
    """

    checkpoint_id: int
    triggered_at: float
    waiting: set
    acks: dict = field(default_factory=dict)
    savepoint: str | None = None
    stop: bool = False  # stop-with-savepoint: the tasks stop at its barrier
    status: str = "PENDING"
    commit: dict = field(default_factory=dict)  # sink uid -> committables (set when finalizing)
    carried: dict = field(default_factory=dict)  # the part of ``commit`` retained from earlier barriers
    #: the part of ``commit`` that no earlier completed checkpoint commits: its acks' and the
    #: retained ones (what it adds to the coordinator's ``committing``)
    own: dict = field(default_factory=dict)
    #: completed checkpoints whose commit had not finished when this one began finalizing ->
    #: what they commit (carried for a restore; a later commit takes any whose commit did not finish)
    follows: dict = field(default_factory=dict)
    #: the completed checkpoints whose committables committing ``p`` makes visible (set by
    #: :meth:`CheckpointCoordinator.to_commit`; empty when an earlier commit took them)
    commits: list = field(default_factory=list)


class CheckpointCoordinator:
    """Tracks the pending, finalizing and completed checkpoints of one job and the
    committables not yet made visible (see the module docstring).

    Committables are *retained* by the id of the checkpoint barrier they were prepared at
    until a checkpoint at least that new completes: a declined, aborted or timed-out
    checkpoint hands its committables on to the next one instead of dropping them, as in
    Flink's Sink V2 committer. Only a restart drops them (the restored checkpoint's sources
    replay that data): :meth:`reset_for_restart`.

    A completed checkpoint's committables stay *committing* until the caller reports them
    committed (:meth:`committed`): the next checkpoint carries them too, so that its
    metadata still records them if that commit is slow, fails, or its master dies first
    (committing is idempotent; a restore from the later checkpoint re-commits them). A
    commit (:meth:`to_commit`) takes every completed checkpoint not committed yet, so the
    checkpoints that complete while one commit is slow are committed together by the next.

    Finished tasks (FLIP-147) take no part in later checkpoints: their final state stands in
    for their acks (:meth:`task_finished`), so checkpoints keep completing while the rest of
    the job runs, and a final checkpoint commits everything at the end of a bounded job.
    """

    def __init__(self, config: CheckpointConfig, job_id: str, tasks: list[tuple[int, int]],
                 storage: CheckpointStorage | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.job_id = job_id
        self.tasks = list(tasks)
        if not storage:
            assert config.checkpoint_dir is not None  # CheckpointConfig.__post_init__ fills it in
            storage = resolve_storage(config.checkpoint_dir, secret=config.secret)
        self.storage = storage
        self.clock = clock
        self.next_id = 1
        self.checkpoints: dict[int, PendingCheckpoint] = {}  # pending and finalizing, by id
        self.last_completed_at: float | None = None
        # the newest completed checkpoint ids, ascending, and the newest checkpoints' outcomes
        # (bounded: memory follows live work, not the job's age), with counts of all of them
        self.completed: deque[int] = deque(maxlen=HISTORY_KEPT)
        self.failures = 0
        self.history: deque[dict] = deque(maxlen=HISTORY_KEPT)
        self.completed_count = 0  # (every checkpoint that completed, as history records it)
        self.aborted_count = 0
        self.retained: dict[int, dict[str, list]] = {}  # barrier id -> sink uid -> committables
        # completed checkpoints whose commit is not known to have finished -> what they commit
        self.committing: dict[int, dict[str, list]] = {}
        self.finished: dict[tuple[int, int], dict] = {}  # finished task -> its final state
        # checkpoints whose metadata is being written -> when that began (also ones aborted meanwhile)
        self.writing: dict[int, float] = {}

    # ------------------------------------------------------------------ views
    @property
    def pending(self) -> PendingCheckpoint | None:
        """The checkpoint waiting for acks, if any (at most one: ``max_concurrent`` is 1)."""
        return next((p for p in self.checkpoints.values() if p.status == "PENDING"), None)

    def get(self, checkpoint_id: int) -> PendingCheckpoint | None:
        """The pending or finalizing checkpoint ``checkpoint_id``, or None."""
        return self.checkpoints.get(checkpoint_id)

    def running_tasks(self) -> list[tuple[int, int]]:
        """Tasks that have not finished (the ones a checkpoint waits for)."""
        return [t for t in self.tasks if t not in self.finished]

    def start_after(self, checkpoint_id: int) -> None:
        """Number new checkpoints after ``checkpoint_id`` (a recovered job master must never
        reuse an id whose directory an earlier master may have written)."""
        self.next_id = max(self.next_id, checkpoint_id + 1)

    # ------------------------------------------------------------------ triggering
    def can_trigger(self, savepoint: bool = False) -> bool:
        """Whether a checkpoint may start now: none in progress, and ``min_pause_ms`` since
        the last one completed (a savepoint, asked for by a user, does not wait for the
        pause, as in Flink)."""
        if self.checkpoints:  # one at a time, including one whose metadata is being written
            return False
        if self.writes_blocking():
            return False
        if self.last_completed_at is not None and not savepoint:
            return self.clock() - self.last_completed_at >= self.config.min_pause_ms / 1000.0
        return True

    def writes_blocking(self) -> list[int]:
        """The checkpoints (aborted ones among them) whose metadata writes are in flight, when
        there are ``max_concurrent + 1`` of them: no checkpoint starts until one ends (else
        empty). A checkpoint that times out while its metadata is written no longer counts as
        in progress, so without this bound storage slower than ``timeout_ms`` (and ``interval_ms``)
        started a new write at every timeout: writes in flight, the memory they hold and the
        worker threads they occupy (the job master's commits wait for those) grew without bound
        (38 in flight after 8 s with 3 s writes and a 200 ms timeout). The same bound as a task's
        on its snapshots handed to its writer."""
        if len(self.writing) <= self.config.max_concurrent:
            return []
        return sorted(self.writing)

    def skip_blocked(self) -> PendingCheckpoint:
        """Record a checkpoint that could not start (:meth:`writes_blocking`) for as long as a
        checkpoint may take: aborted at once, no barrier sent, counted toward
        ``tolerable_failures`` like a checkpoint that timed out, so storage that stays slower
        than the timeout (or hangs) fails the job over as it says, and the history says why.
        Raises CheckpointError when consecutive failures exceed ``tolerable_failures``."""
        writing = sorted(self.writing)
        age = self.clock() - min(self.writing.values()) if self.writing else 0.0
        reason = (f"could not start within timeout_ms={self.config.timeout_ms}: the _metadata writes of checkpoints "
                  f"{writing} are still in flight (the oldest for {age:.1f} s; checkpoint storage is slower than the "
                  "timeout)")
        cid = self.next_id
        self.next_id += 1
        p = PendingCheckpoint(cid, self.clock(), set())
        p.status = "PENDING"
        self.checkpoints[cid] = p
        self.abort(p, reason)
        return p

    def trigger(self, savepoint: str | None = None, stop: bool = False) -> PendingCheckpoint:
        """Open the next checkpoint; the caller sends ``Barrier(id)`` through the sources.
        Finished tasks count as acknowledged with their final state."""
        busy = next(iter(self.checkpoints.values()), None)
        if busy is not None:
            raise CheckpointError(f"checkpoint {busy.checkpoint_id} is still in progress")
        cid = self.next_id
        self.next_id += 1
        p = PendingCheckpoint(cid, self.clock(), set(self.running_tasks()), savepoint=savepoint, stop=stop)
        p.acks.update(self.finished)
        self.checkpoints[cid] = p
        return p

    # ------------------------------------------------------------------ acks
    def acknowledge(self, checkpoint_id: int, task: tuple[int, int], state: dict) -> PendingCheckpoint | None:
        """Record a task's ack; returns the checkpoint once every task has acked (the caller
        then finalizes it). An ack of a checkpoint that is no longer pending (aborted, timed
        out) only hands its committables on: they are retained, never dropped."""
        p = self.checkpoints.get(checkpoint_id)
        if p is None or p.status != "PENDING" or task not in p.waiting:
            self.retain(checkpoint_id, committables_of(state))
            return None
        p.waiting.discard(task)
        p.acks[task] = state
        return p if not p.waiting else None

    def decline(self, checkpoint_id: int, reason: str, committables: dict[str, list] | None = None) -> PendingCheckpoint | None:
        """A task could not take ``checkpoint_id``. Its committables (data its sinks had
        already handed over at the barrier) are retained for the next checkpoint; the
        checkpoint is aborted if it is still pending. Returns the aborted checkpoint."""
        self.retain(checkpoint_id, committables or {})
        p = self.checkpoints.get(checkpoint_id)
        if p is None or p.status != "PENDING":
            return None
        return self.abort(p, reason)

    def task_finished(self, task: tuple[int, int], final_state: dict, committables: dict[str, list]) -> PendingCheckpoint | None:
        """``task`` ended (FLIP-147). Its last committables belong to the first checkpoint
        that sees it finished: the pending one if the task never acked it, else the next.
        Returns the pending checkpoint if this completed its acks."""
        self.finished[task] = final_state
        p = self.pending
        if p is not None and task in p.waiting:
            self.retain(p.checkpoint_id, committables)
            p.waiting.discard(task)
            p.acks[task] = final_state
            return p if not p.waiting else None
        self.retain(self.next_id, committables)
        return None

    def retain(self, checkpoint_id: int, committables: dict[str, list]) -> None:
        """Keep ``committables`` (prepared at barrier ``checkpoint_id``) until a checkpoint
        that covers them completes. Ones an already completed checkpoint covers are kept for
        the next one (committing is idempotent, and the next checkpoint's metadata then
        records them for a restore)."""
        for uid, comms in committables.items():
            if comms:
                self.retained.setdefault(checkpoint_id, {}).setdefault(uid, []).extend(comms)

    def uncommitted(self) -> dict[str, list]:
        """Every retained committable, by sink uid (for the end of a job without checkpoints
        left to take, and for metrics)."""
        out: dict[str, list] = {}
        for cid in sorted(self.retained):
            for uid, comms in self.retained[cid].items():
                out.setdefault(uid, []).extend(comms)
        return out

    # ------------------------------------------------------------------ finalizing
    def begin_finalize(self, p: PendingCheckpoint) -> None:
        """``p`` has all acks: collect everything it commits (its acks' committables and the
        retained ones prepared at or before its barrier) and mark it FINALIZING. The
        metadata write (:meth:`complete`) may then run on another thread."""
        if p.status != "PENDING" or p.waiting:
            raise CheckpointError(f"checkpoint {p.checkpoint_id} is {p.status.lower()}, not fully acknowledged")
        p.status = "FINALIZING"
        self.writing[p.checkpoint_id] = self.clock()
        p.follows = {cid: by_uid for cid, by_uid in self.committing.items() if cid < p.checkpoint_id}
        retained = {cid: self.retained.pop(cid) for cid in [c for c in self.retained if c <= p.checkpoint_id]}
        own: dict[str, list] = {}
        for _cid, by_uid in sorted(retained.items()):
            _extend(own, by_uid)
        carried: dict[str, list] = {}
        for _cid, by_uid in sorted([*p.follows.items(), *retained.items()], key=lambda e: e[0]):
            _extend(carried, by_uid)
        acked: dict[str, list] = {}
        for state in p.acks.values():
            _extend(acked, committables_of(state))
        p.carried = carried
        p.own = _extend(own, acked)
        p.commit = _extend(_extend({}, carried), acked)

    def to_commit(self, p: PendingCheckpoint) -> dict[str, list]:
        """What committing completed checkpoint ``p`` makes visible now: the committables of
        every completed checkpoint whose commit has not finished (:meth:`committed`), ``p``'s
        and those of any that completed before or after it, in checkpoint order. Sets
        ``p.commits`` to their ids: the caller commits them in one call per sink, then reports
        each committed.

        As Flink's committer commits every pending committable up to the newest completed
        checkpoint: while a commit is slow, the checkpoints that complete meanwhile wait for
        one commit, not for one commit each (which would queue commits, committables and
        output latency without bound). A checkpoint whose committables an earlier commit took
        gets nothing (``p.commits == []``); one left by a commit that failed is repeated.
        Every checkpoint's metadata still carries what it completed after and was not
        committed yet, so a restore re-commits whatever a commit did not finish.
        """
        p.commits = sorted(self.committing)
        out: dict[str, list] = {}
        for cid in p.commits:
            _extend(out, self.committing[cid])
        return out

    def complete(self, p: PendingCheckpoint, graph_info: dict) -> dict:
        """Write the metadata of a finalizing checkpoint. May run on a worker thread: it
        touches nothing but ``p`` and storage; :meth:`end_finalize` then settles ``p`` on the
        caller's thread. Discarding the checkpoints beyond ``retained`` is not part of it
        (``storage.retain``, which the job master runs apart, after the completion): deletes
        slower than ``timeout_ms`` would abort every checkpoint whose metadata they follow."""
        self._write_final_states(p)
        metadata = self.metadata_for(p, graph_info)
        if p.savepoint is None:
            self.storage.write_metadata(self.job_id, p.checkpoint_id, metadata)
        return metadata

    def _write_final_states(self, p: PendingCheckpoint) -> None:
        """Finished tasks stand in with their final state, which they reported as bytes:
        write it into this checkpoint's directory (each checkpoint is self-contained, so
        retention can delete older ones)."""
        for (vid, subtask), state in list(p.acks.items()):
            if not any(isinstance(e, dict) and isinstance(e.get("op"), bytes) for e in state.values()):
                continue
            written = {}
            for uid, entry in state.items():
                entry = dict(entry)
                if isinstance(entry.get("op"), bytes):
                    digest = hashlib.sha1(uid.encode()).hexdigest()[:16]
                    entry["op"] = self.storage.write_state(self.job_id, p.checkpoint_id,
                                                           f"final/{vid}-{subtask}-{digest}", entry["op"])
                written[uid] = entry
            p.acks[(vid, subtask)] = written

    def end_finalize(self, p: PendingCheckpoint, error: BaseException | None = None) -> bool:
        """Settle a finalizing checkpoint after its metadata write. True: ``p`` is COMPLETED
        and the caller commits :meth:`to_commit`. False: the write failed (``p`` is aborted and
        its committables retained) or ``p`` was aborted (timed out) meanwhile; in that case
        its committables already went back to the retained ones, and a metadata file that
        made it to storage anyway is a complete, restorable checkpoint (a restore re-commits
        what it records), so it is counted as completed but commits nothing now."""
        self.writing.pop(p.checkpoint_id, None)
        if p.status == "FINALIZING" and error is None:
            p.status = "COMPLETED"
            self.checkpoints.pop(p.checkpoint_id, None)
            if p.savepoint is None or p.stop:  # (an intermediate savepoint commits nothing)
                self.committing[p.checkpoint_id] = p.own  # (p.follows stay committing on their own)
            if p.savepoint is None:
                self.completed.append(p.checkpoint_id)
            self.last_completed_at = self.clock()
            self.failures = 0
            duration = self.clock() - p.triggered_at
            self.completed_count += 1
            self.history.append({"id": p.checkpoint_id, "status": "COMPLETED", "duration_s": round(duration, 4),
                                 "bytes": _state_bytes(p), "savepoint": p.savepoint})
            return True
        if p.status == "FINALIZING":  # the metadata write failed
            self.abort(p, f"writing metadata failed: {error!r}")
        elif error is None and p.savepoint is None:
            self.completed = deque(sorted({*self.completed, p.checkpoint_id}), maxlen=HISTORY_KEPT)
            log.warning("checkpoint %s of %s was aborted, yet its metadata was written: it is restorable",
                        p.checkpoint_id, self.job_id)
        return False

    def complete_late(self, p: PendingCheckpoint) -> bool:
        """Checkpoint ``p`` timed out while its metadata was written, and the write landed
        afterwards (:meth:`end_finalize` returned False): it is complete in storage, the
        checkpoint a restore starts from. Complete it here too: every committable retained
        from a barrier at or before ``p``'s (its own, which the abort handed back, and the
        ones it carried) becomes committing under ``p``, and the caller commits
        :meth:`to_commit` as for any completed checkpoint. That is what a restore from ``p``
        would commit (:meth:`take_retained`; committing is idempotent), so nothing is
        committed that ``p`` does not cover. ``p`` counts as completed, not aborted (its
        history entry says it completed after its timeout), and ends the run of consecutive
        failures as any completion does: the timeout itself counted toward
        ``tolerable_failures`` when it struck.

        Returns False (nothing done) for a savepoint (its caller was told it failed) and for a
        checkpoint whose metadata did not land. Before, such a checkpoint committed nothing
        and handed its committables to the next one: with ``_metadata`` writes always slower
        than ``timeout_ms`` every checkpoint timed out, and an unbounded job never committed
        its sinks' output (``completed`` stayed 0 while ``latest_completed`` grew)."""
        if p.status != "ABORTED" or p.savepoint is not None or p.checkpoint_id not in self.completed:
            return False
        covered: dict[str, list] = {}
        for cid in sorted(c for c in self.retained if c <= p.checkpoint_id):
            _extend(covered, self.retained.pop(cid))
        p.status = "COMPLETED"
        self.committing[p.checkpoint_id] = covered
        self.last_completed_at = self.clock()
        self.failures = 0
        self.completed_count += 1
        self.aborted_count -= 1
        entry = {"id": p.checkpoint_id, "status": "COMPLETED", "duration_s": round(self.clock() - p.triggered_at, 4),
                 "bytes": _state_bytes(p), "savepoint": None}
        for i, old in enumerate(self.history):
            if old["id"] == p.checkpoint_id and old["status"] == "ABORTED":
                entry["late"] = f"completed after it was aborted: {old.get('reason')}"
                self.history[i] = entry
                break
        else:
            entry["late"] = "completed after it was aborted"
            self.history.append(entry)
        return True

    def abort(self, p: PendingCheckpoint, reason: str) -> PendingCheckpoint | None:
        """Abort checkpoint ``p`` (pending or finalizing); returns it, or None if it had
        already ended. Its committables are retained for the next checkpoint. Raises
        CheckpointError when consecutive failures exceed ``tolerable_failures``."""
        if p.status not in ("PENDING", "FINALIZING"):
            return None
        if p.status == "FINALIZING":  # (the ones it carries of committing checkpoints stay committing)
            for uid, comms in p.own.items():
                self.retained.setdefault(p.checkpoint_id, {}).setdefault(uid, []).extend(comms)
            # ``p.carried`` stays: the metadata write of ``p`` may be in flight on another thread
            # (``complete``), and a metadata file that lands after this abort is a restorable
            # checkpoint whose restore re-commits what it records: it must record what it carries
            # (cleared here, a master that died before the next checkpoint completed restored
            # from it without the committables of the checkpoints it carried, and lost their data)
            p.commit, p.own, p.follows = {}, {}, {}
        else:
            for state in p.acks.values():
                self.retain(p.checkpoint_id, committables_of(state))
        p.status = "ABORTED"
        self.checkpoints.pop(p.checkpoint_id, None)
        if p.savepoint is None:  # (a savepoint a user asked for is no checkpoint failure, as in Flink)
            self.failures += 1
        self.aborted_count += 1
        self.history.append({"id": p.checkpoint_id, "status": "ABORTED", "reason": reason, "savepoint": p.savepoint})
        log.warning("checkpoint %s of %s aborted: %s", p.checkpoint_id, self.job_id, reason)
        limit = self.config.tolerable_failures
        if limit is None and p.savepoint is None and self.failures in _LOUD_FAILURES:
            last = self.last_completed_at
            log.error(
                "job %s: %d checkpoints in a row failed (%s; the last: %s): its sinks commit nothing until one "
                "completes, and a restart would replay everything since %s. tolerable_failures=None lets the job run "
                "on; fix the cause, or fail it over after n failures with enable_checkpointing(..., "
                "tolerable_failures=n)", self.job_id, self.failures,
                "none completed yet" if last is None else f"none completed for {self.clock() - last:.0f} s",
                reason, "the start" if last is None else "the last completed checkpoint")
        if limit is not None and self.failures > limit and p.savepoint is None:
            raise CheckpointError(
                f"{self.failures} consecutive checkpoint failures exceed tolerable_failures="
                f"{self.config.tolerable_failures} (last: {reason})"
            )
        return p

    def committed(self, checkpoint_id: int) -> None:
        """The caller finished committing completed checkpoint ``checkpoint_id``: later
        checkpoints no longer carry its committables."""
        self.committing.pop(checkpoint_id, None)

    def timed_out(self) -> list[PendingCheckpoint]:
        """The checkpoints (pending or finalizing) older than ``timeout_ms``."""
        limit = self.config.timeout_ms / 1000.0
        now = self.clock()
        return [p for p in self.checkpoints.values() if now - p.triggered_at > limit]

    def reset_for_restart(self) -> None:
        """The job restarts: abort what is in progress (not counted as checkpoint failures),
        forget finished tasks and count consecutive failures anew (the restarted job gets
        ``tolerable_failures`` of its own, as after Flink's failover). The retained committables
        wait for :meth:`take_retained`, once the checkpoint to restore from is known."""
        self.failures = 0
        for p in self.checkpoints.values():
            p.status = "ABORTED"
            p.commit, p.own, p.follows = {}, {}, {}  # (p.carried stays: see abort)
            self.aborted_count += 1
            self.history.append({"id": p.checkpoint_id, "status": "ABORTED", "reason": "the job restarts",
                                 "savepoint": p.savepoint})
        self.checkpoints.clear()
        self.finished.clear()

    def take_retained(self, restored_id: int | None) -> dict[str, list]:
        """Clear the retained and committing committables when the job restores from
        ``restored_id`` (None: from scratch). The ones prepared after its barrier are dropped
        (the restored sources replay their data); the ones it covers are returned: the
        caller commits them, since their data is not replayed."""
        covered: dict[str, list] = {}
        held = [*self.committing.items(), *self.retained.items()]
        for cid, by_uid in sorted(held, key=lambda e: e[0]):
            if restored_id is not None and cid <= restored_id:
                for uid, comms in by_uid.items():
                    covered.setdefault(uid, []).extend(comms)
        self.retained.clear()
        self.committing.clear()
        return covered

    def metadata_for(self, p: PendingCheckpoint, graph_info: dict) -> dict:
        """Checkpoint metadata: per operator uid, the handles and committables of every
        subtask, plus the retained committables of earlier checkpoints it commits."""
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
            # committables of earlier checkpoints that never completed, committed with this one
            "carried_committables": p.carried,
        }

    def stats(self) -> dict:
        """What ``info()["checkpoints"]`` shows: counts, the newest outcomes, and while
        checkpoints keep failing, how many in a row (``consecutive_failures``, what
        ``tolerable_failures`` is compared with), the newest failure's reason
        (``last_failure``) and the seconds since a checkpoint last completed (None: none did)."""
        in_progress = min(self.checkpoints) if self.checkpoints else None
        failed = next((h for h in reversed(self.history) if h["status"] == "ABORTED"), None)
        since = None if self.last_completed_at is None else round(self.clock() - self.last_completed_at, 3)
        return {
            "completed": self.completed_count,
            "aborted": self.aborted_count,
            "consecutive_failures": self.failures,
            "last_failure": failed.get("reason") if failed is not None and self.failures else None,
            "since_last_completed_s": since,
            # metadata writes in flight (of aborted checkpoints too) and the oldest one's age
            "metadata_writes": len(self.writing),
            "oldest_metadata_write_s": round(self.clock() - min(self.writing.values()), 3) if self.writing else None,
            "last": self.history[-1] if self.history else None,
            "history": list(self.history),  # the newest HISTORY_KEPT outcomes, oldest first
            "in_progress": in_progress,
            "latest_completed": self.completed[-1] if self.completed else None,
            "retained_committables": sum(len(c) for by_uid in self.retained.values() for c in by_uid.values()),
        }

    # ------------------------------------------------------------------ restore
    def latest_restorable(self) -> tuple[int, dict] | None:
        """The newest complete checkpoint whose files all read back intact (older ones are
        tried when the newest is missing files or corrupt, each skip logged). One fenced off by
        a takeover is not complete (``CheckpointStorage.fence_incomplete``), even with ``_metadata``.

        Raises:
            CheckpointStorageUnavailable: storage could not be listed or read (an I/O error,
                not a missing or corrupt file). Never a reason to try an older checkpoint: its
                sources would replay what the newer ones committed, and the sinks would commit
                it twice; the caller fails the attempt and restores again later.
        """
        for cid in reversed(self.storage.list_complete(self.job_id)):
            try:
                metadata = self.storage.read_metadata(self.job_id, cid)
                verify_files(metadata, self.storage.read_state)
                missing = self.storage.missing_shared(metadata)  # (incremental checkpoints)
                if missing:
                    raise CheckpointError(f"shared state files are missing: {missing[:5]!r}")
                return cid, metadata
            except CheckpointStorageUnavailable:
                raise
            except CheckpointError as exc:
                log.warning("skipping checkpoint %s of %s: %s", cid, self.job_id, exc)
        return None


def _state_bytes(p: PendingCheckpoint) -> int:
    """The bytes of the state files ``p``'s acks wrote (its history entry's ``bytes``)."""
    return sum(h.size for ack in p.acks.values() for e in ack.values() if isinstance(e, dict)
               for h in (e.get("keyed"), e.get("op")) if h is not None and hasattr(h, "size"))


def _extend(into: dict[str, list], more: dict[str, list]) -> dict[str, list]:
    """Append ``more``'s committables to ``into``'s (by sink uid); returns ``into``."""
    for uid, comms in more.items():
        into.setdefault(uid, []).extend(comms)
    return into


def committables_of(state: dict) -> dict[str, list]:
    """``{sink uid: committables}`` of one task's ack (or final state)."""
    out: dict[str, list] = {}
    for uid, entry in state.items():
        comms = entry.get("committables") if isinstance(entry, dict) else None
        if comms:
            out[uid] = list(comms)
    return out


def verify_files(metadata: dict, read: Callable[[Ref], bytes]) -> None:
    """Read every state file of ``metadata`` (checksums are verified by ``read``)."""
    for op in metadata["operators"].values():
        for entry in op["subtasks"].values():
            for ref in (entry.get("keyed"), entry.get("op"), entry.get("log")):
                if ref is not None:
                    read(ref)


def _holds_state(op: dict, read: Callable[[Any], bytes], uid: str) -> bool:
    """Whether operator ``op`` of a checkpoint's metadata holds any state: keyed state, a
    feedback log, committables, or an operator state (not a
    :class:`~checkpoint.operator_state.DroppableState`) or source splits in its state file (a
    stateless operator writes a file holding neither)."""
    for entry in op["subtasks"].values():
        if not isinstance(entry, dict):
            return True
        if entry.get("keyed") is not None or entry.get("log") is not None or entry.get("committables"):
            return True
        if entry.get("op") is not None:
            blob = loads(read(entry["op"]), what=f"operator state of {uid!r}")
            if not isinstance(blob, dict) or blob.get("splits"):
                return True
            state = blob.get("operator")
            if state is not None and not isinstance(state, DroppableState):  # (a combiner's watermark: dropped)
                return True
    return False


def _holds_key_groups(op: dict, read: Callable[[Any], bytes], uid: str) -> bool:
    """Whether operator ``op`` of a checkpoint's metadata holds state split into key groups: a
    keyed snapshot, or an operator state with a :class:`KeyGroupedState` in it (per-key state a
    keyed operator keeps itself, e.g. a heap ``reduce`` or window)."""
    for entry in op.get("subtasks", {}).values():
        if not isinstance(entry, dict):
            continue
        if entry.get("keyed") is not None:
            return True
        if entry.get("op") is not None:
            blob = loads(read(entry["op"]), what=f"operator state of {uid!r}")
            if isinstance(blob, dict) and _has_key_grouped_state(blob.get("operator")):
                return True
    return False


def _has_key_grouped_state(state: Any) -> bool:
    """A :class:`KeyGroupedState` at the top of ``state`` or inside its plain dicts (where
    :func:`~engine.operator.key_group_sharer` cuts them by key group)."""
    if isinstance(state, KeyGroupedState):
        return True
    return type(state) is dict and any(map(_has_key_grouped_state, state.values()))


def _old_key_groups(op: dict, subtask: Any, max_parallelism: int) -> KeyGroupRange | None:
    """The key groups that subtask ``subtask`` of checkpointed operator ``op`` owned (its keyed
    snapshot holds no other), or None when the metadata does not say."""
    parallelism = op.get("parallelism")
    if not isinstance(parallelism, int) or not isinstance(subtask, int) or not 0 <= subtask < parallelism <= max_parallelism:
        return None
    return KeyGroupRange.for_subtask(subtask, parallelism, max_parallelism)


def _overlap(a: KeyGroupRange, b: KeyGroupRange) -> bool:
    return a.start <= b.end and b.start <= a.end


def build_restore_plan(
    metadata: dict,
    read: Callable[[Ref], bytes],
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
        ``(plan, committables)``: ``plan[(vertex, subtask)][uid]`` holds ``keyed`` (the
        serialized keyed snapshots of the old subtasks whose key groups overlap this
        subtask's, in old-subtask order), ``operator`` (the operator state of every old
        subtask, in old-subtask order, each :class:`~engine.operator.KeyGroupedState` in
        them cut to this subtask's key groups; the rest shared by all subtasks),
        ``splits`` (source splits of this subtask, in the source's order), ``split_order`` (their
        ordinals in it, ``None`` when unknown) and ``feedback_log`` (Arrow batches to
        replay); ``committables`` maps sink uid -> committables of the restored checkpoint.
    """
    if not isinstance(metadata, dict) or not isinstance(metadata.get("operators"), dict):
        raise CheckpointError(
            f"the metadata holds no checkpoint (a {type(metadata).__name__}): it was written by another raystream "
            "release or another program; restore a savepoint or retained checkpoint (<checkpoint_dir>/<job dir>/chk-<n>) "
            "written by this release, or start the job without it"
        )
    if metadata.get("format") != METADATA_FORMAT:
        raise CheckpointError(
            f"its metadata is of format {metadata.get('format')!r} and this raystream release reads format "
            f"{METADATA_FORMAT}: it was written by another release; restore it with the release that wrote it (take a "
            "new savepoint there to move on), or start the job without it"
        )
    if metadata["max_parallelism"] != max_parallelism:
        # Only state split into key groups is bound to their number: keyed state, and operator
        # state that keeps per-key entries by key group (KeyGroupedState). Source positions,
        # committables, feedback logs and other operator state restore at any max_parallelism.
        # (Before, every operator with a state file was named, stateless ones too, and such a
        # restore was refused when no operator had keyed state at all.)
        grouped = sorted(uid for uid, op in metadata["operators"].items() if _holds_key_groups(op, read, uid))
        if grouped:
            raise CheckpointError(
                f"the savepoint or checkpoint was taken with max_parallelism {metadata['max_parallelism']}, the job "
                f"has {max_parallelism}: the keyed state of its operators (uids {grouped}) is split into "
                f"{metadata['max_parallelism']} key groups and cannot be re-split into another number (as in "
                f"Flink); start the job with StreamEnvironment(max_parallelism={metadata['max_parallelism']}) (its "
                f"parallelism may change up to that), or start it without this savepoint"
            )
    known = {uid for v in vertices for uid in v["uids"]}
    unknown = sorted(set(metadata["operators"]) - known)
    if unknown and not allow_non_restored_state:  # (Flink asks only for operators that had state)
        unknown = [uid for uid in unknown if _holds_state(metadata["operators"][uid], read, uid)]
    if unknown and not allow_non_restored_state:
        raise CheckpointError(
            f"the savepoint has state for operators {unknown} that the job does not have (the job's operators have "
            f"uids {sorted(known)}); give the operators the uid() they had when the savepoint was taken (an "
            "operator without uid() gets one from its place in the graph, which changes when operators are added "
            "or removed before it), or pass allow_non_restored_state=True to drop that state"
        )
    plan: dict = {}
    committables: dict[str, list] = {uid: list(c) for uid, c in (metadata.get("carried_committables") or {}).items()}
    for v in vertices:
        for uid in v["uids"]:
            op = metadata["operators"].get(uid)
            if op is None:
                continue
            keyed: list[tuple[KeyGroupRange | None, bytes]] = []  # (the key groups it holds, its bytes)
            states: list[Any] = []  # operator states (each operator's own picklable value)
            splits: list[tuple[Any, Any]] = []  # (ordinal or None, source split of the source's own type)
            logs: list[pa.RecordBatch] = []
            for subtask in sorted(op["subtasks"]):
                entry = op["subtasks"][subtask]
                if entry.get("keyed") is not None:
                    keyed.append((_old_key_groups(op, subtask, max_parallelism), read(entry["keyed"])))
                if entry.get("op") is not None:
                    blob = loads(read(entry["op"]), what=f"operator state of {uid!r}")
                    states.append(blob.get("operator"))
                    held = blob.get("splits") or []
                    order = blob.get("order") or []
                    if len(order) != len(held):  # (a checkpoint of an older version: no ordinals)
                        order = [None] * len(held)
                    splits.extend(zip(order, held))
                if entry.get("log") is not None:
                    logs.extend(loads(read(entry["log"]), what=f"feedback log of {uid!r}"))
                if entry.get("committables"):
                    committables.setdefault(uid, []).extend(entry["committables"])
            # restored splits in the source's order (a reader reads its splits in list order,
            # which per-split watermarks rely on), then dealt by the work left in them
            splits.sort(key=lambda pair: (pair[0] is None, pair[0] or 0))
            try:
                dealt = assign_split_indices([split for _o, split in splits], v["parallelism"])
            except ValueError as exc:
                raise CheckpointError(f"cannot assign the restored source splits of {uid!r}: {exc}") from exc
            # each operator state as its share for one subtask: its KeyGroupedState parts
            # (per-key state an operator keeps outside the keyed backend) of that subtask's
            # key groups only; the rest of a state is the same object for every subtask
            sharers = [key_group_sharer(st) for st in states]
            for s in range(v["parallelism"]):
                task_plan = plan.setdefault((v["id"], s), {})
                mine = KeyGroupRange.for_subtask(s, v["parallelism"], max_parallelism)
                task_plan[uid] = {
                    # only the snapshots holding key groups of this subtask (a restoring task
                    # reads nothing else of them): each task gets its share of the keyed state,
                    # not all of it, and the master does not ship the whole state p times
                    "keyed": [blob for groups, blob in keyed if groups is None or _overlap(groups, mine)],
                    "operator": [share(mine) for share in sharers],
                    "splits": [splits[i][1] for i in dealt[s]] if uid == v.get("source_uid") else [],
                    "split_order": [splits[i][0] for i in dealt[s]] if uid == v.get("source_uid") else [],
                    "feedback_log": logs,
                }
    return plan, committables
