"""The only module that wraps raystream's plain classes in Ray actors.

* :class:`RaySender` — the channel transport: one Ray actor call per send, items are Arrow
  RecordBatches plus piggybacked control events; credits are the unacknowledged calls.
* :class:`TaskActor` — a task executor hosting one :class:`~engine.task.Task` or, with slot
  sharing, one subtask of each vertex; every task's mailbox thread runs it while the
  actor's event loop accepts pushes and control calls. :class:`TaskRef` addresses one
  hosted task; co-located tasks exchange data in process.
* :func:`ensure_ray` — starts the embedded local Ray (dashboard off) when none is connected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import traceback
from collections import deque
from typing import Any, Iterable

import cloudpickle
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .channels import Cancelled, ChannelSender, LocalSender
from .errors import ConfigError, JobFailed, RaystreamError
from .events import Barrier
from .executors import Executor, ExecutorLost, ExecutorRuntime, TaskCallFailed
from .master import JobMaster
from .snapshots import AsyncSnapshotWriter
from .task import Task, TaskHooks, TaskSpec

__all__ = ["ensure_ray", "RaySender", "TaskActor", "TaskRef", "RayCheckpointHooks", "RayExecutorRuntime",
           "JobMasterActor", "start_executors", "kill_quietly", "NAMESPACE", "MASTER_PREFIX", "EXECUTOR_PREFIX"]

log = logging.getLogger(__name__)
_started_here = False


def ensure_ray(address: str | None = None, **init_kwargs: Any) -> None:
    """Connect to Ray: ``address`` if given (``"auto"``, ``"ray://host:10001"``...), else the
    already-initialized Ray, else an embedded local Ray with the dashboard off."""
    global _started_here
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    kwargs.update(init_kwargs)
    if address is None:
        address = os.environ.get("RAYSTREAM_ADDRESS") or None
    try:
        if address:
            kwargs.pop("num_cpus", None)
            kwargs.pop("include_dashboard", None)
            ray.init(address=address, **kwargs)
        else:
            ray.init(**kwargs)
            _started_here = True
    except ConnectionError as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from exc


class RaySender(ChannelSender):
    """Channel transport over Ray actor calls (``TaskActor.push``)."""

    transport = "ray"

    def __init__(self, channel_index: int, window: int | None, actor: Any, task_ref: list) -> None:
        super().__init__(channel_index, window)
        self._push = actor.push  # bound once: a TaskRef builds a method object per lookup
        self._pending: deque = deque()
        self._task_ref = task_ref  # [Task] once known: used to notice cancellation

    def _transmit(self, seq: int, items: list[Any]) -> None:
        self._pending.append(self._push.remote(self.channel_index, seq, items))
        if self.window is None and len(self._pending) >= 64:
            # feedback channels never wait for credits; still drop acknowledged refs
            pending = list(self._pending)
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
            if ready:
                self._reap(ready)

    def _reap(self, ready: list) -> None:
        ready_set = set(ready)
        self._pending = deque(r for r in self._pending if r not in ready_set)
        ray.get(ready)  # surfaces a dead consumer as an exception
        self._acked(len(ready))

    def _wait_for_credit(self) -> None:
        while True:
            pending = list(self._pending)
            if not pending:
                self.metrics.in_flight = 0
                return
            ready, _ = ray.wait(pending, num_returns=1, timeout=0.1)
            if ready:
                more, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
                self._reap(more or ready)
                return
            task = self._task_ref[0] if self._task_ref else None
            if task is not None and task.cancelled:
                raise Cancelled()


class RayCheckpointHooks(TaskHooks):
    """Reports checkpoint acks/declines to the job master actor."""

    def __init__(self, master: Any, attempt: int, writer: Any = None) -> None:
        self.master = master
        self.attempt = attempt
        self.writer = writer  # callable(state)->state handles, runs off the mailbox thread
        self._calls: list = []  # acks/declines sent, not yet known to be processed
        self._lock = threading.Lock()

    def _sent(self, ref: Any) -> None:
        with self._lock:
            if self._calls:  # forget the calls already processed
                _, self._calls = ray.wait(self._calls, num_returns=len(self._calls), timeout=0)
            self._calls.append(ref)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every snapshot queued for writing has been acked or declined and the
        master has processed those calls. A finishing task calls this before it reports
        its result: otherwise the master could finish the job (final commit) before the
        ack of the task's last checkpoint, whose committables would then be lost."""
        if self.writer is not None:
            self.writer.drain()
        with self._lock:
            calls, self._calls = self._calls, []
        if calls:
            ready, pending = ray.wait(calls, num_returns=len(calls), timeout=timeout_s)
            if pending:
                log.warning("%d checkpoint ack(s) not processed by the job master after %.0fs", len(pending), timeout_s)

    def acknowledge(self, checkpoint_id: int, vertex_id: int, subtask: int, state: dict) -> None:
        if self.writer is None:
            comms = {uid: e["committables"] for uid, e in state.items() if e.get("committables")}
            self.decline(checkpoint_id, vertex_id, subtask, "the job has no checkpoint storage", comms)
            return
        self.writer(
            checkpoint_id, vertex_id, subtask, state, self._send_ack,
            lambda cid, reason, committables=None: self.decline(cid, vertex_id, subtask, reason, committables),
        )

    def _send_ack(self, checkpoint_id: int, vertex_id: int, subtask: int, state: Any) -> None:
        self._sent(self.master.acknowledge_checkpoint.remote(self.attempt, checkpoint_id, vertex_id, subtask, state))

    def decline(self, checkpoint_id: int, vertex_id: int, subtask: int, reason: str,
                committables: dict | None = None) -> None:
        self._sent(self.master.decline_checkpoint.remote(self.attempt, checkpoint_id, vertex_id, subtask, reason,
                                                         committables))

    def report_idle(self, vertex_id: int, subtask: int) -> None:
        self.master.task_idle.remote(self.attempt, vertex_id, subtask)


