"""The only module that wraps raystream's plain classes in Ray actors.

* :class:`RaySender` — the channel transport: one Ray actor call per send, items are Arrow
  RecordBatches plus piggybacked control events; credits are the unacknowledged calls.
* :class:`TaskActor` — hosts one :class:`~engine.task.Task`; its mailbox thread runs the
  task while the actor's event loop accepts pushes and control calls.
* :func:`ensure_ray` — starts the embedded local Ray (dashboard off) when none is connected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import traceback
from collections import deque
from typing import Any

import cloudpickle
import ray

from .channels import Cancelled, ChannelSender
from .errors import ConfigError, JobFailed
from .events import Barrier
from .task import Task, TaskHooks, TaskSpec

__all__ = ["ensure_ray", "RaySender", "TaskActor", "RayCheckpointHooks"]

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

    def __init__(self, channel_index: int, window: int | None, actor: Any, task_ref: list) -> None:
        super().__init__(channel_index, window)
        self._actor = actor
        self._pending: deque = deque()
        self._task_ref = task_ref  # [Task] once known: used to notice cancellation

    def _transmit(self, seq: int, items: list[Any]) -> None:
        self._pending.append(self._actor.push.remote(self.channel_index, seq, items))
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
            self.decline(checkpoint_id, vertex_id, subtask, "the job has no checkpoint storage")
            return
        self.writer(
            checkpoint_id, vertex_id, subtask, state, self._send_ack,
            lambda cid, reason: self.decline(cid, vertex_id, subtask, reason),
        )

    def _send_ack(self, checkpoint_id: int, vertex_id: int, subtask: int, state: Any) -> None:
        self._sent(self.master.acknowledge_checkpoint.remote(self.attempt, checkpoint_id, vertex_id, subtask, state))

    def decline(self, checkpoint_id: int, vertex_id: int, subtask: int, reason: str) -> None:
        self._sent(self.master.decline_checkpoint.remote(self.attempt, checkpoint_id, vertex_id, subtask, reason))

    def report_idle(self, vertex_id: int, subtask: int) -> None:
        self.master.task_idle.remote(self.attempt, vertex_id, subtask)


@ray.remote(num_cpus=0)
class TaskActor:
    """Hosts one Task. Methods are called by the job master and by upstream tasks."""

    def __init__(self) -> None:
        self.task: Task | None = None
        self._hooks: RayCheckpointHooks | None = None
        self._task_ref: list = []
        # The mailbox thread (not the event loop) calls ray.wait/ray.get on channel acks;
        # Ray's "blocking get inside async actor" warning does not apply to it.
        import ray._private.worker as _worker

        _worker.blocking_get_inside_async_warned = True

    async def setup(self, spec_blob: bytes, downstream: list[list[Any]], master: Any, storage: Any = None) -> None:
        spec: TaskSpec = cloudpickle.loads(spec_blob)
        senders = [
            [
                RaySender(out.channel_index, None if out.feedback else spec.config.credits, downstream[i][t], self._task_ref)
                for t in range(out.num_targets)
            ]
            for i, out in enumerate(spec.outputs)
        ]
        writer = None
        if storage is not None:
            from .snapshots import AsyncSnapshotWriter

            writer = AsyncSnapshotWriter(storage, spec.job_id)
        hooks = self._hooks = RayCheckpointHooks(master, spec.attempt, writer)
        from .snapshots import keyed_backend_factory

        self.task = Task(spec, senders, hooks=hooks, keyed_backend_factory=keyed_backend_factory)
        self._task_ref.append(self.task)

    async def push(self, channel: int, seq: int, items: list) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def ack() -> None:
            loop.call_soon_threadsafe(_resolve, fut)

        self.task.deliver(channel, seq, items, ack)
        await fut

    async def run(self) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        thread = threading.Thread(target=self._run_thread, args=(loop, fut), name="raystream-mailbox", daemon=True)
        thread.start()
        return await fut

    def _run_thread(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future) -> None:
        task = self.task
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
        if self._hooks is not None:
            try:
                self._hooks.flush()
            except Exception:  # noqa: BLE001 - the master is gone: nothing left to report to
                log.warning("flushing checkpoint acks of task %r failed", task.spec.task_name, exc_info=True)
        loop.call_soon_threadsafe(_resolve, fut, result)

    async def trigger_checkpoint(self, checkpoint_id: int, timestamp_ms: int, savepoint: bool) -> None:
        task = self.task
        task.post(lambda: task.trigger_checkpoint(Barrier(checkpoint_id, timestamp_ms, savepoint)))

    async def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        task = self.task
        task.post(lambda: task.notify_checkpoint_complete(checkpoint_id))

    async def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        task = self.task
        task.post(lambda: task.notify_checkpoint_aborted(checkpoint_id))

    async def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def probe(self) -> tuple:
        return await self._on_mailbox(self.task.probe)

    async def end_feedback(self) -> None:
        self.task.post(self.task.end_feedback)

    async def _on_mailbox(self, fn: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def run() -> None:
            try:
                value = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                loop.call_soon_threadsafe(_fail, fut, exc)
                return
            loop.call_soon_threadsafe(_resolve, fut, value)

        self.task.post(run)
        return await fut

    async def metrics(self) -> dict:
        return self.task.metrics() if self.task is not None else {}

    async def pid(self) -> int:
        return os.getpid()


def _resolve(fut: asyncio.Future, value: Any = None) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
