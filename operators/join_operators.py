"""Join operators: the runtime side of interval joins and window joins / co-groups.

* :class:`IntervalJoinOperator` joins ``l`` with every ``r`` of the same key with
  ``l.ts + lower <= r.ts <= l.ts + upper``; buffered records are dropped by event-time
  timers once no future partner can arrive. On the heap backend the buffers are a dict of
  the operator; on an off-heap backend (RocksDB) two list states of the keyed backend (one
  per side) and the timers its timer queues, so they are part of the keyed snapshot. Either
  backend restores the other's snapshots (buffers and timers are moved in or out).
* :class:`CoGroupWindowOperator` is a window operator over two inputs that hands both sides
  of a window to a co-group function (``fn(key, lefts, rights)``, or the pairs of a join).

These are operator-library classes, built by the graph builders of :mod:`operators.joins`;
they know nothing of the DataStream API.

Example:
    >>> class Enrich(ProcessJoinFunction):
    ...     def process_element(self, left, right, ctx):
    ...         yield {**left, "seller": right["seller"], "at": ctx.left_timestamp}
"""

from __future__ import annotations

import pickle
from types import GeneratorType
from typing import Any, Callable, Iterable

import cloudpickle

from raystream.checkpoint.descriptors import ListStateDescriptor
from raystream.engine.errors import GraphError, UserCodeError
from raystream.engine.events import Watermark
from raystream.engine.keygroups import key_group_for
from raystream.engine.operator import KeyGroupedState, OperatorContext, Output, StreamOperator
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch

from .basic import emit_side_outputs, stamp_side
from .functions import OutputTag, RuntimeContext, add_results, keyed_state_backend, tag_name
from .time import TimestampAssigner
from .timers import (
    InternalTimerService,
    backend_restored_state,
    backend_restored_timers,
    backend_timer_queues,
)
from .two_input import TwoInputTime, TwoInputWatermarks
from .window_operator import LIST, WindowOperator
from .windows import ProcessWindowFunction, Trigger, WindowAssigner

__all__ = ["ProcessJoinFunction", "JoinContext", "IntervalJoinOperator", "CoGroupWindowOperator"]

#: names of the interval join's buffers (left, right) in an off-heap keyed backend
JOIN_BUFFERS = ("_join/left", "_join/right")


class ProcessJoinFunction:
    """Called for each joined pair: ``process_element(left, right, ctx)`` yields results
    (``ctx.left_timestamp``, ``ctx.right_timestamp``, ``ctx.key``, ``ctx.output(tag, value)``
    for side outputs); ``open(runtime_context)`` once per subtask before any pair (keyed
    state is not available: the join's state is its buffers), ``close()`` at the end."""

    def open(self, runtime_context: RuntimeContext) -> None:
        """Called once per subtask before any pair."""

    def process_element(self, left: Any, right: Any, ctx: JoinContext) -> Iterable[Any] | None:
        raise NotImplementedError(f"{type(self).__name__}.process_element")

    def close(self) -> None:
        """Called once at the end."""


class JoinContext:
    """What :meth:`ProcessJoinFunction.process_element` sees of a joined pair: its key and
    the event timestamps of both sides; :meth:`output` emits to a side output."""

    __slots__ = ("key", "left_timestamp", "right_timestamp", "_side")

    key: Any
    left_timestamp: int
    right_timestamp: int

    def __init__(self) -> None:
        self._side: dict[str, list[Any]] = {}

    def output(self, tag: OutputTag | str, value: Any) -> None:
        """Emit ``value`` to the side output ``tag`` (read it with ``get_side_output(tag)``)."""
        self._side.setdefault(tag_name(tag), []).append(value)


