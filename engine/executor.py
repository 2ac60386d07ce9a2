"""The task executor: hosts tasks and runs each on its own mailbox thread (Flink's task
slot), plus the hooks through which a task reports to its job master. Plain classes with no
Ray in them: :class:`TaskExecutor` gets a :class:`Transport` that says which tasks are in
this process, how to reach the others and how to message the master. The Ray actor
``engine.ray_runtime.TaskActor`` and the in-process ``engine.local_runtime`` wrap it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import traceback
from typing import Any, Callable, Protocol

import cloudpickle

from .channels import Cancelled, ChannelSender, LocalSender
from .errors import JobFailed, unpickling_failed
from .events import Barrier
from .memory import IdleGarbage
from .observability import name_native_thread
from .snapshots import AsyncSnapshotWriter
from .task import Task, TaskHooks, TaskSpec

__all__ = ["Messenger", "MasterHooks", "TaskExecutor", "Transport"]

log = logging.getLogger(__name__)


class Messenger(Protocol):
    """Sends messages to a job master from any thread."""

    def send(self, method: str, *args: Any) -> Any:
        """Call ``method`` on the master; returns a waitable handle of the call."""

    def pending(self, calls: list) -> list:
        """The calls not yet processed by the master (no waiting)."""

    def wait_all(self, calls: list, timeout_s: float) -> list:
        """Wait until every call is processed (at most ``timeout_s``); the unprocessed ones."""


class Transport(Protocol):
    """What a :class:`TaskExecutor` needs of its runtime."""

    def local_deliver(self, executor: TaskExecutor, target: Any) -> Callable[[int, int, list, Any], None] | None:
        """The in-process entry point of task handle ``target``, or None if it is remote."""

    async def prepare_targets(self, targets: list[Any], channel_transport: str) -> None:
        """Learn what :meth:`remote_sender` needs to know about the task handles ``targets``
        (e.g. where their executors listen) before it is asked for senders to them."""

    def remote_sender(self, channel_index: int, window: int | None, target: Any, task_ref: list,
                      channel_transport: str = "auto") -> ChannelSender:
        """A channel sender to a task in another process (``channel_transport``: see
        :class:`~engine.config.TaskConfig`)."""

    def messenger(self, master: Any) -> Messenger:
        """A messenger to the job master handle ``master``."""

    async def fetch(self, shared: Any) -> bytes:
        """The bytes behind a handle of the master runtime's ``share`` (or the bytes given)."""

    def node_id(self) -> str:
        """The node this executor runs on."""


class MasterHooks(TaskHooks):
    """Reports a task's checkpoint acks, declines and idleness to its job master through a
    :class:`Messenger` (Ray actor calls, or calls onto an in-process master's event loop).
    Snapshots are written off the mailbox thread by ``writer`` before the ack is sent."""

    def __init__(self, messenger: Messenger, attempt: int, writer: Any = None) -> None:
        self.messenger = messenger
        self.attempt = attempt
        self.writer = writer  # callable(state)->state handles, runs off the mailbox thread
        self._calls: list = []  # acks/declines sent, not yet known to be processed
        self._lock = threading.Lock()

    def _sent(self, call: Any) -> None:
        with self._lock:
            if self._calls:  # forget the calls already processed
                self._calls = self.messenger.pending(self._calls)
            self._calls.append(call)

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
            pending = self.messenger.wait_all(calls, timeout_s)
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
        self._sent(self.messenger.send("acknowledge_checkpoint", self.attempt, checkpoint_id, vertex_id, subtask, state))

    def decline(self, checkpoint_id: int, vertex_id: int, subtask: int, reason: str,
                committables: dict | None = None) -> None:
        self._sent(self.messenger.send("decline_checkpoint", self.attempt, checkpoint_id, vertex_id, subtask, reason,
                                       committables))

    def report_idle(self, vertex_id: int, subtask: int) -> None:
        self.messenger.send("task_idle", self.attempt, vertex_id, subtask)

    def snapshots_in_flight(self) -> int:
        return 0 if self.writer is None else self.writer.in_flight()

    def wait_snapshots_written(self) -> None:
        if self.writer is not None:
            self.writer.drain()


