"""Two-input operators: the runtime side of ``a.connect(b).process(...)``.

A two-input operator receives ``process_batch(batch, input_index)`` with input 0 for the
first stream and 1 for the second; its event time is the minimum of both inputs'
watermarks (:class:`TwoInputWatermarks`). These are operator-library classes, built by the
graph builders of :mod:`operators.connected` and :mod:`operators.joins`; they know nothing
of the DataStream API.

Example:
    >>> wms = TwoInputWatermarks()
    >>> wms.update(10, 0) is None   # input 1 still holds event time back
    True
    >>> wms.update(7, 1)
    7
"""

from __future__ import annotations

import copy
from typing import Any

from raystream.engine.errors import UserCodeError
from raystream.engine.events import MIN_WATERMARK, Watermark
from raystream.engine.operator import OperatorContext, Output, StreamOperator
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch

from .functions import (
    BroadcastContext,
    BroadcastProcessFunction,
    CoProcessFunction,
    KeyedCoProcessFunction,
    OnTimerContext,
    ProcessContext,
    RuntimeContext,
    keyed_state_backend,
)
from .time import TimestampAssigner
from .timers import (
    InternalTimerService,
    TimerService,
    backend_restored_timers,
    backend_timer_queues,
)

__all__ = [
    "TwoInputWatermarks",
    "CoProcessOperator",
    "KeyedCoProcessOperator",
    "BroadcastProcessOperator",
]


class TwoInputWatermarks:
    """Combines the watermarks of two inputs (the minimum) for a two-input operator."""

    def __init__(self) -> None:
        self.inputs = [MIN_WATERMARK, MIN_WATERMARK]
        self.current = MIN_WATERMARK

    def update(self, watermark: int, input_index: int) -> int | None:
        """Record input ``input_index``'s watermark; the combined one if it advanced."""
        if watermark > self.inputs[input_index]:
            self.inputs[input_index] = watermark
        combined = min(self.inputs)
        if combined > self.current:
            self.current = combined
            return combined
        return None


class _TwoInputBase(StreamOperator):
    """Shared by the two-input operators: the user function, the combined watermark and
    the hand-over of results and side outputs after each batch."""

    num_inputs = 2

    def __init__(self, function: Any) -> None:
        self.function = function
        self.wms = TwoInputWatermarks()

    def _emit(self, out: list, ctx: ProcessContext) -> None:
        if out:
            self.output.emit(Batch.of_records(out))
        for tag, values in ctx._take_side().items():
            self.output.emit_side(tag, Batch.of_records(values))

    def close(self) -> None:
        self.function.close()


class CoProcessOperator(_TwoInputBase):
    """Runs a :class:`CoProcessFunction` (not keyed)."""

    function: CoProcessFunction

    def __init__(self, function: CoProcessFunction) -> None:
        super().__init__(function)

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        self.pctx = ProcessContext()
        self.function.open(RuntimeContext(ctx))

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        fn = self.function.process_element1 if input_index == 0 else self.function.process_element2
        out: list = []
        for r in batch.records():
            try:
                res = fn(r, self.pctx)
                if res is not None:
                    out.extend(res)
            except Exception as exc:
                raise UserCodeError(r, exc) from exc
        self._emit(out, self.pctx)

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        wm = self.wms.update(watermark.timestamp, input_index)
        if wm is not None:
            self.output.emit_watermark(Watermark(wm))


