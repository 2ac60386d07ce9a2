"""The job master: deploys a job graph onto task executors, watches them, checkpoints,
restarts, and finishes or fails the job.

:class:`JobMaster` is a plain class driven by messages (its async methods), with no Ray in
it: task executors are reached through an :class:`~engine.executors.ExecutorRuntime`, the
state layer through the job's injected :class:`~engine.state_backend.StateBackend`. On Ray
it runs inside the thin named actor :class:`engine.ray_runtime.JobMasterActor`, so that the
driver, the CLI and the tasks can all reach it; tests drive it in process with fake
executors (``tests/unit/test_job_master.py``).

It runs one job at a time: the sinks' committers and, when checkpointing is on, the
checkpoint coordinator and the restart strategy. The driver's worker pool
(:mod:`engine.pool`) lends it a job's first task executors and takes back the master and
those executors when the job ends; executors of later attempts are the master's own.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import time
import traceback
import uuid
from functools import partial
from typing import Any, Awaitable, Callable, NoReturn, TypeGuard

import cloudpickle

from .channels import InputInfo, OutputInfo
from .config import JobConfig
from .connectors import assign_split_indices, split_kind
from .errors import (
    CheckpointError,
    ConfigError,
    JobCancelled,
    JobFailed,
    RaystreamError,
    unpickling_failed,
)
from .executors import ExecutorLost, ExecutorRuntime, TaskCallFailed
from .graph import JobGraph
from .observability import MetricsExporter
from .partitioners import ForwardPartitioner
from .restart import RestartStrategy
from .state_backend import CheckpointCoordinatorLike, StateBackend
from .task import TaskResult, TaskSpec

__all__ = ["JobConfig", "JobMaster", "build_task_specs", "task_actor_name", "slot_of", "standby_slots", "STANDBY_PREFIX",
           "LIVE_STATUSES"]

log = logging.getLogger(__name__)


#: how long a task's run sent with its setup (one executor hosts the whole job) waits for it
_SETUP_WAIT_S = 60.0

#: how long a savepoint request for a job whose ``run`` has not started on this master yet
#: waits for it (calls to the master's actor may start before the ``run`` submitted ahead of
#: them, whose large arguments are still being fetched)
EARLY_REQUEST_WAIT_S = 120.0

#: aborted checkpoints the master remembers, to delete a snapshot a task writes for one late
ABORTED_KEPT = 1024

#: how long the end of a job waits for the deletion of its checkpoints (a job that finished, or
#: one whose retention mode does not keep them) before it returns its result; a deletion that
#: takes longer goes on in the background
CLEANUP_WAIT_S = 10.0

#: how long a completed stop-with-savepoint waits for its tasks to take the notification before
#: it cancels them (a dead or unresponsive executor does not hold the stop back longer)
STOP_NOTIFY_WAIT_S = 10.0

#: the statuses of a job that has not ended (Flink's ``JobStatus`` names): ``CREATED`` while the
#: first attempt deploys, ``RUNNING`` once every task of the attempt is deployed, ``FAILING`` /
#: ``CANCELLING`` while a failed attempt's / a cancelled job's tasks are cancelled (none of them
#: runs any more), ``RESTARTING`` from then until the next attempt is deployed
LIVE_STATUSES = ("CREATED", "RUNNING", "FAILING", "CANCELLING", "RESTARTING")


def build_task_specs(job_id: str, graph: JobGraph, config: JobConfig, attempt: int, splits: dict,
                     restore: dict | None) -> dict[tuple[int, int], TaskSpec]:
    """One TaskSpec per (vertex, subtask), with channel numbering resolved."""
    specs: dict[tuple[int, int], TaskSpec] = {}
    # channel offsets at each target vertex: edges in the order of vertex.inputs
    offsets: dict[tuple[int, int], int] = {}
    inputs_of: dict[int, list[InputInfo]] = {}
    for v in graph.vertices:
        infos: list[InputInfo] = []
        for e in v.inputs:
            offsets[(id(e), v.id)] = len(infos)
            src = graph.vertex(e.source_vertex)
            for s in range(src.parallelism):
                infos.append(InputInfo(e.input_index, f"{src.name}#{s}", e.feedback))
        inputs_of[v.id] = infos
    for v in graph.vertices:
        for s in range(v.parallelism):
            outputs = []
            for e in v.outputs:
                target = graph.vertex(e.target_vertex)
                outputs.append(
                    OutputInfo(
                        partitioner=e.partitioner,
                        target_vertex=target.id,
                        num_targets=target.parallelism,
                        channel_index=offsets[(id(e), target.id)] + s,
                        feedback=e.feedback,
                        side_tag=e.side_tag,
                    )
                )
            src_splits = splits.get(v.id, [[] for _ in range(v.parallelism)])[s] if v.source else []  # (ordinal, split)
            specs[(v.id, s)] = TaskSpec(
                job_id=job_id,
                vertex_id=v.id,
                name=v.name,
                subtask_index=s,
                parallelism=v.parallelism,
                max_parallelism=graph.max_parallelism,
                chain=v.chain,
                inputs=inputs_of[v.id],
                outputs=outputs,
                config=config.task,
                source=v.source,
                splits=[split for _ordinal, split in src_splits],
                split_order=[ordinal for ordinal, _split in src_splits],
                attempt=attempt,
                restore=(restore or {}).get((v.id, s)),
                clock=config.clock,
                state_backend=config.state_backend,
                checkpointing=config.checkpoint is not None,
                # one more than the checkpoints that may be in progress at once: a snapshot of a
                # checkpoint that timed out may still be written while the next one is taken
                max_snapshots_in_flight=getattr(config.checkpoint, "max_concurrent", 1) + 1,
            )
    return specs


def task_actor_name(job_id: str, slot: str, attempt: int) -> str:
    """The Ray actor name of a task executor (namespace ``raystream``). ``slot`` is ``"s<i>"``
    with slot sharing (the actor hosting subtask i of every vertex), else ``"v<id>-s<i>"``.
    Tooling and failure tests find the actor of a task with ``JobClient.task_actor(v, s)``."""
    return f"raystream-task:{job_id}:{slot}:{attempt}"


def slot_of(vertex_id: int, subtask: int, slot_sharing: bool) -> str:
    """The executor slot hosting subtask ``subtask`` of vertex ``vertex_id``."""
    return f"s{subtask}" if slot_sharing else f"v{vertex_id}-s{subtask}"


def job_slots(graph: JobGraph, slot_sharing: bool) -> list[str]:
    """The executor slots a job deploys (one TaskActor each), in vertex order."""
    return list(dict.fromkeys(slot_of(v.id, s, slot_sharing) for v in graph.vertices for s in range(v.parallelism)))


#: slot names of the warm spare executors a job keeps for restarts (``JobConfig.standby_executors``)
STANDBY_PREFIX = "standby-"


def standby_slots(config: JobConfig) -> list[str]:
    """The spare executor slots of a job that can restart (checkpointing or a restart strategy
    set) and deploys onto the driver's worker pool: the driver lends their executors with the
    job's own, a restart puts one in place of each lost executor (no process start)."""
    if not config.reuse_workers or (config.checkpoint is None and config.restart is None):
        return []
    return [f"{STANDBY_PREFIX}{i}" for i in range(max(0, config.standby_executors))]


def attempt_executor_names(job_id: str, slots: list[str], attempt: int) -> dict[str, str]:
    """``{slot: actor name}`` for the task executors a master starts for a restart attempt."""
    return {slot: task_actor_name(job_id, slot, attempt) for slot in slots}


def _plan_splits(vertex: Any) -> list[list[tuple[int, Any]]]:
    """The splits of source ``vertex`` dealt out to its subtasks (:func:`assign_splits`), each
    with its ordinal (its place in the source's order: restored splits are read in it); a
    source whose splits cannot be made or weighed fails the job naming it."""
    try:
        splits = vertex.source.create_splits(vertex.parallelism)
        return [[(i, splits[i]) for i in dealt] for dealt in assign_split_indices(splits, vertex.parallelism)]
    except Exception as exc:
        raise JobFailed(
            f"source {vertex.name!r} ({vertex.source.describe()}): planning its splits failed: {type(exc).__name__}: {exc}"
        ) from exc


class _Unrecoverable(Exception):
    """Planning a restore failed with a CheckpointError: nothing to restart from."""

    def __init__(self, error: CheckpointError) -> None:
        super().__init__(str(error))
        self.error = error


class _SavepointWriteFailed(Exception):
    """Writing a savepoint's directory failed (its checkpoint is aborted; the cause is chained)."""


class _StopNotRecorded(_SavepointWriteFailed):
    """A stop-with-savepoint's savepoint was written, but recording the stop in checkpoint
    storage (its stop marker) failed: the stop fails like a savepoint that could not be written."""