class _Hosted:
    """A task inside a TaskActor, with its checkpoint hooks."""

    __slots__ = ("task", "hooks", "ref", "finished", "started", "senders")

    def __init__(self) -> None:
        self.task: Task | None = None
        self.hooks: MasterHooks | None = None
        self.ref: list = []  # [Task] once built: senders use it to notice cancellation
        self.finished = False  # its mailbox thread has ended
        self.started = False  # its mailbox thread was started
        self.senders: list[ChannelSender] = []  # every output channel's sender

    def close_senders(self) -> None:
        """Release the channels' transports (socket connections); only once no thread
        sends on them any more."""
        for sender in self.senders:
            try:
                sender.close()
            except Exception:  # noqa: BLE001 - best effort: the task is done with them
                log.debug("closing a channel sender failed", exc_info=True)

    def built_task(self) -> Task:
        """The task (``TaskActor.setup`` builds it before the master runs or feeds any task)."""
        if self.task is None:
            raise RuntimeError("the task was not built: its TaskActor.setup failed or never ran")
        return self.task


class TaskExecutor:
    """A task executor (Flink's task slot): hosts one :class:`~engine.task.Task`, or with
    slot sharing (the default) one subtask of every vertex that has that subtask index.
    Every method takes the hosted task's key ``(vertex id, subtask)`` first; the async
    methods run on the executor's event loop. Each task runs on its own mailbox thread.
    Tasks the ``transport`` can reach in this process exchange data through
    :class:`~engine.channels.LocalSender` (no serialization, no remote call); others through
    the transport's remote sender. A plain class: the Ray actor
    :class:`engine.ray_runtime.TaskActor` and the in-process runtime
    (:mod:`engine.local_runtime`) wrap it."""

    def __init__(self, transport: Transport) -> None:
        self._hosted: dict[tuple, _Hosted] = {}
        self.transport = transport
        #: job tag -> the outcome (clean) of the hand-back release of that job's tasks, the
        #: few most recent (``setup`` and ``hosted`` wait for the one they are told to)
        self._hand_backs: dict[str, asyncio.Future[bool]] = {}
        #: task key -> resolved once a setup_tasks call set it up (or failed to): a ``run`` of
        #: the key that arrived first waits for it (an async actor's calls may start out of order)
        self._set_up: dict[tuple, asyncio.Future[None]] = {}
        #: frees the cyclic garbage finished jobs leave once it adds up (see release)
        self.idle_garbage = IdleGarbage()

    def deliver_to(self, key: tuple) -> Callable[[int, int, list, Any], None]:
        """The in-process entry point of hosted task ``key`` (set up before any task runs)."""
        hosted = self._hosted

        def deliver(channel: int, seq: int, items: list, ack: Any) -> None:
            hosted[key].built_task().deliver(channel, seq, items, ack)

        return deliver

    def _sender(self, out: Any, target: Any, window: int | None, host: _Hosted, channel_transport: str) -> ChannelSender:
        deliver = self.transport.local_deliver(self, target)
        if deliver is None:
            return self.transport.remote_sender(out.channel_index, window, target, host.ref, channel_transport)
        return LocalSender(out.channel_index, window, deliver, lambda: bool(host.ref) and host.ref[0].cancelled)

    async def setup(self, key: tuple, spec_blob: bytes, downstream: list[list[Any]], master: Any,
                    storage: Any = None, epoch: int | None = None,
                    payload: tuple[Any, Any] | None = None) -> None:
        """Build the task ``key``; ``epoch``: the master's attempt counter, sent back with
        every checkpoint ack so that the master drops acks of earlier attempts and jobs.
        ``payload``: the vertex's ``(chain, source)`` pickled apart from the spec (the
        master pickles it once per job for all subtasks) and its operator factories as the
        driver pickled them (:attr:`~engine.graph.JobVertex.operators`; None when the chain
        holds them), both as the master's runtime shared them (:meth:`Transport.fetch` gets
        the bytes). The master deploys through :meth:`setup_tasks`."""
        spec: TaskSpec = cloudpickle.loads(spec_blob)
        if payload is not None:
            head, operators = payload
            head = await self.transport.fetch(head)
            if operators is not None:
                operators = await self.transport.fetch(operators)
            try:
                spec.chain, spec.source = cloudpickle.loads(head)
                factories = [] if operators is None else cloudpickle.loads(operators)
            except Exception as exc:
                raise unpickling_failed(f"the operators of {spec.name!r}", f"in task executor pid {os.getpid()}", exc) from exc
            for op, factory in zip(spec.chain, factories):
                if factory is not None:
                    op["factory"] = factory
        host = self._hosted[key] = _Hosted()
        mode = spec.config.channel_transport
        await self.transport.prepare_targets(
            [downstream[i][t] for i, out in enumerate(spec.outputs) for t in range(out.num_targets)], mode)
        senders = [
            [
                self._sender(out, downstream[i][t], None if out.feedback else spec.config.credits, host, mode)
                for t in range(out.num_targets)
            ]
            for i, out in enumerate(spec.outputs)
        ]
        host.senders = [s for out_senders in senders for s in out_senders]
        writer = None
        if storage is not None:
            writer = AsyncSnapshotWriter(storage, spec.job_id, state_backend=spec.state_backend)
        host.hooks = MasterHooks(self.transport.messenger(master), spec.attempt if epoch is None else epoch, writer)
        host.task = Task(spec, senders, hooks=host.hooks)
        host.ref.append(host.task)

    async def setup_tasks(self, key: tuple, tasks: list[tuple], master: Any, storage: Any = None,
                          epoch: int | None = None, after: str | None = None) -> None:
        """:meth:`setup` of several tasks of this executor in one call (the master's deployment:
        one call per executor), in order: ``tasks`` are ``(key, spec_blob, downstream,
        payload)``; ``key``: the task whose handle the call went through (one of them).

        ``after``: the tag of the job whose master handed this executor back to the worker pool
        (``release(hand_back=tag)``, unawaited): wait for that release to end first, whichever
        call arrives first; an executor it left not clean takes no new tasks
        (:meth:`_not_clean`)."""
        try:
            if after is not None and not await self._handed_back(after):
                self._not_clean()
            for task_key, spec_blob, downstream, payload in tasks:
                await self.setup(task_key, spec_blob, downstream, master, storage, epoch, payload)
        finally:
            for task_key, *_rest in tasks:  # (a run waiting for one of them goes on, or fails)
                fut = self._set_up.pop(task_key, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    async def push(self, key: tuple, channel: int, seq: int, items: list) -> bool:
        """Deliver ``items`` to hosted task ``key``; resolves once the task accepted them.

        Returns False, delivering nothing, when ``key`` is not hosted (any more): the sender
        belongs to an attempt this executor already released (a failed attempt whose late
        sends reach the executor after it was reused by the next one). Every task of an
        attempt is set up before any of them runs, so a live sender never meets this; the
        failed attempt's records are replayed from the checkpoint the job restarts from."""
        host = self._hosted.get(key)
        if host is None:
            return False
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def ack() -> None:
            loop.call_soon_threadsafe(_resolve, fut)

        host.built_task().deliver(channel, seq, items, ack)
        await fut
        return True

    async def run(self, key: tuple, wait_s: float = 0.0) -> Any:
        """Run the task ``key`` on a new mailbox thread; resolves with its result when it
        ends. ``wait_s``: how long to wait for its setup when the run comes first (the master
        sends both at once when one executor hosts the whole job)."""
        loop = asyncio.get_running_loop()
        host = self._hosted.get(key)
        if host is None and wait_s > 0:
            fut = self._set_up.get(key)
            if fut is None:
                fut = self._set_up[key] = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(fut), wait_s)
            except asyncio.TimeoutError:
                self._set_up.pop(key, None)
            host = self._hosted.get(key)
        if host is None or host.task is None:
            raise RuntimeError(f"task {key[:2]} was not set up on this executor (its setup failed or never came)")
        fut = loop.create_future()
        host.started = True
        thread = threading.Thread(target=_run_thread, args=(host, loop, fut), name=f"raystream-mailbox-{key[0]}-{key[1]}",
                                  daemon=True)
        thread.start()
        return await fut

    def _live(self, key: tuple) -> Task | None:
        """The hosted task ``key``, or None once its job released this executor (a
        checkpoint message still on its way to a finished task is dropped)."""
        host = self._hosted.get(key)
        return host.task if host is not None else None

    async def trigger_checkpoint(self, key: tuple, checkpoint_id: int, timestamp_ms: int, savepoint: bool,
                                 stop: bool = False) -> None:
        task = self._live(key)
        if task is not None:
            task.post(lambda: task.trigger_checkpoint(Barrier(checkpoint_id, timestamp_ms, savepoint, stop)))

    async def notify_checkpoint_complete(self, key: tuple, checkpoint_id: int) -> None:
        task = self._live(key)
        if task is not None:
            task.post(lambda: task.notify_checkpoint_complete(checkpoint_id))

    async def notify_checkpoint_aborted(self, key: tuple, checkpoint_id: int) -> None:
        task = self._live(key)
        if task is not None:
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

    async def release(self, grace_s: float = 2.0, cancel: bool = False, hand_back: str | None = None) -> bool:
        """Forget every hosted task (their job ended) so the executor can serve another job.

        Returns True when the executor is clean: no hosted task still running and, within
        ``grace_s``, no thread of ours (mailbox, snapshot writer, remote-function I/O) left
        over. The job master kills an executor that is not clean instead of reusing it.
        Calls that still arrive for a forgotten task find no task under their key (keys
        carry the job's attempt tag) and are dropped. ``cancel``: cancel the hosted tasks
        at once (a failed attempt whose executors serve the restart) instead of waiting
        for them to finish first.

        ``hand_back``: the tag of the finished job whose master does not wait for the answer
        (the executor is back in the driver's worker pool already): the next :meth:`setup`,
        told this tag, waits for this release to end, and an executor it leaves not clean ends
        itself (:meth:`_not_clean`) instead of being lent with a leftover thread."""
        if hand_back is None:
            clean = await self._release(grace_s, cancel)
            self.idle_garbage.check()  # (the released tasks are garbage now)
            return clean
        done = self._hand_back_outcome(hand_back)
        clean = False
        try:
            clean = await self._release(grace_s, cancel)
            self.idle_garbage.check()  # before the next job's setup, which waits for this
        finally:
            if not done.done():
                done.set_result(clean)
        if not clean:
            self._not_clean()
        return clean

    def _hand_back_outcome(self, tag: str) -> asyncio.Future[bool]:
        """The future outcome of the hand-back release of job ``tag`` (made by whichever of
        the release and the call waiting for it comes first; the 16 most recent are kept)."""
        fut = self._hand_backs.get(tag)
        if fut is None:
            fut = self._hand_backs[tag] = asyncio.get_running_loop().create_future()
            while len(self._hand_backs) > 16:
                oldest = next(iter(self._hand_backs))
                if not self._hand_backs[oldest].done():
                    break
                del self._hand_backs[oldest]
        return fut

    async def _handed_back(self, tag: str, timeout_s: float = 15.0) -> bool:
        """Whether the hand-back release of job ``tag`` left this executor clean (waits for
        it; not clean if it did not end within ``timeout_s``, several times its 2 s grace:
        its master died before the call left it)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._hand_back_outcome(tag)), timeout_s)
        except asyncio.TimeoutError:
            log.warning("task executor: the release of job %s did not come within %.0f s", tag, timeout_s)
            return False

    def _not_clean(self) -> None:
        """This executor was handed back to the worker pool but is not clean: take no more
        tasks. Raises (the Ray actor ends its process instead; see ``TaskActor``)."""
        raise RuntimeError("this task executor is not clean after its last job (a thread of that job is still running)")

    async def _release(self, grace_s: float, cancel: bool) -> bool:
        hosted, self._hosted = self._hosted, {}
        deadline = time.monotonic() + grace_s
        if cancel:
            for host in hosted.values():
                if host.task is not None:
                    host.task.cancel()

        def running() -> list[_Hosted]:
            # (a task set up but never run has no thread: a deployment that failed midway
            # leaves such tasks, and the executor is as clean as an idle one)
            return [h for h in hosted.values() if h.started and not h.finished]

        while running() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        clean = not running()
        for host in hosted.values():
            if host.task is not None and not host.finished:
                host.task.cancel()
            if not host.started:  # set up, never run: nobody else closes its channels
                host.close_senders()
            if host.hooks is not None and host.hooks.writer is not None:
                host.hooks.writer.close()
        while _own_threads() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return clean and not _own_threads()

    async def hosted(self, after: str | None = None) -> list:
        """Keys of the tasks this executor hosts (empty when idle); ``after``: once the
        hand-back release of that job's tasks ended (as :meth:`setup` waits for it)."""
        if after is not None:
            await self._handed_back(after)
        return sorted(self._hosted)

    async def pid(self, key: tuple | None = None) -> int:
        return os.getpid()

    async def node(self) -> tuple[int, str]:
        """``(pid, node id)`` of this executor (the worker pool's health check)."""
        return os.getpid(), self.transport.node_id()


