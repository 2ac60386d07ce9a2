"""The operator contract: what the task runtime calls, in which order, on which thread.

A task runs a chain of operators on ONE thread (the task's mailbox thread), so operators
never need locks. For every operator of a chain the task calls, in order::

    open(ctx, output)                  once, before any data; restore_state() before it on recovery
    process_batch(batch, input_index)  for each batch, in channel order
    process_watermark(wm, input_index) when the task's combined watermark advances
    prepare_snapshot_pre_barrier(id)   at a barrier, first (may still emit: before the barrier)
    snapshot_state(checkpoint_id)      at a barrier, after every record before the barrier
    notify_checkpoint_complete(id)     after the checkpoint is globally complete
    end_input()                        when every input has ended (flush final results)
    close()                            once, on success, failure or cancel

Operators emit downstream through ``output`` (the next operator of the chain, or the
task's network writer) and never keep a reference to a batch they emitted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .events import Watermark
from .keygroups import KeyGroupRange
from .records import Batch

if TYPE_CHECKING:
    from .state_backend import KeyedBackend

__all__ = ["Output", "OperatorContext", "StreamOperator", "Clock", "SystemClock", "ManualClock", "Cancellable"]


class Clock(Protocol):
    """Processing time source (ms). Injected so tests control time without sleeping."""

    def now_ms(self) -> int: ...


class SystemClock:
    """Wall-clock processing time."""

    def now_ms(self) -> int:
        import time

        return int(time.time() * 1000)

    def __reduce__(self) -> tuple[type[SystemClock], tuple[()]]:
        return (SystemClock, ())


class ManualClock:
    """A clock that only moves when told to (for tests).

    Example:
        >>> c = ManualClock(1000); c.advance(500); c.now_ms()
        1500
    """

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        self._now += ms

    def set(self, ms: int) -> None:
        self._now = ms


class Cancellable(Protocol):
    """A registration that can be undone (e.g. the task's handle of a processing-time
    callback, :class:`~engine.timer_queue.ScheduledTimer`)."""

    def cancel(self) -> None:
        """Forget the registration (no-op if it already fired or was cancelled)."""


class Output(Protocol):
    """Where an operator sends its results."""

    def emit(self, batch: Batch) -> None:
        """Send a batch of records downstream (empty batches may be dropped)."""

    def emit_watermark(self, watermark: Watermark) -> None:
        """Forward event time downstream."""

    def emit_side(self, tag: str, batch: Batch) -> None:
        """Send a batch to the side output named ``tag``."""


@dataclass
class OperatorContext:
    """Runtime facts an operator may need; built by the task for each operator of its chain."""

    operator_name: str
    operator_uid: str
    task_name: str
    subtask_index: int
    parallelism: int
    max_parallelism: int
    key_group_range: KeyGroupRange
    attempt: int = 0
    clock: Clock = field(default_factory=SystemClock)
    # the keyed state backend of a keyed operator (``checkpoint.KeyedStateBackend``, made by
    # the job's ``engine.state_backend.StateBackend``), else None; operators of the library
    # read it through ``operators.functions.keyed_state_backend(ctx)``, which narrows it
    keyed_backend: KeyedBackend | None = None
    metrics: dict[str, int] = field(default_factory=dict)
    # set by the task: current combined watermark, for operators that need it
    current_watermark: Callable[[], int] | None = None
    # processing-time timer registration with the task's mailbox: (time_ms, callback); the
    # task returns a handle whose cancel() frees the registration (engine.timer_queue), or None
    register_processing_timer: Callable[[int, Callable[[int], None]], Cancellable | None] | None = None
    # run a callable on the task's mailbox thread (thread-safe): for async I/O completions
    post: Callable[[Callable[[], None]], None] | None = None
    # whether the job takes checkpoints (env.enable_checkpointing): without, no
    # notify_checkpoint_complete ever comes, so output waiting for one is released at once
    checkpointing: bool = False
    # about the most bytes of records per network batch (TaskConfig.buffer_bytes): an operator
    # that makes many records from one call emits them in pieces of about this size
    buffer_bytes: int = 8 << 20


class StreamOperator(ABC):
    """Base class of every operator. See the module docstring for the calling protocol."""

    #: the operator's display name (set by the graph builder)
    name: str = "operator"
    #: True if the operator needs the keyed state backend (input is keyed)
    keyed: bool = False
    #: how many inputs the operator reads (2: co-process, broadcast and join operators)
    num_inputs: int = 1

    def open(self, ctx: OperatorContext, output: Output) -> None:
        """Prepare for processing; keep ``output`` to emit results."""
        self.ctx = ctx
        self.output = output

    @abstractmethod
    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        """Process one batch of records from input ``input_index`` (0 for one-input operators)."""

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        """Event time advanced; the default forwards the watermark."""
        self.output.emit_watermark(watermark)

    def end_input(self) -> None:
        """Every input has ended; emit final results. Default: nothing."""

    def prepare_snapshot_pre_barrier(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id``'s barrier reached the task: the last chance to emit
        before it (Flink's ``prepareSnapshotPreBarrier``), e.g. a combiner sends what it
        holds so that it has no state to snapshot. Called on every operator of the chain,
        head first, each before its :meth:`snapshot_state` (records emitted here reach the
        next operator before that one snapshots). Default: nothing."""

    def snapshot_state(self, checkpoint_id: int) -> Any:
        """Return this operator's non-keyed state for checkpoint ``checkpoint_id`` (or None).

        Must be a copy (or immutable): the task keeps processing while it is written.
        Keyed state in ``ctx.keyed_backend`` is snapshotted by the task itself.
        """
        return None

    def restore_state(self, states: list[Any]) -> None:
        """Restore from the non-keyed states of the previous run's subtasks (union list).

        Called before :meth:`open` on recovery. ``states`` holds every old subtask's
        snapshot so a rescaled operator can pick its share.
        """

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` is complete everywhere (sinks commit here)."""

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` was aborted; discard what was prepared for it."""

    def accepts_input(self) -> bool:
        """False to stop the task from taking input for a while (back-pressure): while the
        head operator of a task returns False, no data batch is taken from its input
        channels (their sends stay unacknowledged, so producers wait; events and acks
        before the next batch still go through). The operator must make progress
        on its own meanwhile (timers, ``ctx.post`` callbacks) and return True again.
        Default: always True."""
        return True

    def is_idle(self) -> bool:
        """False while the operator still has work that will emit (pending async calls,
        delayed messages...). Only consulted for tasks on a feedback loop, to detect the
        loop's termination after every regular input has ended."""
        return True

    def close(self) -> None:
        """Release resources. Called once, also after a failure."""
