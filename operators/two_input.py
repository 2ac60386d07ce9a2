"""Two-input operators: the runtime side of ``a.connect(b).process(...)``.

A two-input operator receives ``process_batch(batch, input_index)`` with input 0 for the
first stream and 1 for the second; its event time is the minimum of the watermarks of the
inputs that are not idle (:class:`TwoInputWatermarks`, Flink's ``CombinedWatermarkStatus``),
and it is idle when both inputs are (:class:`TwoInputTime`). These are operator-library
classes, built by the graph builders of :mod:`operators.connected` and :mod:`operators.joins`;
they know nothing of the DataStream API.

Example:
    >>> wms = TwoInputWatermarks()
    >>> wms.update(10, 0) is None   # input 1 still holds event time back
    True
    >>> wms.update(7, 1)
    7
    >>> wms.update_status(True, 1)  # input 1 went idle: input 0 alone sets event time
    10
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Protocol

from raystream.checkpoint.descriptors import StateDescriptor
from raystream.engine.errors import ConfigError, UserCodeError
from raystream.engine.events import MAX_WATERMARK, MIN_WATERMARK, Watermark
from raystream.engine.operator import OperatorContext, Output, StreamOperator
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch

from .basic import emit_side_outputs, run_stamps, stamp_side
from .functions import (
    BroadcastContext,
    BroadcastProcessFunction,
    BroadcastState,
    CoProcessFunction,
    OnTimerContext,
    ProcessContext,
    RuntimeContext,
    add_results,
    flink_hint,
    keyed_state_backend,
)
from .time import TimestampAssigner
from .timers import (
    InternalTimerService,
    NonKeyedTimerService,
    TimerService,
    backend_restored_timers,
    backend_timer_queues,
)

__all__ = [
    "TwoInputWatermarks",
    "TwoInputTime",
    "CoProcessOperator",
    "KeyedCoProcessOperator",
    "BroadcastProcessOperator",
    "KeyedBroadcastProcessOperator",
]


class TwoInputWatermarks:
    """Combines the watermarks and stream statuses of two inputs for a two-input operator
    (Flink's ``CombinedWatermarkStatus``).

    The combined watermark is the minimum over the inputs that are not idle; it never goes
    back, so an input that becomes active again behind it holds nothing back until it
    catches up. A finished input (at ``MAX_WATERMARK``) counts for the watermark but is
    neither active nor idle: the operator is idle when an unfinished input is idle and no
    other one is active (with both idle, event time stays where it is).
    """

    def __init__(self) -> None:
        self.inputs = [MIN_WATERMARK, MIN_WATERMARK]
        self.idle_inputs = [False, False]
        self.current = MIN_WATERMARK

    @property
    def idle(self) -> bool:
        """The operator's output is idle: no input is active and one is idle."""
        unfinished = [idle for w, idle in zip(self.inputs, self.idle_inputs) if w < MAX_WATERMARK]
        return bool(unfinished) and all(unfinished)

    def _combine(self) -> int | None:
        counted = [w for w, idle in zip(self.inputs, self.idle_inputs) if not idle or w == MAX_WATERMARK]
        if counted and min(counted) > self.current:
            self.current = min(counted)
            return self.current
        return None

    def update(self, watermark: int, input_index: int) -> int | None:
        """Record input ``input_index``'s watermark; the combined one if it advanced. (An
        idle input's watermark is kept and counts once the input is active again.)"""
        if watermark > self.inputs[input_index]:
            self.inputs[input_index] = watermark
        return self._combine()

    def restore(self, watermark: int) -> None:
        """A restored operator's combined watermark: the one it had reached (the largest of
        the restored snapshots'). Input watermarks below it advance nothing, so the
        operator never sends a watermark behind the ones it sent before the snapshot."""
        if watermark > self.current:
            self.current = watermark

    def update_status(self, idle: bool, input_index: int) -> int | None:
        """Input ``input_index`` became idle or active again; the combined watermark if that
        advanced it (an input going idle stops holding event time back)."""
        self.idle_inputs[input_index] = idle
        return self._combine()


class _StatusOutput(Protocol):
    def emit_watermark_status(self, idle: bool) -> None: ...


def emit_watermark_status(output: Any, idle: bool) -> None:
    """Tell ``output`` that the operator's output became idle or active again (outputs that
    carry no stream status, e.g. a test's, are left alone)."""
    emit = getattr(output, "emit_watermark_status", None)
    if emit is not None:
        emit(idle)


class TwoInputTime:
    """Event time of a two-input operator: the task hands each input's watermarks and
    stream status (``process_watermark(wm, i)``, ``process_watermark_status(idle, i)``);
    :attr:`wms` combines them, and each advance of the combined watermark goes to
    :meth:`advance_event_time`. The operator's output is idle when both inputs are: IDLE
    goes downstream after the watermark it released, ACTIVE before any watermark (Flink's
    ``AbstractStreamOperator.processWatermarkStatus1/2``).

    Mix it in before the operator's base class (it overrides ``process_watermark``).
    """

    wms: TwoInputWatermarks
    output: Any

    def advance_event_time(self, watermark: int) -> None:
        """The combined watermark advanced to ``watermark``: fire timers/windows, emit it."""
        raise NotImplementedError(f"{type(self).__name__}.advance_event_time")

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        was_idle = self.wms.idle
        self._settle(was_idle, self.wms.update(watermark.timestamp, input_index))

    def process_watermark_status(self, idle: bool, input_index: int = 0) -> None:
        """Input ``input_index`` became idle (it no longer holds event time back) or active."""
        was_idle = self.wms.idle
        self._settle(was_idle, self.wms.update_status(idle, input_index))

    def _settle(self, was_idle: bool, advanced: int | None) -> None:
        idle = self.wms.idle
        if was_idle and not idle:
            emit_watermark_status(self.output, False)
        if advanced is not None:
            self.advance_event_time(advanced)
        if idle and not was_idle:
            emit_watermark_status(self.output, True)


class _BatchTimestamps:
    """The event timestamps of the batch an operator is processing, per input, taken from
    the records with the nearest upstream assigner on first use only: a function that never
    reads ``ctx.timestamp`` costs nothing and needs no timestamp field in its records."""

    __slots__ = ("assigners", "batch", "input_index", "values")

    def __init__(self, assigners: tuple[TimestampAssigner | None, TimestampAssigner | None]) -> None:
        self.assigners = assigners
        self.batch: Batch | None = None
        self.input_index = 0
        self.values: list[int] | None = None

    def start(self, batch: Batch, input_index: int) -> None:
        """The operator starts processing ``batch`` of input ``input_index``."""
        self.batch, self.input_index, self.values = batch, input_index, None

    def of(self, i: int) -> int | None:
        """The timestamp of the batch's ``i``-th record (None: its input has no timestamps)."""
        values = self.values
        if values is None:
            assigner, batch = self.assigners[self.input_index], self.batch
            if batch is None:
                return None
            carried = batch.timestamps  # (the records' own: Flink's StreamRecord timestamps)
            if carried is not None and len(carried) == len(batch):
                values = self.values = carried.tolist()
            elif assigner is None:
                return None
            else:
                values = self.values = assigner.timestamps_list(batch)
        return values[i]


def _carried(batch: Batch, records: list) -> list[int] | None:
    """The event timestamps ``batch``'s records carry, as a list (None: they carry none)."""
    ts = batch.timestamps
    return ts.tolist() if ts is not None and len(ts) == len(records) else None


class _StampedContext:
    """``ctx.timestamp`` of a record of a batch, read from :class:`_BatchTimestamps` when the
    function asks for it (mixed into the contexts of the non-keyed two-input operators)."""

    __slots__ = ()
    _stamps: _BatchTimestamps
    _index: int

    @property
    def timestamp(self) -> int | None:
        """The event timestamp of the record being processed (None: its input has none)."""
        return self._stamps.of(self._index)

    @timestamp.setter
    def timestamp(self, value: int | None) -> None:  # (ProcessContext.__init__ sets None: nothing to keep)
        pass


class _CoProcessContext(_StampedContext, ProcessContext):
    __slots__ = ("_stamps", "_index")

    def __init__(self, stamps: _BatchTimestamps) -> None:
        super().__init__()
        self._stamps, self._index = stamps, 0


class _ReadOnlyViews:
    """The read-only broadcast states that ``process_element`` and ``on_timer`` get: one
    read-only copy per state, made on first use after the state last changed (the operator
    calls :meth:`clear` after each batch of broadcast elements), not one per call (a copy of
    every rule for every record)."""

    __slots__ = ("views",)

    def __init__(self) -> None:
        self.views: dict[Any, BroadcastState] = {}

    def get(self, ctx: BroadcastContext, descriptor: Any) -> BroadcastState:
        name = descriptor if isinstance(descriptor, str) else getattr(descriptor, "name", None)
        view = self.views.get(name)
        if view is None:
            view = self.views[name] = BroadcastContext.get_broadcast_state(ctx, descriptor)
        return view

    def clear(self) -> None:
        self.views.clear()


class _BroadcastContext(_StampedContext, BroadcastContext):
    __slots__ = ("_stamps", "_index", "_views")

    def __init__(self, states: dict[str, dict], stamps: _BatchTimestamps, views: _ReadOnlyViews) -> None:
        super().__init__(states)
        self._stamps, self._index, self._views = stamps, 0, views

    def get_broadcast_state(self, descriptor: Any) -> BroadcastState:
        if self._writable:
            return BroadcastContext.get_broadcast_state(self, descriptor)
        return self._views.get(self, descriptor)


class _BroadcastTimerContext(BroadcastContext):
    """The context of a keyed broadcast function's ``on_timer``: the timer's key and time,
    read-only broadcast state, timers, side outputs and ``time_domain()``."""

    __slots__ = ("_domain", "_views")

    def __init__(self, states: dict[str, dict], views: _ReadOnlyViews) -> None:
        super().__init__(states)
        self._domain = "event_time"
        self._views = views

    def get_broadcast_state(self, descriptor: Any) -> BroadcastState:
        return self._views.get(self, descriptor)

    def time_domain(self) -> str:
        """``"event_time"`` or ``"processing_time"``."""
        return self._domain


class _TwoInputBase(TwoInputTime, StreamOperator):
    """Shared by the two-input operators: the user function, the combined watermark and
    the hand-over of results and side outputs after each batch."""

    num_inputs = 2

    def __init__(self, function: Any) -> None:
        self.function = function
        self.wms = TwoInputWatermarks()
        #: (end in the output held, timestamp) runs of its results, and its side outputs' timestamps
        self._runs: list[tuple[int, int]] = []
        self._side_ts: dict[str, list[int]] = {}

    def _event_time(self) -> int:
        """The combined watermark (what ``ctx.timer_service().current_watermark()`` reads)."""
        return self.wms.current

    def _emit(self, out: list, ctx: ProcessContext) -> None:
        """Emit ``out`` and the side outputs of ``ctx``, with the timestamps of ``_runs`` /
        ``_side_ts`` when they cover them (each record's results carry its timestamp, an
        event-time timer's its time, as Flink's ``TimestampedCollector``), else none."""
        runs, self._runs = self._runs, []
        if out:
            self.output.emit(Batch.of_records(out, run_stamps(runs, len(out))))
        side_ts, self._side_ts = self._side_ts, {}
        emit_side_outputs(self.output, ctx._take_side(), side_ts)

    def _stamp(self, out: list, ctx: ProcessContext, stamp: int) -> None:
        """The results (and side outputs) added since the last stamp carry ``stamp``."""
        end = len(out)
        if end > (self._runs[-1][0] if self._runs else 0):
            self._runs.append((end, stamp))
        if ctx._side:
            stamp_side(ctx._side, self._side_ts, stamp)

    def close(self) -> None:
        self.function.close()


class _KeyedTimers:
    """The timers of a keyed two-input operator (:class:`KeyedCoProcessOperator`,
    :class:`KeyedBroadcastProcessOperator`): a fired timer calls the function's
    ``on_timer(timestamp, ctx)`` with the timer's key current, and its output goes out after
    the timers due at one time (event time: before the watermark that fired them). Mix it in
    before the operator's base class (it overrides ``advance_event_time``)."""

    #: what to subclass for an ``on_timer`` (said when the function has none)
    timer_hint = ""
    function: Any
    timers: InternalTimerService
    tctx: Any
    ctx: OperatorContext
    output: Any
    _out: list
    _emit: Callable[[list, ProcessContext], None]
    _stamp: Callable[[list, ProcessContext, int], None]
    _side_ts: dict[str, list[int]]

    def _flush(self, ctx: ProcessContext) -> None:
        out, self._out = self._out, []
        self._emit(out, ctx)

    def _fire(self, key: Any, time: int, domain: str) -> None:
        on_timer = getattr(self.function, "on_timer", None)
        if on_timer is None:
            raise ConfigError(
                f"{type(self.function).__name__} registered a timer (key={key!r}, time={time!r}) but has no "
                f"on_timer(timestamp, ctx) method to receive it{self.timer_hint}"
            )
        keyed_state_backend(self.ctx).set_current_key(key)
        t = self.tctx
        t._key, t.timestamp, t._domain = key, time, domain
        try:
            res = on_timer(time, t)
            if res is not None:
                add_results(self._out, res, self.function, "on_timer", t)
            if domain == "event_time":  # (Flink: an event-time timer's output carries its time)
                self._stamp(self._out, t, time)
            elif t._side:  # (its side outputs carry the timer's time in either domain, as Flink's)
                stamp_side(t._side, self._side_ts, time)
        except Exception as exc:
            raise UserCodeError(f"on_timer(key={key!r}, time={time!r})", flink_hint(exc)) from exc

    def _on_event(self, key: Any, ns: Any, time: int) -> None:
        self._fire(key, time, "event_time")

    def _on_proc(self, key: Any, ns: Any, time: int) -> None:
        self._fire(key, time, "processing_time")
        self._flush(self.tctx)

    def advance_event_time(self, watermark: int) -> None:
        self.timers.advance_watermark(watermark)
        self._flush(self.tctx)
        self.output.emit_watermark(Watermark(watermark))


class CoProcessOperator(_TwoInputBase):
    """Runs a :class:`CoProcessFunction` (not keyed). ``ctx.timestamp`` is the record's
    event timestamp, from the nearest upstream assigner of its input (``timestamp_assigners``;
    None for an input without one)."""

    function: CoProcessFunction

    def __init__(self, function: CoProcessFunction,
                 timestamp_assigners: tuple[TimestampAssigner | None, TimestampAssigner | None] = (None, None)) -> None:
        super().__init__(function)
        self.assigners = timestamp_assigners

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        self.stamps = _BatchTimestamps(self.assigners)
        self.pctx = _CoProcessContext(self.stamps)
        self.pctx._timer_service = NonKeyedTimerService(self._event_time, ctx.clock)
        self.function.open(RuntimeContext(ctx))

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        fn = self.function.process_element1 if input_index == 0 else self.function.process_element2
        out: list = []
        pctx = self.pctx
        self.stamps.start(batch, input_index)
        records = batch.records()
        carried = _carried(batch, records)
        for i, r in enumerate(records):
            try:
                pctx._index = i
                res = fn(r, pctx)
                if res is not None:
                    add_results(out, res, self.function, fn.__name__, pctx)
                if carried is not None:  # (the record's results keep its timestamp)
                    self._stamp(out, pctx, carried[i])
            except Exception as exc:
                raise UserCodeError(r, flink_hint(exc)) from exc
        self._emit(out, self.pctx)

    def advance_event_time(self, watermark: int) -> None:
        self.output.emit_watermark(Watermark(watermark))


class KeyedCoProcessOperator(_KeyedTimers, _TwoInputBase):
    """Runs a :class:`KeyedCoProcessFunction` (or a :class:`CoProcessFunction` on keyed
    connected streams): shared keyed state and timers per key.

    Timers are checkpointed per key group: on the heap backend with the operator (its
    snapshot's ``"timers"``), on an off-heap backend (RocksDB) in the backend's timer queues
    (part of the keyed snapshot), as for :class:`~operators.keyed.KeyedProcessOperator`.
    Heap-format timers of a restored operator state (a heap job's savepoint) are moved into
    the queues.
    """

    keyed = True
    timer_hint = ": subclass KeyedCoProcessFunction"
    function: CoProcessFunction

    def __init__(self, function: CoProcessFunction, selectors: tuple[KeySelector, KeySelector],
                 timestamp_assigners: tuple[TimestampAssigner | None, TimestampAssigner | None] = (None, None)) -> None:
        super().__init__(function)
        self.selectors = selectors
        self.assigners = timestamp_assigners
        self._restored: list = []

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        self.stamps = _BatchTimestamps(self.assigners)
        self.pctx = _CoProcessContext(self.stamps)
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
        self.stamps.start(batch, input_index)  # (ctx.timestamp: read when the function asks)
        backend, pctx = keyed_state_backend(self.ctx), self.pctx
        carried = _carried(batch, records)
        for i, r in enumerate(records):
            try:
                k = key_of(r)
                backend.set_current_key(k)
                pctx._key, pctx._index = k, i
                res = fn(r, pctx)
                if res is not None:
                    add_results(self._out, res, self.function, fn.__name__, pctx)
                if carried is not None:  # (the record's results keep its timestamp)
                    self._stamp(self._out, pctx, carried[i])
            except Exception as exc:
                raise UserCodeError(r, flink_hint(exc)) from exc
        self._flush(pctx)

    def snapshot_state(self, checkpoint_id: int) -> Any:
        return {"timers": self.timers.snapshot()}

    def restore_state(self, states: list[Any]) -> None:
        self._restored = [s.get("timers") for s in states if s]


class BroadcastProcessOperator(_TwoInputBase):
    """Runs a :class:`BroadcastProcessFunction`: input 0 is the regular stream, input 1
    the broadcast stream. Broadcast state is identical in every subtask and snapshotted by
    each; a restored subtask takes the first old subtask's copy. ``ctx.timestamp`` is the
    record's event timestamp, as in :class:`CoProcessOperator`."""

    function: BroadcastProcessFunction

    def __init__(self, function: BroadcastProcessFunction, state_names: list[str],
                 timestamp_assigners: tuple[TimestampAssigner | None, TimestampAssigner | None] = (None, None)) -> None:
        super().__init__(function)
        self.states: dict[str, dict] = {n: BroadcastState() for n in state_names}
        self.assigners = timestamp_assigners

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        self.stamps = _BatchTimestamps(self.assigners)
        self.views = _ReadOnlyViews()
        self.bctx = _BroadcastContext(self.states, self.stamps, self.views)
        self._no_timers = self.bctx._timer_service = NonKeyedTimerService(self._event_time, ctx.clock)
        self.function.open(RuntimeContext(ctx))

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        ctx = self.bctx
        ctx._writable = input_index == 1
        fn = self.function.process_broadcast_element if input_index == 1 else self.function.process_element
        out: list = []
        self.stamps.start(batch, input_index)
        records = batch.records()
        carried = _carried(batch, records)
        try:
            for i, r in enumerate(records):
                try:
                    ctx._index = i
                    res = fn(r, ctx)
                    if res is not None:
                        add_results(out, res, self.function, fn.__name__, ctx)
                    if carried is not None:  # (the record's results keep its timestamp)
                        self._stamp(out, ctx, carried[i])
                except Exception as exc:
                    raise UserCodeError(r, flink_hint(exc)) from exc
        finally:
            if input_index == 1:  # the broadcast state may have changed: fresh read-only copies
                self.views.clear()
        self._emit(out, ctx)

    def advance_event_time(self, watermark: int) -> None:
        self.output.emit_watermark(Watermark(watermark))

    def snapshot_state(self, checkpoint_id: int) -> Any:
        return {"broadcast": copy.deepcopy(self.states)}

    def restore_state(self, states: list[Any]) -> None:
        for st in states:
            if st and "broadcast" in st:
                for name, values in st["broadcast"].items():
                    self.states.setdefault(name, {}).update(values)
                return


class KeyedBroadcastProcessOperator(_KeyedTimers, BroadcastProcessOperator):
    """Runs a :class:`BroadcastProcessFunction` on a keyed stream connected with a broadcast
    stream (``a.key_by(k).connect(b.broadcast(desc))``, Flink's
    ``KeyedBroadcastProcessFunction``): ``process_element`` sees the record's key
    (``ctx.get_current_key()``), keyed state (``ctx.get_state`` in ``open``) and timers
    (``ctx.timer_service()``); the function's ``on_timer(timestamp, ctx)`` gets the timers,
    with the key, read-only broadcast state and ``ctx.time_domain()``.
    ``process_broadcast_element`` has no current key and no timers (as in Flink: keyed state
    used there fails, naming the broadcast record; ``ctx.apply_to_keyed_state`` reaches every
    key's state).

    Timers are checkpointed per key group as in :class:`KeyedCoProcessOperator` (with the
    operator on the heap backend, in the keyed backend's timer queues on RocksDB).
    """

    keyed = True

    def __init__(self, function: BroadcastProcessFunction, state_names: list[str], selector: KeySelector,
                 timestamp_assigners: tuple[TimestampAssigner | None, TimestampAssigner | None] = (None, None)) -> None:
        super().__init__(function, state_names, timestamp_assigners)
        self.selector = selector
        self._restored_timers: list = []

    def open(self, ctx: OperatorContext, output: Output) -> None:
        self.backend = keyed_state_backend(ctx)
        self.timers = InternalTimerService(ctx.max_parallelism, self._on_event, self._on_proc,
                                           ctx.register_processing_timer, ctx.clock,
                                           backend_timer_queues(ctx.keyed_backend))
        self._out: list = []
        super().open(ctx, output)
        self.tctx = _BroadcastTimerContext(self.states, self.views)
        self.tctx._timer_service = TimerService(self.timers, self.tctx.get_current_key)
        self._element_timers = TimerService(self.timers, self.bctx.get_current_key)
        self.timers.restore(self._restored_timers + backend_restored_timers(ctx.keyed_backend), ctx.key_group_range)
        self._restored_timers = []

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        if input_index == 1:  # a broadcast element: no key, no timers; every key's state by apply_to_keyed_state
            ctx = self.bctx
            ctx._key, ctx._timer_service, ctx._apply_to_keys = None, self._no_timers, self._apply_to_keyed_state
            # no current key either (as in Flink): keyed state used here fails naming the broadcast record
            # instead of reading and writing the last record's key's state
            self.backend.clear_current_key()
            try:
                super().process_batch(batch, input_index)
            finally:
                ctx._apply_to_keys = None
            return
        ctx = self.bctx
        ctx._writable = False
        ctx._timer_service = self._element_timers
        fn = self.function.process_element
        key_of, set_key, out = self.selector.key_of, self.backend.set_current_key, self._out
        self.stamps.start(batch, input_index)
        records = batch.records()
        carried = _carried(batch, records)
        for i, r in enumerate(records):
            try:
                k = key_of(r)
                set_key(k)
                ctx._key, ctx._index = k, i
                res = fn(r, ctx)
                if res is not None:
                    add_results(out, res, self.function, fn.__name__, ctx)
                if carried is not None:  # (the record's results keep its timestamp)
                    self._stamp(out, ctx, carried[i])
            except Exception as exc:
                raise UserCodeError(r, flink_hint(exc)) from exc
        self._flush(ctx)

    def _apply_to_keyed_state(self, descriptor: Any, function: Callable[[Any, Any], None]) -> None:
        """``ctx.apply_to_keyed_state``: ``function(key, state)`` for each key of this subtask
        with a value in ``descriptor``'s state (the keys at the call), that key current."""
        if not isinstance(descriptor, StateDescriptor):
            raise ConfigError(f"apply_to_keyed_state() expects a state descriptor (e.g. ValueStateDescriptor), "
                              f"got {type(descriptor).__name__} {descriptor!r}")
        if not callable(function):
            raise ConfigError(f"apply_to_keyed_state() expects a function(key, state), got {function!r}")
        backend = self.backend
        state = backend.get_state(descriptor)
        try:
            for key in backend.keys(descriptor.name):
                backend.set_current_key(key)
                function(key, state)
        finally:
            backend.clear_current_key()  # (the broadcast side has no current key)

    def snapshot_state(self, checkpoint_id: int) -> Any:
        return {**super().snapshot_state(checkpoint_id), "timers": self.timers.snapshot()}

    def restore_state(self, states: list[Any]) -> None:
        super().restore_state(states)
        self._restored_timers = [s.get("timers") for s in states if s]
