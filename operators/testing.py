"""Run one operator in-process without Ray: feed records, move event and processing time,
take snapshots and restore them (Beam's TestStream / Flink's operator test harness).

Example:
    >>> from raystream.operators.keyed import ReduceOperator
    >>> from raystream.engine.partitioners import KeySelector
    >>> h = OperatorHarness(ReduceOperator(KeySelector(0), lambda a, b: (a[0], a[1] + b[1])))
    >>> h.process([("a", 1), ("a", 2)]); h.records()
    [('a', 1), ('a', 3)]
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Iterable

import cloudpickle
import pyarrow as pa

from raystream.checkpoint.heap import HeapKeyedStateBackend
from raystream.engine.events import MAX_WATERMARK, Watermark
from raystream.engine.keygroups import DEFAULT_MAX_PARALLELISM, KeyGroupRange
from raystream.engine.operator import ManualClock, OperatorContext, StreamOperator
from raystream.engine.records import Batch
from raystream.engine.timer_queue import ScheduledTimer, TimerQueue

from .functions import OutputTag

__all__ = ["CollectingOutput", "OperatorHarness"]


class CollectingOutput:
    """An :class:`~engine.operator.Output` that keeps everything it receives."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.side: dict[str, list[Batch]] = {}
        self.watermarks: list[int] = []

    def emit(self, batch: Batch) -> None:
        if len(batch):
            self.batches.append(batch)

    def emit_watermark(self, watermark: Watermark) -> None:
        self.watermarks.append(watermark.timestamp)

    def emit_side(self, tag: str, batch: Batch) -> None:
        if len(batch):
            self.side.setdefault(tag, []).append(batch)


class OperatorHarness:
    """One operator subtask with a fake output, a :class:`ManualClock` and a keyed backend.

    Args:
        operator: the operator (fresh; the harness opens it).
        subtask_index / parallelism / max_parallelism: which key groups it owns.
        clock: processing time (a ManualClock at 0 by default).
        restore: snapshots (from :meth:`snapshot`) of the previous run's subtasks.
        open: open the operator right away (default True).
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
    ) -> None:
        self.operator = operator
        self.clock = clock or ManualClock(0)
        self.output = CollectingOutput()
        self._timers = TimerQueue()  # the (fake) task's processing-time registrations
        self._watermarks: dict[int, int] = {}
        kgr = KeyGroupRange.for_subtask(subtask_index, parallelism, max_parallelism)
        self.ctx = OperatorContext(
            operator_name=getattr(operator, "name", type(operator).__name__),
            operator_uid="harness",
            task_name=f"harness ({subtask_index + 1}/{parallelism})",
            subtask_index=subtask_index,
            parallelism=parallelism,
            max_parallelism=max_parallelism,
            key_group_range=kgr,
            clock=self.clock,
            current_watermark=lambda: min(self._watermarks.values(), default=-(2**63)),
            register_processing_timer=self._register_timer,
            post=lambda fn: fn(),
        )
        if getattr(operator, "keyed", False):
            self.ctx.keyed_backend = HeapKeyedStateBackend(kgr, max_parallelism, self.clock)
        if restore is not None:
            keyed = [s["keyed"] for s in restore if s.get("keyed") is not None]
            if keyed and self.ctx.keyed_backend is not None:
                self.ctx.keyed_backend.restore(keyed)
            operator.restore_state([s.get("operator") for s in restore])
        self._checkpoint = 0
        if open:
            operator.open(self.ctx, self.output)

    # ------------------------------------------------------------------ driving
    def _register_timer(self, time_ms: int, callback: Callable[[int], None]) -> ScheduledTimer:
        return self._timers.push(time_ms, callback)

    def process(self, records: Iterable[Any] | pa.RecordBatch | pa.Table | Batch, input_index: int = 0) -> None:
        """Feed one batch (Python records, an Arrow batch/table or a Batch) to input ``input_index``."""
        if isinstance(records, Batch):
            batch = records
        elif isinstance(records, (pa.RecordBatch, pa.Table)):
            batch = Batch.of_arrow(records)
        else:
            batch = Batch.of_records(list(records))
        self.operator.process_batch(batch, input_index)

    def advance_watermark(self, timestamp: int, input_index: int = 0) -> None:
        """Event time of input ``input_index`` reached ``timestamp``."""
        self._watermarks[input_index] = timestamp
        self.operator.process_watermark(Watermark(timestamp), input_index)

    def advance_processing_time(self, to_ms: int) -> None:
        """Set the clock to ``to_ms`` and fire the due processing-time callbacks in order."""
        self.clock.set(max(to_ms, self.clock.now_ms()))
        while True:
            due = self._timers.pop_due(self.clock.now_ms())
            if due is None:
                return
            due[1](due[0])

    def end_input(self, num_inputs: int = 1) -> None:
        """Every input ended: the final watermark, then ``end_input()`` (as the task does)."""
        for i in range(num_inputs):
            self.advance_watermark(MAX_WATERMARK, i)
        self.operator.end_input()

    def snapshot(self) -> dict[str, Any]:
        """What a checkpoint of this subtask would hold: ``{"operator": ..., "keyed": ...}``."""
        self._checkpoint += 1
        state = {"operator": self.operator.snapshot_state(self._checkpoint)}
        if self.ctx.keyed_backend is not None:
            state["keyed"] = self.ctx.keyed_backend.snapshot(self._checkpoint)
        # a checkpoint is serialized: make sure it is picklable and detached from live state
        return pickle.loads(cloudpickle.dumps(state))

    @property
    def pending_processing_timers(self) -> list[int]:
        """Times of the live processing-time callbacks registered with the (fake) task
        (cancelled ones are gone)."""
        return self._timers.times()

    @property
    def processing_timer_entries(self) -> int:
        """Entries the (fake) task holds for processing-time callbacks, cancelled ones not
        dropped yet included (as ``Task.processing_timer_stats()["entries"]``)."""
        return self._timers.entries

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