class TaskRef:
    """One task hosted by a :class:`TaskActor`: ``ref.push.remote(*args)`` calls
    ``actor.push.remote(key, *args)``, so callers treat a hosted task like an actor.
    Picklable (it travels to the upstream tasks as their channel target)."""

    __slots__ = ("actor", "key")

    def __init__(self, actor: Any, key: tuple) -> None:
        self.actor = actor
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskRef, (self.actor, self.key))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _BoundMethod(getattr(self.actor, name), self.key)

    @property
    def actor_id(self) -> str:
        return self.actor._actor_id.hex()


class _BoundMethod:
    __slots__ = ("method", "key")

    def __init__(self, method: Any, key: tuple) -> None:
        self.method = method
        self.key = key

    def remote(self, *args: Any) -> Any:
        return self.method.remote(self.key, *args)


class _Hosted:
    """A task inside a TaskActor, with its checkpoint hooks."""

    __slots__ = ("task", "hooks", "ref", "finished")

    def __init__(self) -> None:
        self.task: Task | None = None
        self.hooks: RayCheckpointHooks | None = None
        self.ref: list = []  # [Task] once built: senders use it to notice cancellation
        self.finished = False  # its mailbox thread has ended

    def built_task(self) -> Task:
        """The task (``TaskActor.setup`` builds it before the master runs or feeds any task)."""
        if self.task is None:
            raise RuntimeError("the task was not built: its TaskActor.setup failed or never ran")
        return self.task


