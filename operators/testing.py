"""Run one operator in-process without Ray: feed records, move event and processing time,
take snapshots and restore them (Beam's TestStream / Flink's operator test harness).

The operator runs inside a real :class:`~raystream.engine.task.Task` driven step by step on
the calling thread (as Flink's mailbox test harness drives a real ``StreamTask``): the same
operator context, keyed state backend (through the job's
:class:`~raystream.engine.state_backend.StateBackend`), processing-time service, watermark
valve, barrier alignment, snapshot and restore code as on a cluster. Only the task's network
output is replaced by a :class:`CollectingOutput`, and records are handed to the operator as
Python objects.

Example:
    >>> from raystream.operators.keyed import ReduceOperator
    >>> from raystream.engine.partitioners import KeySelector
    >>> h = OperatorHarness(ReduceOperator(KeySelector(0), lambda a, b: (a[0], a[1] + b[1])))
    >>> h.process([("a", 1), ("a", 2)]); h.records()
    [('a', 1), ('a', 3)]
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import pyarrow as pa

from raystream.checkpoint.backends import HeapStateBackend
from raystream.engine.channels import InputInfo
from raystream.engine.config import TaskConfig
from raystream.engine.errors import JobFailed, UserCodeError
from raystream.engine.events import Barrier, EndOfInput, Watermark
from raystream.engine.keygroups import DEFAULT_MAX_PARALLELISM, KeyGroupRange
from raystream.engine.operator import ManualClock, OperatorContext, StreamOperator, key_group_share
from raystream.engine.records import Batch
from raystream.engine.serde import loads
from raystream.engine.state_backend import StateBackend
from raystream.engine.task import Task, TaskHooks, TaskResult, TaskSpec

from .functions import OutputTag

__all__ = ["CollectingOutput", "OperatorHarness"]

_UID = "harness"


class CollectingOutput:
    """The network output of a harnessed task: keeps everything the operator emits."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.side: dict[str, list[Batch]] = {}
        self.watermarks: list[int] = []
        self.statuses: list[bool] = []  # stream statuses announced downstream (True: idle)
        self.writers: list = []  # no channels
        self.metrics = None

    def emit(self, batch: Batch) -> None:
        if len(batch):
            self.batches.append(batch)

    def emit_watermark(self, watermark: Watermark) -> None:
        if not self.watermarks or watermark.timestamp != self.watermarks[-1]:
            self.watermarks.append(watermark.timestamp)

    def emit_side(self, tag: str, batch: Batch) -> None:
        if len(batch):
            self.side.setdefault(tag, []).append(batch)

    def emit_watermark_status(self, idle: bool) -> None:
        self.statuses.append(idle)

    def broadcast_event(self, event: Any) -> None:
        """Barriers and other events have no downstream here."""

    def flush_due(self, now: float) -> None:
        """Nothing is buffered."""

    def flush_all(self) -> None:
        """Nothing is buffered."""


class _Acks(TaskHooks):
    """What the task reports at a barrier: its acknowledged (or declined) checkpoints."""

    def __init__(self) -> None:
        self.acks: dict[int, dict] = {}
        self.declined: dict[int, str] = {}

    def acknowledge(self, checkpoint_id: int, vertex_id: int, subtask: int, state: dict) -> None:
        self.acks[checkpoint_id] = state

    def decline(self, checkpoint_id: int, vertex_id: int, subtask: int, reason: str,
                committables: dict | None = None) -> None:
        self.declined[checkpoint_id] = reason