class IntervalJoinOperator(TwoInputTime, StreamOperator):
    """Keyed interval join of input 0 (left) and input 1 (right); see the module docstring.

    Late records (timestamp <= the current watermark) go to ``late_tag`` if set, else are
    counted in ``ctx.metrics["num_late_records_dropped"]``.

    State: the buffered ``(timestamp, record)`` of each side per key and a cleanup timer per
    buffered timestamp; on the heap backend in ``buffers`` and the operator's snapshot, on
    an off-heap backend (RocksDB) in list states :data:`JOIN_BUFFERS` and the backend's timer
    queues. A heap job's savepoint restores into RocksDB (its buffers and timers are moved in).
    """

    keyed = True
    num_inputs = 2

    def __init__(self, selectors: tuple[KeySelector, KeySelector],
                 assigners: tuple[TimestampAssigner, TimestampAssigner], lower: int, upper: int,
                 fn: Callable[[Any, Any], Any] | ProcessJoinFunction, late_tag: str | None = None) -> None:
        if lower > upper:
            raise GraphError(f"interval_join: lower bound {lower!r} must be <= upper bound {upper!r}")
        self.selectors = selectors
        self.assigners = assigners
        self.lower, self.upper = lower, upper
        self.fn = fn
        self.late_tag = late_tag
        self.buffers: dict[Any, tuple[list, list]] = {}  # key -> ([(ts, rec)], [(ts, rec)]) (heap backend)
        self.wms = TwoInputWatermarks()
        self._restored: list = []
        self._sides: Any = None  # off-heap: the (left, right) list states of the keyed backend
        self._keyed: Any = None

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        queues = backend_timer_queues(ctx.keyed_backend)
        if queues is not None:  # off-heap (RocksDB): buffers and timers in the keyed backend
            self._keyed = keyed_state_backend(ctx)
            self._sides = tuple(self._keyed.get_state(ListStateDescriptor(n)) for n in JOIN_BUFFERS)
        self.timers = InternalTimerService(ctx.max_parallelism, self._cleanup, lambda *a: None, None, ctx.clock, queues)
        for st in self._restored:
            for kg, blob in (st or {}).get("groups", {}).items():
                if kg in ctx.key_group_range:  # (keys with nothing buffered, which older snapshots hold, are left out)
                    self.buffers.update((k, b) for k, b in pickle.loads(blob).items() if b[0] or b[1])
            if st:
                self.wms.restore(st.get("watermark", self.wms.current))
                self.timers.watermark = self.wms.current
        restored_timers: list[dict[str, Any] | None] = [s.get("timers") for s in self._restored if s]
        if queues is None:  # heap: a RocksDB job's snapshot keeps buffers and timers in the keyed backend
            restored_timers += self._buffers_from_backend(ctx.keyed_backend)
        self.timers.restore(restored_timers, ctx.key_group_range)
        self._restored = []
        if self._sides is not None and self.buffers:  # a heap job's savepoint: into the backend
            for key, bufs in self.buffers.items():
                self._keyed.set_current_key(key)
                for side, entries in zip(self._sides, bufs):
                    side.add_all(entries)
            self.buffers = {}
        self.jctx = JoinContext()
        self._out_ts: list[int] = []  # the timestamps of the pairs' results, max(left, right) each
        self._side_ts: dict[str, list[int]] = {}
        ctx.metrics.setdefault("num_late_records_dropped", 0)
        if isinstance(self.fn, ProcessJoinFunction):
            self.fn.open(RuntimeContext(ctx))

    def close(self) -> None:
        if isinstance(self.fn, ProcessJoinFunction):
            self.fn.close()

    def _buffers_from_backend(self, backend: Any) -> list[dict[str, Any] | None]:
        """Heap: move the buffers a heap keyed ``backend`` restored from a RocksDB snapshot
        (list states :data:`JOIN_BUFFERS`) into ``buffers``; returns the timers it handed over."""
        for side, name in enumerate(JOIN_BUFFERS):
            for entries in backend_restored_state(backend, name).values():
                for key, buffered in entries.items():
                    bufs = self.buffers.get(key)
                    if bufs is None:
                        bufs = self.buffers[key] = ([], [])
                    bufs[side].extend(buffered)
        return backend_restored_timers(backend)

    def _join(self, left: tuple, right: tuple, key: Any, out: list) -> None:
        """Join one pair into ``out``; its results (and side outputs) carry the larger of the
        two timestamps (Flink's ``IntervalJoinOperator``: ``max(left, right)``)."""
        fn = self.fn
        before = len(out)
        stamp = left[0] if left[0] >= right[0] else right[0]
        if isinstance(fn, ProcessJoinFunction):
            c = self.jctx
            c.key, c.left_timestamp, c.right_timestamp = key, left[0], right[0]
            res = fn.process_element(left[1], right[1], c)
            if res is not None:
                add_results(out, res, fn, "process_element", c)
            if c._side:
                stamp_side(c._side, self._side_ts, stamp)
        else:
            v = fn(left[1], right[1])
            if isinstance(v, GeneratorType):  # a generator function: any number of results
                out.extend(v)
            elif v is not None:
                out.append(v)
        if len(out) > before:
            self._out_ts.extend([stamp] * (len(out) - before))

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        records = batch.records()
        key_of = self.selectors[input_index].key_of
        carried = batch.timestamps  # (the records' own, Flink's StreamRecord timestamps, else the assigner's)
        stamps = (carried if carried is not None and len(carried) == len(records)
                  else self.assigners[input_index].timestamps(batch)).tolist()
        wm = self.wms.current
        lo, hi = self.lower, self.upper
        out: list = []
        late: list = []
        late_ts: list[int] = []
        if self._sides is not None:
            self._process_off_heap(records, stamps, key_of, input_index, out, late, late_ts)
            self._emit(out, late, late_ts)
            return
        for r, ts in zip(records, stamps):
            if ts <= wm:
                late.append(r)
                late_ts.append(ts)
                continue
            try:
                key = key_of(r)
                bufs = self.buffers.get(key)
                me = (ts, r)
                if input_index == 0:
                    for other in bufs[1] if bufs is not None else ():
                        if ts + lo <= other[0] <= ts + hi:
                            self._join(me, other, key, out)
                    cleanup = ts + hi
                else:
                    for other in bufs[0] if bufs is not None else ():
                        if other[0] + lo <= ts <= other[0] + hi:
                            self._join(other, me, key, out)
                    cleanup = ts - lo
            except Exception as exc:
                raise UserCodeError(r, exc) from exc
            if cleanup > wm:  # (a record no future partner can reach is not kept, nor is its key)
                if bufs is None:
                    bufs = self.buffers[key] = ([], [])
                bufs[input_index].append(me)
                self.timers.register_event_time_timer(key, input_index, cleanup)
        self._emit(out, late, late_ts)

    def _emit(self, out: list, late: list, late_ts: list[int]) -> None:
        stamps, self._out_ts = self._out_ts, []
        if out:
            self.output.emit(Batch.stamped(out, stamps if len(stamps) == len(out) else None))
        side = self.jctx._side
        side_ts, self._side_ts = self._side_ts, {}
        if side:
            self.jctx._side = {}
            emit_side_outputs(self.output, side, side_ts)
        if late:
            if self.late_tag is not None:
                self.output.emit_side(self.late_tag, Batch.stamped(late, late_ts))
            else:
                self.ctx.metrics["num_late_records_dropped"] += len(late)

    def _process_off_heap(self, records: list, stamps: list, key_of: Callable[[Any], Any], input_index: int,
                          out: list, late: list, late_ts: list[int]) -> None:
        """``process_batch`` with the buffers in the keyed backend's list states."""
        wm = self.wms.current
        lo, hi = self.lower, self.upper
        set_key = self._keyed.set_current_key
        mine, other_side = self._sides[input_index], self._sides[1 - input_index]
        for r, ts in zip(records, stamps):
            if ts <= wm:
                late.append(r)
                late_ts.append(ts)
                continue
            try:
                key = key_of(r)
                set_key(key)
                me = (ts, r)
                if input_index == 0:
                    for other in other_side.get():
                        if ts + lo <= other[0] <= ts + hi:
                            self._join(me, other, key, out)
                    cleanup = ts + hi
                else:
                    for other in other_side.get():
                        if other[0] + lo <= ts <= other[0] + hi:
                            self._join(other, me, key, out)
                    cleanup = ts - lo
            except Exception as exc:
                raise UserCodeError(r, exc) from exc
            if cleanup > wm:
                mine.add(me)
                self.timers.register_event_time_timer(key, input_index, cleanup)

    def num_buffered(self) -> int:
        """Records buffered on both sides (a scan of the keyed backend when off-heap)."""
        if self._sides is None:
            return sum(len(b[0]) + len(b[1]) for b in self.buffers.values())
        keyed = self._keyed
        n = 0
        for name, side in zip(JOIN_BUFFERS, self._sides):
            for key in keyed.keys(name):
                keyed.set_current_key(key)
                n += len(side.get())
        return n

    def _cleanup(self, key: Any, side: int, time: int) -> None:
        lo, hi = self.lower, self.upper
        if self._sides is not None:
            self._keyed.set_current_key(key)
            state = self._sides[side]
            kept = [e for e in state.get() if (e[0] + hi if side == 0 else e[0] - lo) > time]
            state.update(kept)  # (empty: cleared)
            return
        bufs = self.buffers.get(key)
        if bufs is None:
            return
        limit = (lambda ts: ts + hi) if side == 0 else (lambda ts: ts - lo)
        bufs[side][:] = [e for e in bufs[side] if limit(e[0]) > time]
        if not bufs[0] and not bufs[1]:
            del self.buffers[key]

    def advance_event_time(self, watermark: int) -> None:
        self.timers.advance_watermark(watermark)
        self.output.emit_watermark(Watermark(watermark))

    def snapshot_state(self, checkpoint_id: int) -> Any:
        groups: dict[int, dict] = {}
        for key, bufs in self.buffers.items():
            groups.setdefault(key_group_for(key, self.ctx.max_parallelism), {})[key] = bufs
        return {"groups": KeyGroupedState({kg: cloudpickle.dumps(v) for kg, v in groups.items()}),
                "timers": self.timers.snapshot(), "watermark": self.wms.current}

    def restore_state(self, states: list[Any]) -> None:
        self._restored = list(states)


