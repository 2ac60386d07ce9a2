"""Driver-side handles on running jobs: :class:`JobClient` and :class:`JobResult`."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import cloudpickle
import ray

from .config import JobConfig
from .errors import ConfigError, JobCancelled, JobFailed, RaystreamError
from .graph import JobGraph, ship
from .master import CLEANUP_WAIT_S, job_slots, standby_slots, task_actor_name
from .observability import ProgressReporter, job_client_html, source_totals
from .pool import WorkerPool, connection_id
from .ray_runtime import (
    MASTER_PREFIX,
    NAMESPACE,
    PROBE_PREFIX,
    connected_cluster,
    ensure_ray,
    kill_quietly,
    start_executors,
)
from .state_backend import default_state_backend

__all__ = ["JobClient", "JobResult", "OutputRelay", "submit", "submit_job", "NAMESPACE", "MASTER_PREFIX",
           "ENDED_STATUSES"]

log = logging.getLogger(__name__)

#: the statuses of a job that has ended (:meth:`JobClient.status`); ``CREATED``, ``RUNNING``,
#: ``FAILING``, ``CANCELLING`` and ``RESTARTING`` are those of a live one
#: (``engine.master.LIVE_STATUSES``)
ENDED_STATUSES = ("FINISHED", "FAILED", "CANCELLED")
#: the name of a driver's :class:`OutputRelay` queue actor starts with this (in :data:`NAMESPACE`)
RELAY_PREFIX = "raystream-print-relay-"
#: how long the end of a failed or cancelled job waits for its master's last metrics
FINAL_STATE_TIMEOUT_S = 5.0
#: the name of the threads that wait for a job's run and settle it (JobClient._finish)
_SETTLE_THREAD = "raystream-settle-job"


@dataclass
class JobResult:
    """The outcome of a finished job.

    Attributes:
        job_id: the job's id.
        metrics: per-operator counters summed over subtasks.
        duration_s: wall time from submission to the end.
        sink_results: per sink uid: what its committer returned (collected batches, files).
    """

    job_id: str
    metrics: dict
    duration_s: float
    sink_results: dict = field(default_factory=dict)
    checkpoints: dict | None = None  # completed/aborted counts and the last checkpoint, when enabled
    savepoint: str | None = None  # where stop_with_savepoint() wrote its savepoint
    failovers: int = 0  # job masters that took the job over after its master died

    def records_out(self, operator: str) -> int:
        """Records emitted by ``operator`` over all subtasks."""
        return self.metrics["operators"][operator]["records_out"]


class JobClient:
    """A handle on a submitted job: status, metrics, wait, cancel, savepoints.

    In Jupyter a JobClient displays itself as its status and a per-operator metrics table,
    and ``client.graph`` as a drawing of the job graph.

    Example:
        >>> client = env.execute_async("job")          # doctest: +SKIP
        >>> client.status()                             # doctest: +SKIP
        'RUNNING'
        >>> result = client.wait(progress=True)         # doctest: +SKIP
    """

    def __init__(self, master: Any, run_ref: Any, name: str, graph: JobGraph | None = None,
                 executors: dict | None = None, pool: Any = None, master_name: str | None = None,
                 job_id: str | None = None, submission: tuple[bytes, bytes, JobConfig] | None = None) -> None:
        self._master = master
        # (graph blob, config blob, config): what a new master needs to take the job over
        self._submission = submission
        self._failovers = 0
        self._cancel_requested = False
        self._lock = threading.RLock()
        self._job_id = job_id
        self._master_name = master_name
        # the first attempt's executors ({slot: engine.pool.Executor}), lent by the worker
        # pool; the clean ones go back to it when the job finishes, the rest are killed
        self._executors = dict(executors or {})
        self._pool = pool
        self._run_ref = run_ref
        self.name = name
        self.graph = graph
        self._result: JobResult | None = None
        self._error: BaseException | None = None
        # (metrics, info) of a job that failed or was cancelled, taken from its master as
        # the job ended (the master then goes back to the pool and forgets the job)
        self._final: tuple[dict, dict] | None = None
        self._closed = False
        # called once the job has ended and been settled (add_end_callback)
        self._end_callbacks: list[Any] = []
        # one settling at a time (wait() or the settling of a run nobody waits for), and how
        # many wait() calls are in progress
        self._settle_lock = threading.Lock()
        self._waiters = 0
        # the Ray connection the job runs on: its master and executors are owned by this
        # driver's connection and end with it (ray.shutdown())
        self._connection = connection_id() if ray.is_initialized() else None
        if run_ref is not None:
            self._settle_when_done(run_ref)

    @property
    def job_id(self) -> str:
        if self._job_id is None:
            self._job_id = self.info()["job_id"]
        return self._job_id

    def info(self) -> dict:
        """Status, attempt, restarts, graph and checkpoint statistics."""
        self._check_connection()
        if self._closed:
            if self._final is not None:
                return {**self._final[1], "status": self.status()}
            return {"job_id": self._result.job_id if self._result else None, "status": self.status()}
        return self._job_info()

    def _job_info(self) -> dict:
        """The master's ``job_info`` of this job. For an *attached* client (:meth:`attach`),
        a master that runs another job now means this one has ended: a RaystreamError, rather
        than the placeholder a master answers for a job that has not reached it yet (status
        ``CREATED``, which a submitting client may legitimately see; an attached one never
        does, its job was running when it attached)."""
        info = self._call_master("job_info", self._job_id)
        if self._run_ref is None and self._job_id is not None and info.get("name") is None \
                and info.get("job_id") == self._job_id and info.get("status") == "CREATED":
            raise RaystreamError(
                f"job {self._job_id!r} has ended: its job master runs another job of the same driver now, so "
                f"how it ended is known only to the submitting driver (JobClient.list_running() lists the "
                f"running jobs)")
        return info

    def _call_master(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call the job master; a master that died is replaced first (see :meth:`wait`).
        Raises the call's RaystreamError itself, or RaystreamError when the master is gone."""
        for _ in range(3):
            master = self._master
            try:
                return ray.get(getattr(master, method).remote(*args), timeout=timeout)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, RaystreamError):
                    raise cause from None
                raise RaystreamError(f"{method} on the job master of {self.name!r} failed: {exc}") from exc
            except ray.exceptions.RayActorError as exc:
                if not self._fail_over(master):
                    raise RaystreamError(f"the job master of {self.name!r} is gone (the job ended): {exc}") from None
        raise RaystreamError(f"the job master of {self.name!r} keeps dying")

    @classmethod
    def list_running(cls, timeout_s: float = 10.0) -> dict[str, JobClient]:
        """``{job id: client}`` for every job a raystream job master of this Ray cluster runs
        now (from any driver; created, running or restarting, not ended). The clients are
        *attached*: status, metrics, cancel and savepoints work; ``wait()`` belongs to the
        submitting driver. Without a connected Ray, the cluster named by
        ``$RAYSTREAM_ADDRESS`` / ``$RAY_ADDRESS`` is asked; with none named there is no job to
        list (nothing is started: before, Ray started a new local Ray of its own to look in).

        Example:
            >>> for job_id, client in JobClient.list_running().items():   # doctest: +SKIP
            ...     print(job_id, client.status())
        """
        if not ray.is_initialized():
            named = next((os.environ[v] for v in ("RAYSTREAM_ADDRESS", "RAY_ADDRESS") if os.environ.get(v)), None)
            if named is None or named == "local":
                return {}  # (a new private local Ray would run no job)
            ensure_ray(named)
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a.get("namespace") == NAMESPACE and a["name"].startswith(MASTER_PREFIX)]
        masters = {}
        for name in names:
            try:
                masters[name] = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:  # ended between the listing and the lookup
                pass
        refs = {name: m.job_info.remote() for name, m in masters.items()}
        jobs: dict[str, JobClient] = {}
        for name, ref in refs.items():
            try:
                info = ray.get(ref, timeout=timeout_s)
            except Exception:  # noqa: BLE001 - a master that is gone or busy dying
                continue
            # (a pooled master keeps the info of its last job, ended, until its next one)
            if info.get("job_id") and info.get("status") not in (None, "IDLE", *ENDED_STATUSES):
                jobs[info["job_id"]] = cls(masters[name], None, info.get("name") or info["job_id"],
                                           master_name=name, job_id=info["job_id"])
        return jobs

    @classmethod
    def attach(cls, job_id: str) -> JobClient:
        """An attached client for running job ``job_id`` (see :meth:`list_running`).

        Raises:
            RaystreamError: no raystream job ``job_id`` runs on this cluster.
        """
        jobs = cls.list_running()
        if job_id not in jobs:
            running = ", ".join(sorted(jobs)) or "none"
            raise RaystreamError(f"no running raystream job {job_id!r} (running: {running}); finished jobs are gone")
        return jobs[job_id]

    @property
    def failovers(self) -> int:
        """How often a new job master took this job over after its master died."""
        return self._failovers

    def _fail_over(self, dead_master: Any) -> bool:
        """Job master failover (Flink's JobManager HA, with the driver as the dispatcher):
        when the master of a checkpointed job dies, a new master kills the old attempt's
        task executors and resumes the job from the latest complete checkpoint in
        checkpoint storage; committers are re-committed idempotently. Returns False when
        the job cannot fail over (no checkpointing, cancelled, failover budget spent)."""
        with self._lock:
            if self._master is not dead_master:
                return True  # another thread already replaced it
            sub = self._submission
            if sub is None or self._closed or self._cancel_requested:
                return False
            graph_blob, config_blob, config = sub
            if config.checkpoint is None or self._failovers >= config.master_failovers:
                return False
            self._failovers += 1
            log.warning("the job master of %r died; failover %d/%d: a new master resumes job %s from its latest "
                        "checkpoint", self.name, self._failovers, config.master_failovers, self._job_id)
            # the executors the pool lent to the dead master's job are never reused
            kill_quietly(e.actor for e in self._executors.values())
            self._executors = {}
            kill_quietly([dead_master])
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            pool = self._pool or WorkerPool.current()
            self._master, self._master_name = pool.master(
                {"max_concurrency": 1000, "scheduling_strategy": here}, reuse=False)
            self._run_ref = self._master.run.remote(graph_blob, config_blob, self._job_id, None, True)
            self._settle_when_done(self._run_ref)
            return True

    def status(self) -> str:
        """The job's status (Flink's ``JobStatus`` names): ``CREATED`` (its tasks are being
        deployed), ``RUNNING`` (every task of the current attempt is deployed and running),
        ``FAILING`` (an attempt failed: its tasks are being cancelled; none runs any more),
        ``RESTARTING`` (the next attempt is being planned and deployed, and is RUNNING once
        deployed), ``CANCELLING`` (cancelled: its tasks are being cancelled), ``FINISHED``,
        ``FAILED`` or ``CANCELLED``. A job that fails for good goes ``FAILING`` -> ``FAILED``.

        Example:
            >>> client = env.execute_async("job")          # doctest: +SKIP
            >>> client.status() in ("CREATED", "RUNNING")   # doctest: +SKIP
            True
        """
        self._check_connection()
        if self._result is not None:
            return "FINISHED"
        if isinstance(self._error, JobCancelled):
            return "CANCELLED"
        if self._error is not None:
            return "FAILED"
        return self._job_info()["status"]

    def metrics(self) -> dict:
        """Per-operator records in/out and per-channel back-pressure counters (of a job that
        ended: as it ended).

        Raises:
            RaystreamError: the job ended with its job master (it died), so no metrics remain.
        """
        self._check_connection()
        if self._result is not None:
            return self._result.metrics
        if self._final is not None:
            return self._final[0]
        if self._closed:
            raise RaystreamError(f"job {self.name!r} ended ({self.status()}) with its job master: no metrics remain")
        if self._run_ref is None:
            self._job_info()  # an attached client's job ended when its master moved on: not empty metrics
        return self._call_master("metrics", self._job_id)

    def savepoint(self, path: str) -> str:
        """Take a savepoint of the running job into ``path`` (directory or URI); returns it.

        Example:
            >>> sp = client.savepoint("/tmp/sp-1")                          # doctest: +SKIP
            >>> env.execute("job", from_savepoint=sp)                       # doctest: +SKIP
        """
        return self._savepoint_call("trigger_savepoint", path, False)

    def stop_with_savepoint(self, path: str) -> str:
        """Take a savepoint, then stop the job; ``wait()`` returns its result."""
        return self._savepoint_call("stop_with_savepoint", path)

    def _savepoint_call(self, method: str, *args: Any) -> str:
        self._check_connection()
        if self._closed:
            raise RaystreamError(f"job {self.name!r} has ended; savepoints need a running job")
        if self._run_ref is None:
            self._job_info()  # (a master that moved on would wait for the ended job forever)
        # (with the job id: a request that reaches the master before the job's run started
        # there waits for it instead of finding no job, or the master's previous one)
        return self._call_master(method, *args, self._job_id)

    def task_actor(self, vertex_id: int, subtask: int) -> Any:
        """The Ray actor (a task executor) hosting subtask ``subtask`` of job-graph vertex
        ``vertex_id`` in the current attempt, e.g. to kill it in a failure drill. With slot
        sharing (the default) that actor also hosts subtask ``subtask`` of the other vertices.

        Example:
            >>> ray.kill(client.task_actor(1, 0), no_restart=True)        # doctest: +SKIP
        """
        self._check_connection()
        if self._closed:
            raise RaystreamError(f"job {self.name!r} has ended ({self.status()}): it has no running tasks")
        names = self._call_master("task_actor_names")
        if (vertex_id, subtask) not in names:
            raise RaystreamError(f"job {self.name!r} has no running task ({vertex_id}, {subtask}); tasks: {sorted(names)}")
        return ray.get_actor(names[(vertex_id, subtask)], namespace="raystream")

    def job_master(self) -> Any:
        """The job master's Ray actor (e.g. to kill it in a failure drill: with checkpointing
        on, a new master takes the job over).

        Example:
            >>> ray.kill(client.job_master(), no_restart=True)        # doctest: +SKIP
        """
        return self._master

    def cancel(self) -> None:
        """Cancel the job; ``wait()`` then raises :class:`JobCancelled`."""
        self._check_connection()
        if not self._closed:
            self._cancel_requested = True
            if self._run_ref is None:  # attached: make sure the master got it
                self._job_info()  # (an ended job: say so, rather than leave a cancel for it behind)
                self._call_master("cancel", self._job_id)
            else:
                self._master.cancel.remote(self._job_id)

    def add_end_callback(self, callback: Any) -> None:
        """Call ``callback()`` once the job has ended and been settled (whether or not anyone
        waits for it; before ``wait()`` returns or raises); at once if it already has. An
        exception it raises is logged."""
        with self._lock:
            if not self._closed:
                self._end_callbacks.append(callback)
                return
        _call_quietly(callback)

    def _run_end_callbacks(self) -> None:
        with self._lock:
            callbacks, self._end_callbacks = self._end_callbacks, []
        for callback in callbacks:
            _call_quietly(callback)

    def _settle_when_done(self, run_ref: Any) -> None:
        """Settle the job as soon as its run ends when nobody waits for it: the master goes
        back to the worker pool and the executors are released or killed, and what the run
        returned or raised is kept for ``wait()`` (a client kept alive without ``wait()``, a
        notebook's ``client`` after a cancel or a failure, held them until it was garbage).
        Taking the result as it arrives also keeps Ray from reporting an "Unhandled error"
        for a cancelled job's expected JobCancelled."""
        def done(_future: Any) -> None:
            # On Ray's own thread: it takes no lock (a thread holding self._lock may be inside
            # a Ray call, e.g. killing a dead master's executors, that waits for this thread).
            # A wait() that starts meanwhile finds the settling thread at work and waits for it.
            if self._waiters or self._closed:
                return  # a wait() settles it
            threading.Thread(target=self._settle_quietly, name=_SETTLE_THREAD, daemon=True).start()

        run_ref.future().add_done_callback(done)

    def _settle_quietly(self) -> None:
        if self._check_connection():
            return  # (ray.shutdown() ended the run: no Ray call, which would start a new Ray)
        try:
            self._finish(None)
        except BaseException:  # noqa: BLE001 - kept in self._error for wait()
            pass

    def wait(self, timeout: float | None = None, progress: bool | None = None, interval_s: float = 1.0) -> JobResult:
        """Block until the job ends; return its result or raise JobFailed / JobCancelled.

        Args:
            timeout: seconds to wait at most (``GetTimeoutError`` after that; the job runs on).
            progress: show a live progress line (records/s, bounded-source progress) on
                stderr, or an updating display in Jupyter. ``None``: on when the environment
                variable ``RAYSTREAM_PROGRESS`` is ``1`` (so ``env.execute()`` shows it too).
            interval_s: seconds between progress updates.

        Example:
            >>> env.execute_async("wordcount").wait(progress=True)   # doctest: +SKIP
            wordcount RUNNING 3.0s | read 12.0k (4.1k rec/s) | generate 60% (12.0k/20.0k) | out 143.9k
        """
        self._check_connection()
        if self._result is not None:
            return self._result
        if self._error is not None:
            raise self._error
        if self._run_ref is None:
            raise RaystreamError(f"job {self.name!r} was attached to (JobClient.attach), not submitted here: only "
                                 "the submitting driver can wait for its result; poll status() instead")
        if progress is None:
            progress = os.environ.get("RAYSTREAM_PROGRESS", "") == "1"
        with self._lock:
            self._waiters += 1
        try:
            if progress:
                return self._wait_with_progress(timeout, interval_s)
            return self._finish(timeout)
        except ray.exceptions.GetTimeoutError:
            # (Ray's own says only "Get timed out: some object(s) not ready.")
            raise ray.exceptions.GetTimeoutError(
                f"job {self.name!r} did not end within wait(timeout={timeout!r}) s; it runs on: wait() "
                f"again, or cancel() it") from None
        finally:
            with self._lock:
                self._waiters -= 1

    def _wait_with_progress(self, timeout: float | None, interval_s: float) -> JobResult:
        reporter = ProgressReporter(self.name, source_totals(self.graph) if self.graph is not None else None)
        deadline = None if timeout is None else time.monotonic() + timeout
        metrics: dict = {}
        while True:
            step = interval_s if deadline is None else max(0.0, min(interval_s, deadline - time.monotonic()))
            ready, _ = ray.wait([self._run_ref], timeout=step)
            if ready or (deadline is not None and time.monotonic() >= deadline):
                break
            try:
                metrics = ray.get(self._master.metrics.remote(self._job_id), timeout=max(interval_s, 1.0))
            except Exception:  # noqa: BLE001 - a slow or ending master only skips one update
                continue
            reporter.update("RUNNING", metrics)
        try:
            result = self._finish(0 if deadline is not None and not ready else None)
        except BaseException:
            reporter.close(self.status() if self._error is not None else "RUNNING", metrics)
            raise
        reporter.close("FINISHED", result.metrics)
        return result

    def _finish(self, timeout: float | None) -> JobResult:
        """Wait for the run and settle the job (:meth:`_settle`) on a thread of its own, which
        the caller joins: a ``KeyboardInterrupt`` (Ctrl-C, a notebook's stop button) ends the
        caller's wait, never the settling halfway. Before, one that came while the job was
        settled (its final metrics asked for, its checkpoints deleted: up to seconds) left it
        half settled: its master and executors were never given back nor killed, lent for the
        rest of the session, and the next job started new ones."""
        if threading.current_thread().name == _SETTLE_THREAD:
            return self._finish_here(timeout)
        outcome: list[tuple[bool, Any]] = []

        def settle() -> None:
            try:
                outcome.append((True, self._finish_here(timeout)))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outcome.append((False, exc))

        thread = threading.Thread(target=settle, name=_SETTLE_THREAD, daemon=True)
        thread.start()
        while thread.is_alive():  # (a join with a timeout: a KeyboardInterrupt set by
            thread.join(0.1)      # _thread.interrupt_main(), not a signal, cannot wake a plain join)
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def _finish_here(self, timeout: float | None) -> JobResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._settle_lock.acquire(timeout=-1 if timeout is None else timeout):
            # (a settling thread holds it until the run ends, e.g. through a master failover)
            raise ray.exceptions.GetTimeoutError(f"job {self.name!r} did not end within {timeout} s")
        try:
            if self._result is not None:
                return self._result
            if self._error is not None:
                raise self._error
            return self._finish_locked(deadline)
        finally:
            self._settle_lock.release()

    def _finish_locked(self, deadline: float | None) -> JobResult:
        while True:
            master, run_ref = self._master, self._run_ref
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ray.get(run_ref, timeout=left)
            except ray.exceptions.RayActorError:
                if self._fail_over(master):
                    continue  # a new master took the job over: wait for it
            except Exception:  # noqa: BLE001 - settled (raised) below
                pass
            return self._settle(0 if deadline is not None else None)

    def _settle(self, timeout: float | None) -> JobResult:
        try:
            out = ray.get(self._run_ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            self._error = cause if isinstance(cause, RaystreamError) else JobFailed(str(exc))
            # the master raised the job's error and is fine; it started each job afresh (and
            # released the clean executors of a cancelled or failed job to go back to the pool)
            released = self._keep_final() if isinstance(cause, RaystreamError) else {}
            self._close(master_ok=isinstance(cause, RaystreamError), released=released)
            raise self._error from None
        except ray.exceptions.RayActorError as exc:
            self._error = JobFailed(f"the job master of {self.name!r} on {connected_cluster()} died: {exc}")
            self._close()
            raise self._error from None
        self._result = JobResult(
            out["job_id"], out["metrics"], out["duration_s"], out["results"],
            out.get("checkpoints"), out.get("savepoint"), self._failovers,
        )
        self._close(master_ok=True, released=out.get("released") or {}, end_checkpoints=out.get("end_checkpoints", True))
        return self._result

    def _check_connection(self) -> bool:
        """Settle the job as ended when the Ray connection it ran on is gone (``ray.shutdown()``,
        perhaps followed by a new ``ray.init()``): its job master and executors were this
        driver's actors and ended with it. A job that had not finished then failed (``wait()``
        raises a JobFailed saying so, ``status()`` is ``FAILED``); no Ray call is made for it.
        Returns whether the connection is gone.

        Without this check a call on such a client reached Ray with handles of the old
        connection: Ray started a new local Ray for it (also from the thread that settles a
        job nobody waits for, as soon as the shutdown ended the run) and the call failed with
        Ray's "Can't find actor ... from a different cluster", or the process later ended
        with "Failed to connect to GCS within 60 seconds"."""
        if self._connection is None or (ray.is_initialized() and connection_id() == self._connection):
            return False
        with self._lock:
            if not self._closed:
                self._closed = True
                self._submission = None
                self._executors = {}
                if self._result is None and self._error is None:
                    self._error = JobFailed(
                        f"job {self.name!r} ended with the Ray connection it ran on: ray.shutdown() was called "
                        "while it ran, and its job master and tasks, actors of this driver, ended with it; run it "
                        "again (a new execute() connects to Ray again)")
                self._end_callbacks = []  # (they would call Ray, and start a new one)
        return True

    def _keep_final(self) -> dict[str, str | None]:
        """Keep the metrics and info of a job that failed or was cancelled, from its master
        before it goes back to the pool (at most :data:`FINAL_STATE_TIMEOUT_S`; without them
        ``metrics()`` says that none remain). Returns the executors the master released to go
        back to the pool (``JobMaster.released_executors``; none when it cannot answer: all
        are killed)."""
        master = self._master
        try:
            metrics, info, released = ray.get(
                [master.metrics.remote(self._job_id), master.job_info.remote(self._job_id),
                 master.released_executors.remote(self._job_id)], timeout=FINAL_STATE_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a master that cannot answer now keeps nothing to show
            return {}
        self._final = (metrics, info)
        return released

    def _end_checkpoints(self) -> None:
        """This driver has the job's result: its master deletes the job's checkpoints now, as
        their retention mode says (not before: a master that died while it deleted them would
        leave a takeover nothing to restore from, and the job would run again from its start).
        At most ``CLEANUP_WAIT_S`` (then it goes on in the background); a failure is logged."""
        try:
            outcome = ray.get(self._master.end_checkpoints.remote(self._job_id), timeout=CLEANUP_WAIT_S + 30)
        except Exception as exc:  # noqa: BLE001 - the job's result stands; what is left stays on storage
            log.warning("job %s: its checkpoints were not deleted (delete <checkpoint_dir>/<job id> by hand): %s",
                        self._job_id, exc)
            return
        if self._final is not None and outcome is not None:  # (info() of the ended job says so)
            self._final[1]["checkpoint_cleanup"] = outcome

    def _close(self, master_ok: bool = False, released: dict[str, str | None] | None = None,
               end_checkpoints: bool = True) -> None:
        """The job ended: give the master (when its ``run`` returned or raised a job error)
        back to the worker pool, and the executors of the ``released`` slots (``{slot: job
        tag}``: the master handed them back; the next deployment onto one tells it the tag,
        and it waits for that release before it takes new tasks, and ends itself if that
        release finds it not clean; ``None``: released and clean already, as those of a
        cancelled or failed job are); kill the rest."""
        with self._lock:  # (settlings are serialized by _settle_lock; this guard costs nothing)
            if self._closed:
                return
            self._closed = True
        self._submission = None  # (for a failover of a running job: a client kept in a notebook keeps no job code)
        if master_ok and end_checkpoints:
            self._end_checkpoints()
        doomed = []
        if self._pool is not None and master_ok:
            self._pool.give_back_master(self._master, self._master_name)
        else:
            doomed.append(self._master)
        back = (released or {}) if self._pool is not None else {}
        keep = []
        for slot, e in self._executors.items():
            if slot in back:
                e.releasing = back[slot]
                keep.append(e)
            else:
                doomed.append(e.actor)
        if keep:
            self._pool.give_back_executors(keep)
        kill_quietly(doomed)
        self._run_end_callbacks()

    def __repr__(self) -> str:
        return f"JobClient({self.name!r})"

    def _repr_html_(self) -> str:
        """Jupyter display: name, job id, status and the per-operator metrics table."""
        try:
            status = self.status()
            metrics = self.metrics() if self._error is None else None
            job_id = self._result.job_id if self._result is not None else (None if self._closed else self.job_id)
        except Exception as exc:  # noqa: BLE001 - a display must not raise
            return job_client_html(self.name, None, "UNKNOWN", None, f"{type(exc).__name__}: {exc}")
        return job_client_html(self.name, job_id, status, metrics, str(self._error) if self._error else None)


def _call_quietly(callback: Any) -> None:
    try:
        callback()
    except Exception:  # noqa: BLE001 - a callback's failure must not change how the job ended
        log.warning("a callback at the end of a job failed", exc_info=True)


class OutputRelay:
    """Brings lines that a job's tasks write (its ``print()`` sinks) to this driver's stdout,
    deterministically: each writer puts its text into a Ray queue (:attr:`queue`) and
    waits until the queue holds it, so a batch's lines are in the queue before its sink task
    reports the batch done; a thread prints them as they come (an unbounded job prints as it
    runs), and :meth:`job_ended`, called once a job has ended, returns when every line the job
    put is printed.

    One relay serves every job of the driver's Ray session (:meth:`current`): its queue actor
    starts with the first printing job and stays for the next ones, whose start then costs
    no process (a queue per job made each printing job ~0.6-1.5 s slower than one without).
    The thread runs while a printing job runs; the end of a job is a marker put behind its
    lines (a FIFO queue: every line the job's writers put is ahead of it).

    Left to themselves, the tasks' prints reach the driver only through Ray's worker-log
    forwarding (the actor's ``.out`` file tailed by Ray's log monitor, printed by a driver
    thread), which is asynchronous and cannot be waited for: a script ended before the last
    lines arrived (at p=2, 24 of 50 lines of a bounded job lost), and a notebook cell showed
    them after it ended, or in a later cell.
    """

    #: how long the end of a job waits for its lines to be printed (a driver whose stdout
    #: blocks holds them back; the job's result is not held longer than this)
    END_WAIT_S = 30.0
    _lock = threading.Lock()
    _current: OutputRelay | None = None

    @classmethod
    def current(cls) -> OutputRelay:
        """The relay of this driver's Ray session (made at the first call of a session)."""
        session = connection_id()
        with cls._lock:
            relay = cls._current
            if relay is None or relay._session != session or relay._broken:
                relay = cls._current = cls(session)
            return relay

    def __init__(self, session: Any = None, stdout: Any = None) -> None:
        from ray.util.queue import Queue

        self._session = session
        self._out = stdout
        # a bounded queue: a driver that prints slowly holds the writers back instead of
        # piling the lines up in the queue actor
        self.name = f"{RELAY_PREFIX}{uuid.uuid4().hex[:8]}"
        self.queue = Queue(maxsize=256, actor_options={"num_cpus": 0, "name": self.name, "namespace": NAMESPACE})
        self._state = threading.Lock()
        self._jobs = 0  # printing jobs started and not ended
        self._ends: dict[str, threading.Event | None] = {}  # end markers put, not printed yet
        self._thread: threading.Thread | None = None
        self._broken = False

    @classmethod
    def idle_name(cls) -> str | None:
        """The actor name of this driver's relay when no printing job runs (else None)."""
        with cls._lock:
            relay = cls._current
        return relay.name if relay is not None and relay._jobs == 0 else None

    def job_started(self) -> None:
        """A job that prints starts: print what it puts as it comes."""
        with self._state:
            self._jobs += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._print_as_they_come, name="raystream-print-relay",
                                                daemon=True)
                self._thread.start()

    def job_ended(self) -> None:
        """A job that prints ended (finished, failed or cancelled; its writers put no more):
        return once every line it put is printed, at most :data:`END_WAIT_S`."""
        token = uuid.uuid4().hex
        done = threading.Event()
        with self._state:
            self._jobs -= 1
            self._ends[token] = done
        if not ray.is_initialized() or self._broken:
            return  # (the queue ended with the Ray connection)
        try:
            self.queue.put((_END, token), timeout=self.END_WAIT_S)
        except Exception:  # noqa: BLE001 - Ray went away or the driver does not print: nothing to wait for
            with self._state:
                self._ends.pop(token, None)
            return
        if not done.wait(self.END_WAIT_S):
            log.warning("the printed lines of a job were not all written to stdout within %.0f s", self.END_WAIT_S)

    def _write(self, text: str) -> None:
        import sys

        out = self._out or sys.stdout
        out.write(text)
        out.flush()

    def _print_as_they_come(self) -> None:
        while True:
            try:
                item = self.queue.get()  # (woken by a put: no polling)
            except Exception:  # noqa: BLE001 - Ray went away: nothing more comes
                self._broken = True
                with self._state:
                    self._thread = None
                    ends, self._ends = self._ends, {}
                for done in ends.values():
                    if done is not None:
                        done.set()
                return
            if type(item) is str:
                self._write(item)
                continue
            with self._state:
                done = self._ends.pop(item[1], None)
                idle = self._jobs == 0 and not self._ends
                if idle:
                    self._thread = None
            if done is not None:
                done.set()
            if idle:
                return


#: the end-of-job marker of :class:`OutputRelay`'s queue
_END = "raystream-end-of-job"


def submit_job(graph: JobGraph, config: JobConfig, address: str | None = None,
               relay_output: Callable[[Any], JobGraph] | None = None) -> JobClient:
    """Run ``graph`` on a job master and return a client (the job runs asynchronously).

    The master and the first attempt's task executors come from the driver's worker pool
    (:mod:`engine.pool`): idle ones left by earlier jobs, else new ones (the executors'
    processes then start while the master's does).

    ``relay_output(queue)``, for a graph whose sinks print: the same graph with those sinks
    writing their text into ``queue`` (an :class:`OutputRelay`'s), which this driver prints
    as it comes and entirely before the job's end is reported."""
    if config.state_backend is None:
        config.state_backend = default_state_backend()
    graph_blob = ship(graph, config)  # before Ray starts: a bad function fails in milliseconds
    ensure_ray(address)
    relay = None
    if relay_output is not None:
        relay = OutputRelay.current()
        graph = relay_output(relay.queue)
        graph_blob = ship(graph, config)
        relay.job_started()
    try:
        client = _submit(graph, graph_blob, config)
    except BaseException:
        if relay is not None:
            relay.job_ended()
        raise
    if relay is not None:
        client.add_end_callback(relay.job_ended)
    return client


def _submit(graph: JobGraph, graph_blob: bytes, config: JobConfig) -> JobClient:
    job_id = f"{config.name}-{uuid.uuid4().hex[:8]}"
    pool = WorkerPool.current()
    # The master is a named actor in the "raystream" namespace, so that the CLI and other
    # drivers can find it, and lives on the driver's node: losing another node must not take
    # it down.
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    master, master_name = pool.master({"max_concurrency": 1000, "scheduling_strategy": here},
                                      reuse=config.reuse_workers)
    slots = job_slots(graph, config.slot_sharing)
    if config.reuse_workers:
        # with the job's slots, warm spares that a restart puts in place of lost executors
        executors = pool.executors(slots + standby_slots(config), config.task_num_cpus)
    else:
        executors = start_executors({s: task_actor_name(job_id, s, 0) for s in slots}, config.task_num_cpus)
    try:
        check_shared_storage(master, list(executors.values()), config)
    except BaseException:
        if config.reuse_workers:  # (no job was deployed onto them: they are as they were lent)
            pool.give_back_master(master, master_name)
            pool.give_back_executors(list(executors.values()))
        else:
            kill_quietly([master, *(e.actor for e in executors.values())])
        raise
    config_blob = cloudpickle.dumps(config)
    run_ref = master.run.remote(graph_blob, config_blob, job_id, executors)
    client = JobClient(master, run_ref, config.name, graph, executors,
                       pool=pool if config.reuse_workers else None, master_name=master_name, job_id=job_id,
                       submission=(graph_blob, config_blob, config))
    try:
        _wait_until_started(master, job_id)
    except KeyboardInterrupt:  # (Ctrl-C while the master starts: no job is left running unseen)
        client.cancel()
        raise
    return client


#: URI schemes of checkpoint storage that every node reaches by its nature (not checked)
SHARED_SCHEMES = frozenset({"s3", "gs", "gcs", "abfs", "abfss", "az", "hdfs", "viewfs"})
#: ``(Ray connection, checkpoint storage, node)`` found to share the job master's directory:
#: each node is checked once per driver connection and storage, at the first job it serves
_SHARED_SEEN: set[tuple[str, str, str]] = set()
#: how long the check waits for the executors' answers (they may still be starting)
STORAGE_CHECK_TIMEOUT_S = 120.0


def _storage_key(location: Any) -> str | None:
    """What identifies checkpoint storage ``location`` for :data:`_SHARED_SEEN`; None for an
    object store or HDFS URI (every node reaches it) or nothing to check."""
    if location is None:
        return None
    if isinstance(location, tuple) and len(location) == 2:
        fs, base = location
        return f"{getattr(fs, 'type_name', type(fs).__name__)}:{base}"
    fs = getattr(location, "filesystem", None)  # a CheckpointStorage
    if fs is not None:
        return f"{fs.type_name}:{getattr(location, 'base_path', '')}"
    text = os.fspath(location) if isinstance(location, (str, os.PathLike)) else repr(location)
    if "://" in text and text.split("://", 1)[0].lower() in SHARED_SCHEMES:
        return None
    return f"path:{text}"


def _describe(location: Any) -> str:
    """Checkpoint storage ``location`` for a message: a path as the user gave it, a
    ``(filesystem, path)`` pair as the path and the filesystem's type."""
    if isinstance(location, tuple) and len(location) == 2:
        return f"{location[1]!r} (on a {getattr(location[0], 'type_name', type(location[0]).__name__)} filesystem)"
    return repr(location)


def check_shared_storage(master: Any, executors: list, config: JobConfig) -> None:
    """Refuse a checkpointed job whose ``checkpoint_dir`` is a directory of each node's own
    (``/tmp/chk`` on every node's disk, the default ``<tmp>/raystream-checkpoints`` on a
    multi-node cluster): the job master writes a small file there on its node and the job's
    executors on the other nodes look for it. Tasks write their state files where they run
    and the master reads them on its node when it restores, so on such storage every
    checkpoint "completed" and none could be restored: the job ran until its first failure
    and then failed for good (``CheckpointError: checkpoints completed ... but none can be
    read back``), with no word of the cause.

    Each node is checked once per driver connection and storage (the nodes of the master
    and of executors it already checked cost nothing); object stores and HDFS are not.

    Raises:
        ConfigError: executors on some node do not see the master's file, naming the
            directory, the nodes and the remedy.
    """
    chk = config.checkpoint
    location = getattr(chk, "checkpoint_dir", None)
    key = _storage_key(location)
    if key is None or config.state_backend is None:
        return
    connection = connection_id()
    here = ray.get_runtime_context().get_node_id()  # the master's node (pinned to the driver's)
    ask: dict[str, Any] = {}
    for e in executors:
        node = e.node
        if node == here or (connection, key, node or "") in _SHARED_SEEN:
            continue
        ask.setdefault(node or e.name, e.actor)  # (one executor per known node; unplaced ones all)
    if not ask:
        return
    backend = config.state_backend
    name = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        if not ray.get(master.write_storage_probe.remote(backend, location, name), timeout=STORAGE_CHECK_TIMEOUT_S):
            return
    except Exception:  # noqa: BLE001 - storage the master cannot write: the job's first checkpoint says so
        log.debug("could not write a probe file into checkpoint storage %r", location, exc_info=True)
        return
    try:
        refs = [a.storage_probe_seen.remote(backend, location, name) for a in ask.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=STORAGE_CHECK_TIMEOUT_S)
        blind = []
        for ref in ready:
            try:
                node, seen = ray.get(ref)
            except Exception:  # noqa: BLE001 - a dead executor: the master replaces it at deployment
                continue
            if seen is False:
                blind.append(node)
            elif seen:
                _SHARED_SEEN.add((connection, key, node))
    finally:
        try:
            ray.get(master.delete_storage_probe.remote(backend, location, name), timeout=STORAGE_CHECK_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a probe file left behind harms nothing
            log.debug("could not delete probe file %s", name, exc_info=True)
    if blind:
        ips = {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in ray.nodes()}
        nodes = ", ".join(f"{n[:8]} ({ips.get(n, '?')})" for n in sorted(set(blind)))
        raise ConfigError(
            f"checkpoint_dir {_describe(location)} is not shared by the nodes of the Ray cluster: a file that the job master "
            f"wrote there on its node {here[:8]} ({ips.get(here, '?')}, the driver's) is not there for the task "
            f"executors on node(s) {nodes}; each node has a directory of its own, so no checkpoint of this job could "
            f"be restored after a failure (its tasks write their state where they run, the master reads it on its "
            f"node). Give enable_checkpointing(checkpoint_dir=...) (raystream run --checkpoint-dir) a directory of a "
            f"file system that every node mounts at the same path (NFS, a shared volume) or an object store URI "
            f"(s3://bucket/chk, gs://bucket/chk)")


def _wait_until_started(master: Any, job_id: str) -> None:
    """Return once job ``job_id`` has started on ``master``: its sources are planned, so what
    they resolve at the job's start is fixed when ``execute_async()`` returns (entries appended
    to a Redis stream after it returned are read by a ``start_id="$"`` source, and not by a
    bounded one, whose end is fixed). Before, ``execute_async()`` returned as soon as the run
    was sent, and a master still starting (a new process: ~1 s) resolved ``"$"`` later,
    silently skipping what the caller appended meanwhile. A master that dies first is the
    client's to report (``wait()`` fails the job over or raises)."""
    try:
        ray.get(master.job_started.remote(job_id))
    except ray.exceptions.RayError:
        log.debug("job %s: waiting for its start on its job master failed", job_id, exc_info=True)


submit = submit_job
"""The API's one door into the engine: ``engine.submit(job_graph, config, address=None)``."""