class OperatorHarness:
    """One operator subtask in a task driven step by step, with a collecting output, a
    :class:`ManualClock` and the job's keyed state backend.

    Args:
        operator: the operator (fresh; the harness opens it).
        subtask_index / parallelism / max_parallelism: which key groups it owns.
        clock: processing time (a ManualClock at 0 by default).
        restore: snapshots (from :meth:`snapshot`) of the previous run's subtasks, in any
            number (restoring at another parallelism re-splits keyed state by key group).
        open: open the operator right away (default True; else call :meth:`open`).
        state_backend: where keyed state lives (the heap backend by default).
        num_inputs: inputs the operator reads (default: ``operator.num_inputs``).
        output: where the operator's output goes (a new :class:`CollectingOutput` by
            default; a subclass may route it, as the stateful-functions runner does).
        task_config: the task's runtime settings (``TaskConfig()`` by default), e.g. its
            ``auto_watermark_interval_ms``.

    Errors surface as the operator raised them (a user function's as a
    :class:`~raystream.engine.errors.UserCodeError` with the user's exception as
    ``original``); the task's :class:`~raystream.engine.errors.JobFailed`, which names
    operator and record, is their ``__context__``. A call the operator posted to its
    mailbox (:meth:`step`) that fails with a ``JobFailed`` of its own raises that.
    """

    def __init__(
        self,
        operator: StreamOperator,
        subtask_index: int = 0,
        parallelism: int = 1,
        max_parallelism: int = DEFAULT_MAX_PARALLELISM,
        clock: ManualClock | None = None,
        restore: list[dict[str, Any]] | None = None,
        open: bool = True,
        state_backend: StateBackend | None = None,
        num_inputs: int | None = None,
        output: CollectingOutput | None = None,
        task_config: TaskConfig | None = None,
    ) -> None:
        self.operator = operator
        self.clock = clock or ManualClock(0)
        self.output = output if output is not None else CollectingOutput()
        self.state_backend: StateBackend = state_backend or HeapStateBackend()
        self.num_inputs: int = num_inputs if num_inputs is not None else int(getattr(operator, "num_inputs", 1))
        self._hooks = _Acks()
        spec = TaskSpec(
            job_id="harness",
            vertex_id=0,
            name=getattr(operator, "name", type(operator).__name__),
            subtask_index=subtask_index,
            parallelism=parallelism,
            max_parallelism=max_parallelism,
            chain=[{"name": getattr(operator, "name", type(operator).__name__), "uid": _UID,
                    "factory": lambda: operator, "keyed": getattr(operator, "keyed", False)}],
            inputs=[InputInfo(i, "harness input") for i in range(self.num_inputs)],
            outputs=[],
            config=task_config if task_config is not None else TaskConfig(),
            restore=(self._restore_plan(restore, KeyGroupRange.for_subtask(subtask_index, parallelism, max_parallelism))
                     if restore is not None else None),
            clock=self.clock,
            state_backend=self.state_backend,
        )
        self.task = Task(spec, [], self._hooks, output=self.output)  # type: ignore[arg-type]
        self._sent = [0] * self.num_inputs  # sequence numbers per input channel
        self._checkpoint = 0
        self._opened = False
        if open:
            self.open()

    def _restore_plan(self, snapshots: list[dict[str, Any]], key_groups: KeyGroupRange) -> dict:
        """The restore entry of the harness's operator, as the checkpoint coordinator's
        restore plan shapes it: every subtask's operator state (its key-grouped parts cut to
        ``key_groups``), every keyed snapshot."""
        return {_UID: {"operator": [key_group_share(s.get("operator"), key_groups) for s in snapshots],
                       "keyed": [s["keyed"] for s in snapshots if s.get("keyed") is not None]}}

    def open(self) -> None:
        """Create the keyed state backend, restore, open the operator."""
        self._run(self.task.open)
        self._opened = True

    @property
    def ctx(self) -> OperatorContext:
        """The operator's context (as the task made it)."""
        return self.operator.ctx

    # ------------------------------------------------------------------ driving
    @staticmethod
    def _run(fn: Callable[[], Any], posted: bool = False) -> Any:
        try:
            return fn()
        except JobFailed as exc:
            # the task wraps what an operator raises (a posted call's failure is raised as is)
            cause = exc.__cause__
            if cause is not None and (not posted or isinstance(cause, UserCodeError)):
                raise cause  # noqa: B904 - the JobFailed stays as __context__
            raise

    def _send(self, input_index: int, event: Any) -> None:
        seq = self._sent[input_index]
        self._sent[input_index] += 1
        self.task.deliver(input_index, seq, [event], lambda: None)

    def process(self, records: Iterable[Any] | pa.RecordBatch | pa.Table | Batch, input_index: int = 0) -> None:
        """Feed one batch (Python records, an Arrow batch/table or a Batch) to input ``input_index``."""
        if isinstance(records, Batch):
            batch = records
        elif isinstance(records, (pa.RecordBatch, pa.Table)):
            batch = Batch.of_arrow(records)
        else:
            batch = Batch.of_records(list(records))
        self._run(lambda: self.task.process_batch(batch, input_index))

    def advance_watermark(self, timestamp: int, input_index: int = 0) -> None:
        """Event time of input ``input_index`` reached ``timestamp`` (a watermark through the
        task's watermark valve: only an advance reaches the operator)."""
        self._send(input_index, Watermark(timestamp))
        self._run(self.task.step)

    def advance_processing_time(self, to_ms: int) -> None:
        """Set the clock to ``to_ms`` and fire the due processing-time callbacks in order."""
        self.clock.set(max(to_ms, self.clock.now_ms()))
        self._run(self.task.step)

    def end_input(self) -> TaskResult:
        """Every input ended: the final watermark, ``end_input()`` of the operator, its final
        committables and state, then ``close()`` (as the task does at the end of its input)."""
        for i in range(self.num_inputs):
            self._send(i, EndOfInput())
        self._run(self.task.step)
        return self._run(self.task.finish)

    def step(self, wait_s: float | None = None) -> None:
        """One step of the task: posted calls (``ctx.post``, waiting up to ``wait_s`` for the
        first), due processing-time callbacks."""
        self._run(lambda: self.task.step(wait_s), posted=True)

    def snapshot(self) -> dict[str, Any]:
        """A checkpoint of this subtask: a barrier through every input, the state the task
        acknowledges, as bytes would be written: ``{"operator": ..., "keyed": bytes}``."""
        self._checkpoint += 1
        cid = self._checkpoint
        for i in range(self.num_inputs):
            self._send(i, Barrier(cid, self.clock.now_ms()))
        self._run(self.task.step)
        if cid not in self._hooks.acks:
            raise AssertionError(f"the task did not acknowledge checkpoint {cid}: "
                                 f"{self._hooks.declined.get(cid, 'no barrier alignment')}")
        entry = self._hooks.acks.pop(cid)[_UID]
        state: dict[str, Any] = {"operator": loads(entry["op"], "operator state")["operator"]}
        if entry.get("keyed") is not None:
            state["keyed"] = self.state_backend.serialize_snapshot(entry["keyed"])
        return state

    def notify_checkpoint_complete(self, checkpoint_id: int | None = None) -> None:
        """Checkpoint ``checkpoint_id`` (default: the last snapshot) completed."""
        self._run(lambda: self.task.notify_checkpoint_complete(checkpoint_id or self._checkpoint))

    @property
    def pending_processing_timers(self) -> list[int]:
        """Times of the live processing-time callbacks registered with the task (cancelled
        ones are gone)."""
        return self.task.pending_processing_timers()

    @property
    def processing_timer_entries(self) -> int:
        """Entries the task holds for processing-time callbacks, cancelled ones not dropped
        yet included (``Task.processing_timer_stats()["entries"]``)."""
        return self.task.processing_timer_stats()["entries"]

    # ------------------------------------------------------------------ results
    def records(self) -> list[Any]:
        """Every main-output record so far, in order."""
        return [r for b in self.output.batches for r in b.records()]

    def table(self) -> pa.Table:
        """The main output as one Arrow table."""
        bs = [b.arrow().replace_schema_metadata(None) for b in self.output.batches]
        return pa.Table.from_batches(bs) if bs else pa.table({})

    def side_records(self, tag: OutputTag | str) -> list[Any]:
        """The records of side output ``tag`` (an OutputTag or str)."""
        name = tag.tag_id if isinstance(tag, OutputTag) else tag
        return [r for b in self.output.side.get(name, []) for r in b.records()]

    def take(self) -> list[Any]:
        """The main-output records so far, and forget them."""
        out = self.records()
        self.output.batches.clear()
        return out

    @property
    def watermarks(self) -> list[int]:
        """Watermarks the operator forwarded."""
        return self.output.watermarks