class KeyedCoProcessOperator(_TwoInputBase):
    """Runs a :class:`KeyedCoProcessFunction`: shared keyed state and timers per key.

    Timers are checkpointed per key group: on the heap backend with the operator (its
    snapshot's ``"timers"``), on an off-heap backend (RocksDB) in the backend's timer queues
    (part of the keyed snapshot), as for :class:`~operators.keyed.KeyedProcessOperator`.
    Heap-format timers of a restored operator state (a heap job's savepoint) are moved into
    the queues.
    """

    keyed = True
    function: KeyedCoProcessFunction

    def __init__(self, function: KeyedCoProcessFunction, selectors: tuple[KeySelector, KeySelector],
                 timestamp_assigners: tuple[TimestampAssigner | None, TimestampAssigner | None] = (None, None)) -> None:
        super().__init__(function)
        self.selectors = selectors
        self.assigners = timestamp_assigners
        self._restored: list = []

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        self.pctx = ProcessContext()
        self.tctx = OnTimerContext()
        self.timers = InternalTimerService(ctx.max_parallelism, self._on_event, self._on_proc,
                                           ctx.register_processing_timer, ctx.clock,
                                           backend_timer_queues(ctx.keyed_backend))
        self.pctx._timer_service = TimerService(self.timers, self.pctx.get_current_key)
        self.tctx._timer_service = TimerService(self.timers, self.tctx.get_current_key)
        self.timers.restore(self._restored + backend_restored_timers(ctx.keyed_backend), ctx.key_group_range)
        self._restored = []
        self._out: list = []
        self.function.open(RuntimeContext(ctx))

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        fn = self.function.process_element1 if input_index == 0 else self.function.process_element2
        key_of = self.selectors[input_index].key_of
        records = batch.records()
        assigner = self.assigners[input_index]
        stamps = assigner.timestamps(batch).tolist() if assigner is not None else None
        backend, pctx = keyed_state_backend(self.ctx), self.pctx
        for i, r in enumerate(records):
            try:
                k = key_of(r)
                backend.set_current_key(k)
                pctx._key = k
                pctx.timestamp = stamps[i] if stamps is not None else None
                res = fn(r, pctx)
                if res is not None:
                    self._out.extend(res)
            except Exception as exc:
                raise UserCodeError(r, exc) from exc
        self._flush(pctx)

    def _flush(self, ctx: ProcessContext) -> None:
        out, self._out = self._out, []
        self._emit(out, ctx)

    def _fire(self, key: Any, time: int, domain: str) -> None:
        keyed_state_backend(self.ctx).set_current_key(key)
        t = self.tctx
        t._key, t.timestamp, t._domain = key, time, domain
        try:
            res = self.function.on_timer(time, t)
            if res is not None:
                self._out.extend(res)
        except Exception as exc:
            raise UserCodeError(f"on_timer(key={key!r}, time={time!r})", exc) from exc

    def _on_event(self, key: Any, ns: Any, time: int) -> None:
        self._fire(key, time, "event_time")

    def _on_proc(self, key: Any, ns: Any, time: int) -> None:
        self._fire(key, time, "processing_time")
        self._flush(self.tctx)

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        wm = self.wms.update(watermark.timestamp, input_index)
        if wm is not None:
            self.timers.advance_watermark(wm)
            self._flush(self.tctx)
            self.output.emit_watermark(Watermark(wm))

    def snapshot_state(self, checkpoint_id: int) -> Any:
        return {"timers": self.timers.snapshot()}

    def restore_state(self, states: list[Any]) -> None:
        self._restored = [s.get("timers") for s in states if s]


class BroadcastProcessOperator(_TwoInputBase):
    """Runs a :class:`BroadcastProcessFunction`: input 0 is the regular stream, input 1
    the broadcast stream. Broadcast state is identical in every subtask and snapshotted by
    each; a restored subtask takes the first old subtask's copy."""

    function: BroadcastProcessFunction

    def __init__(self, function: BroadcastProcessFunction, state_names: list[str]) -> None:
        super().__init__(function)
        self.states: dict[str, dict] = {n: {} for n in state_names}

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        self.bctx = BroadcastContext(self.states)
        self.function.open(RuntimeContext(ctx))

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        ctx = self.bctx
        ctx._writable = input_index == 1
        fn = self.function.process_broadcast_element if input_index == 1 else self.function.process_element
        out: list = []
        for r in batch.records():
            try:
                res = fn(r, ctx)
                if res is not None:
                    out.extend(res)
            except Exception as exc:
                raise UserCodeError(r, exc) from exc
        self._emit(out, ctx)

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        wm = self.wms.update(watermark.timestamp, input_index)
        if wm is not None:
            self.output.emit_watermark(Watermark(wm))

    def snapshot_state(self, checkpoint_id: int) -> Any:
        return {"broadcast": copy.deepcopy(self.states)}

    def restore_state(self, states: list[Any]) -> None:
        for st in states:
            if st and "broadcast" in st:
                for name, values in st["broadcast"].items():
                    self.states.setdefault(name, {}).update(values)
                return