class JobMaster:
    """Runs one job at a time. See the module docstring.

    A plain class driven by messages (its public async methods): the Ray actor
    :class:`engine.ray_runtime.JobMasterActor` is a thin wrapper around it, and tests drive it
    in one process with fake executors. ``runtime`` starts and addresses task executors.
    """

    def __init__(self, runtime: ExecutorRuntime, metrics_backend: Any = None) -> None:
        self.runtime = runtime
        self._metrics_backend = metrics_backend  # None: Ray metrics (engine.observability)
        # ``attempt`` counts every attempt of every job this master ran: calls that tasks of
        # an earlier attempt (or job) still make carry an older number and are dropped.
        self.attempt = 0
        self._first_attempt = 0  # the current job's first attempt
        self.job_id: str | None = None
        self.config: JobConfig | None = None
        self.graph: JobGraph | None = None
        self.status = "IDLE"
        self.actors: dict[tuple[int, int], Any] = {}
        self.executors: dict[str, Any] = {}
        self.executor_names: dict[str, str] = {}
        self.coordinator: CheckpointCoordinatorLike | None = None
        self.task_metrics: dict = {}
        self._sampled_metrics: dict[tuple[int, int], dict] = {}
        self.restarts = 0
        self._early_cancels: set[str] = set()
        # requests for a job whose run() has not started here yet wait for it: job id -> set
        # once that run started the job (or ended without starting it)
        self._arrivals: dict[str, asyncio.Event] = {}
        self._past_jobs: collections.deque[str] = collections.deque(maxlen=64)  # (the newest last)
        self._lent: set[str] = set()  # slots of the running attempt whose executor the driver lent
        self._spares: list[Any] = []  # warm spare executors for restarts (engine.executors.Executor)
        self._driver_slot: dict[str, str] = {}
        self._slot_executors: dict[str, Any] = {}
        self._busy = False
        self._cleanups: set[asyncio.Future] = set()  # deletions of ended jobs' checkpoints still running
        self._sink_cleanups: set[asyncio.Future] = set()  # (of them, the sinks' clean-ups at a job's end)
        # job id -> the deletion of its checkpoints, done once its driver has the result
        self._ending: dict[str, Callable[[], Awaitable[None]]] = {}
        self.checkpoint_cleanup: str | None = None  # what became of the last job's checkpoints
        #: what became of the part files the last job's sinks left, when it failed or was cancelled
        self.sink_cleanup: str | None = None
        self._restoring: Any = None  # the retained checkpoint the job restores from (marked in use)
        #: the driver's slot of each lent executor handed back at the job's end -> the tag of the
        #: release it finishes before the next job's tasks (None: released already, clean)
        self.released: dict[str, str | None] = {}
        #: nodes where executors of the running job were lost and none of its executors answered
        #: since (Flink's lost TaskManager): a restart places no new executor there (_deploy)
        self._lost_nodes: set[str] = set()

    def _start_job(self, graph_blob: bytes, config_blob: bytes, job_id: str | None,
                   executors: dict[str, Any] | None) -> None:
        """Everything about one job, from a clean slate (a master runs one job at a time)."""
        for earlier in list(self._ending):  # (its driver gave this master back without end_checkpoints)
            self._start_ending(earlier)
        # executors: the first attempt's executors, lent by the driver's worker pool (warm
        # ones from earlier jobs, or new ones started while this master was starting).
        lent = dict(executors or {})
        # the driver's slot of every executor it lent, by name: after restarts an executor
        # may serve another slot (a spare), and the driver takes back by its own slots
        self._driver_slot = {e.name: slot for slot, e in lent.items()}
        self._spares = [lent.pop(slot) for slot in list(lent) if slot.startswith(STANDBY_PREFIX)]
        self._prestarted: dict[str, Any] = lent
        self._slot_executors = {}  # slot -> Executor of the running attempt
        try:
            config: JobConfig = cloudpickle.loads(config_blob)
        except Exception as exc:
            raise unpickling_failed("the configuration of a job", f"in the job master (pid {os.getpid()})", exc) from exc
        try:
            graph: JobGraph = cloudpickle.loads(graph_blob)  # (sources and sinks: the operators stay pickled)
        except Exception as exc:
            raise unpickling_failed(f"the sources and sinks of job {config.name!r}", f"in the job master (pid {os.getpid()})",
                                    exc) from exc
        self.graph = graph
        self._payloads: dict[int, tuple[Any, Any]] = {}  # vertex id -> shared (pickled (chain, source), operators), see _deploy
        self.config = config
        job_id = job_id or f"{config.name}-{uuid.uuid4().hex[:8]}"
        self.job_id = job_id
        self.status = "CREATED"
        self.attempt += 1
        self._first_attempt = self.attempt
        self.restarts = 0
        self.actors = {}  # (vertex, subtask) -> TaskRef
        self.executors = {}  # slot -> TaskActor
        self.executor_names = {}  # slot -> its Ray actor name
        self.released = {}  # the driver's slot of a lent executor handed back -> its job tag (None: clean)
        self._lost_nodes = set()
        self._tag = ""  # the tag of this attempt's task keys on their executors
        self._early_runs: dict[asyncio.Future, tuple[int, int]] | None = None  # runs sent with the setups
        self.task_metrics = {}
        self._sampled_metrics = {}  # the last metrics each task answered
        self.error: JobFailed | None = None
        self.started = time.time()
        self.finished_at: float | None = None
        self._cancel = asyncio.Event()
        if job_id in self._early_cancels:
            self._early_cancels.discard(job_id)
            self._cancel.set()
        self.committers = {}
        self._sink_names: dict[str, str] = {}  # sink uid -> its operator name
        for v in graph.vertices:
            for op in v.chain:
                sink = op.get("sink")
                if sink is not None:
                    self._sink_names[op["uid"]] = op.get("name") or op["uid"]
                    try:
                        committer = sink.create_committer()
                    except Exception as exc:
                        self.error = JobFailed(
                            f"{type(sink).__name__}.create_committer() of {self._sink(op['uid'])} failed in the job "
                            f"master: {type(exc).__name__}: {exc}; it runs once per job, before any task starts: fix "
                            "it, or return None from it for a sink whose writes are visible at once",
                            operator=self._sink_names[op["uid"]], cause=_traceback(exc))
                        raise self.error from exc
                    if committer is not None:
                        self.committers[op["uid"]] = committer
        self.coordinator = None
        if config.checkpoint is not None:
            tasks = [(v.id, s) for v in graph.vertices for s in range(v.parallelism)]
            self.coordinator = self._state_backend.create_coordinator(config.checkpoint, job_id, tasks)
        self.restart = config.restart or (
            RestartStrategy.fixed_delay(3, 500) if self.coordinator is not None else RestartStrategy.none()
        )
        self.failures = 0
        self.last_failure: str | None = None
        self.restored_from: Any = None
        self.checkpoint_cleanup = None
        self.sink_cleanup = None
        self._restoring = None
        self.stopped_with_savepoint: str | None = None
        # the path of the stop-with-savepoint that completed and commits its output (the job
        # ends there: a failure from then on restarts nothing, _end_after_stop), and whether
        # that commit finished
        self._stop_completed: str | None = None
        self._stop_committed = False
        # the stop marker a takeover found in checkpoint storage (the job had stopped with a
        # savepoint when its master died): the job ends there (_finish_stop), nothing runs
        self._stop_marker: dict | None = None
        self._all_finished = False
        self._stopping = False
        self._savepoint_requests: list[tuple[str, bool]] = []  # (path, stop the job at it)
        self._final_committables: dict[str, list] = {}  # without checkpointing: committed at the end
        self._completing = 0  # checkpoints whose metadata/commit is being written right now
        self._completed_all = asyncio.Event()
        self._completed_all.set()
        # completed checkpoints are committed one commit at a time, in order (Committer: never
        # concurrently with itself); a commit takes every completed checkpoint not committed yet
        self._commit_lock = asyncio.Lock()
        # aborted checkpoints whose directories go (ids, oldest first, bounded): a snapshot a
        # task writes for one after its abort is deleted when its ack or decline arrives
        self._aborted: dict[int, None] = {}
        self._discard_lock = asyncio.Lock()  # (one deletion at a time, in order)
        self._discards: set[asyncio.Future] = set()
        self._retention_queued = False  # a retention pass waits for the lock (one is enough)
        self._to_discard: dict[int, None] = {}  # aborted checkpoints whose directories are to be deleted
        self._discard_queued = False  # a pass deleting them waits for the lock or runs (one is enough)
        self._failure: asyncio.Future = asyncio.get_running_loop().create_future()  # fails the attempt
        self._savepoint_waiters: dict[str, list] = {}
        self._idle_requests: set[int] = set()
        self._waves: dict[int, tuple[int, asyncio.Task]] = {}  # loop vertex -> (attempt, its probe wave)

    # -------------------------------------------------------------- queries
    def _other_job(self, job_id: str | None) -> TypeGuard[str]:
        """A client asked about ``job_id`` while this master does not run it (yet): calls to
        an async actor may start before the ``run`` call submitted ahead of them."""
        return job_id is not None and job_id != self.job_id

    def _job_arrived(self, job_id: str) -> None:
        """Wake the requests that wait for job ``job_id`` to start here (see :meth:`_await_job`)."""
        arrival = self._arrivals.pop(job_id, None)
        if arrival is not None:
            arrival.set()

    async def _await_job(self, job_id: str, request: str) -> None:
        """Wait until job ``job_id`` has started on this master: a call to the master's actor
        may start before the ``run`` call submitted ahead of it (its large arguments are still
        being fetched). Raises CheckpointError when that job ended here already, or its run
        ended without starting it, or it does not start within :data:`EARLY_REQUEST_WAIT_S`."""
        if job_id in self._past_jobs:
            raise CheckpointError(f"{request} failed: job {job_id!r} has ended (its job master now runs {self.job_id!r})")
        arrival = self._arrivals.setdefault(job_id, asyncio.Event())
        try:
            await asyncio.wait_for(arrival.wait(), EARLY_REQUEST_WAIT_S)
        except asyncio.TimeoutError:
            if self._arrivals.get(job_id) is arrival:
                del self._arrivals[job_id]
            raise CheckpointError(
                f"{request} failed: job {job_id!r} did not start on its job master within {EARLY_REQUEST_WAIT_S:.0f} s "
                f"(the master {'runs ' + repr(self.job_id) if self._busy else 'is idle'}); ask again once "
                f"client.status() is RUNNING"
            ) from None
        if self._other_job(job_id):
            raise CheckpointError(
                f"{request} failed: job {job_id!r} ended before its job master could start it (its client's wait() "
                f"raises why)"
            )

    @property
    def _job_id(self) -> str:
        """The id of the job this master runs (or ran last)."""
        if self.job_id is None:
            raise RuntimeError("the job master has not been given a job yet: call run() first")
        return self.job_id

    @property
    def _config(self) -> JobConfig:
        """The config of the job this master runs (or ran last)."""
        if self.config is None:
            raise RuntimeError("the job master has not been given a job yet: call run() first")
        return self.config

    @property
    def _graph(self) -> JobGraph:
        """The graph of the job this master runs (or ran last)."""
        if self.graph is None:
            raise RuntimeError("the job master has not been given a job yet: call run() first")
        return self.graph

    @property
    def _state_backend(self) -> StateBackend:
        """The job's state backend (``engine.submit`` fills in the default)."""
        backend = self._config.state_backend
        if backend is None:
            raise ConfigError(f"job {self.job_id!r} has no state backend: submit it with engine.submit()")
        return backend

    @property
    def _checkpoints(self) -> CheckpointCoordinatorLike:
        """The checkpoint coordinator of the running job (only when checkpointing is on)."""
        if self.coordinator is None:
            raise RuntimeError(f"job {self.job_id!r} does not checkpoint: its master has no checkpoint coordinator")
        return self.coordinator

    async def job_info(self, job_id: str | None = None) -> dict:
        if self._other_job(job_id):
            return {"job_id": job_id, "name": None, "status": "CREATED", "attempt": 0, "restarts": 0}
        if self.config is None:
            return {"job_id": None, "name": None, "status": "IDLE"}
        return {
            "job_id": self.job_id,
            "name": self.config.name,
            "status": self.status,
            "attempt": self.attempt - self._first_attempt,
            "restarts": self.restarts,
            "started": self.started,
            "finished": self.finished_at,
            "error": str(self.error) if self.error else None,
            "last_failure": self.last_failure,
            "restored_from": self.restored_from,
            "graph": self._graph.describe(),
            "operators": [op["name"] for v in self._graph.vertices for op in v.chain],  # pipeline order
            "checkpoints": self.coordinator.stats() if self.coordinator else None,
            "checkpoint_cleanup": self.checkpoint_cleanup,
            "sink_cleanup": self.sink_cleanup,
        }

    async def metrics(self, job_id: str | None = None) -> dict:
        if self._other_job(job_id):
            return _aggregate_metrics({}, 0)
        live = {}
        # (while a failed attempt is torn down and a restart redeploys, the actors are the failed
        # attempt's: not asked)
        attempt = self.attempt
        refs = {k: a.metrics.remote() for k, a in self.actors.items()} if self.status not in ("FAILING", "CANCELLING", "RESTARTING") else {}
        for k, ref in refs.items():
            try:
                live[k] = await asyncio.wait_for(self.runtime.wait(ref), 2.0)
                if self.attempt == attempt:
                    self._sampled_metrics[k] = live[k]
            except Exception:  # a task that is gone keeps its last known metrics
                live[k] = self.task_metrics.get(k) or self._sampled_metrics.get(k, {})
        if self.attempt != attempt:  # the job restarted while they answered: the failed attempt's
            live = {}
        # (the tasks of a job that failed or was cancelled are gone: their metrics as last
        # sampled, which the exporter does about once a second, stand for them)
        merged = {**self._sampled_metrics, **self.task_metrics}
        merged.update(live)
        out = _aggregate_metrics(merged, self.restarts)
        if self.coordinator is not None:
            st = self.coordinator.stats()
            last = next((h for h in reversed(self.coordinator.history) if h["status"] == "COMPLETED"), None)
            out["checkpoints"] = {
                "completed": st["completed"],
                "aborted": st["aborted"],
                # (while checkpoints keep failing: how many in a row, and since when none completed)
                "consecutive_failures": st.get("consecutive_failures", 0),
                "last_duration_s": last["duration_s"] if last else 0.0,
                "last_bytes": last["bytes"] if last else 0,
                # aborted checkpoints whose directories wait to be deleted, and the deleting
                # passes (one at a time: a backlog is these ids, never a task per checkpoint)
                "deletions_pending": len(self._to_discard),
                "deletion_passes": len(self._discards),
            }
        return out

    async def _export_metrics(self) -> None:
        """Publish metrics (Ray metrics -> Prometheus, or the ``metrics_backend`` given to the
        constructor) about once a second while running."""
        exporter = MetricsExporter(self._job_id, self._config.name, backend=self._metrics_backend)
        try:
            while True:
                await asyncio.sleep(1.0)
                exporter.update(await self.metrics())
        finally:
            exporter.close()

    async def cancel(self, job_id: str | None = None) -> None:
        if self._other_job(job_id):
            if job_id not in self._past_jobs:  # (a late cancel of an ended job is kept by nobody)
                self._early_cancels.add(job_id)  # its run() has not started yet
            return
        self._cancel.set()

    async def released_executors(self, job_id: str) -> dict[str, str | None]:
        """The executors the driver lent to job ``job_id`` that go back to its worker pool, as
        ``{driver's slot: tag of the release each finishes before the next job's tasks, or
        None when it is released and clean already}``; empty while the job runs, for another
        job, or when none goes back. A finished job's run returns the same as ``"released"``;
        the driver asks this of a job that failed or was cancelled (its run raised)."""
        if self._other_job(job_id) or self._busy:
            return {}
        return dict(self.released)

    async def task_actor_names(self) -> dict[tuple[int, int], str]:
        """``{(vertex id, subtask): name of the TaskActor hosting it}`` for the running attempt."""
        return {key: self.executor_names[slot_of(key[0], key[1], self._config.slot_sharing)] for key in self.actors}

    # -------------------------------------------------------------- feedback-loop termination
    async def task_idle(self, attempt: int, vertex_id: int, subtask: int) -> None:
        """A task of a feedback loop went idle: probe the loop for termination."""
        if attempt != self.attempt:
            return
        self._idle_requests.add(vertex_id)
        wave = self._waves.get(vertex_id)
        if wave is not None and wave[0] != attempt:
            # a wave of a failed attempt is still out: it serves none of this attempt's reports
            # (it ends at its next step without probing again), and it may never come back (a
            # probe posted to a task cancelled before it took that mail out is never answered,
            # while a restart reuses its executor): while it counted as out, no wave started
            # for the restarted loop, whose tasks report idle once, and the job never ended
            wave[1].cancel()
            wave = None
        if wave is None:
            self._waves[vertex_id] = (attempt, asyncio.ensure_future(self._detect_termination(vertex_id, attempt)))

    async def _detect_termination(self, vertex_id: int, attempt: int) -> None:
        """Mattern's four-counter method: two consecutive probe waves that see every task
        idle with equal, unchanged feedback send/receive totals prove the loop is empty.

        A wave starts as soon as a task reports idle (no pause to gather the others'
        reports: it used to wait 10 ms, which every job with a loop paid at its end). A wave
        that fails (a task busy, a record in flight, totals that moved between the waves)
        is followed by another only when a task reported idle since it started: every task
        reports again when it goes idle after receiving from the loop."""
        try:
            while vertex_id in self._idle_requests and attempt == self.attempt:
                self._idle_requests.discard(vertex_id)
                await asyncio.sleep(0)  # (reports already queued on the loop coalesce into this wave)
                tasks = [a for (v, _s), a in self.actors.items() if v == vertex_id]
                first = await asyncio.gather(*[self.runtime.wait(a.probe.remote()) for a in tasks])
                if not all(idle for idle, _, _ in first):
                    continue
                if sum(s for _, s, _ in first) != sum(r for _, _, r in first):
                    continue
                second = await asyncio.gather(*[self.runtime.wait(a.probe.remote()) for a in tasks])
                if second == first and attempt == self.attempt:
                    for a in tasks:
                        a.end_feedback.remote()
                    return
        except Exception:  # tasks died: failover handles it
            log.debug("termination probe of vertex %s interrupted", vertex_id, exc_info=True)
        finally:
            wave = self._waves.get(vertex_id)
            if wave is not None and wave[0] == attempt:  # (not a later attempt's wave)
                del self._waves[vertex_id]

    # -------------------------------------------------------------- lifecycle
    async def run(self, graph_blob: bytes, config_blob: bytes, job_id: str | None = None,
                  executors: dict[str, Any] | None = None, recover: bool = False) -> dict:
        """Run a job to its end; returns a result dict or raises JobFailed/JobCancelled.

        ``executors``: ``{slot: engine.pool.Executor}`` for the first attempt. Task failures
        restart the whole job from the latest complete checkpoint (or from scratch when none
        completed yet) as long as the restart strategy allows. The result's ``"released"``
        maps the driver's slots of the executors it lent that go back to the driver's worker
        pool to the tag of the release they finish before the next job's tasks (each ends
        itself if its release finds it not clean).

        ``recover``: this master takes over job ``job_id`` from a master that died (job
        master failover): the tasks the old master deployed are killed, and the job resumes
        from the latest complete checkpoint in checkpoint storage.
        """
        if self._busy:
            raise RuntimeError(f"job master is busy with job {self.job_id}")
        self._busy = True
        attempts_before = self.attempt  # (_start_job counts the job's first attempt)
        result: dict | None = None
        try:
            last = getattr(self, "_completed_all", None)
            if last is not None and not last.is_set():
                # The last job's checkpoint completions still run (it was cancelled, or failed for
                # good, during a slow commit: committed output, it goes on). They act on that job's
                # state, which this job's start replaces: the next job starts once they ended.
                # (Before, the old commit's end counted down this job's completions, and this job
                # waited for them forever at its end; a commit reaching its committers after the
                # start committed the old job's output into this job's sinks.)
                log.info("job master: the next job (%s) waits for the commit of job %s to end", job_id, self.job_id)
                await last.wait()
            result = await self._run(graph_blob, config_blob, job_id, executors, recover)
            return result
        finally:
            self._busy = False
            if self.status in LIVE_STATUSES:  # ended by an error raised early
                self.status = "FAILED"
                self.finished_at = time.time()
            # (a run that failed before it started its job, e.g. a graph that cannot be
            # unpickled, leaves the previous job's checkpoints as that job's end left them)
            if self.attempt != attempts_before and self.status in ("FINISHED", "CANCELLED", "FAILED"):
                self._plan_end_checkpoints()
            if result is not None:  # (the driver calls end_checkpoints() once it has the result)
                result["end_checkpoints"] = self._job_id in self._ending
            if job_id is not None:
                self._past_jobs.append(job_id)
                self._job_arrived(job_id)  # (requests waiting for a run that ended before it started the job)

    def _plan_end_checkpoints(self) -> None:
        """The job ended: plan what :meth:`end_checkpoints` does once its driver has the
        result: delete the job's checkpoints (``<checkpoint_dir>/<job id>/``: checkpoint
        directories, shared files, commit log) unless its retention mode keeps them for how it
        ended (``CheckpointConfig.externalized_checkpoint_retention``; a finished job keeps none),
        and take its marker off the retained checkpoint it restored from.

        Not before the driver has the result: a master that died while it deleted them would
        leave the driver's takeover (job master failover) nothing to restore from, and the job
        would run again from its start, its output into the sinks twice."""
        restoring, self._restoring = self._restoring, None
        coordinator, job_id, status = self.coordinator, self._job_id, self.status
        # the sinks clean up again once the checkpoints are deleted: the files those recorded
        # (kept by _clean_up_sinks for a job started from them) have no checkpoint left
        cleaners = self._sink_cleaners() if status in ("FAILED", "CANCELLED") else {}
        keeps = getattr(self._config.checkpoint, "keeps", None)
        doomed = coordinator is not None and keeps is not None and not keeps(status)
        if coordinator is not None and not doomed:
            mode = getattr(self._config.checkpoint, "externalized_checkpoint_retention", None)
            self.checkpoint_cleanup = f"kept: the job {status.lower()} ({getattr(mode, 'value', mode)})"
        if restoring is None and not doomed:
            return
        storage, lock = (coordinator.storage if coordinator is not None else None), self._discard_lock

        async def clean() -> None:
            if restoring is not None:
                await asyncio.to_thread(restoring.unmark_restoring, job_id)
            if not doomed or storage is None:
                return
            self.checkpoint_cleanup = "deleting"
            deleted: Any = ()
            async with lock:  # (after the deletions of aborted checkpoints queued before it)
                try:
                    deleted, kept = await asyncio.to_thread(storage.discard_job, job_id)
                except Exception as exc:  # noqa: BLE001 - cleaning up must never fail the job
                    log.warning("job %s %s: could not delete its checkpoints in %r (delete what is left by hand): %s",
                                job_id, status.lower(), storage, exc, exc_info=True)
                    outcome = f"failed: {exc}"
                else:
                    outcome = f"deleted {len(deleted)} checkpoints"
                    if kept:
                        outcome += "; kept " + ", ".join(f"chk-{cid} (restored from by {', '.join(users)})"
                                                         for cid, users in sorted(kept.items()))
                        log.info("job %s: %s", job_id, outcome)
                if self.job_id == job_id:  # (a pooled master may run the next job already)
                    self.checkpoint_cleanup = outcome
            if cleaners and deleted:
                # (after the end's first clean-up: what a checkpoint another job restores from
                # records stays, as _recorded_committables still reads it)
                await asyncio.gather(*self._sink_cleanups)
                swept = await asyncio.to_thread(self._clean_up_sinks_now, job_id, status, coordinator, cleaners)
                if self.job_id == job_id:
                    self.sink_cleanup = f"{self.sink_cleanup}; with the checkpoints: {swept}"

        self._ending[job_id] = clean

    def _start_ending(self, job_id: str) -> asyncio.Future | None:
        clean = self._ending.pop(job_id, None)
        if clean is None:
            return None
        fut = asyncio.ensure_future(clean())
        self._cleanups.add(fut)
        fut.add_done_callback(self._cleanups.discard)
        return fut

    async def end_checkpoints(self, job_id: str) -> str | None:
        """The driver has the result of job ``job_id`` (finished, failed or cancelled): delete
        its checkpoints as its retention mode says (see :meth:`_plan_end_checkpoints`), on a
        worker thread (the master's loop goes on), waited for at most :data:`CLEANUP_WAIT_S`,
        then in the background; a deletion that fails is logged, never fails the job (what is
        left can be deleted by hand). A checkpoint another job is restoring from stays.
        Returns what became of the checkpoints (``info()["checkpoint_cleanup"]``)."""
        fut = self._start_ending(job_id)
        if fut is not None:
            try:
                await asyncio.wait_for(asyncio.shield(fut), CLEANUP_WAIT_S)
            except asyncio.TimeoutError:
                log.warning("job %s: deleting its checkpoints takes longer than %.0f s; it goes on in the background",
                            job_id, CLEANUP_WAIT_S)
        return self.checkpoint_cleanup if self.job_id == job_id else None

    async def _run(self, graph_blob: bytes, config_blob: bytes, job_id: str | None, executors: dict | None,
                   recover: bool = False) -> dict:
        self._start_job(graph_blob, config_blob, job_id, executors)  # status CREATED until deployed
        self._job_arrived(self._job_id)
        source_splits = {v.id: _plan_splits(v) for v in self._graph.vertices if v.source is not None}
        restore = None
        exporter = asyncio.ensure_future(self._export_metrics())
        try:
            return await self._run_job(source_splits, restore, recover)
        finally:
            exporter.cancel()
            # savepoint requests the job ended before taking (e.g. every task finished while
            # a checkpoint was in progress): their callers get an error, never a wait forever
            # (and any other savepoint not settled: its caller never waits for a job that ended)
            queued = {path for path, _stop in self._savepoint_requests}
            self._savepoint_requests = []
            ended = {"FINISHED": "finished", "CANCELLED": "was cancelled"}.get(self.status, "failed")
            if self.status != "FINISHED":
                self._abort_in_progress(f"the job {ended}")
            for path in list(self._savepoint_waiters):
                when = "before it could be taken" if path in queued else "while it was taken"
                self._resolve_savepoint(path, CheckpointError(f"savepoint to {path!r} failed: the job {ended} {when}"))
            self._payloads = {}  # (an idle pooled master keeps no pickled operators)
            for v in self._graph.vertices:  # nor the driver's: no attempt follows
                v.operators = None
            pre, self._prestarted = self._prestarted, {}
            spares, self._spares = self._spares, []
            # executors the job ended before deploying onto (e.g. a bad savepoint), kept from a
            # failed or cancelled attempt (released clean: _teardown) for a restart that did not
            # come, and unused spares: idle and clean, so those the driver lent go back to its
            # worker pool (released_executors) as a finished job's do; the master's own are killed
            idle = [*pre.values(), *spares]
            back = [e for e in idle if self._config.reuse_workers and e.name in self._driver_slot]
            for e in back:
                self.released[self._driver_slot[e.name]] = None
            self.runtime.kill(e.actor for e in idle if e not in back)
            if self.status in ("FAILED", "CANCELLED"):
                await self._clean_up_sinks()

    async def _clean_up_sinks(self) -> None:
        """The job ended for good (it failed, or was cancelled; no attempt follows, its tasks are
        torn down): the sinks delete the uncommitted output their attempts left (file sinks:
        the in-progress and pending part files in ``<dir>/.raystream/``; a committer's
        ``clean_up_after_job(job_id, uid, recorded)``), except what a complete checkpoint of the
        job in storage records (``recorded``: a job started from a retained checkpoint commits
        it) and what a savepoint records (the sinks' markers). First every ``_metadata`` write
        in flight ends (one that lands records files too). On a worker thread, waited for at
        most :data:`CLEANUP_WAIT_S`, then in the background. Never changes how the job ended: a
        failure is logged and ``job_info()["sink_cleanup"]`` says so ("failed: ..."); what it
        could not delete stays, hidden. Storage whose checkpoints cannot be read deletes nothing
        (it cannot tell what they record)."""
        cleaners = self._sink_cleaners()
        if not cleaners:
            return
        job_id, status, coordinator = self._job_id, self.status, self.coordinator
        self.sink_cleanup = "deleting"

        async def clean() -> None:
            try:
                await self._wait_for_completions()  # (a _metadata write in flight may record files yet)
                outcome = await asyncio.to_thread(self._clean_up_sinks_now, job_id, status, coordinator, cleaners)
            except Exception as exc:  # noqa: BLE001 - cleaning up must never change how the job ended
                log.warning("job %s %s: cleaning up its sinks' uncommitted files failed: %s", job_id, status.lower(),
                            exc, exc_info=True)
                outcome = f"failed: {type(exc).__name__}: {exc}"
            if self.job_id == job_id:  # (a pooled master may run the next job already)
                self.sink_cleanup = outcome

        fut = asyncio.ensure_future(clean())
        self._cleanups.add(fut)
        fut.add_done_callback(self._cleanups.discard)
        self._sink_cleanups.add(fut)
        fut.add_done_callback(self._sink_cleanups.discard)
        try:
            await asyncio.wait_for(asyncio.shield(fut), CLEANUP_WAIT_S)
        except asyncio.TimeoutError:
            log.warning("job %s: cleaning up its sinks' uncommitted files takes longer than %.0f s; it goes on in the "
                        "background", job_id, CLEANUP_WAIT_S)

    def _sink_cleaners(self) -> dict[str, Any]:
        """The job's sinks' ``clean_up_after_job`` by sink uid (the committers that have one)."""
        return {uid: fn for uid, committer in self.committers.items()
                if (fn := getattr(committer, "clean_up_after_job", None)) is not None}

    def _clean_up_sinks_now(self, job_id: str, status: str, coordinator: Any, cleaners: dict[str, Any]) -> str:
        """:meth:`_clean_up_sinks` on a worker thread; returns its outcome."""
        try:
            recorded = _recorded_committables(coordinator.storage, job_id) if coordinator is not None else {}
        except Exception as exc:  # noqa: BLE001 - unsure what the checkpoints record: delete nothing
            log.warning("job %s %s: its sinks' uncommitted files stay (delete them by hand): the job's checkpoints in "
                        "%r cannot be read to tell what they record: %s", job_id, status.lower(),
                        coordinator.storage, exc, exc_info=True)
            return f"failed: the checkpoints cannot be read ({type(exc).__name__}: {exc}); nothing deleted"
        removed, failed = 0, []
        for uid, clean in cleaners.items():
            try:
                removed += int(clean(job_id, uid, recorded.get(uid, [])))
            except Exception as exc:  # noqa: BLE001 - one sink's failure leaves the others to clean up
                log.warning("job %s %s: %s could not delete the uncommitted files its attempts left (they stay, hidden; "
                            "delete them by hand): %s: %s", job_id, status.lower(), self._sink(uid),
                            type(exc).__name__, exc, exc_info=True)
                failed.append(f"{self._sink(uid)}: {type(exc).__name__}: {exc}")
        done = f"deleted {removed} uncommitted files"
        return f"failed: {'; '.join(failed)} ({done})" if failed else done

    async def _run_job(self, source_splits: dict, restore: dict | None, recover: bool = False) -> dict:
        # Planning a restore re-commits what the restored checkpoint covers (idempotently), and
        # a commit can fail (e.g. a rename on flaky storage): planning is part of the attempt,
        # so such a failure restarts the job like any other instead of ending it.
        plan: Callable[[], Awaitable[dict | None]] | None = None
        if recover:
            plan = self._take_over
        elif self._config.from_savepoint:
            path = self._config.from_savepoint
            plan = partial(asyncio.to_thread, self._plan_from_savepoint, path)
        failure: JobFailed | None = None
        while True:
            try:
                if plan is not None:
                    try:
                        restore = await plan()
                    except CheckpointError as cexc:
                        if getattr(cexc, "retryable", False):  # storage unavailable now: restart and plan again
                            raise JobFailed(f"job {self._config.name!r}: restoring failed: {cexc}") from cexc
                        raise _Unrecoverable(cexc) from cexc
                    except OSError as oexc:  # (storage that raised past its wrapping: plan again too)
                        raise JobFailed(f"job {self._config.name!r}: restoring failed: reading checkpoint storage "
                                        f"failed: {type(oexc).__name__}: {oexc}") from oexc
                    plan = None
                    if self._stop_marker is not None:  # (the takeover found the job stopped)
                        await self._finish_stop(self._stop_marker)
                        break
                # the attempt drops the plan once its tasks hold it (a restart plans again)
                planned, restore = [restore], None
                await self._run_attempt(source_splits, planned)
                if self.coordinator is not None and not self._stopping:
                    await self._final_checkpoint()
                break
            except JobCancelled:
                self.status = "CANCELLED"
                self.finished_at = time.time()
                raise
            except _Unrecoverable as unrecoverable:  # no checkpoint or savepoint to restore from
                error = unrecoverable.error
                self.error = JobFailed(f"cannot recover from {failure}: {error}" if failure else str(error))
                self.status = "FAILED"
                self.finished_at = time.time()
                raise error from None
            except (JobFailed, CheckpointError) as exc:
                if self._stop_completed is not None:
                    await self._end_after_stop(exc)  # (raises when its output may not be committed)
                    break
                # (a CheckpointError here: more consecutive checkpoint failures than
                # tolerable_failures; as in Flink, the job fails over under its restart strategy)
                failure = exc if isinstance(exc, JobFailed) else JobFailed(f"job {self._config.name!r}: {exc}")
                self.failures += 1
                delay = self.restart.next_delay_s(self.failures)
                savepoint = self._config.from_savepoint
                refused = failure.state_refused and savepoint is not None and self.restored_from == savepoint
                if refused:
                    # a task refused the state of the user's savepoint (keys of another type, a
                    # state or operator of another kind): every restart would restore the same
                    # savepoint into the same job and meet the same refusal (as in Flink, a restore
                    # of a user-given savepoint that fails is not recovered by restarts). Before,
                    # the restart strategy restored it again until it gave up ("gave up after 3
                    # restarts"; with exponential_backoff(attempts=10) minutes later)
                    failure = JobFailed(
                        f"{failure}\n  (the job restored savepoint {savepoint!r}, which it cannot take: not restarted, "
                        "each restart would restore it again)",
                        operator=failure.operator, subtask=failure.subtask, record=failure.record,
                        cause=failure.cause, state_refused=True)
                    delay = None
                if delay is None:
                    if self.restarts and not refused:
                        failure = JobFailed(
                            f"{failure} (gave up after {self.restarts} restarts)",
                            operator=failure.operator, subtask=failure.subtask,
                            record=failure.record, cause=failure.cause,
                        )
                    self.error = failure
                    self.status = "FAILED"
                    self.finished_at = time.time()
                    raise failure from None
                log.warning("job %s: %s; restarting in %.2fs", self.job_id, failure, delay)
                self.status = "RESTARTING"
                self.last_failure = str(failure)
                self.restarts += 1
                self.attempt += 1  # calls of the failed attempt's tasks are dropped from now on
                # metrics count the running attempt (as Flink's task counters, reset on failover):
                # none of the failed attempt's stand in for the new one's tasks
                self._sampled_metrics, self.task_metrics = {}, {}
                self._final_committables = {}  # their data is replayed
                # every savepoint the failed attempt took up fails (pending, being written, or
                # completed and being committed when the commit failed); requests not taken yet
                # are taken by the next attempt
                queued = {path for path, _stop in self._savepoint_requests}
                for path in [path for path in self._savepoint_waiters if path not in queued]:
                    self._resolve_savepoint(path, CheckpointError(
                        f"savepoint to {path!r} failed: the job failed and restarts ({failure})"))
                if self.coordinator is not None:
                    for p in list(self.coordinator.checkpoints.values()):
                        if p.status == "PENDING":  # (a finalizing one is settled by its metadata write)
                            self._discard_aborted(p.checkpoint_id)
                    self.coordinator.reset_for_restart()
                await asyncio.sleep(delay)
                await self._wait_for_completions()
                if not (recover and plan is not None):  # (a takeover that failed is done again)
                    plan = partial(asyncio.to_thread, self._plan_from_latest_checkpoint)
        await self._wait_for_completions()
        if self.coordinator is None:
            for uid in self.committers:
                final = list(self._final_committables.get(uid, []))
                if final:
                    self._commit_to(uid, final)  # (a failure is JobFailed naming the sink)
        results = {uid: self._result_of(uid) for uid in self.committers}
        self.status = "FINISHED"
        self.finished_at = time.time()
        return {
            "job_id": self.job_id,
            "results": results,
            "metrics": _aggregate_metrics(self.task_metrics, self.restarts),
            "duration_s": self.finished_at - self.started,
            "checkpoints": self.coordinator.stats() if self.coordinator else None,
            "savepoint": self.stopped_with_savepoint,
            "released": self.released,
        }

    async def _end_after_stop(self, exc: BaseException) -> None:
        """A failure after a stop-with-savepoint completed (while its output was committed, or
        its tasks were being cancelled): the job is not restarted, since a restart restores the
        newest *checkpoint*, from before the savepoint, and would replay what the savepoint
        committed (duplicates), then run on although stopped (as Flink, FLINK-26783). Once its
        commit finished the job ends FINISHED with the savepoint; a commit that failed ends it
        FAILED, naming the savepoint to start from (its restore commits what it covers)."""
        await self._wait_for_completions()
        if self._failure.done() and not self._failure.cancelled():
            self._failure.exception()  # (the commit's own failure, set after the attempt ended: seen here)
        path = self._stop_completed or ""
        if not self._stop_committed:
            error = JobFailed(
                f"job {self._config.name!r}: stop-with-savepoint to {path!r} completed, but committing its output did "
                f"not finish ({exc}); the job is not restarted (a restart would replay output the savepoint may have "
                "committed): start it from the savepoint, which commits what it covers")
            self.error, self.status, self.finished_at = error, "FAILED", time.time()
            self._resolve_savepoint(path, CheckpointError(str(error)))
            self._answer_stop_requests(CheckpointError(str(error)))
            raise error from None
        log.warning("job %s: %s after its stop-with-savepoint to %r completed: the job ends there", self.job_id, exc, path)
        self._stopping = True
        self.stopped_with_savepoint = path
        self._resolve_savepoint(path, path)
        self._answer_stop_requests(path)

    def _answer_stop_requests(self, outcome: Any) -> None:
        """The job stopped with a savepoint (``outcome``: its path) or its stop's commit failed
        (``outcome``: the CheckpointError): answer the stop requests not taken yet with it (the
        stop the driver's client asks again of the master that took the job over, whose first
        master died while it stopped the job). Savepoint requests fail with the job's end."""
        stops = [path for path, stop in self._savepoint_requests if stop]
        self._savepoint_requests = [(path, stop) for path, stop in self._savepoint_requests if not stop]
        for path in stops:
            self._resolve_savepoint(path, outcome)

    async def _finish_stop(self, marker: dict) -> None:
        """Job master failover after a stop-with-savepoint completed: the job's first master
        wrote the savepoint and its stop marker, then died before (or while) it committed the
        savepoint's output and finished the tasks. As that master would have: commit what the
        savepoint covers (idempotently: what it committed already is found done; committers that
        keep their output in memory, ``collect``, rebuilt from the commit log first), and end
        the job FINISHED with the savepoint, or, when that commit fails, FAILED naming the
        savepoint (``_end_after_stop``). No task is deployed and no checkpoint restored: the
        checkpoint before the savepoint would replay what the savepoint's commit writes."""
        path = marker["savepoint"]
        log.warning("job %s: its stop-with-savepoint to %r completed before its job master died: this master "
                    "finishes the stop's commit and ends the job", self._job_id, path)
        await asyncio.to_thread(self._commit_stop, marker)
        self._stop_committed = True
        self._stopping = True
        self.stopped_with_savepoint = path
        self._resolve_savepoint(path, path)
        self._answer_stop_requests(path)

    def _commit_stop(self, marker: dict) -> None:
        """Commit what the stop of ``marker`` makes visible (on a worker thread)."""
        cid = int(marker["checkpoint_id"])
        for _name, entry in self._checkpoints.storage.read_commit_log(self._job_id, cid):
            for uid, comms in entry.items():
                if uid in self.committers:
                    self._commit_to(uid, comms)
        self._commit(marker.get("committables") or {}, (cid, "restore-stop"))

    async def _final_checkpoint(self, attempts: int = 3) -> None:
        """Every task finished: take the job's final checkpoint, which commits everything
        not yet committed (FLIP-147). Its metadata records the end state, so a master that
        takes over afterwards finds the job done and only re-commits. Fails the job loudly
        (never drops output) when the final checkpoint cannot be written."""
        c = self._checkpoints
        await self._wait_for_completions()
        for p in list(c.checkpoints.values()):  # (none expected: finished tasks acked them all)
            self._abort(p, "every task has finished")
        last: Any = None
        for _ in range(attempts):
            p = c.trigger()
            if await self._prepare(p, self.attempt) and await self._finalize(p):
                # the job's end waits for the deletions queued (retention beyond ``retained``,
                # aborted checkpoints), at most CLEANUP_WAIT_S: no checkpoint waits for them now
                if self._discards:
                    await asyncio.wait(list(self._discards), timeout=CLEANUP_WAIT_S)
                return
            last = c.history[-1].get("reason") if c.history else None
        raise JobFailed(
            f"job {self._config.name!r}: the final checkpoint could not be written ({last}); the job's last "
            f"output is not committed (nothing was dropped: the job restarts from its latest checkpoint)"
        )

    # -------------------------------------------------------------- restore planning
    def _vertex_info(self) -> list[dict]:
        return [
            {
                "id": v.id,
                "parallelism": v.parallelism,
                "uids": [op["uid"] for op in v.chain],
                "source_uid": v.chain[0]["uid"] if v.source is not None else None,
            }
            for v in self._graph.vertices
        ]

    def _plan_from_latest_checkpoint(self) -> dict | None:
        """Restore input from the newest usable checkpoint; None: start from scratch."""
        if self.coordinator is None:
            return None
        found = self.coordinator.latest_restorable()
        if found is None:
            if self.coordinator.completed:
                raise CheckpointError(
                    f"job {self.job_id}: checkpoints completed (the newest: {list(self.coordinator.completed)[-5:]}) "
                    f"but none can be read back from {self.coordinator.storage!r}"
                )
            self.coordinator.take_retained(None)  # everything is replayed
            if self._config.from_savepoint:  # (a job started from a savepoint restarts from it)
                return self._plan_from_savepoint(self._config.from_savepoint)
            return None
        cid, metadata = found
        plan, committables = self._state_backend.restore_plan(
            metadata, self.coordinator.storage.read_state, self._vertex_info(), self._graph.max_parallelism
        )
        self.restored_from = cid
        # retained committables that the restored checkpoint covers are not replayed: commit
        for uid, comms in self.coordinator.take_retained(cid).items():
            committables.setdefault(uid, []).extend(comms)
        self._commit(committables, (cid, f"restore{self.attempt}"))  # idempotent re-commit
        return plan

    async def _take_over(self) -> dict | None:
        """Job master failover: kill every task executor an earlier master of this job may
        have left (so none of them writes checkpoint files any more), rebuild the in-memory
        committers from the commit log, fence off every checkpoint not complete in storage
        (``CheckpointStorage.fence_incomplete``: an old master's late ``_metadata`` is never
        restored) and plan the restore from the latest complete checkpoint in storage (None: no
        checkpoint completed, the job starts over)."""
        job_id = self._job_id
        await self.runtime.kill_and_wait(self.runtime.leftover_executors(job_id))
        if self.coordinator is None:
            return None
        c = self.coordinator
        # a stop-with-savepoint that completed before the old master died: the job ends there
        # (_finish_stop), it never runs on from the checkpoint before the savepoint
        marker = await asyncio.to_thread(c.storage.read_stop_marker, job_id)
        if marker is not None:
            latest = await asyncio.to_thread(c.storage.latest_complete, job_id)
            if latest is not None and latest > int(marker["checkpoint_id"]):
                # a checkpoint completed after the stop's savepoint: that stop failed (its marker
                # was thought not written) and the job ran on; it restores as any job
                log.warning("job %s: ignoring the stop marker of savepoint %r (checkpoint %s): checkpoint %s "
                            "completed after it, the job ran on", job_id, marker["savepoint"],
                            marker["checkpoint_id"], latest)
            else:
                self._stop_marker = marker
                self._stop_completed = marker["savepoint"]
                return None
        # an old master may still run (cut off from the cluster) or have a _metadata write in
        # flight: every checkpoint without _metadata is fenced off before anything is restored,
        # so its late completion is never restored (its output was never committed, or was by
        # the old master); ours are numbered above every directory listed
        existing = await asyncio.to_thread(c.storage.fence_incomplete, job_id)
        if existing:
            c.start_after(existing[-1])
        plan = await asyncio.to_thread(self._plan_from_latest_checkpoint_with_log)
        if plan is None and self._config.from_savepoint:
            plan = await asyncio.to_thread(self._plan_from_savepoint, self._config.from_savepoint)
        return plan

    def _plan_from_latest_checkpoint_with_log(self) -> dict | None:
        """Replay the commit log of the in-memory committers (up to the checkpoint restored
        from), then plan the restore."""
        c = self._checkpoints
        found = c.latest_restorable()
        upto = found[0] if found else 0
        for _name, entry in c.storage.read_commit_log(self._job_id, upto):
            for uid, comms in entry.items():
                if uid in self.committers:
                    self._commit_to(uid, comms)
        return self._plan_from_latest_checkpoint()

    def _plan_from_savepoint(self, path: str) -> dict:
        storage = self.coordinator.storage if self.coordinator else self._state_backend.open_storage(path)
        metadata, reader = storage.read_savepoint(path)
        mark = getattr(reader, "mark_restoring", None)
        if mark is not None:  # a retained checkpoint of another job: its retention keeps it meanwhile
            try:
                mark(self._job_id)
                self._restoring = reader
            except Exception as exc:  # noqa: BLE001 - read-only storage: restore all the same
                log.warning("job %s: could not mark the checkpoint %r it restores from as in use (%s); the job "
                            "that wrote it may delete it when it ends", self._job_id, path, exc)
        try:
            plan, committables = self._state_backend.restore_plan(
                metadata, reader.read, self._vertex_info(), self._graph.max_parallelism,
                allow_non_restored_state=self._config.allow_non_restored_state,
                claim=False,  # (a retained checkpoint's files stay its job's: never referenced by ours)
            )
        except CheckpointError as exc:  # (a refusal, e.g. metadata of another release's format: name the path)
            if getattr(exc, "retryable", False) or path in str(exc):
                raise
            raise CheckpointError(f"cannot restore {path!r}: {exc}") from exc
        self._check_restored_splits(plan, path)
        for restored in plan.values():  # what the user restores from: its keys' types are checked
            for state in (restored or {}).values():
                if isinstance(state, dict) and state.get("keyed"):
                    state["check_key_types"] = True
        # A savepoint holds what its sinks prepared at its barrier (an intermediate one did not
        # commit it; a stop-with-savepoint's commit may have failed after it was written, or its
        # master died first), a retained checkpoint what its sinks prepared (the old job's
        # master may have died before committing it), both what they carried of earlier
        # checkpoints. They are committed (idempotent), as a restart from the checkpoint would. Output of
        # committers that kept it in the old driver's memory (collect) went with that driver.
        durable = {uid: comms for uid, comms in committables.items()
                   if uid in self.committers and not getattr(self.committers[uid], "in_memory", False)}
        self._commit(durable, (0, "restore-savepoint"))  # (none logged: no committer keeps it in memory)
        self.restored_from = path
        return plan

    def _check_restored_splits(self, plan: dict, path: str) -> None:
        """Every source split that ``plan`` restores must be one its new source can read
        (:meth:`~engine.connectors.Source.accepts_restored_split`): a savepoint taken of another
        kind of source under the same uid fails the restore here, once, instead of every attempt
        failing inside the reader. A split wrapped with state the new source does not keep (the
        per-split watermark state of a source whose watermark strategy was removed) is restored
        as the split it wraps."""
        for v in self._graph.vertices:
            if v.source is None:
                continue
            uid = v.chain[0]["uid"]
            for s in range(v.parallelism):
                restored = (plan.get((v.id, s)) or {}).get(uid)
                if not restored or not restored.get("splits"):
                    continue
                splits = []
                for split in restored["splits"]:
                    if not v.source.accepts_restored_split(split):
                        inner = getattr(split, "split", None)
                        if inner is None or not v.source.accepts_restored_split(inner):
                            expected = v.source.split_type.__qualname__ if v.source.split_type is not None else "another kind"
                            raise CheckpointError(
                                f"cannot restore {path!r}: it holds source splits of kind {split_kind(split)} under uid "
                                f"{uid!r}, but the job's source {v.chain[0]['name']!r} with that uid ({v.source.describe()}) "
                                f"reads splits of kind {expected}: the savepoint was taken of another kind of source. Give "
                                f"the new source another uid() and pass allow_non_restored_state=True to drop the old "
                                f"source's positions"
                            )
                        split = inner
                    splits.append(split)
                restored["splits"] = splits

    # -------------------------------------------------------------- checkpoints
    def _graph_info(self) -> dict:
        graph = self._graph
        return {
            "parallelism": {v.id: v.parallelism for v in graph.vertices},
            "max_parallelism": graph.max_parallelism,
        }

    async def _checkpoint_loop(self, attempt: int) -> None:
        c = self._checkpoints
        graph = self._graph
        interval = c.config.interval_ms / 1000.0
        next_at = time.monotonic() + interval
        blocked_since: float | None = None  # since when metadata writes in flight hold the next checkpoint back
        while attempt == self.attempt:
            await asyncio.sleep(min(0.02, interval))
            for p in c.timed_out():
                waiting = ", ".join(f"{self._graph.vertex(v).name}#{i}" for v, i in sorted(p.waiting)[:8])
                more = f" and {len(p.waiting) - 8} more" if len(p.waiting) > 8 else ""
                self._abort(p, f"timed out ({p.status.lower()}; no ack from {waiting}{more})" if p.waiting
                            else f"timed out ({p.status.lower()})")
            if self._stopping or self._all_finished or self._stop_completed is not None:
                continue  # (a stop's savepoint completed: its tasks stopped at its barrier)
            want_savepoint = bool(self._savepoint_requests) and not c.checkpoints
            if not want_savepoint and time.monotonic() < next_at:
                continue
            # metadata writes in flight (of checkpoints that timed out meanwhile, too) may hold the
            # next checkpoint back (CheckpointCoordinator.writes_blocking); one that cannot start
            # within timeout_ms counts as failed (skip_blocked)
            if not c.checkpoints and c.writes_blocking():
                now = time.monotonic()
                if blocked_since is None:
                    blocked_since = now
                elif now - blocked_since > c.config.timeout_ms / 1000.0:
                    blocked_since = now
                    try:
                        c.skip_blocked()
                    except CheckpointError as exc:  # tolerable_failures exceeded
                        self._fail_attempt(exc)
                continue
            blocked_since = None
            if not c.can_trigger(savepoint=want_savepoint):
                continue
            path, stop = self._savepoint_requests.pop(0) if want_savepoint else (None, False)
            p = c.trigger(savepoint=path, stop=stop)
            next_at = time.monotonic() + interval
            if not await self._prepare(p, attempt):
                continue
            ts = int(time.time() * 1000)
            if not p.waiting:  # every task has finished
                self._finalize(p)
                continue
            for key in self._trigger_targets(graph, p.waiting):
                self.actors[key].trigger_checkpoint.remote(p.checkpoint_id, ts, path is not None, stop)

    async def _prepare(self, p: Any, attempt: int) -> bool:
        """Make triggered checkpoint ``p``'s directory visible in storage before anything of it
        is written (``CheckpointStorage.prepare_checkpoint``, on a worker thread), so that a
        master taking the job over fences it and numbers its own checkpoints above it even when
        no task writes a state file for it (its ``_metadata`` would else be its first file).
        False: ``p`` is not to be sent: the directory could not be made (``p`` is aborted, as
        a checkpoint that failed), or ``p`` ended meanwhile (a restart, the job's end; the
        directory made behind its discard is deleted again)."""
        made = asyncio.ensure_future(
            asyncio.to_thread(self._checkpoints.storage.prepare_checkpoint, self._job_id, p.checkpoint_id))
        try:
            await asyncio.shield(made)
        except asyncio.CancelledError:
            # the attempt ended meanwhile (its checkpoint loop is cancelled) and ``p`` with it: the
            # directory the worker thread still makes goes again once it is made
            def discard(fut: asyncio.Future) -> None:
                if not fut.cancelled() and fut.exception() is None:
                    self._discard_aborted(p.checkpoint_id)

            made.add_done_callback(discard)
            raise
        except Exception as exc:  # noqa: BLE001 - the checkpoint fails, not the job
            if p.status == "PENDING" and attempt == self.attempt:
                self._abort(p, f"creating its directory in checkpoint storage failed: {exc}")
            return False
        if p.status != "PENDING" or attempt != self.attempt:
            self._discard_aborted(p.checkpoint_id)
            return False
        return True

    def _trigger_targets(self, graph: JobGraph, running: set) -> list[tuple[int, int]]:
        """Where a checkpoint starts: running source tasks, and running tasks whose every
        upstream task has finished (no barrier can reach them through a channel; FLIP-147)."""
        targets = []
        for vid, s in sorted(running):
            v = graph.vertex(vid)
            if v.source is not None:
                targets.append((vid, s))
                continue
            upstream: list[tuple[int, int]] = []
            for e in v.inputs:
                if e.feedback:
                    continue
                up = graph.vertex(e.source_vertex)
                forward = isinstance(e.partitioner, ForwardPartitioner) and up.parallelism == v.parallelism
                upstream.extend([(up.id, s)] if forward else [(up.id, t) for t in range(up.parallelism)])
            if upstream and not any(u in running for u in upstream):
                targets.append((vid, s))
        return targets

    def _fail_attempt(self, exc: BaseException) -> None:
        """Fail the running attempt from a callback (e.g. a commit that failed)."""
        if not self._failure.done():
            self._failure.set_exception(exc)

    def _abort(self, p: Any, reason: str) -> None:
        """Abort checkpoint ``p`` (its committables stay retained), tell the tasks, and
        delete its directory if it was pending (one whose metadata is being written is
        settled once that write ends: a metadata file that lands makes it restorable)."""
        pending = p.status == "PENDING"
        try:
            aborted = self._checkpoints.abort(p, reason)
        except CheckpointError as exc:  # tolerable_failures exceeded
            aborted = p
            self._fail_attempt(exc)
        if aborted is None:
            return
        if pending:
            self._discard_aborted(p.checkpoint_id)
        for actor in self.actors.values():
            actor.notify_checkpoint_aborted.remote(p.checkpoint_id)
        if p.savepoint is not None:
            self._resolve_savepoint(p.savepoint, CheckpointError(f"savepoint to {p.savepoint!r} failed: {reason}"))

    def _abort_in_progress(self, reason: str) -> None:
        """The job ended for good (cancelled, failed): abort its checkpoints in progress, a
        pending one's directory deleted, and one whose metadata is being written left to that
        write: if it lands, the checkpoint is restorable (a restore from it commits what it
        records), but this job commits nothing more (:meth:`_finalizing`). Before, such a
        checkpoint completed and committed its output after ``wait()`` had raised
        ``JobCancelled``: a job restored from the newest checkpoint complete at that moment
        (the one before) committed that output a second time, and ``info()`` of the cancelled
        job showed it ``in_progress`` for good."""
        c = self.coordinator
        if c is None:
            return
        for p in list(c.checkpoints.values()):
            pending = p.status == "PENDING"
            try:
                c.abort(p, reason)
            except CheckpointError:  # (tolerable_failures: the job has ended already)
                pass
            if pending:
                self._discard_aborted(p.checkpoint_id)

    def _discard_aborted(self, checkpoint_id: int) -> None:
        """Delete the directory of aborted checkpoint ``checkpoint_id`` (its state files; shared
        files of incremental checkpoints stay, later ones may reference them) on a worker
        thread, never blocking the master; again for every ack or decline of it that arrives
        later (a task that wrote its snapshot after the abort). Before, aborted checkpoints
        kept their directories until a later checkpoint completed: with failing metadata
        writes, one per attempt piled up without bound. A failure to delete is logged.

        The ids to delete are one set, drained by one pass at a time: storage slower to delete
        than checkpoints abort (and late acks arrive) holds one id each, not a waiting
        coroutine and a future each (which grew without bound)."""
        self._aborted[checkpoint_id] = None
        while len(self._aborted) > ABORTED_KEPT:
            del self._aborted[next(iter(self._aborted))]
        self._to_discard[checkpoint_id] = None
        if self._discard_queued:
            return
        self._discard_queued = True
        storage, job_id, pending = self._checkpoints.storage, self._job_id, self._to_discard

        async def discard() -> None:
            try:
                async with self._discard_lock:
                    while pending:  # (ids added while one is deleted are taken by this pass)
                        cid = next(iter(pending))
                        del pending[cid]
                        try:
                            await asyncio.to_thread(storage.discard, job_id, cid)
                        except Exception:  # noqa: BLE001 - cleaning up must never fail the job
                            log.warning("could not delete aborted checkpoint %s of %s", cid, job_id, exc_info=True)
            finally:
                self._discard_queued = False

        fut = asyncio.ensure_future(discard())
        self._discards.add(fut)
        fut.add_done_callback(self._discards.discard)

    def _discard_subsumed(self) -> None:
        """A checkpoint completed: delete the checkpoints beyond ``retained`` (only ever ones
        older than the newest complete one in storage, ``CheckpointStorage.retain``) on a worker
        thread, after the deletions queued before it, never as part of the completion. Were the
        deletes part of it (they were, inside ``CheckpointCoordinator.complete``), storage slow
        to delete (an object store deleting a directory file by file, a slow NFS) made every
        checkpoint's completion outlast ``timeout_ms``: each was aborted although its metadata
        was written, nothing was committed while the job ran, and ``tolerable_failures`` ended
        the job. One pass waiting for the lock is enough (it sees every checkpoint complete by
        the time it runs). A failure is logged (cleaning up never fails the job)."""
        if self._retention_queued:
            return
        self._retention_queued = True
        c = self._checkpoints
        storage, job_id, keep, lock = c.storage, self._job_id, c.config.retained, self._discard_lock

        async def retain() -> None:
            async with lock:
                self._retention_queued = False  # (a checkpoint completing from now on queues the next pass)
                try:
                    await asyncio.to_thread(storage.retain, job_id, keep)
                except Exception:  # noqa: BLE001 - cleaning up must never fail the job
                    log.warning("could not discard old checkpoints of %s", job_id, exc_info=True)

        fut = asyncio.ensure_future(retain())
        self._discards.add(fut)
        fut.add_done_callback(self._discards.discard)

    def _unmark(self, restoring: Any) -> None:
        """Take this job's marker off the retained checkpoint it restored from, on a worker thread."""
        fut = asyncio.ensure_future(asyncio.to_thread(restoring.unmark_restoring, self._job_id))
        self._cleanups.add(fut)
        fut.add_done_callback(self._cleanups.discard)

    def _commit(self, committables: dict[str, list], log_name: tuple[int, str] | None = None) -> None:
        """Make ``committables`` visible (idempotent). Committers that keep what they commit
        in this process's memory (``Committer.in_memory``, e.g. ``collect``) get it logged
        to checkpoint storage first, so that a master taking over can rebuild them: under
        ``log_name``, whose checkpoint id is the newest checkpoint ``committables`` cover (a
        takeover replays an entry only when it restores from that checkpoint or a later one;
        restoring from an earlier one, it re-commits what that one's metadata carries).

        A ``log_name`` labelled ``restore...`` marks the re-commit of a restore (a checkpoint's, a
        savepoint's), which an earlier job or attempt may have committed long ago: a committer
        with a ``commit_restored(committables)`` method gets them through it (the file sinks
        skip, with a warning, a part file whose pending and final files are both gone:
        committed, then removed, say consumed downstream, as Flink's file sink's
        ``commitAfterRecovery``)."""
        todo = {uid: comms for uid, comms in committables.items() if comms and uid in self.committers}
        if not todo:
            return
        logged = {uid: comms for uid, comms in todo.items() if getattr(self.committers[uid], "in_memory", False)}
        if logged and log_name is not None and self.coordinator is not None:
            cid, label = log_name
            self.coordinator.storage.write_commit_log(self._job_id, cid, label, logged)
        restored = log_name is not None and log_name[1].startswith("restore")
        for uid, comms in todo.items():
            self._commit_to(uid, comms, restored)

    def _commit_to(self, uid: str, comms: list, restored: bool = False) -> None:
        committer = self.committers[uid]
        try:
            getattr(committer, "commit_restored", committer.commit)(comms) if restored else committer.commit(comms)
        except Exception as exc:
            raise JobFailed(f"committing the output of sink {uid!r} failed: {type(exc).__name__}: {exc}",
                            operator=uid) from exc

    def _sink(self, uid: str) -> str:
        """A sink named for messages: its name, and its uid when that differs."""
        name = self._sink_names.get(uid, uid)
        return f"sink {name!r}" + (f" (uid {uid!r})" if uid != name else "")

    def _result_of(self, uid: str) -> Any:
        """``Committer.result()`` of sink ``uid``, checked to travel to the driver: a result that
        raises or cannot be pickled fails the job here, naming the sink and the call (it was a
        bare traceback from inside Ray's serialization of the master's reply). Pickled with
        out-of-band buffers, so Arrow and numpy data are not copied by the check."""
        committer = self.committers[uid]
        call = f"{type(committer).__name__}.result() of {self._sink(uid)}"
        try:
            result = committer.result()
        except Exception as exc:
            self._fail_at_end(JobFailed(
                f"{call} failed in the job master: {type(exc).__name__}: {exc}; the job's output is committed, "
                "only what the driver gets back for this sink is lost: fix result()",
                operator=self._sink_names.get(uid, uid), cause=_traceback(exc)), exc)
        try:
            cloudpickle.dumps(result, protocol=5, buffer_callback=lambda _buffer: None)
        except Exception as exc:
            self._fail_at_end(JobFailed(
                f"{call} returned a value that cannot be pickled to the driver: {type(exc).__name__}: {exc} "
                f"(a {type(result).__name__}); the job's output is committed: return plain data (lists, dicts, "
                "numbers, strings, Arrow tables) from result()",
                operator=self._sink_names.get(uid, uid), cause=_traceback(exc)), exc)
        return result

    def _fail_at_end(self, error: JobFailed, exc: BaseException) -> NoReturn:
        """End the job FAILED with ``error`` (raised from ``exc``) after its output was committed."""
        self.error = error
        self.status = "FAILED"
        self.finished_at = time.time()
        raise error from exc

    def _finalize(self, p: Any) -> asyncio.Future:
        """Write the metadata of fully acknowledged checkpoint ``p`` and commit what it
        covers; the future says whether ``p`` completed. Acts on ``p`` only: a timeout or
        abort meanwhile is settled by ``CheckpointCoordinator.end_finalize``, never by
        clearing a shared slot."""
        self._checkpoints.begin_finalize(p)
        # The end of the job and a restart wait for this (_wait_for_completions): the final
        # commit must include what this checkpoint commits, a restore must see its metadata.
        self._completing += 1
        self._completed_all.clear()
        return asyncio.ensure_future(self._finalizing(p, self.attempt))

    async def _finalizing(self, p: Any, attempt: int) -> bool:
        c = self._checkpoints
        written: str | None = None  # where a savepoint was written
        try:
            error: BaseException | None = None
            try:
                written = await asyncio.to_thread(self._complete_and_log, p)
            except Exception as exc:  # noqa: BLE001 - the checkpoint fails, not the job
                error = exc
            aborted_meanwhile = p.status != "FINALIZING"
            try:
                ok = c.end_finalize(p, error)
            except CheckpointError as exc:  # tolerable_failures exceeded
                self._fail_attempt(exc)
                ok = False
            if not ok and error is None and aborted_meanwhile:
                if self.status in ("CANCELLED", "FAILED"):  # (aborted by _abort_in_progress)
                    log.warning("checkpoint %s of %s: its metadata was written after the job %s: it is restorable (a "
                                "restore from it commits what it records); the job commits nothing more",
                                p.checkpoint_id, self._job_id, self.status.lower())
                else:
                    # timed out while its metadata was written, which landed: a complete checkpoint,
                    # committed now (before, never: with metadata writes always slower than the
                    # timeout, an unbounded job committed nothing while it ran)
                    ok = c.complete_late(p)
            if not ok:
                if error is not None:  # (no metadata: never restorable, its files go)
                    self._discard_aborted(p.checkpoint_id)
                if error is not None and not aborted_meanwhile:
                    # (the tasks of a stop-with-savepoint resume: the job goes on)
                    for actor in self.actors.values():
                        actor.notify_checkpoint_aborted.remote(p.checkpoint_id)
                    if p.savepoint is not None:
                        what = "writing the savepoint" if isinstance(error, _SavepointWriteFailed) else "writing metadata"
                        cause = error.__cause__ if isinstance(error, _SavepointWriteFailed) else error
                        reason = f"{what} failed: {cause!r}" if not isinstance(error, _StopNotRecorded) else str(error)
                        self._resolve_savepoint(p.savepoint, CheckpointError(f"savepoint to {p.savepoint!r} failed: {reason}"))
                return False
            if p.savepoint is None:
                self._discard_subsumed()
            if p.savepoint is not None and not p.stop:
                # an intermediate savepoint commits no side effects (as in Flink): what it
                # covers is committed with the next checkpoint
                c.retain(p.checkpoint_id, p.own)  # (what it carries of committing ones stays committing)
            else:
                if p.stop and written is not None:
                    self._stop_completed = written
                async with self._commit_lock:  # (FIFO: in the order the checkpoints completed)
                    # every completed checkpoint not committed yet, in one commit (those that
                    # completed while an earlier commit was slow wait for this one, not for a
                    # commit each); nothing when an earlier holder of the lock took ``p``'s
                    todo = c.to_commit(p)
                    if p.commits:
                        try:
                            await asyncio.to_thread(self._commit, todo, (p.commits[-1], "chk"))
                        except Exception as exc:  # noqa: BLE001 - a commit that fails fails the job, loudly
                            # (its committables stay committing: the restore re-commits them; a
                            # savepoint's caller hears of it when the attempt fails)
                            self._fail_attempt(exc if isinstance(exc, JobFailed) else JobFailed(str(exc)))
                            return False
                        for cid in p.commits:
                            c.committed(cid)
                    self._stop_committed = self._stop_committed or p.stop
        finally:
            self._completing -= 1
            if not self._completing:
                self._completed_all.set()
        if p.savepoint is None and self._restoring is not None:
            # the job's own checkpoint is complete by itself (its restore claimed nothing): the
            # retained checkpoint it restored from is no longer needed by it
            restoring, self._restoring = self._restoring, None
            self._unmark(restoring)
        if attempt == self.attempt and (p.savepoint is None or p.stop):
            notified = [actor.notify_checkpoint_complete.remote(p.checkpoint_id) for actor in self.actors.values()]
            if p.stop:
                # stop_with_savepoint cancels the tasks once the savepoint is resolved: each must
                # have taken the notification first (an async actor may start a call submitted
                # later before an earlier one; a sink publishing on it lost the savepoint's output)
                try:
                    await asyncio.wait_for(asyncio.gather(*(self.runtime.wait(c) for c in notified),
                                                          return_exceptions=True), STOP_NOTIFY_WAIT_S)
                except asyncio.TimeoutError:
                    log.warning("job %s: not every task took the notification of stop-with-savepoint %s within %.0f s",
                                self._job_id, p.checkpoint_id, STOP_NOTIFY_WAIT_S)
        if p.savepoint is not None:
            self._resolve_savepoint(p.savepoint, written)
        return True

    def _complete_and_log(self, p: Any) -> str | None:
        """Complete ``p`` in storage: a checkpoint's ``_metadata``; a savepoint's
        self-contained directory (returns where), before anything is committed or the tasks
        are told, so that a savepoint that cannot be written (its path holds one, storage
        fails) aborts like a checkpoint whose metadata write failed: the tasks of a
        stop-with-savepoint resume, nothing is committed, and the job goes on."""
        metadata = self._checkpoints.complete(p, self._graph_info())
        if p.savepoint is None:
            return None
        try:
            if p.stop:
                self._replace_unrecorded_stop(p.savepoint)
            self._protect_savepoint(p)
            written = self._write_savepoint(p.savepoint, metadata, stop=p.stop)
        except Exception as exc:
            raise _SavepointWriteFailed(str(exc)) from exc
        if p.stop:
            self._record_stop(p, written)
        return written

    def _record_stop(self, p: Any, written: str) -> None:
        """Make stop-with-savepoint ``p`` durable before anything it covers is committed: its
        stop marker (the savepoint's checkpoint id and path, and everything its commit makes
        visible) goes to checkpoint storage after the savepoint's ``_metadata``. A master that
        takes the job over finds it (:meth:`_take_over`) and ends the job as this one would:
        FINISHED once that commit is done, or FAILED naming the savepoint. (Before, it restored
        the newest checkpoint, from before the savepoint, and ran the stopped job on: the
        savepoint's committed output was written again.) A marker that cannot be written fails
        the stop like a savepoint that cannot be written: the savepoint just written is deleted
        (its path may be used again) and the job goes on."""
        storage, job_id = self._checkpoints.storage, self._job_id
        marker = {"job_id": job_id, "checkpoint_id": p.checkpoint_id, "savepoint": written,
                  "committables": {uid: list(comms) for uid, comms in p.commit.items() if comms}}
        try:
            storage.write_stop_marker(job_id, marker)
        except Exception as exc:
            try:  # (a write that failed late may have landed: a takeover must not find it)
                storage.delete_stop_marker(job_id)
                storage.delete_savepoint(written)
            except Exception:  # noqa: BLE001 - the stop fails all the same; its error names the path
                log.warning("job %s: could not delete savepoint %r of the stop that failed", job_id, written, exc_info=True)
            raise _StopNotRecorded(
                f"recording the stop in checkpoint storage {storage!r} failed ({exc}); the savepoint written to "
                f"{written!r} is deleted again, the job goes on") from exc

    def _replace_unrecorded_stop(self, path: str) -> None:
        """Before stop-with-savepoint to ``path`` is written: a savepoint there of one of this
        job's earlier stops that never completed (its master died between the savepoint's
        ``_metadata`` and the stop marker, or the marker could not be written; the job ran on
        from an older checkpoint) is deleted (``CheckpointStorage.discard_unrecorded_stop``),
        so that the stop asked again (the client repeats it of the master that took the job
        over; a user runs ``stop`` again) writes a fresh savepoint there instead of failing "a
        savepoint already exists". Nothing of that savepoint was committed and nobody was given
        it. The sinks then drop their protection of the pending files it recorded
        (``unprotect_savepoint``): nothing restores them. A failure there is logged (the files
        stay, hidden); one of the delete fails the stop like a savepoint that cannot be written."""
        storage, job_id = self._checkpoints.storage, self._job_id
        replaced = storage.discard_unrecorded_stop(path, job_id)
        if replaced is None:
            return
        for uid, committer in self.committers.items():
            unprotect = getattr(committer, "unprotect_savepoint", None)
            if unprotect is None:
                continue
            try:
                unprotect(replaced, job_id, uid)
            except Exception:  # noqa: BLE001 - the files stay hidden; the stop goes on
                log.warning("job %s: sink %r could not delete the pending files of the replaced savepoint %r "
                            "(checkpoint %s)", job_id, self._sink(uid), path, replaced, exc_info=True)

    def _protect_savepoint(self, p: Any) -> None:
        """Before savepoint ``p`` is written: hand each committer with a
        ``protect_savepoint(checkpoint_id, committables)`` method what the savepoint records (the
        file sinks list its pending files in a marker, which their clean-up after a failure keeps:
        a job resumed from the savepoint commits them, while a restore from an older checkpoint
        drops them from this job). A failure fails the savepoint, as one that cannot be written."""
        for uid, comms in p.commit.items():
            protect = getattr(self.committers.get(uid), "protect_savepoint", None)
            if comms and protect is not None:
                protect(p.checkpoint_id, list(comms))

    async def acknowledge_checkpoint(self, attempt: int, checkpoint_id: int, vertex_id: int, subtask: int, state: dict) -> None:
        """A task wrote its snapshot of ``checkpoint_id``; completes the checkpoint when all did.
        An ack of a checkpoint that was aborted meanwhile hands its committables on, and the
        snapshot it wrote late is deleted."""
        if self.coordinator is not None and checkpoint_id in self._aborted:
            self._discard_aborted(checkpoint_id)
        if attempt != self.attempt or self.coordinator is None:
            return
        p = self.coordinator.acknowledge(checkpoint_id, (vertex_id, subtask), state)
        if p is not None:
            await self._finalize(p)

    async def _wait_for_completions(self) -> None:
        """Wait until no checkpoint is being completed (metadata written, committed)."""
        await self._completed_all.wait()

    async def decline_checkpoint(self, attempt: int, checkpoint_id: int, vertex_id: int, subtask: int, reason: str,
                                 committables: dict | None = None) -> None:
        """A task could not take ``checkpoint_id``: abort it (the job goes on). The
        committables its sinks had prepared at the barrier are retained, not dropped."""
        c = self.coordinator
        if c is not None and checkpoint_id in self._aborted:  # (what it wrote before failing goes)
            self._discard_aborted(checkpoint_id)
        if attempt != self.attempt or c is None:
            return
        p = c.get(checkpoint_id)
        if p is None or p.status != "PENDING":
            c.retain(checkpoint_id, committables or {})
            return
        v = self._graph.vertex(vertex_id)
        c.retain(checkpoint_id, committables or {})
        self._abort(p, f"declined by {v.name!r} ({subtask + 1}/{v.parallelism}): {reason}")

    # -------------------------------------------------------------- savepoints
    def _write_savepoint(self, path: str, metadata: dict, stop: bool = False) -> str:
        """Copy a savepoint's state files and metadata into the self-contained directory ``path``.

        Every savepoint records what its sinks prepared at its barrier and what it carries of
        earlier checkpoints not committed yet, and a job restored from it commits them
        (idempotent), as Flink's committer commits its restored committables. An intermediate
        savepoint (the job runs on) commits nothing itself: without them a job cancelled after
        it and resumed from it lost everything between its last completed checkpoint and the
        savepoint. A stop-with-savepoint is written *before* its commit, which may then fail
        (the job restarts) or never happen (its master dies): without them the savepoint left
        on disk by such a stop lost that output when a job was resumed from it; after a commit
        that did happen, the restored job's re-commit finds it done.

        Not the committables of a committer that keeps its output in this master's memory
        (``Committer.in_memory``: ``collect``): what it collected lives with the driver that ran
        the job, a restored job never commits them, and recorded they would count as state of
        the sink, refusing a restore into a job whose ``collect()`` got another uid.

        ``stop``: the savepoint of a stop-with-savepoint (its metadata says so: a stop of the
        same job to the same path may replace it if the stop never completed,
        :meth:`_replace_unrecorded_stop`).
        """
        storage = self._checkpoints.storage
        states: dict[str, bytes] = {}

        def kept(uid: str, comms: Any) -> list:
            return [] if getattr(self.committers.get(uid), "in_memory", False) else list(comms or [])

        sp = dict(metadata, operators={}, carried_committables={
            uid: kept(uid, comms) for uid, comms in (metadata.get("carried_committables") or {}).items()})
        if stop:
            sp["stop"] = True
        for uid, op in metadata["operators"].items():
            subtasks = {}
            for subtask, entry in op["subtasks"].items():
                new: dict[str, Any] = {"committables": kept(uid, entry.get("committables"))}
                for part in ("keyed", "op", "log"):
                    handle = entry.get(part)
                    if handle is not None:
                        name = handle.path.rsplit("/", 2)[-2] + "/" + handle.path.rsplit("/", 1)[-1]
                        states[name] = storage.read_state(handle)
                        new[part] = name
                subtasks[subtask] = new
            sp["operators"][uid] = dict(op, subtasks=subtasks)
        return storage.write_savepoint(path, sp, states)

    def _resolve_savepoint(self, path: str, outcome: Any) -> None:
        for fut in self._savepoint_waiters.pop(path, []):
            if fut.done():
                continue
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)

    async def trigger_savepoint(self, path: str, stop: bool = False, job_id: str | None = None) -> str:
        """Take a savepoint into ``path`` (a directory or URI); returns where it was written.

        ``job_id``: the job the caller means (its client passes it). A request that reaches the
        master before that job's ``run`` has started here waits for it, then is queued like one
        made while the job deploys.
        """
        if self._other_job(job_id):
            await self._await_job(job_id, f"savepoint to {path!r}")
        if self.coordinator is None:
            raise CheckpointError("savepoints need checkpointing: call env.enable_checkpointing(...) first")
        if stop and self._stop_marker is not None:
            # the stop its client asks again of this master, which took the job over after that
            # stop's savepoint completed: answered once the stop's commit is done (or failed)
            if self._stop_committed and self.stopped_with_savepoint is not None:
                return self.stopped_with_savepoint
            if self.status in ("FAILED", "CANCELLED"):
                raise CheckpointError(f"cannot take a savepoint of a job that is {self.status.lower()}: {self.error}")
            fut = asyncio.get_running_loop().create_future()
            self._savepoint_waiters.setdefault(path, []).append(fut)
            self._savepoint_requests.append((path, stop))
            return await fut
        # (CREATED / RESTARTING: deploying; FAILING: the failed attempt's tasks are being
        # cancelled; the request is taken once the next attempt's tasks run, or fails with the job)
        if self.status not in ("CREATED", "RUNNING", "FAILING", "RESTARTING") or self._all_finished or self._stopping:
            raise CheckpointError(f"cannot take a savepoint of a job that is {self.status.lower()}")
        fut = asyncio.get_running_loop().create_future()
        self._savepoint_waiters.setdefault(path, []).append(fut)
        self._savepoint_requests.append((path, stop))
        return await fut

    async def stop_with_savepoint(self, path: str, job_id: str | None = None) -> str:
        """Stop the job with a savepoint (Flink's ``stop``): sources emit nothing after the
        savepoint barrier and every task stops processing once it has snapshotted, so
        nothing happens after the savepoint; its output is committed, then the job ends
        FINISHED with the savepoint's path. If the savepoint fails the job goes on."""
        written = await self.trigger_savepoint(path, stop=True, job_id=job_id)
        self._stopping = True
        self.stopped_with_savepoint = written
        for actor in list(self.actors.values()):
            actor.cancel.remote()
        return written

    async def _deploy(self, source_splits: dict, restore: dict | None, start: bool = False) -> dict:
        """Set up the attempt's tasks on their executors (one call per executor). ``start``:
        the tasks' runs are sent right after the setup calls (``self._early_runs``), each
        waiting on its executor for the end of that executor's setup call, instead of one more
        round trip after every setup answered (p=2: ~4 ms of a small job). A task may then send to one on another
        executor that is not set up yet: the send waits there for that setup, bounded
        (``TaskExecutor.consumer``/``push``), and is refused if the setup fails (the
        deployment fails with the setup's error, naming the operator).

        Every deployment has a tag of its own, also a second one of the same attempt (a lent
        executor that died before deployment): the first one's tasks may have started, and a
        late send of theirs must find no task of the second (the executors refuse the tags
        they released)."""
        job_id, graph, config = self._job_id, self._graph, self._config
        relative = self.attempt - self._first_attempt
        specs = build_task_specs(job_id, graph, config, relative, source_splits, restore)
        pre, self._prestarted = self._prestarted, {}
        slots = job_slots(graph, config.slot_sharing)
        lent = {slot: pre.pop(slot) for slot in slots if slot in pre}
        fresh = [x for x in slots if x not in lent]
        used_spares = 0
        while fresh and self._spares:  # a warm spare in place of a lost executor: no process start
            lent[fresh.pop(0)] = self._spares.pop(0)
            used_spares += 1
        # new executors go to the live nodes with the fewest of the job's executors, never to a
        # node where the failed attempt's executors were lost (_recycle): Ray may report it
        # alive for a while, and an executor pinned to it never starts (the restart would fail)
        avoid = frozenset(self._lost_nodes)
        lent.update(self.runtime.start_executors(attempt_executor_names(job_id, fresh, relative), config.task_num_cpus,
                                                 placed=[e.node for e in lent.values()], avoid=avoid))
        self.runtime.kill(e.actor for e in pre.values())  # (none expected: the driver lent exactly these slots)
        if used_spares:  # new spares for a later restart; their processes start in the background
            names = {f"{STANDBY_PREFIX}{i}": task_actor_name(job_id, f"standby-{uuid.uuid4().hex[:8]}", relative)
                     for i in range(used_spares)}
            self._spares.extend(self.runtime.start_executors(
                names, config.task_num_cpus, placed=[e.node for e in [*lent.values(), *self._spares]], avoid=avoid).values())
        self._lent = {slot for slot in slots if slot not in fresh}  # warm: lent, kept from the last attempt, spares
        self._slot_executors = dict(lent)
        self.executors = {slot: e.actor for slot, e in lent.items()}
        self.executor_names = {slot: e.name for slot, e in lent.items()}
        # a task's key on its executor carries the attempt: calls for an earlier job's task
        # on a reused executor find nothing under their key
        tag = f"{self.job_id}#{self.attempt}"
        if self._tag.split("/")[0] == tag:  # deployed again in the same attempt: a fresh tag
            tag = f"{tag}/{uuid.uuid4().hex[:8]}"
        self._tag = tag
        self.actors = {
            key: self.runtime.task_handle(self.executors[slot_of(key[0], key[1], config.slot_sharing)], (*key, tag))
            for key in specs
        }
        me = self.runtime.master_handle()
        by_slot: dict[str, list[tuple]] = {}  # the tasks of each executor: set up in one call
        storage = self.coordinator.storage if self.coordinator else None
        payloads = self._payloads
        for (vid, s), spec in specs.items():
            v = graph.vertex(vid)
            downstream = [
                [self.actors[(e.target_vertex, t)] for t in range(graph.vertex(e.target_vertex).parallelism)]
                for e in v.outputs
            ]
            # a vertex's chain and source are pickled once per job, not once per subtask and
            # attempt; its operators travel as the driver pickled them (JobVertex.operators);
            # both are shared by all its subtasks' setups (large ones: one object in Ray's store)
            payload = payloads.get(vid)
            if payload is None:
                share = self.runtime.share
                operators = None if v.operators is None else share(v.operators)
                payload = payloads[vid] = (share(cloudpickle.dumps((v.chain, v.source))), operators)
                v.operators = None  # (kept once: in the payload, or Ray's object store, for the job)
            bare = cloudpickle.dumps(dataclasses.replace(spec, chain=[], source=None))
            by_slot.setdefault(slot_of(vid, s, config.slot_sharing), []).append(((vid, s, tag), bare, downstream, payload))
        # one call per executor (through the handle of its first task), not one per task:
        # fewer calls and actor handles to send (two executors of two tasks each: ~2 ms less)
        setups = [
            self.actors[tasks[0][0][:2]].setup_tasks.remote(tasks, me, storage, self.attempt, lent[slot].releasing)
            for slot, tasks in by_slot.items()
        ]
        if start:  # (after every setup: each run call delays the setups sent after it, ~0.5 ms)
            self._early_runs = {
                asyncio.ensure_future(self.runtime.wait(a.run.remote(_SETUP_WAIT_S))): key for key, a in self.actors.items()
            }
        try:
            for ref in setups:
                await self.runtime.wait(ref)
        except BaseException:
            self._drop_early_runs()
            raise
        return specs

    def _drop_early_runs(self) -> None:
        """Forget the runs sent with a deployment that failed (their errors are its own)."""
        runs, self._early_runs = self._early_runs, None
        for fut in runs or ():
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _run_attempt(self, source_splits: dict, planned: list[dict | None]) -> list[TaskResult]:
        """Deploy and run one attempt. ``planned`` holds the restore plan (or None); it is
        emptied once the tasks are deployed, so that the master does not hold every subtask's
        restored state while the job runs."""
        graph, config = self._graph, self._config
        restore = planned.pop()
        self._all_finished = False
        self._failure = asyncio.get_running_loop().create_future()
        try:
            await self._deploy(source_splits, restore, start=True)
        except (ExecutorLost, TaskCallFailed, RaystreamError) as exc:
            # only an executor that died is worth replacing; a setup error would fail again
            lent = bool(self._lent) and isinstance(exc, ExecutorLost)
            # A pooled executor died after the driver's health check (e.g. killed meanwhile):
            # the live ones forget the tasks set up on them and serve the deployment again,
            # fresh executors replace the dead; not a job failure, no restart counted. After a
            # setup error (operators that cannot be unpickled there: a module Ray's workers
            # cannot import) the live ones forget the tasks too, and serve a restart or go back
            # to the driver's pool (before, they were killed: the notebook's next try of the
            # job waited for new worker processes).
            await self._teardown(recycle=config.reuse_workers)
            if not lent:
                raise JobFailed(f"deploying the tasks of job {config.name!r} failed: {exc}") from exc
            log.warning("job %s: a reused task executor died before deployment (%s); deploying again, "
                        "on fresh executors in place of the dead", self.job_id, exc)
            try:
                await self._deploy(source_splits, restore)
            except (ExecutorLost, TaskCallFailed, RaystreamError) as exc2:
                await self._teardown(recycle=config.reuse_workers)
                raise JobFailed(f"deploying the tasks of job {config.name!r} failed: {exc2}") from exc2
        del restore
        # RUNNING once every task of the attempt is deployed (not while planning or deploying): a
        # caller that sees RUNNING after a restart sees the new attempt's tasks, and a task it
        # kills then fails this attempt (a kill during deployment is absorbed by redeploying)
        self.status = "RUNNING"
        runs = self._early_runs or {asyncio.ensure_future(self.runtime.wait(a.run.remote())): key for key, a in self.actors.items()}
        self._early_runs = None
        cancel_wait = asyncio.ensure_future(self._cancel.wait())
        checkpoints = (
            asyncio.ensure_future(self._checkpoint_loop(self.attempt)) if self.coordinator is not None else None
        )
        results: list[TaskResult] = []
        pending = set(runs)
        finished = False
        failed: BaseException | None = None
        failure = self._failure
        try:
            while pending:
                done, pending = await asyncio.wait(pending | {cancel_wait, failure}, return_when=asyncio.FIRST_COMPLETED)
                if cancel_wait in done:
                    raise JobCancelled(f"job {config.name!r} was cancelled")
                if failure in done:
                    failure.result()  # raises the error that failed the attempt (e.g. a commit)
                pending.discard(cancel_wait)
                pending.discard(failure)
                for fut in done:
                    key = runs[fut]
                    try:
                        result = fut.result()
                    except JobFailed:
                        raise
                    except ExecutorLost as exc:
                        v = graph.vertex(key[0])
                        raise JobFailed(
                            f"task {v.name!r} (subtask {key[1] + 1}/{v.parallelism}) died: {exc}",
                            subtask=key[1],
                        ) from exc
                    except (TaskCallFailed, RaystreamError) as exc:
                        raise JobFailed(f"task {graph.vertex(key[0]).name!r} failed: {exc}") from exc
                    if result is None:
                        continue  # cancelled (stop with savepoint)
                    results.append(result)
                    self.task_metrics[key] = result.metrics
                    if self.coordinator is None:
                        for uid, comms in result.committables.items():
                            self._final_committables.setdefault(uid, []).extend(comms)
                        continue
                    # FLIP-147: checkpoints go on without the finished task; its final state
                    # stands in for its acks, its last committables go with the next checkpoint
                    p = self.coordinator.task_finished(key, result.final_state, result.committables)
                    if p is not None:
                        self._finalize(p)
            self._all_finished = True
            if failure.done():
                failure.result()
            finished = True
        except BaseException as exc:
            failed = exc
            raise
        finally:
            if checkpoints is not None:
                checkpoints.cancel()
            cancel_wait.cancel()
            for fut in pending:
                fut.cancel()
            for fut in runs:  # other tasks' failures of a failed attempt are expected: retrieve them
                if fut.done() and not fut.cancelled():
                    fut.exception()
            # A failed attempt (the job may restart) or a cancelled job: its executors that are
            # still alive cancel their tasks and serve the next attempt (warm: no process start,
            # as Flink restarts tasks on the TaskManagers it has), or go back to the driver's
            # worker pool at the job's end (_run), clean. Unknown errors: killed.
            recycle = not finished and config.reuse_workers and isinstance(failed, (JobFailed, JobCancelled))
            if not finished and self.status == "RUNNING":
                # Flink's FAILING / CANCELLING while the attempt's tasks are cancelled: not RUNNING
                # (a caller that waits for RUNNING would look up tasks that are gone; the teardown
                # takes up to ~2 s), not ended (the job restarts, or ends FAILED / CANCELLED after)
                self.status = "CANCELLING" if isinstance(failed, JobCancelled) else "FAILING"
            await self._teardown(release=finished and config.reuse_workers, recycle=recycle)
        return results

    async def _teardown(self, release: bool = False, recycle: bool = False) -> None:
        """Kill this attempt's executors. With ``release`` (every task finished) ask the ones
        the driver lent, and the spares it lent, to forget their tasks instead
        (``release(hand_back=<the attempt's tag>)``, unawaited) and tell the driver their
        slots and that tag as ``released``: they are back in its worker pool when the job's
        result arrives. The next deployment onto one tells it the tag, and it waits for that
        release before it takes new tasks (and ends itself if the release left it not clean),
        so nothing waits for its answer. With ``recycle`` (a failed attempt, a cancelled job)
        ask every executor to cancel and forget its tasks and keep the clean ones for the next
        attempt's deployment (or, when none comes, for the driver's pool: :meth:`_run`)."""
        executors, self.executors, self.actors = self.executors, {}, {}
        by_slot, self._slot_executors = self._slot_executors, {}
        names = self.executor_names
        if recycle:
            keep = await self._recycle(executors, by_slot)
            self.runtime.kill(a for slot, a in executors.items() if slot not in keep)
            self._prestarted = {slot: by_slot[slot] for slot in keep if slot in by_slot}
            self.runtime.kill(a for slot, a in keep.items() if slot not in by_slot)
            return
        released: dict[str, str | None] = {}  # the driver's slot of an executor handed back -> the tag it releases
        if release:
            lent = {slot: a for slot, a in executors.items() if slot in self._lent and names.get(slot) in self._driver_slot}
            executors = {slot: a for slot, a in executors.items() if slot not in lent}
            # spares: those the driver lent go back to it, the master's own are killed
            spares, self._spares = self._spares, []
            handed = [(names[slot], a) for slot, a in lent.items()]
            handed += [(e.name, e.actor) for e in spares if e.name in self._driver_slot]
            for name, actor in handed:
                actor.release.remote(2.0, False, self._tag)
                released[self._driver_slot[name]] = self._tag
            self.runtime.kill(e.actor for e in spares if e.name not in self._driver_slot)
        self.runtime.kill(executors.values())
        self.released = released

    async def _recycle(self, executors: dict[str, Any], by_slot: dict[str, Any]) -> dict[str, Any]:
        """Ask ``executors`` (slot -> actor; ``by_slot``: slot -> their Executor) to cancel and
        forget their tasks, and the spares where they run, all at once; returns the executors
        that report clean. Spares that do not answer are dropped (killed).

        Learns where the next attempt may place executors, as Flink schedules no task onto a
        lost TaskManager: a node whose executors of this job stopped answering, and where none
        of them (nor a spare) answered, is suspected lost (:attr:`_lost_nodes`, until one
        answers there again). Ray may still report such a node alive for seconds after it died
        (its health checks take that long), and an executor pinned to it then never starts."""
        calls = {slot: a.release.remote(2.0, True) for slot, a in executors.items()}
        spares = list(self._spares)
        pings = [e.actor.node.remote() for e in spares]

        async def answer(call: Any) -> Any:
            try:
                return await asyncio.wait_for(self.runtime.wait(call), 10.0)
            except Exception as exc:  # noqa: BLE001 - an executor that cannot say it is clean is killed
                return _Silent(exc)

        replies = await asyncio.gather(*(answer(c) for c in calls.values()), *(answer(p) for p in pings))
        keep: dict[str, Any] = {}
        live: set[str] = set()
        lost: set[str] = set()
        for slot, reply in zip(calls, replies):
            node = getattr(by_slot.get(slot), "node", None)
            if isinstance(reply, _Silent):
                if node is not None:
                    lost.add(node)
                continue
            if node is not None:
                live.add(node)
            if reply:
                keep[slot] = executors[slot]
        answered = []
        for spare, reply in zip(spares, replies[len(calls):]):
            if isinstance(reply, _Silent):
                log.info("job %s: warm spare executor %s does not answer (%s); dropped", self.job_id, spare.name, reply.error)
                if spare.node is not None:
                    lost.add(spare.node)
                continue
            spare.node = reply[1]  # ((pid, node) of TaskExecutor.node)
            live.add(spare.node)
            answered.append(spare)
        self.runtime.kill(e.actor for e in spares if e not in answered)
        self._spares = answered
        self._lost_nodes = (self._lost_nodes | lost) - live
        if self._lost_nodes:
            log.warning("job %s: no executor answers on node(s) %s: the restart places none there",
                        self.job_id, ", ".join(sorted(n[:8] for n in self._lost_nodes)))
        return keep