@ray.remote(num_cpus=0)
class TaskActor:
    """A task executor (Flink's task slot): hosts one :class:`~engine.task.Task`, or with
    slot sharing (the default) one subtask of every vertex that has that subtask index.
    Every method takes the hosted task's key ``(vertex id, subtask)`` first. Each task runs
    on its own mailbox thread; tasks of one actor exchange data in process
    (:class:`~engine.channels.LocalSender`: no serialization, no Ray call), tasks of
    different actors through :class:`RaySender`."""

    def __init__(self) -> None:
        self._hosted: dict[tuple, _Hosted] = {}
        self._me = ray.get_runtime_context().get_actor_id()
        # The mailbox threads (not the event loop) call ray.wait/ray.get on channel acks;
        # Ray's "blocking get inside async actor" warning does not apply to them.
        import ray._private.worker as _worker

        _worker.blocking_get_inside_async_warned = True

    def _sender(self, out: Any, target: TaskRef, window: int | None, host: _Hosted) -> ChannelSender:
        if target.actor_id != self._me:
            return RaySender(out.channel_index, window, target, host.ref)
        hosted, key = self._hosted, target.key

        def deliver(channel: int, seq: int, items: list, ack: Any) -> None:
            hosted[key].built_task().deliver(channel, seq, items, ack)  # set up before any task runs

        return LocalSender(out.channel_index, window, deliver, lambda: bool(host.ref) and host.ref[0].cancelled)

    async def setup(self, key: tuple, spec_blob: bytes, downstream: list[list[Any]], master: Any,
                    storage: Any = None, epoch: int | None = None) -> None:
        """Build the task ``key``; ``epoch``: the master's attempt counter, sent back with
        every checkpoint ack so that the master drops acks of earlier attempts and jobs."""
        spec: TaskSpec = cloudpickle.loads(spec_blob)
        host = self._hosted[key] = _Hosted()
        senders = [
            [
                self._sender(out, downstream[i][t], None if out.feedback else spec.config.credits, host)
                for t in range(out.num_targets)
            ]
            for i, out in enumerate(spec.outputs)
        ]
        writer = None
        if storage is not None:
            writer = AsyncSnapshotWriter(storage, spec.job_id, state_backend=spec.state_backend)
        host.hooks = RayCheckpointHooks(master, spec.attempt if epoch is None else epoch, writer)
        host.task = Task(spec, senders, hooks=host.hooks)
        host.ref.append(host.task)

    async def push(self, key: tuple, channel: int, seq: int, items: list) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def ack() -> None:
            loop.call_soon_threadsafe(_resolve, fut)

        self._hosted[key].built_task().deliver(channel, seq, items, ack)
        await fut

    async def run(self, key: tuple) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        host = self._hosted[key]
        thread = threading.Thread(target=_run_thread, args=(host, loop, fut), name=f"raystream-mailbox-{key[0]}-{key[1]}",
                                  daemon=True)
        thread.start()
        return await fut

    async def trigger_checkpoint(self, key: tuple, checkpoint_id: int, timestamp_ms: int, savepoint: bool,
                                 stop: bool = False) -> None:
        task = self._hosted[key].built_task()
        task.post(lambda: task.trigger_checkpoint(Barrier(checkpoint_id, timestamp_ms, savepoint, stop)))

    async def notify_checkpoint_complete(self, key: tuple, checkpoint_id: int) -> None:
        task = self._hosted[key].built_task()
        task.post(lambda: task.notify_checkpoint_complete(checkpoint_id))

    async def notify_checkpoint_aborted(self, key: tuple, checkpoint_id: int) -> None:
        task = self._hosted[key].built_task()
        task.post(lambda: task.notify_checkpoint_aborted(checkpoint_id))

    async def cancel(self, key: tuple) -> None:
        host = self._hosted.get(key)
        if host is not None and host.task is not None:
            host.task.cancel()

    async def probe(self, key: tuple) -> tuple:
        task = self._hosted[key].built_task()
        return await self._on_mailbox(task, task.probe)

    async def end_feedback(self, key: tuple) -> None:
        task = self._hosted[key].built_task()
        task.post(task.end_feedback)

    async def _on_mailbox(self, task: Task, fn: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def run() -> None:
            try:
                value = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                loop.call_soon_threadsafe(_fail, fut, exc)
                return
            loop.call_soon_threadsafe(_resolve, fut, value)

        task.post(run)
        return await fut

    async def metrics(self, key: tuple) -> dict:
        host = self._hosted.get(key)
        return host.task.metrics() if host is not None and host.task is not None else {}

    async def release(self, grace_s: float = 2.0) -> bool:
        """Forget every hosted task (their job ended) so the executor can serve another job.

        Returns True when the executor is clean: no hosted task still running and, within
        ``grace_s``, no thread of ours (mailbox, snapshot writer, remote-function I/O) left
        over. The job master kills an executor that is not clean instead of reusing it.
        Calls that still arrive for a forgotten task find no task under their key (keys
        carry the job's attempt tag) and are dropped."""
        hosted, self._hosted = self._hosted, {}
        deadline = time.monotonic() + grace_s

        def running() -> list[_Hosted]:
            return [h for h in hosted.values() if h.task is not None and not h.finished]

        while running() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        clean = not running()
        for host in hosted.values():
            if host.task is not None and not host.finished:
                host.task.cancel()
            if host.hooks is not None and host.hooks.writer is not None:
                host.hooks.writer.close()
        while _own_threads() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return clean and not _own_threads()

    async def hosted(self) -> list:
        """Keys of the tasks this executor hosts right now (empty when idle)."""
        return sorted(self._hosted)

    async def pid(self, key: tuple | None = None) -> int:
        return os.getpid()

    async def node(self) -> tuple[int, str]:
        """``(pid, node id)`` of this executor (the worker pool's health check)."""
        return os.getpid(), ray.get_runtime_context().get_node_id()


def _own_threads() -> list[threading.Thread]:
    """raystream's threads still alive in this process (all are named ``raystream-...``)."""
    return [t for t in threading.enumerate() if t.name.startswith("raystream-") and t.is_alive()]


def _run_thread(host: _Hosted, loop: asyncio.AbstractEventLoop, fut: asyncio.Future) -> None:
    try:
        _run_task(host, loop, fut)
    finally:
        host.finished = True


def _run_task(host: _Hosted, loop: asyncio.AbstractEventLoop, fut: asyncio.Future) -> None:
    task = host.task
    assert task is not None
    try:
        result: Any = task.run()
    except Cancelled:
        result = None
    except JobFailed as exc:
        loop.call_soon_threadsafe(_fail, fut, exc)
        return
    except BaseException as exc:  # noqa: BLE001 - anything else is a task failure too
        err = JobFailed(
            f"task {task.spec.task_name!r} failed: {type(exc).__name__}: {exc}",
            subtask=task.spec.subtask_index,
            cause=traceback.format_exc(),
        )
        loop.call_soon_threadsafe(_fail, fut, err)
        return
    if host.hooks is not None:
        try:
            host.hooks.flush()
        except Exception:  # noqa: BLE001 - the master is gone: nothing left to report to
            log.warning("flushing checkpoint acks of task %r failed", task.spec.task_name, exc_info=True)
    loop.call_soon_threadsafe(_resolve, fut, result)


def _resolve(fut: asyncio.Future, value: Any = None) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


# ---------------------------------------------------------------- executors and the job master
NAMESPACE = "raystream"
MASTER_PREFIX = "raystream-master:"
EXECUTOR_PREFIX = "raystream-executor:"


def start_executors(names: dict[str, str], num_cpus: float) -> dict[str, Executor]:
    """Create one TaskActor per slot (``{slot: actor name}``); their worker processes start in
    the background.

    Zero-CPU executors (the default) are pinned round robin to the cluster's alive nodes
    (hard node affinity): Ray 2.60 neither honours *soft* node affinity nor SPREAD for
    zero-resource actors (measured on a two-node cluster: whole jobs landed on one node). A
    node that dies before its executor starts fails that executor, and so the attempt, which
    the restart strategy then redeploys on the nodes alive at that time. Executors that
    reserve CPUs are left to Ray's resource-aware SPREAD, which cannot block on a full node."""
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    out = {}
    for i, (slot, name) in enumerate(names.items()):
        node = nodes[i % len(nodes)] if nodes else None
        strategy: Any = "SPREAD"
        if node is not None and len(nodes) > 1 and not num_cpus:
            strategy = NodeAffinitySchedulingStrategy(node, soft=False)
        actor = TaskActor.options(  # type: ignore[attr-defined]  # an ActorClass: see WorkerPool.master
            num_cpus=num_cpus, name=name, namespace=NAMESPACE, max_concurrency=1000, scheduling_strategy=strategy,
        ).remote()
        out[slot] = Executor(actor, name, num_cpus, node)
    return out


def kill_quietly(actors: Any) -> None:
    """``ray.kill`` each actor; ones that are already gone are skipped."""
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass


class RayExecutorRuntime(ExecutorRuntime):
    """The :class:`~engine.executors.ExecutorRuntime` of a job master running as a Ray actor:
    task executors are :class:`TaskActor` actors, calls are Ray actor calls."""

    def start_executors(self, names: dict[str, str], num_cpus: float) -> dict[str, Executor]:
        return start_executors(names, num_cpus)

    def task_handle(self, executor: Any, key: tuple) -> TaskRef:
        return TaskRef(executor, key)

    def master_handle(self) -> Any:
        return ray.get_runtime_context().current_actor

    async def wait(self, call: Any) -> Any:
        try:
            return await call
        except ray.exceptions.RayActorError as exc:
            raise ExecutorLost(str(exc)) from exc
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, RaystreamError):
                raise cause from None
            raise TaskCallFailed(str(exc)) from exc

    def kill(self, executors: Iterable[Any]) -> None:
        kill_quietly(executors)

    async def kill_and_wait(self, executors: list[Any], timeout_s: float = 30.0) -> None:
        kill_quietly(executors)
        deadline = time.monotonic() + timeout_s
        for actor in executors:
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self.wait(actor.pid.remote()), 1.0)
                except Exception:  # noqa: BLE001 - gone (or not answering): it serves no calls
                    break
                await asyncio.sleep(0.05)

    def leftover_executors(self, job_id: str) -> list[Any]:
        prefix = f"raystream-task:{job_id}:"
        found = []
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"] if isinstance(entry, dict) else entry
            if name.startswith(prefix):
                try:
                    found.append(ray.get_actor(name, namespace=NAMESPACE))
                except ValueError:  # gone meanwhile
                    pass
        return found


