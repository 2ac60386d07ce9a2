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
from collections import OrderedDict
from typing import Any, Callable, Protocol

import cloudpickle

from .channels import Cancelled, ChannelSender, LocalSender
from .errors import JobFailed, RaystreamError, unpickling_failed
from .events import Barrier
from .memory import IdleGarbage
from .observability import name_native_thread
from .snapshots import AsyncSnapshotWriter
from .task import Task, TaskHooks, TaskSpec

__all__ = ["MAX_WAITING_DELIVERIES", "SETUP_WAIT_S", "Messenger", "MasterHooks", "TaskExecutor", "Transport"]

log = logging.getLogger(__name__)

#: how long a run or a delivery (a channel send) that reaches an executor before its task's
#: setup waits for that setup (the job master's ``_SETUP_WAIT_S``): the master sends each
#: executor its tasks' runs right after their setups, and the upstream tasks on other
#: executors may start sending before this executor's setup call has come or ended
SETUP_WAIT_S = 60.0
#: at most this many deliveries wait at one executor for their tasks' setups at a time; one
#: more is refused with an error naming the limit (a channel's credit window bounds its own
#: sends, a feedback channel's do not)
MAX_WAITING_DELIVERIES = 1024
#: the tags of this many released deployments are remembered (their late sends are refused at
#: once; an older one's wait for a setup that never comes ends after :data:`SETUP_WAIT_S`)
_RETIRED_TAGS = 256
_READY, _PENDING, _REFUSED, _GONE = "ready", "pending", "refused", "gone"


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
        #: task key -> resolved once the setup_tasks call that announced it ended (set up or
        #: failed): a ``run`` or delivery of the key waits for it (see :meth:`_setup_state`)
        self._set_up: dict[tuple, asyncio.Future[None]] = {}
        #: deployment tag (a task key's last element) -> the keys of this executor's
        #: setup_tasks call of that tag, from the call's start until the tasks are released
        self._announced: dict[str, frozenset[tuple]] = {}
        #: tags of deployments released here -> why their tasks are gone (the most recent):
        #: a late send or run for one of them is refused at once, never delivered
        self._retired: OrderedDict[str, str] = OrderedDict()
        #: notified (under its lock) whenever what :meth:`_setup_state` reads changed: channel
        #: connection threads and in-process senders wait on it, the event loop on ``_changes``
        self._gate = threading.Condition()
        self._changes: set[asyncio.Future[None]] = set()
        self._waiting = 0  # deliveries waiting for their task's setup (under _gate's lock)
        #: see :data:`SETUP_WAIT_S` and :data:`MAX_WAITING_DELIVERIES` (tests lower them)
        self.setup_wait_s = SETUP_WAIT_S
        self.max_waiting = MAX_WAITING_DELIVERIES
        #: frees the cyclic garbage finished jobs leave once it adds up (see release)
        self.idle_garbage = IdleGarbage()

    def deliver_to(self, key: tuple) -> Callable[[int, int, list, Any], None]:
        """The in-process entry point of task ``key``: a send that comes before the task is
        set up waits for its setup (:meth:`consumer`) on the sending thread."""
        hosted = self._hosted  # (a sender of a released attempt finds its task gone from it)

        def deliver(channel: int, seq: int, items: list, ack: Any) -> None:
            host = hosted.get(key)
            task = host.task if host is not None else None
            if task is None:
                task = self.consumer(key)
                if task is None:
                    raise RaystreamError(f"channel {channel}: the consumer task {key} is no longer hosted by its "
                                         "executor (its attempt was released); this sender belongs to an attempt "
                                         "that ended")
            task.deliver(channel, seq, items, ack)

        return deliver

    # ------------------------------------------------------------ waiting for a task's setup
    def _setup_state(self, key: tuple) -> tuple[str, str]:
        """Whether task ``key`` takes runs and deliveries: ``(_READY, "")``; ``(_PENDING, "")``
        while its setup may still come or end; ``(_GONE, why)`` when its deployment was
        released here (a late send of an ended attempt); ``(_REFUSED, why)`` when its setup
        failed or this executor's setup call of its deployment did not include it. Read from
        any thread (the event loop changes the state, then calls :meth:`_changed`)."""
        tag = key[-1] if key and isinstance(key[-1], str) else None
        why = self._retired.get(tag) if tag is not None else None
        if why is not None:
            return _GONE, why
        host = self._hosted.get(key)
        if key in self._set_up:
            return _PENDING, ""
        if host is not None and host.task is not None:
            return _READY, ""
        keys = self._announced.get(tag) if tag is not None else None
        if keys is None:
            return _PENDING, ""  # its deployment's setup call has not come yet
        if key in keys:
            return _REFUSED, f"the setup of task {key[:2]} on this executor failed"
        return _REFUSED, f"task {key[:2]} is not deployed on this executor"

    def _changed(self) -> None:
        """Wake every run and delivery waiting for a setup (event loop thread)."""
        with self._gate:
            self._gate.notify_all()
        changes, self._changes = self._changes, set()
        for fut in changes:
            if not fut.done():
                fut.set_result(None)

    def _enter_wait(self, key: tuple) -> None:
        """Count one more waiting delivery, or refuse it over :attr:`max_waiting` (under the lock)."""
        if self._waiting >= self.max_waiting:
            raise RaystreamError(
                f"a send to task {key[:2]} came before the task was set up and {self._waiting} sends already wait "
                f"for their tasks' setups on this executor (pid {os.getpid()}; the limit is {self.max_waiting}): "
                "refused; the executor's setup is too slow or never came")
        self._waiting += 1

    def _outcome(self, key: tuple, state: str, why: str, waited_s: float) -> Task | None:
        if state == _READY:
            host = self._hosted.get(key)
            if host is not None and host.task is not None:
                return host.task
            return None
        if state == _GONE:
            return None
        if state == _PENDING:
            why = f"task {key[:2]} was not set up on this executor within {waited_s:.0f} s"
        raise RaystreamError(f"a send to task {key[:2]} was refused: {why}")

    def consumer(self, key: tuple) -> Task | None:
        """The task ``key`` to deliver a send to, waiting (this thread, at most
        :attr:`setup_wait_s`) for its setup when the send came first; None when its
        deployment was released here (an ended attempt's late send: the sender is told so).
        Called by channel connection threads and in-process senders, never the event loop.

        Raises:
            RaystreamError: the task's setup failed, did not come in time, or is not on this
                executor, or :attr:`max_waiting` sends wait already.
        """
        host = self._hosted.get(key)
        if host is not None and host.task is not None and key not in self._set_up:
            return host.task
        wait_s = self.setup_wait_s
        deadline = time.monotonic() + wait_s
        with self._gate:
            state, why = self._setup_state(key)
            if state == _PENDING:
                self._enter_wait(key)
                try:
                    while state == _PENDING:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._gate.wait(remaining)
                        state, why = self._setup_state(key)
                finally:
                    self._waiting -= 1
        return self._outcome(key, state, why, wait_s)

    async def _await_setup(self, key: tuple, wait_s: float, delivery: bool) -> tuple[str, str]:
        """:meth:`_setup_state` of ``key`` once it is no longer pending or ``wait_s`` passed
        (event loop); ``delivery``: counts against :attr:`max_waiting`."""
        state, why = self._setup_state(key)
        if state != _PENDING or wait_s <= 0:
            return state, why
        if delivery:
            with self._gate:
                self._enter_wait(key)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        try:
            while state == _PENDING:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                change = loop.create_future()
                self._changes.add(change)
                try:
                    await asyncio.wait_for(change, remaining)
                except asyncio.TimeoutError:
                    pass
                finally:
                    self._changes.discard(change)
                state, why = self._setup_state(key)
        finally:
            if delivery:
                with self._gate:
                    self._waiting -= 1
        return state, why

    def _retire(self, tag: str, why: str) -> None:
        self._retired[tag] = why
        self._retired.move_to_end(tag)
        while len(self._retired) > _RETIRED_TAGS:
            self._retired.popitem(last=False)

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
        tag = key[-1] if isinstance(key[-1], str) else None
        why = self._retired.get(tag) if tag is not None else None
        if why is not None:  # released while it was set up (its attempt failed meanwhile)
            if self._hosted.get(key) is host:
                del self._hosted[key]
            host.close_senders()
            if writer is not None:
                writer.close()
            raise RaystreamError(f"task {spec.name!r} ({key[:2]}) was not set up: {why} while it was set up")
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
        (:meth:`_not_clean`).

        The master sends the tasks' runs right after this call, and tasks of other executors
        may send to these before the call ends (or comes): a run or a send of one of these
        keys waits until the call ended (:meth:`run`, :meth:`push`, :meth:`consumer`), and is
        refused if the task's setup failed. The call announces its keys as it starts; a send
        to a key it does not hold is refused then."""
        keys = [task_key for task_key, *_rest in tasks]
        try:
            if after is not None and not await self._handed_back(after):
                self._not_clean()
            loop = asyncio.get_running_loop()
            for task_key in keys:  # announce: runs and sends of these keys wait for this call
                if task_key not in self._set_up:
                    self._set_up[task_key] = loop.create_future()
                tag = task_key[-1] if isinstance(task_key[-1], str) else None
                if tag is not None:
                    self._announced[tag] = self._announced.get(tag, frozenset()) | {task_key}
            self._changed()
            for task_key, spec_blob, downstream, payload in tasks:
                await self.setup(task_key, spec_blob, downstream, master, storage, epoch, payload)
        finally:
            for task_key in keys:  # (a run or send waiting for one of them goes on, or fails)
                fut = self._set_up.pop(task_key, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            self._changed()

    async def push(self, key: tuple, channel: int, seq: int, items: list) -> bool:
        """Deliver ``items`` to hosted task ``key``; resolves once the task accepted them.
        A send that comes before the task's setup waits for it (at most :attr:`setup_wait_s`,
        at most :attr:`max_waiting` sends at a time; the task orders its channel's sends by
        ``seq``).

        Returns False, delivering nothing, when ``key``'s deployment was released here: the
        sender belongs to an attempt this executor already released (a failed attempt whose
        late sends reach the executor after it was reused by the next one); the failed
        attempt's records are replayed from the checkpoint the job restarts from.

        Raises:
            RaystreamError: the task's setup failed or did not come in time, or too many
                sends wait for setups (see :meth:`consumer`).
        """
        host = self._hosted.get(key)
        if host is None or host.task is None or key in self._set_up:
            state, why = await self._await_setup(key, self.setup_wait_s, delivery=True)
            task = self._outcome(key, state, why, self.setup_wait_s)
            if task is None:
                return False
            host = self._hosted[key]
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def ack() -> None:
            loop.call_soon_threadsafe(_resolve, fut)

        host.built_task().deliver(channel, seq, items, ack)
        await fut
        return True

    async def run(self, key: tuple, wait_s: float = 0.0) -> Any:
        """Run the task ``key`` on a new mailbox thread; resolves with its result when it
        ends. ``wait_s``: how long to wait for the end of its setup call when the run comes
        first (the master sends each executor the runs right after the setups)."""
        loop = asyncio.get_running_loop()
        host = self._hosted.get(key)
        if wait_s > 0:
            state, _why = await self._await_setup(key, wait_s, delivery=False)
            host = self._hosted.get(key) if state == _READY else None
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
        # their deployments end here: a late send or run of one of them is refused from now on,
        # and so is a setup of one still under way (never a delivery to a later deployment)
        announced, self._announced = self._announced, {}
        for tag in {*announced, *(k[-1] for k in hosted if k and isinstance(k[-1], str))}:
            self._retire(tag, f"its deployment ({tag}) was released by this executor")
        self._changed()
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