class _Silent:
    """The outcome of a call to an executor that did not answer (dead, or not within the time)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _recorded_committables(storage: Any, job_id: str) -> dict[str, list]:
    """What every complete checkpoint of job ``job_id`` in ``storage`` records, by sink uid:
    its subtasks' committables and the ones it carries (a job started from it commits them)."""
    out: dict[str, list] = {}
    for cid in storage.list_complete(job_id):
        metadata = storage.read_metadata(job_id, cid)
        for uid, op in (metadata.get("operators") or {}).items():
            for entry in (op.get("subtasks") or {}).values():
                if isinstance(entry, dict):
                    out.setdefault(uid, []).extend(entry.get("committables") or [])
        for uid, comms in (metadata.get("carried_committables") or {}).items():
            out.setdefault(uid, []).extend(comms or [])
    return out


def _traceback(exc: BaseException) -> str:
    """The formatted traceback of ``exc`` (``JobFailed.cause``)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _aggregate_metrics(per_task: dict, restarts: int) -> dict:
    """Sum per-operator counters over subtasks: {operator: {records_in, records_out, ...}};
    peak gauges (names ending in ``_peak_bytes``, a process's high-water mark) take the
    largest subtask's value instead: a sum of peaks of different processes is no process's.

    Example:
        >>> m = _aggregate_metrics({1: {"operators": {"f": {"messages": 2, "rss_peak_bytes": 5}}},
        ...                         2: {"operators": {"f": {"messages": 3, "rss_peak_bytes": 7}}}}, 0)
        >>> m["operators"]["f"]["messages"], m["operators"]["f"]["rss_peak_bytes"]
        (5, 7)
    """
    ops: dict[str, dict] = {}
    channels = []
    for m in per_task.values():
        for name, counters in (m.get("operators") or {}).items():
            agg = ops.setdefault(name, {"records_in": 0, "records_out": 0, "batches_in": 0, "subtasks": 0})
            for k, val in counters.items():
                agg[k] = max(agg.get(k, 0), val) if k.endswith("_peak_bytes") else agg.get(k, 0) + val
            agg["subtasks"] += 1
        for ch in m.get("channels") or []:
            channels.append(dict(ch, task=m.get("task")))
    return {"operators": ops, "channels": channels, "restarts": restarts}