class CoGroupWindowOperator(TwoInputTime, WindowOperator):
    """A window operator over two inputs: stores ``(input_index, record)`` and hands both
    sides of a window to a co-group function."""

    num_inputs = 2

    def __init__(self, selectors: tuple[KeySelector, KeySelector],
                 assigners: tuple[TimestampAssigner | None, TimestampAssigner | None],
                 assigner: WindowAssigner, function: ProcessWindowFunction, trigger: Trigger | None = None,
                 allowed_lateness: int = 0, late_tag: str | None = None) -> None:
        super().__init__(lambda v: v, assigner, LIST, None, function, trigger, allowed_lateness, late_tag, None)
        self.selectors = selectors
        self.side_assigners = assigners
        self.wms = TwoInputWatermarks()

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        # restored: the window operator's event time is the combined watermark it reached
        # (kept with its timers); the inputs start again below it and must not take the
        # combined watermark back (it would go out again, behind the one sent before)
        self.wms.restore(self.timers.watermark)

    def _elements(self, batch: Batch, input_index: int) -> tuple[list, list, list | None]:
        records = batch.records()
        key_of = self.selectors[input_index].key_of
        keys = []
        for r in records:
            try:
                keys.append(key_of(r))
            except Exception as exc:
                raise UserCodeError(r, exc) from exc  # (the record whose key failed)
        stamps = None
        if self.assigner.is_event_time:
            carried = batch.timestamps  # (the records' own, Flink's StreamRecord timestamps)
            if carried is not None and len(carried) == len(records):
                stamps = carried.tolist()
            else:
                side = self.side_assigners[input_index]
                assert side is not None  # an event-time window join has timestamps on both inputs
                stamps = side.timestamps(batch).tolist()
        return [(input_index, r) for r in records], keys, stamps

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        try:
            super().process_batch(batch, input_index)
        except UserCodeError as exc:  # name the user's record, not the (input, record) pair stored for it
            rec = exc.record
            if type(rec) is tuple and len(rec) == 2 and rec[0] == input_index \
                    and any(rec[1] is r for r in batch.records()):
                exc.record = rec[1]
            raise

    def _pane_elements(self, batch: Batch, input_index: int) -> tuple[list, list, Any, int, int]:
        values, keys, stamps = self._elements(batch, input_index)
        assert stamps is not None  # pane mode is event time only
        return values, keys, stamps, min(stamps), max(stamps)

    def _flush(self) -> None:
        if self._held.late:
            self._held.late = [v[1] for v in self._held.late]
        super()._flush()

    def advance_event_time(self, watermark: int) -> None:
        WindowOperator.process_watermark(self, Watermark(watermark), 0)


class _CoGroup(ProcessWindowFunction):
    def __init__(self, fn: Callable[[Any, list, list], Iterable[Any]] | None,
                 join: Callable[[Any, Any], Any] | None) -> None:
        self.fn, self.join = fn, join

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Iterable[Any] | None:
        lefts = [r for side, r in elements if side == 0]
        rights = [r for side, r in elements if side == 1]
        if self.fn is not None:
            return self.fn(key, lefts, rights)
        join = self.join
        out: list[Any] = []
        for left in lefts:
            for right in rights:
                v = join(left, right)  # type: ignore[misc]
                if isinstance(v, GeneratorType):  # a generator function (Flink's FlatJoinFunction)
                    out.extend(v)
                elif v is not None:
                    out.append(v)
        return out
