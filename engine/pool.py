"""Warm Ray actors for the jobs of one driver: raystream's *session cluster*.

Starting a Ray actor means starting a Python worker process and importing raystream, pyarrow
and the user's code into it: about 0.8 s each on a 2-core machine, which is most of the
time a small job takes. Like a Flink session cluster, whose TaskManagers outlive the jobs
they run, the driver keeps the actors of a finished job and deploys the next job onto them:

* **task executors** (:class:`~engine.ray_runtime.TaskActor`) go back to the pool when
  their job ended. When it *finished*, nothing waits for them to be clean (no task still
  running, no raystream thread left over): the job master asks each to release its tasks
  without awaiting the answer (:meth:`TaskActor.release` with ``hand_back``, the job's tag,
  which the pool keeps as ``Executor.releasing`` and the next deployment passes on), the
  executor holds the next job's ``setup`` until that release ended, and one left not clean
  ends its own process (the next deployment onto it then puts a fresh executor in its
  place). When it was *cancelled* (``execute_and_collect(limit=)``, a collect iterator
  closed early, ``client.cancel()``, an interrupted ``execute()``) or *failed*, the master
  has each cancel and forget its tasks and waits for the answer, as for a restart: the clean
  ones go back (``releasing`` None), the others and the dead are killed
  (``JobMaster.released_executors``). A notebook's next job then starts in tens of
  milliseconds instead of waiting for new worker processes;
* **job masters** (:class:`~engine.master.JobMaster`) go back when their job ended (finished,
  failed or cancelled) and the master itself is alive; a master runs one job at a time and
  starts each job from a clean slate.

The pool belongs to the driver process and its Ray connection: the actors are owned by the
driver, so they end with it (or with ``ray.shutdown()``); :func:`shutdown_workers` ends them
earlier. ``StreamEnvironment(reuse_workers=False)`` gives a job actors of its own, killed at
its end (module-level state in user code then never carries over between jobs).

Example:
    >>> env = rs.StreamEnvironment(parallelism=2)              # doctest: +SKIP
    >>> env.from_collection(range(10)).map(str).collect()     # doctest: +SKIP
    >>> env.execute("first")    # starts a job master and 2 task executors   # doctest: +SKIP
    >>> env.execute("second")   # reuses all three                           # doctest: +SKIP
    >>> rs.shutdown_workers()   # ends them now                              # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import ray

from .executors import Executor
from .ray_runtime import (
    EXECUTOR_PREFIX,
    MASTER_PREFIX,
    NAMESPACE,
    JobMasterActor,
    kill_quietly,
    start_executors,
)

__all__ = ["WorkerPool", "Executor", "shutdown_workers", "kill_quietly", "start_executors", "NAMESPACE",
           "MASTER_PREFIX", "EXECUTOR_PREFIX"]

log = logging.getLogger(__name__)



class WorkerPool:
    """Idle job masters and task executors of this driver (see the module docstring).

    Thread-safe: jobs may be submitted from several threads (e.g. a notebook's background
    ``execute_async`` and a foreground ``execute``); an actor is lent to one job at a time.
    """

    _current: WorkerPool | None = None
    _current_lock = threading.Lock()

    def __init__(self, connection: str) -> None:
        #: the Ray connection whose actors these are (:func:`connection_id`)
        self.connection = connection
        self._lock = threading.Lock()
        self._executors: list[Executor] = []
        self._masters: list[tuple[Any, str]] = []  # (actor, name)
        self.started = {"masters": 0, "executors": 0}  # actors this pool had to start
        self.reused = {"masters": 0, "executors": 0}

    # ------------------------------------------------------------------ the driver's pool
    @classmethod
    def current(cls) -> WorkerPool:
        """The pool of this driver's current Ray connection (a new one after ``ray.shutdown()``
        and ``ray.init``: the actors of an earlier connection are gone with it)."""
        connection = connection_id()
        with cls._current_lock:
            if cls._current is None or cls._current.connection != connection:
                cls._current = WorkerPool(connection)
            return cls._current

    @classmethod
    def existing(cls) -> WorkerPool | None:
        """The current pool if one was created for the current Ray connection, else None."""
        pool = cls._current
        if pool is None or not ray.is_initialized():
            return None
        return pool if pool.connection == connection_id() else None

    # ------------------------------------------------------------------ masters
    def master(self, options: dict, reuse: bool = True) -> tuple[Any, str]:
        """``(actor, name)`` of an idle job master, or of a new one started with ``options``
        (Ray actor options)."""
        while reuse:
            with self._lock:
                idle = self._masters.pop() if self._masters else None
            if idle is None:
                break
            if idle[0]._actor_id.hex() in _dead([idle[0]]):
                log.info("dropping job master %s from the worker pool: its actor is dead", idle[1])
                continue
            self.reused["masters"] += 1
            return idle
        self.started["masters"] += 1
        name = f"{MASTER_PREFIX}{uuid.uuid4().hex[:12]}"
        # (ray.remote turns JobMasterActor into an ActorClass; Ray's stubs do not say so)
        return JobMasterActor.options(name=name, namespace=NAMESPACE, **options).remote(), name  # type: ignore[attr-defined]

    def give_back_master(self, master: Any, name: str) -> None:
        with self._lock:
            self._masters.append((master, name))

    # ------------------------------------------------------------------ executors
    def executors(self, slots: list[str], num_cpus: float) -> dict[str, Executor]:
        """One executor per slot: idle ones first (spread over their nodes), new ones for the
        rest, each on the alive node with the fewest of the job's executors (a node added to
        the cluster gets the first new ones: :func:`start_executors`).

        Idle executors whose actor Ray reports dead (killed, crashed, ended by itself while
        idle) are dropped first, lent or not (the driver's own view of its actors, about a
        microsecond each, no call to any executor: :func:`_dead`). Only an idle executor whose node is not known
        yet is asked for it (a health check, one round trip, ~2 ms of a small job). One that
        dies after these checks is found by the job master at deployment, which replaces it
        and keeps the live ones (as it does for an executor ending itself because its last
        job left it not clean: ``TaskExecutor.release(hand_back=...)``)."""
        with self._lock:
            mine = [e for e in self._executors if e.num_cpus == num_cpus]
            self._executors = [e for e in self._executors if e.num_cpus != num_cpus]
        mine = self._without_dead(mine)
        healthy = [e for e in mine if e.node is not None] + _healthy([e for e in mine if e.node is None])
        # interleave nodes so that a job's slots spread like freshly placed executors
        by_node: dict[str | None, list[Executor]] = {}
        for e in healthy:
            by_node.setdefault(e.node, []).append(e)
        spread: list[Executor] = []
        while any(by_node.values()):
            for node in list(by_node):
                if by_node[node]:
                    spread.append(by_node[node].pop())
        out = dict(zip(slots, spread))
        leftover = spread[len(out):]
        if leftover:
            with self._lock:
                self._executors.extend(leftover)
        self.reused["executors"] += len(out)
        fresh = [s for s in slots if s not in out]
        if fresh:
            names = {s: f"{EXECUTOR_PREFIX}{uuid.uuid4().hex[:12]}" for s in fresh}
            out.update(start_executors(names, num_cpus, placed=[e.node for e in out.values()]))
            self.started["executors"] += len(fresh)
        return out

    def give_back_executors(self, executors: list[Executor]) -> None:
        """Take back executors whose job finished (its master released them, unawaited):
        they are lent again at once (each waits for that release before it takes new tasks,
        and ends itself if it is not clean after it)."""
        with self._lock:
            self._executors.extend(executors)

    # ------------------------------------------------------------------ inspection / end
    def _without_dead(self, executors: list[Executor]) -> list[Executor]:
        """``executors`` but those whose actor is dead (logged; their handles released)."""
        dead = _dead([e.actor for e in executors])
        if not dead:
            return executors
        gone = [e for e in executors if e.actor._actor_id.hex() in dead]
        for e in gone:
            log.info("dropping task executor %s from the worker pool: its actor is dead", e.name)
        kill_quietly([e.actor for e in gone])
        return [e for e in executors if e.actor._actor_id.hex() not in dead]

    def _drop_dead(self) -> None:
        """Forget idle actors whose actor Ray reports dead (they died while idle)."""
        with self._lock:
            masters, executors = list(self._masters), list(self._executors)
        dead = _dead([m for m, _ in masters] + [e.actor for e in executors])
        if not dead:
            return
        with self._lock:
            self._masters = [(m, n) for m, n in self._masters if m._actor_id.hex() not in dead]
            self._executors = [e for e in self._executors if e.actor._actor_id.hex() not in dead]
        log.info("dropped %d dead idle actors from the worker pool", len(dead))

    def idle_actor_names(self) -> dict[str, list[str]]:
        """Names of the idle actors: ``{"masters": [...], "executors": [...]}`` (live ones:
        actors Ray reports dead are dropped first)."""
        self._drop_dead()
        with self._lock:
            return {
                "masters": [name for _, name in self._masters],
                "executors": [e.name for e in self._executors],
            }

    def idle_actors(self) -> tuple[list[Any], list[Executor]]:
        """The idle masters' actor handles and the idle executors (live ones: actors Ray
        reports dead are dropped first)."""
        self._drop_dead()
        with self._lock:
            return [m for m, _ in self._masters], list(self._executors)

    def shutdown(self) -> None:
        """Kill every idle actor of the pool (actors lent to running jobs are not touched)."""
        with self._lock:
            actors = [*(m for m, _ in self._masters), *(e.actor for e in self._executors)]
            executors = [e.actor for e in self._executors]
            self._masters, self._executors = [], []
        # the executors remove their channel socket files first (a kill gives them no chance;
        # files of killed executors are removed by the next executor that starts on the node)
        try:
            if executors:
                ray.wait([a.close_channels.remote() for a in executors], num_returns=len(executors), timeout=5.0)
        except Exception:  # noqa: BLE001 - best effort: gone executors have nothing to close
            log.debug("closing executors' channel sockets before shutdown failed", exc_info=True)
        kill_quietly(actors)


def connection_id() -> str:
    """Which Ray connection this driver has: its Ray job id *and* its node's id. The job id
    alone does not tell two connections apart: every local Ray that ``ray.init()`` starts
    numbers its first driver ``01000000``, so after ``ray.shutdown()`` and a new ``ray.init()``
    (a notebook, a test fixture, ``raystream run`` called twice in one process) the pool of
    the old cluster looked current, and deploying onto its dead actors' handles aborted the
    whole process inside Ray (``Check failed: ... Cannot find an actor handle``). A node's
    id is new with every Ray start."""
    ctx = ray.get_runtime_context()
    return f"{ctx.get_job_id()}@{ctx.get_node_id()}"


def _dead(actors: list[Any]) -> set[str]:
    """Ids (hex) of the ``actors`` that Ray reports dead, without calling any of them.

    The driver's Ray core worker keeps the state of every actor it holds a handle to, pushed
    by the GCS (a ``ray.kill`` shows within milliseconds, a crashed process once Ray saw it
    go): reading it costs about a microsecond per actor, nothing on a job's start. An actor
    it knows nothing of is looked up in the GCS (one query, under a millisecond); only
    ``DEAD`` counts (not one still starting or restarting). Empty if Ray cannot be asked:
    a dead executor is then found by the job master at deployment."""
    if not actors:
        return set()
    try:
        import ray._private.worker as ray_worker
        from ray.core.generated import gcs_pb2

        dead_state = gcs_pb2.ActorTableData.DEAD  # type: ignore[attr-defined]
        core_worker = ray_worker.global_worker.core_worker  # type: ignore[attr-defined]
        dead, unknown = set(), []
        for actor in actors:
            state = core_worker.get_local_actor_state(actor._actor_id)
            if state is None:
                unknown.append(actor._actor_id.hex())
            elif state == dead_state:
                dead.add(actor._actor_id.hex())
        if unknown:
            import ray._private.state as gcs_state

            for actor_id in unknown:
                info = gcs_state.state.actor_table(actor_id)
                if not info or info.get("State") == "DEAD":
                    dead.add(actor_id)
        return dead
    except Exception:  # noqa: BLE001 - best effort: the master still replaces a dead executor
        log.debug("asking Ray which pooled actors are dead failed", exc_info=True)
        return set()


def _healthy(executors: list[Executor], timeout_s: float = 10.0) -> list[Executor]:
    """The executors that answer (and where they run); the others are killed."""
    if not executors:
        return []
    refs = [e.actor.node.remote() for e in executors]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    ok, dead = [], []
    for e, ref in zip(executors, refs):
        try:
            if ref not in ready:
                raise TimeoutError("no answer")
            _, e.node = ray.get(ref)
            ok.append(e)
        except Exception as exc:  # noqa: BLE001 - a dead or hung executor is replaced
            log.info("dropping task executor %s from the worker pool: %s", e.name, exc)
            dead.append(e.actor)
    kill_quietly(dead)
    return ok


def shutdown_workers() -> None:
    """End this driver's idle raystream actors now (job masters and task executors kept for
    reuse). They also end with the driver or ``ray.shutdown()``.

    Example:
        >>> import raystream as rs
        >>> rs.shutdown_workers()   # nothing to do without Ray
    """
    pool = WorkerPool.existing()
    if pool is not None:
        pool.shutdown()