@ray.remote(num_cpus=0)
class JobMasterActor:
    """The job master as a named Ray actor: a thin wrapper that forwards every message to a
    plain :class:`~engine.master.JobMaster` (all logic lives there)."""

    def __init__(self) -> None:
        self._master = JobMaster(RayExecutorRuntime())

    async def run(self, graph_blob: bytes, config_blob: bytes, job_id: str | None = None,
                  executors: dict[str, Any] | None = None, recover: bool = False) -> dict:
        return await self._master.run(graph_blob, config_blob, job_id, executors, recover)

    async def job_info(self, job_id: str | None = None) -> dict:
        return await self._master.job_info(job_id)

    async def metrics(self, job_id: str | None = None) -> dict:
        return await self._master.metrics(job_id)

    async def cancel(self, job_id: str | None = None) -> None:
        await self._master.cancel(job_id)

    async def task_actor_names(self) -> dict[tuple[int, int], str]:
        return await self._master.task_actor_names()

    async def task_idle(self, attempt: int, vertex_id: int, subtask: int) -> None:
        await self._master.task_idle(attempt, vertex_id, subtask)

    async def acknowledge_checkpoint(self, attempt: int, checkpoint_id: int, vertex_id: int, subtask: int,
                                     state: dict) -> None:
        await self._master.acknowledge_checkpoint(attempt, checkpoint_id, vertex_id, subtask, state)

    async def decline_checkpoint(self, attempt: int, checkpoint_id: int, vertex_id: int, subtask: int, reason: str,
                                 committables: dict | None = None) -> None:
        await self._master.decline_checkpoint(attempt, checkpoint_id, vertex_id, subtask, reason, committables)

    async def trigger_savepoint(self, path: str, stop: bool = False) -> str:
        return await self._master.trigger_savepoint(path, stop)

    async def stop_with_savepoint(self, path: str) -> str:
        return await self._master.stop_with_savepoint(path)