#: ``RAYSTREAM_PROFILE=DIR``: every task's mailbox thread runs under cProfile and dumps its
#: statistics to ``DIR/<job>-<vertex>-<subtask>-<pid>.prof`` when it ends (a diagnostic for
#: ``benchmarks/profile_scaleout.py``; off by default, costs nothing then).
_PROFILE_DIR = os.environ.get("RAYSTREAM_PROFILE", "")


def _profiled(task: Task) -> Any:
    import cProfile

    prof = cProfile.Profile()
    start, cpu = time.perf_counter(), time.thread_time()
    try:
        return prof.runcall(task.run)
    finally:
        wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
        s = task.spec
        path = os.path.join(_PROFILE_DIR, f"{s.job_id}-v{s.vertex_id}-s{s.subtask_index}-{os.getpid()}.prof")
        prof.dump_stats(path)
        with open(path[:-5] + ".wall", "w") as f:
            f.write(f"{s.name}\twall {wall:.3f} s\tthread cpu {cpu:.3f} s\n")


def _own_threads() -> list[threading.Thread]:
    """raystream's threads still alive in this process (all are named ``raystream-...``)."""
    return [t for t in threading.enumerate() if t.name.startswith("raystream-") and t.is_alive()]


def _run_thread(host: _Hosted, loop: asyncio.AbstractEventLoop, fut: asyncio.Future) -> None:
    task = host.task
    if task is not None:  # "rs-task-<vertex>-<subtask>" in top -H and /proc (never raises)
        name_native_thread(f"rs-task-{task.spec.vertex_id}-{task.spec.subtask_index}")
    try:
        _run_task(host, loop, fut)
    finally:
        host.close_senders()
        host.finished = True


def _run_task(host: _Hosted, loop: asyncio.AbstractEventLoop, fut: asyncio.Future) -> None:
    task = host.task
    assert task is not None
    try:
        result: Any = _profiled(task) if _PROFILE_DIR else task.run()
    except Cancelled:
        result = None
    except JobFailed as exc:
        _reply(loop, _fail, fut, exc)
        return
    except BaseException as exc:  # noqa: BLE001 - anything else is a task failure too
        err = JobFailed(
            f"task {task.spec.task_name!r} failed: {type(exc).__name__}: {exc}",
            subtask=task.spec.subtask_index,
            cause=traceback.format_exc(),
        )
        _reply(loop, _fail, fut, err)
        return
    if host.hooks is not None:
        try:
            host.hooks.flush()
        except Exception:  # noqa: BLE001 - the master is gone: nothing left to report to
            log.warning("flushing checkpoint acks of task %r failed", task.spec.task_name, exc_info=True)
    _reply(loop, _resolve, fut, result)


def _reply(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """Hand a task's outcome to the executor's event loop (gone: nobody waits any more)."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: the executor was shut down
        log.debug("event loop closed before a task's outcome could be delivered")


def _resolve(fut: asyncio.Future, value: Any = None) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


