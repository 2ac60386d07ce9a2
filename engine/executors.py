"""The contract between the job master's logic and the processes that run tasks.

:class:`~engine.master.JobMaster` is a plain class: it deploys, watches, checkpoints and
restarts a job by sending messages to *task executors* through an :class:`ExecutorRuntime`.
The Ray runtime (:class:`engine.ray_runtime.RayExecutorRuntime`) implements it with Ray
actors; tests implement it with fake executors in one process
(``tests/unit/test_job_master.py``), as Ray Data keeps its streaming executor's logic out of
actors.

Calling convention (Ray's, so that the Ray runtime adds nothing per call): a task handle's
``handle.method.remote(*args)`` sends a message and returns an awaitable; awaiting it through
:meth:`ExecutorRuntime.wait` gives the reply or raises :class:`ExecutorLost` (the executor
process is gone), the :class:`~engine.errors.RaystreamError` the call raised, or
:class:`TaskCallFailed` (anything else).
"""

from __future__ import annotations

from typing import Any, Awaitable, Collection, Iterable, Protocol

__all__ = ["Executor", "ExecutorLost", "ExecutorRuntime", "TaskCallFailed"]


class ExecutorLost(Exception):
    """A task executor died (process killed, node lost): every call to it fails."""


class TaskCallFailed(Exception):
    """A call to a task executor raised something other than a raystream error."""


class Executor:
    """A task executor with its name, its CPU reservation, (once known) its node and (when
    its last job's master handed it back to the driver's pool) that job's tag: the next
    deployment onto it tells it to finish that release first (``TaskExecutor.setup(after=...)``)."""

    __slots__ = ("actor", "name", "num_cpus", "node", "releasing")

    def __init__(self, actor: Any, name: str, num_cpus: float, node: str | None = None,
                 releasing: str | None = None) -> None:
        self.actor = actor
        self.name = name
        self.num_cpus = num_cpus
        self.node = node
        self.releasing = releasing

    def __repr__(self) -> str:
        return f"Executor({self.name!r})"


class ExecutorRuntime(Protocol):
    """Starts, addresses and stops task executors for a :class:`~engine.master.JobMaster`.
    Every method is called on the master's event loop thread."""

    def start_executors(self, names: dict[str, str], num_cpus: float, placed: Iterable[str | None] = (),
                        avoid: Collection[str] = ()) -> dict[str, Executor]:
        """One new executor per slot (``{slot: name}``); they may still be starting.

        Placement (Flink's: no task onto a lost TaskManager, spread over the live ones): each
        on the live node with the fewest of the job's executors, counting ``placed`` (the
        nodes of the executors the job keeps, e.g. a failed attempt's survivors), and never on
        a node in ``avoid`` (where the job's executors were just lost; the runtime may still
        report it alive) while another node is there. ``Executor.node`` says where each goes."""

    def task_handle(self, executor: Any, key: tuple) -> Any:
        """The handle of task ``key`` hosted by ``executor`` (picklable: it is the target
        of the upstream tasks' channels)."""

    def master_handle(self) -> Any:
        """What the tasks call back (checkpoint acks, idle reports)."""

    def share(self, data: bytes) -> Any:
        """``data`` for the setups of many executors: a handle that their transport's
        ``fetch`` resolves (on Ray one object in the object store for every executor,
        instead of a copy in each setup call), or ``data`` itself."""

    def wait(self, call: Awaitable[Any]) -> Awaitable[Any]:
        """Await a call's reply, translating failures (see the module docstring)."""

    def kill(self, executors: Iterable[Any]) -> None:
        """Stop executors now (no error if already gone)."""

    async def kill_and_wait(self, executors: list[Any]) -> None:
        """Stop executors and return once none of them serves calls any more."""

    def leftover_executors(self, job_id: str) -> list[Any]:
        """Executors a previous master of ``job_id`` started and that still exist (failover)."""
