"""The in-process runtime: a whole job (its :class:`~engine.master.JobMaster` and every
task executor) in the calling process, on one asyncio event loop plus one mailbox thread per
task. No Ray: the same master and task code as on a cluster, with in-process channels
(:class:`~engine.channels.LocalSender`) between every pair of tasks.

Meant for tests and debugging (a breakpoint in a user function stops the job right there).
Failure drills kill an executor with :meth:`LocalExecutorRuntime.kill_executor`: its tasks
stop and every call to it fails, as when a Ray actor dies.

Example:
    >>> import raystream as rs
    >>> from raystream.engine.config import JobConfig
    >>> env = rs.StreamEnvironment(parallelism=2)
    >>> _ = env.from_collection(range(5)).map(lambda x: x * 10).collect()
    >>> result = run_in_process(env.get_job_graph(), JobConfig(name="tens"))
    >>> sorted(r for batches in result["results"].values() for b in batches for r in b.column(0).to_pylist())
    [0, 10, 20, 30, 40]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Awaitable, Callable, Collection, Iterable

import cloudpickle

from .channels import ChannelSender
from .config import JobConfig
from .errors import ConfigError
from .executor import TaskExecutor
from .executors import Executor, ExecutorLost
from .graph import JobGraph, ship
from .master import JobMaster
from .observability import NullMetricsBackend
from .state_backend import default_state_backend

__all__ = ["LocalExecutorRuntime", "run_in_process"]

log = logging.getLogger(__name__)


class _LocalMessenger:
    """Messages to a master on ``loop``, from any thread."""

    def __init__(self, master: JobMaster, loop: asyncio.AbstractEventLoop) -> None:
        self.master, self.loop = master, loop

    def send(self, method: str, *args: Any) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(getattr(self.master, method)(*args), self.loop)

    def pending(self, calls: list) -> list:
        return [c for c in calls if not c.done()]

    def wait_all(self, calls: list, timeout_s: float) -> list:
        _, not_done = concurrent.futures.wait(calls, timeout=timeout_s)
        return list(not_done)


class _LocalTransport:
    """Every task of the job is in this process."""

    def __init__(self, runtime: LocalExecutorRuntime) -> None:
        self.runtime = runtime

    def local_deliver(self, executor: TaskExecutor, target: _LocalHandle) -> Callable[[int, int, list, Any], None]:
        return target.executor.deliver_to(target.key)

    async def prepare_targets(self, targets: list[Any], channel_transport: str) -> None:
        return None  # every target is in this process

    async def fetch(self, shared: Any) -> bytes:
        return shared  # (LocalExecutorRuntime.share shares the bytes themselves)

    def remote_sender(self, channel_index: int, window: int | None, target: Any, task_ref: list,
                      channel_transport: str = "auto") -> ChannelSender:
        raise ConfigError("the in-process runtime has no remote tasks")

    def messenger(self, master: Any) -> _LocalMessenger:
        assert self.runtime.loop is not None
        return _LocalMessenger(master, self.runtime.loop)

    def node_id(self) -> str:
        return "local"


class _LocalExecutor(TaskExecutor):
    def __init__(self, runtime: LocalExecutorRuntime, name: str) -> None:
        super().__init__(_LocalTransport(runtime))
        self.name = name
        self.dead = False


class _Call:
    __slots__ = ("handle", "method")

    def __init__(self, handle: _LocalHandle, method: str) -> None:
        self.handle, self.method = handle, method

    def remote(self, *args: Any) -> asyncio.Future:
        """Sent now (like a Ray actor call), whether or not the caller awaits the reply."""
        executor = self.handle.executor

        async def call() -> Any:
            if executor.dead:
                raise ExecutorLost(f"task executor {executor.name!r} was killed")
            reply = await getattr(executor, self.method)(self.handle.key, *args)
            if executor.dead:  # killed while the call ran: its reply never arrives (as on Ray)
                raise ExecutorLost(f"task executor {executor.name!r} was killed")
            return reply

        fut = asyncio.ensure_future(call())
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # fire-and-forget calls too
        return fut


class _LocalHandle:
    """Task ``key`` on an in-process executor (the TaskRef of this runtime)."""

    __slots__ = ("executor", "key")

    def __init__(self, executor: _LocalExecutor, key: tuple) -> None:
        self.executor, self.key = executor, key

    def __getattr__(self, name: str) -> _Call:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Call(self, name)


class LocalExecutorRuntime:
    """:class:`~engine.executors.ExecutorRuntime` whose executors live in this process."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.master: JobMaster | None = None
        self.executors: dict[str, _LocalExecutor] = {}
        # the task hosts of killed executors whose mailbox threads may still be ending, or whose
        # snapshot writers still write (join_tasks and join_snapshots wait for them too); pruned
        # at every kill, so a job restarted again and again holds only the live attempt's
        # executors, not every earlier one's
        self._dying: list[Any] = []

    def start_executors(self, names: dict[str, str], num_cpus: float, placed: Iterable[str | None] = (),
                        avoid: Collection[str] = ()) -> dict[str, Executor]:
        """In-process executors (one node, ``"local"``: ``placed`` and ``avoid`` leave no choice)."""
        out = {}
        for slot, name in names.items():
            self.executors[name] = executor = _LocalExecutor(self, name)
            out[slot] = Executor(executor, name, num_cpus, "local")
        return out

    def task_handle(self, executor: _LocalExecutor, key: tuple) -> _LocalHandle:
        return _LocalHandle(executor, key)

    def master_handle(self) -> JobMaster:
        assert self.master is not None
        return self.master

    def share(self, data: bytes) -> bytes:
        return data  # one process: the setups get the same bytes object

    async def wait(self, call: Awaitable[Any]) -> Any:
        return await call

    def kill(self, executors: Iterable[Any]) -> None:
        for executor in executors:
            self.kill_executor(executor)

    def kill_executor(self, executor: _LocalExecutor) -> None:
        """Kill an executor (a failure drill): its tasks stop, calls to it fail; it is
        forgotten (its tasks' threads are waited for by :meth:`join_tasks`)."""
        executor.dead = True
        if self.executors.get(executor.name) is executor:
            del self.executors[executor.name]
        self._dying = [h for h in self._dying if _busy(h)]
        self._dying.extend(h for h in executor._hosted.values() if h.task is not None and _busy(h))
        for host in list(executor._hosted.values()):
            if host.task is not None:
                host.task.cancel()
            if host.hooks is not None and host.hooks.writer is not None:
                host.hooks.writer.close()

    async def kill_and_wait(self, executors: list[Any]) -> None:
        self.kill(executors)

    def leftover_executors(self, job_id: str) -> list[Any]:
        return []

    async def join_tasks(self, timeout_s: float = 10.0) -> None:
        """Wait until every task's mailbox thread has ended (their last messages target this
        loop, which must outlive them)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        hosts = [h for e in self.executors.values() for h in e._hosted.values() if h.task is not None]
        hosts += [h for h in self._dying if h not in hosts]
        for h in hosts:
            if not h.finished and h.task is not None:
                h.task.cancel()
        while any(not h.finished for h in hosts) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)

    async def join_snapshots(self, timeout_s: float = 10.0) -> None:
        """Wait until every snapshot the tasks handed to their snapshot writers is written and
        its ack or decline has been processed by the master (call it once :meth:`join_tasks`
        returned: no task takes a snapshot any more). A snapshot of a checkpoint aborted
        meanwhile (e.g. by the job's cancellation) is written into that checkpoint's
        directory after its deletion, and its ack is what has the master delete it again: an
        ack arriving after the job's loop ended left that ``chk-<n>`` directory behind."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        hosts = [h for e in self.executors.values() for h in e._hosted.values()]
        hosts += [h for h in self._dying if h not in hosts]
        hooks = [h.hooks for h in hosts if h.hooks is not None and h.hooks.writer is not None]
        # (a killed executor's writer is closed: drain() would not wait for what it still writes)
        while any(k.writer.in_flight() for k in hooks) and loop.time() < deadline:
            await asyncio.sleep(0.005)
        for k in hooks:  # (the acks and declines they sent, processed on this loop meanwhile)
            await asyncio.to_thread(k.flush, max(0.0, deadline - loop.time()))


def run_in_process(graph: JobGraph, config: JobConfig, timeout_s: float | None = None,
                   on_start: Callable[[JobMaster, LocalExecutorRuntime], None] | None = None) -> dict:
    """Run ``graph`` to its end in this process; returns the job master's result dict
    (``results`` per sink uid, ``metrics``, ``checkpoints``...) or raises JobFailed.

    ``on_start(master, runtime)`` is called on a helper thread once the job is submitted
    (failure drills use it to kill executors while the job runs).
    """
    if config.state_backend is None:
        config.state_backend = default_state_backend()
    config.reuse_workers = False  # executors live and die with the job here
    runtime = LocalExecutorRuntime()
    master = JobMaster(runtime, metrics_backend=NullMetricsBackend())
    runtime.master = master

    async def main() -> dict:
        runtime.loop = asyncio.get_running_loop()
        job = master.run(ship(graph, config), cloudpickle.dumps(config), None, None)
        if on_start is not None:
            threading.Thread(target=on_start, args=(master, runtime), name="raystream-drill", daemon=True).start()
        try:
            return await asyncio.wait_for(job, timeout_s)
        finally:
            await runtime.join_tasks()
            await runtime.join_snapshots()
            if master._job_id is not None:  # (this driver has the result: the checkpoints may go)
                await master.end_checkpoints(master._job_id)
            # the master's deletions of checkpoints (aborted ones, e.g. by the cancellation,
            # those beyond the retained ones, the job's own at its end) run on this loop: ended
            # with the other tasks below, they left those chk-<n> directories behind and logged
            # "could not delete aborted checkpoint ... Executor shutdown has been called"
            await _await_cleanups(master)
            await _end_other_tasks()

    loop = asyncio.new_event_loop()  # (not asyncio.run: it waits for every task without a bound)
    try:
        return loop.run_until_complete(main())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


#: how long the end of an in-process job waits for its other tasks once cancelled
END_GRACE_S = 10.0
#: how long the end of an in-process job waits for the master's deletions of checkpoints
CLEANUP_GRACE_S = 30.0


def _busy(host: Any) -> bool:
    """A task host whose mailbox thread runs, or whose snapshot writer still writes."""
    hooks = host.hooks
    return not host.finished or (hooks is not None and hooks.writer is not None and hooks.writer.in_flight() > 0)


async def _await_cleanups(master: JobMaster) -> None:
    """Wait for the master's checkpoint deletions, those queued while waiting too, at most
    :data:`CLEANUP_GRACE_S` (storage that slow is logged: what is left can be deleted by hand)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLEANUP_GRACE_S
    while True:
        pending = [f for f in (*master._discards, *master._cleanups) if not f.done()]
        if not pending:
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("job %s: deleting checkpoints takes longer than %.0f s; the job ends without waiting "
                        "(what is left in checkpoint storage can be deleted by hand)", master._job_id, CLEANUP_GRACE_S)
            return
        await asyncio.wait(pending, timeout=remaining)


async def _end_other_tasks() -> None:
    """Cancel the loop's other tasks (fire-and-forget calls of the job) and wait for them at
    most :data:`END_GRACE_S`: one that does not end is logged with its stack and left behind, so
    that the end of a job never hangs its caller."""
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for t in others:
        t.cancel()
    if not others:
        return
    grace_s = END_GRACE_S
    _, stuck = await asyncio.wait(others, timeout=grace_s)
    for t in stuck:
        frames = "".join(f"\n  {f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}" for f in t.get_stack())
        log.warning("an in-process job's task did not end %.0f s after its cancellation (left behind): %r%s",
                    grace_s, t, frames)
