"""The record-API window operator: assigners, triggers, lateness, merging (session) windows.

Contents are kept per key and window as a list of records (``process``), a running value
(``reduce``) or an accumulator (``aggregate``); timers (trigger timers and the cleanup
timer at ``window.max_timestamp() + allowed_lateness``) live in an
:class:`~operators.timers.InternalTimerService`. The snapshot holds the timers and, per
key group, the pickled contents and trigger state, so a restored (or rescaled) operator
continues with identical output.

On an off-heap keyed backend (``KeyedStateBackend.off_heap``: RocksDB) the operator keeps
nothing per key in memory: contents, trigger state (and a merging assigner's window sets)
are map states of the keyed backend (:mod:`operators.window_state`), timers are in its
timer queues; all of it is in the keyed snapshot, re-split by key group on rescaling. The
tumbling fast paths (panes, per-batch folding into dicts) are heap-only; on RocksDB every
record takes the per-(key, window) path. A heap job's savepoint restores into RocksDB (its
contents, trigger state and timers are moved into the backend), and a RocksDB job's
checkpoint or savepoint into the heap (the heap keyed backend hands them over:
``backend_restored_state`` / ``backend_restored_timers``).

Records whose windows have all expired (``window.max_timestamp() + allowed_lateness <=
watermark``) are *late*: they go to the ``late_tag`` side output if one is set, else they
are counted in ``ctx.metrics["num_late_records_dropped"]`` and logged once.
"""

from __future__ import annotations

import logging
import pickle
import types
from operator import itemgetter
from typing import Any, Callable, NoReturn, Sequence, cast

import cloudpickle
import numpy as np

from raystream.checkpoint.descriptors import AggregateFunction
from raystream.engine.errors import ConfigError, UserCodeError, short_repr
from raystream.engine.events import MAX_WATERMARK, Watermark
from raystream.engine.keygroups import key_group_for
from raystream.engine.operator import KeyGroupedState, OperatorContext, Output, StreamOperator
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch

from .basic import emit_side_outputs, run_stamps, stamp_side
from .evictors import Evictor, TimestampedValue
from .functions import OutputTag, RuntimeContext, keyed_state_backend, move_side_outputs
from .keyed import restored_keys
from .time import TimestampAssigner, all_ints
from .timers import (
    InternalTimerService,
    backend_restored_state,
    backend_restored_timers,
    backend_timer_queues,
)
from .window_state import (
    MERGING_WINDOWS,
    WINDOW_CONTENTS,
    WINDOW_TRIGGER_STATE,
    BackendWindowState,
    KeyedStateStore,
    decode_window,
    encode_window,
    window_of_key,
)
from .windows import (
    EventTimeTrigger,
    MergingWindowAssigner,
    ProcessWindowFunction,
    TimeWindow,
    Trigger,
    TriggerContext,
    TriggerResult,
    TumblingEventTimeWindows,
    Window,
    WindowAssigner,
    WindowContext,
    _DynamicSessions,
)

__all__ = ["WindowOperator", "LIST", "REDUCE", "AGGREGATE"]

log = logging.getLogger(__name__)

LIST, REDUCE, AGGREGATE = "list", "reduce", "aggregate"
_NONE: Any = object()  # "no contents yet" (a sentinel that stands for any contents)
_NEVER = 2**63 - 1  # "no pane to fire"
_GENERATOR = types.GeneratorType  # (a window function's usual result: iterable, no check needed)


def _not_reducing(a: Any, b: Any) -> NoReturn:
    raise AssertionError("not a reducing window")


class _NotAggregating(AggregateFunction[Any, Any, Any]):
    """The aggregate function of a window that is not an aggregating one (never called)."""

    def create_accumulator(self) -> NoReturn:
        raise AssertionError("not an aggregating window")

    def add(self, value: Any, accumulator: Any) -> NoReturn:
        raise AssertionError("not an aggregating window")

    def get_result(self, accumulator: Any) -> NoReturn:
        raise AssertionError("not an aggregating window")

    def merge(self, a: Any, b: Any) -> NoReturn:
        raise AssertionError("not an aggregating window")


_NO_AGGREGATE = _NotAggregating()


class _TriggerCtx(TriggerContext):
    __slots__ = ("op", "key", "window", "_merged")

    #: the window the trigger acts on (set by the operator before each trigger call)
    window: Window

    def __init__(self, op: "WindowOperator") -> None:
        self.op = op
        self.key: Any = None
        self._merged: list[dict[str, Any]] = []

    def current_watermark(self) -> int:
        return self.op.timers.watermark

    def current_processing_time(self) -> int:
        return self.op.ctx.clock.now_ms()

    def register_event_time_timer(self, time: int) -> None:
        self.op.timers.register_event_time_timer(self.key, self.window, time)

    def register_processing_time_timer(self, time: int) -> None:
        self.op.timers.register_processing_time_timer(self.key, self.window, time)

    def delete_event_time_timer(self, time: int) -> None:
        self.op.timers.delete_event_time_timer(self.key, self.window, time)

    def delete_processing_time_timer(self, time: int) -> None:
        self.op.timers.delete_processing_time_timer(self.key, self.window, time)

    def get_state(self, name: str, default: Any = None) -> Any:
        st = self.op.trig.get(self.key, {}).get(self.window)
        return default if st is None else st.get(name, default)

    def set_state(self, name: str, value: Any) -> None:
        if value is not None:
            self.op.trig.setdefault(self.key, {}).setdefault(self.window, {})[name] = value
            return
        trig = self.op.trig  # None: the state is removed, and with it emptied entries
        per_key = trig.get(self.key)
        if per_key is None:
            return
        st = per_key.get(self.window)
        if st is None or name not in st:
            return
        del st[name]
        if not st:
            del per_key[self.window]
            if not per_key:
                del trig[self.key]

    def merged_states(self, name: str) -> list[Any]:
        return [st[name] for st in self._merged if name in st]


class _BackendTriggerCtx(_TriggerCtx):
    """The trigger context of an operator whose trigger state is in the keyed backend
    (a :class:`~operators.window_state.BackendWindowState`): a state change is stored back."""

    __slots__ = ()

    def set_state(self, name: str, value: Any) -> None:
        trig = self.op.trig
        assert isinstance(trig, BackendWindowState)  # (this context is only made for one)
        per_key = trig.get(self.key)
        st = dict(per_key.get(self.window) or {})
        if value is not None:
            st[name] = value
        elif st.pop(name, _NONE) is _NONE:
            return  # (nothing to remove)
        if st:
            per_key[self.window] = st
        else:
            per_key.pop(self.window, None)  # None removed the window's last state


class WindowOperator(StreamOperator):
    """Keyed windows with the record API (see the module docstring).

    Args:
        key_of: ``key_of(record)``; timestamp_of: ``timestamps(batch)`` (a TimestampAssigner)
            for event-time assigners, else None.
        kind: ``"list"`` (window function sees all records), ``"reduce"`` (``fn(a, b)``) or
            ``"aggregate"`` (``fn`` is an AggregateFunction).
        window_function: a ProcessWindowFunction applied to the contents (optional for
            reduce/aggregate: without it the reduced value / ``get_result`` is emitted).
        evictor: an :class:`~operators.evictors.Evictor`: the window keeps its elements with
            their timestamps (no incremental folding) and, at each firing, evicts before
            and after the function, which (reduce / aggregate) folds what remains (Flink's
            ``EvictingWindowOperator``).
    """

    keyed = True

    def __init__(
        self,
        key_of: Callable[[Any], Any],
        assigner: WindowAssigner,
        kind: str,
        fn: Callable[[Any, Any], Any] | AggregateFunction[Any, Any, Any] | None = None,
        window_function: ProcessWindowFunction | None = None,
        trigger: Trigger | None = None,
        allowed_lateness: int = 0,
        late_tag: str | None = None,
        timestamp_assigner: TimestampAssigner | None = None,
        evictor: Evictor | None = None,
    ) -> None:
        if evictor is not None and not isinstance(evictor, Evictor):
            raise ConfigError(f"evictor() expects an Evictor (e.g. CountEvictor.of(10)), got {evictor!r}")
        self.evictor = evictor
        self.key_of = key_of
        self.assigner = assigner
        self.kind = kind
        if kind not in (LIST, REDUCE, AGGREGATE):
            raise ConfigError(f"window contents kind must be {LIST!r}, {REDUCE!r} or {AGGREGATE!r}, got {kind!r}")
        # fn as the kind's function (both always set, in this order: one attribute layout; an
        # instance stays below CPython's 30 shared attribute keys, whose attributes load fastest)
        self._reduce: Callable[[Any, Any], Any] = _not_reducing
        self._agg: AggregateFunction[Any, Any, Any] = _NO_AGGREGATE
        if kind == REDUCE:
            if not callable(fn):
                raise ConfigError(f"a reducing window needs a function fn(a, b), got {fn!r}")
            self._reduce = fn
        elif kind == AGGREGATE:
            if fn is None or callable(fn):
                raise ConfigError(f"an aggregating window needs an AggregateFunction, got {fn!r}")
            self._agg = fn
        self.window_function = window_function
        self.trigger = trigger or assigner.default_trigger()
        if assigner.is_merging and not self.trigger.can_merge():
            raise ConfigError(f"trigger {type(self.trigger).__name__} cannot be used with merging windows ({assigner!r})")
        # merging (session) windows are TimeWindows that the operator merges (see _merge)
        self._sessions: MergingWindowAssigner | None = None
        if assigner.is_merging:
            if not isinstance(assigner, MergingWindowAssigner):
                raise ConfigError(
                    f"merging window assigner {assigner!r} must subclass MergingWindowAssigner "
                    "(its windows are TimeWindows that the operator merges)"
                )
            self._sessions = assigner
        self.allowed_lateness = allowed_lateness
        self.late_tag = late_tag
        self.timestamp_assigner = timestamp_assigner
        self.contents: dict[Any, dict[Window, Any]] = {}  # key -> window -> contents
        self.trig: dict[Any, dict[Window, dict[str, Any]]] = {}  # key -> window -> trigger state
        self._restored: list[Any] = []
        # Fast paths for the common case (default EventTimeTrigger, non-merging event-time
        # windows): timers fire without the generic trigger dispatch (_on_event_time_fast),
        # and tumbling windows are assigned per batch and accumulated per (key, window) in
        # plain dicts. (Flags that only open() needs are not kept: an instance stays below
        # CPython's 30 shared attribute keys, whose attributes load fastest.)
        self._fast_tumbling = self._fires_fast() and type(assigner) is TumblingEventTimeWindows
        # Pane mode (tumbling, default trigger, no allowed lateness): one pane per window
        # start holds {key: contents}; a pane fires as a whole when the watermark passes
        # its end, so no per-(key, window) timer exists at all.
        self._panes_mode = self._fast_tumbling and allowed_lateness == 0
        self._panes: dict[int, dict[Any, Any]] = {}  # window start -> key -> contents
        self._pane_fire = _NEVER  # smallest max_timestamp among the panes
        self._key_selector = _plain_selector(key_of)
        ta = timestamp_assigner
        self._ts_getter = (
            itemgetter(ta.column)
            if type(ta) is TimestampAssigner and ta.fn is None and isinstance(ta.column, (str, int))
            else None
        )

    def _fires_fast(self) -> bool:
        """Whether event-time timers fire with the default trigger inlined."""
        a = self.assigner
        return (type(self.trigger) is EventTimeTrigger and a.is_event_time and not a.is_merging
                and self.evictor is None)

    def state_store(self, key: Any, window: Window | None) -> KeyedStateStore:
        """The keyed state a ``ProcessWindowFunction``'s context gives: of ``key`` for
        ``window`` (``window_state()``), or of the key across its windows (None:
        ``global_state()``)."""
        return KeyedStateStore(keyed_state_backend(self.ctx), key, window)

    # ------------------------------------------------------------------ lifecycle
    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        queues = backend_timer_queues(ctx.keyed_backend)  # off-heap (RocksDB): timers in the backend
        for q in queues or ():
            set_serializer = getattr(q, "set_namespace_serializer", None)
            if set_serializer is not None:  # windows as 17 bytes, not pickled
                set_serializer(encode_window, decode_window)
        self.timers: InternalTimerService[Any, Window] = InternalTimerService(
            ctx.max_parallelism, self._on_event_time_fast if self._fires_fast() else self._on_event_time,
            self._on_processing_time, ctx.register_processing_timer, ctx.clock, queues,
        )
        self.tctx = _TriggerCtx(self) if queues is None else _BackendTriggerCtx(self)
        self.wctx: WindowContext[Window] = WindowContext(self)
        wf = self.window_function  # its clear() runs when a window is cleaned up, if it has one
        self._clears = wf is not None and type(wf).clear is not ProcessWindowFunction.clear
        self._out: list[Any] = []
        self._held = _Held()  # the late records and the timestamps of what goes out at the next flush
        ctx.metrics.setdefault("num_late_records_dropped", 0)
        for st in self._restored:
            if not st:
                continue
            for kg, blob in st.get("groups", {}).items():
                if kg in ctx.key_group_range:
                    contents, trig = pickle.loads(blob)
                    # (keys made canonical: an unpickled NaN is a new object, which a record's
                    # NaN key, made canonical by the key selector, would not find)
                    self.contents.update(zip(restored_keys(contents, ctx, "window contents"), contents.values()))
                    self.trig.update(zip(restored_keys(trig, ctx, "window trigger state"), trig.values()))
            if "watermark" in st.get("timers", {}):
                self.timers.watermark = max(self.timers.watermark, st["timers"]["watermark"])
        restored_timers = [s.get("timers") for s in self._restored if s]
        if queues is None:  # heap: a RocksDB job's snapshot keeps windows and timers in the keyed backend
            restored_timers += self._state_from_backend(ctx.keyed_backend)
        if queues is not None:
            self._state_to_backend(ctx)
            self.timers.restore(restored_timers, ctx.key_group_range)
        elif self._panes_mode:  # restored (key -> window -> contents) become panes; no timers needed
            for key, per_key in self.contents.items():
                for w, acc in per_key.items():
                    assert isinstance(w, TimeWindow)  # pane mode: tumbling time windows
                    self._panes.setdefault(w.start, {})[key] = acc
            self.contents = {}
            size = self._tumbling.size
            self._pane_fire = min(self._panes, default=_NEVER - size) + size - 1
        else:
            self.timers.restore(restored_timers, ctx.key_group_range)
        self._restored = []
        if self.window_function is not None:
            self.window_function.open(RuntimeContext(ctx))

    def _state_from_backend(self, backend: Any) -> list[dict[str, Any]]:
        """Heap: move the windows a heap keyed ``backend`` restored from a RocksDB snapshot
        (a job switched back from RocksDB: contents and trigger state in the map states of
        :mod:`operators.window_state`) into the operator's dicts; returns the timers the
        backend handed over, their namespaces decoded back into windows."""
        for name, target in ((WINDOW_CONTENTS, self.contents), (WINDOW_TRIGGER_STATE, self.trig)):
            for entries in backend_restored_state(backend, name).values():
                for key, by_window in zip(restored_keys(entries, self.ctx, name), entries.values()):
                    per_key = target.setdefault(key, {})
                    for wk, value in by_window.items():
                        per_key[window_of_key(wk)] = value
        backend_restored_state(backend, MERGING_WINDOWS)  # heap: a key's windows are its dict's keys
        return [
            {queue: {kg: [(t, k, window_of_key(ns)) for t, k, ns in timers] for kg, timers in parts.items()}
             for queue, parts in st.items()}
            for st in backend_restored_timers(backend) if st
        ]

    def _state_to_backend(self, ctx: OperatorContext) -> None:
        """Off-heap: keep contents and trigger state in the keyed backend instead of dicts
        (the tumbling fast paths, which fold into dicts, are off), moving restored
        heap-format state (a heap job's savepoint) in; each restored window gets its cleanup
        timer (a pane-mode snapshot has no timers: there it is also the firing timer)."""
        backend = keyed_state_backend(ctx)
        self._fast_tumbling = self._panes_mode = False
        restored, restored_trig = self.contents, self.trig
        contents = BackendWindowState(backend, WINDOW_CONTENTS, merging=self._sessions is not None)
        trig = BackendWindowState(backend, WINDOW_TRIGGER_STATE)
        for key, per_key in restored.items():
            for w, acc in per_key.items():
                contents.put(key, w, acc)
                self._register_cleanup(key, w)
        for key, by_window in restored_trig.items():
            for w, st in by_window.items():
                trig.put(key, w, st)
        # the window logic uses the dict API both offer (see operators.window_state)
        self.contents = cast(Any, contents)
        self.trig = cast(Any, trig)

    def close(self) -> None:
        if self.window_function is not None:
            self.window_function.close()

    # ------------------------------------------------------------------ input
    def _timestamps(self, batch: Batch) -> np.ndarray:
        """Event timestamps of a batch from the timestamp assigner (event-time windows)."""
        assigner = self.timestamp_assigner
        if assigner is None:
            raise ConfigError(
                f"event-time window {self.assigner!r} has no timestamp assigner: call "
                "assign_timestamps_and_watermarks(...) upstream"
            )
        return assigner.timestamps(batch)

    def _carried(self, batch: Batch) -> np.ndarray | None:
        """The event timestamps ``batch`` carries (Flink's ``StreamRecord`` timestamps: an
        upstream assigner's, a window's ``max_timestamp()``...), unless this window was told
        where to read them (``with_timestamp``: an assigner of its own, which wins)."""
        ts = batch.timestamps
        if ts is None:
            return None
        own = self.timestamp_assigner
        return None if own is not None and own.origin is None else ts

    def _elements(self, batch: Batch, input_index: int) -> tuple[list[Any], list[Any], list[int] | None]:
        """(values to store, keys, event timestamps or None) of a batch."""
        records = batch.records()
        key_of = self.key_of
        try:
            keys = [key_of(r) for r in records]
        except Exception as exc:
            bad = next(r for r in records if not _safe(key_of, r))
            raise UserCodeError(bad, exc) from exc
        stamps = None
        if self.assigner.is_event_time:
            ts = self._carried(batch)
            if ts is None or len(ts) != len(records):
                ts = self._timestamps(batch)
            stamps = ts.tolist()
        return records, keys, stamps

    def _check_window_ends(self, mx: int, records: list[Any], stamps: Any) -> None:
        """Fail (not drop) a record whose window ends after the largest watermark: it would
        never fire (a count window's results carry ``GlobalWindow.max_timestamp()``, 2**63 - 1).
        ``mx``: the largest of ``stamps``, the timestamps of ``records`` (checked per batch:
        only a timestamp within the longest window of the end of time is looked at)."""
        a = self.assigner
        reach = max(getattr(a, "size", 0), getattr(a, "gap", 0))
        if mx <= MAX_WATERMARK - reach and not isinstance(a, _DynamicSessions):
            return
        i = int(np.argmax(np.asarray(stamps, dtype=np.int64))) if not isinstance(stamps, list) else stamps.index(mx)
        record = records[i]
        windows = a.assign_windows(record, mx, self.ctx.clock.now_ms())
        beyond = [w for w in windows if w.max_timestamp() > MAX_WATERMARK]
        if beyond:
            raise ConfigError(
                f"event-time window {a!r}: the record {short_repr(record)} has the event timestamp {mx}, so its "
                f"window {beyond[0]!r} ends after the largest watermark ({MAX_WATERMARK}) and would never fire. "
                "A count (GlobalWindows) window's results carry GlobalWindow.max_timestamp() (2**63 - 1) as their "
                "timestamp: give this window the time each record holds (window(...).with_timestamp(fn or 'column')) "
                "or assign_timestamps_and_watermarks(...) before it"
            )

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        if self._panes_mode:
            self._process_panes(batch, input_index)
            self._flush()
            return
        if self._fast_tumbling and self._process_tumbling(batch):
            self._flush()
            return
        values, keys, stamps = self._elements(batch, input_index)
        if stamps:
            self._check_window_ends(max(stamps), values, stamps)
        now = self.ctx.clock.now_ms()
        i = 0
        try:
            for i, value in enumerate(values):
                ts = stamps[i] if stamps is not None else now
                self._process_element(keys[i], value, ts, now)
        except TypeError as exc:  # the element's key as a dict key (unhashable on the heap backend)
            raise UserCodeError(values[i], exc) from exc
        self._flush()

    # ------------------------------------------------------------------ tumbling fast path
    @property
    def _tumbling(self) -> TumblingEventTimeWindows:
        """The assigner, on the tumbling fast paths (``_fast_tumbling`` / ``_panes_mode``)."""
        a = self.assigner
        assert isinstance(a, TumblingEventTimeWindows)  # _fast_tumbling checked its type
        return a

    def _process_tumbling(self, batch: Batch) -> bool:
        """Tumbling event-time windows with the default trigger: assign the windows once
        per batch and fold the records of each (key, window) into plain dicts. Returns
        False (nothing done) when the batch needs the per-record path: a record that is
        late or lands in a window the watermark has already passed (a firing within the
        allowed lateness), keys or timestamps that need the generic extraction/errors."""
        records = batch.records()
        n = len(records)
        if n == 0:
            return False
        ts = self._carried(batch)
        raw: np.ndarray | list[int]
        try:
            if ts is not None and len(ts) == n:
                mn, mx = int(ts.min()), int(ts.max())
                raw = ts
            else:
                if self._ts_getter is None or batch.is_columnar:
                    arr = self._timestamps(batch)
                    raw, mn, mx = arr, int(arr.min()), int(arr.max())
                else:
                    raw = list(map(self._ts_getter, records))
                    mn, mx = min(raw), max(raw)
                    # (a bool is an int to min/max and numpy: with one among them, the minimum is <= 1)
                    if type(mn) is not int or type(mx) is not int or (mn <= 1 and not all_ints(raw)):
                        return False
        except Exception:
            return False  # the per-record path raises the proper error
        self._check_window_ends(mx, records, raw)
        a = self._tumbling
        size, off = a.size, a.offset
        first = mn - (mn - off) % size
        if first + size - 1 <= self.timers.watermark:
            return False  # late records or late firings: per-record semantics
        selector = self._key_selector
        if selector is not None:
            try:
                keys = selector.keys_of_records(records, batch)
            except Exception:
                return False
        else:
            key_of = self.key_of
            try:
                keys = [key_of(r) for r in records]
            except Exception as exc:
                bad = next(r for r in records if not _safe(key_of, r))
                raise UserCodeError(bad, exc) from exc
        if mx - (mx - off) % size == first:
            self._fold_window(first, keys, records)
            return True
        st = np.asarray(raw, dtype=np.int64)
        starts = st - (st - off) % size
        steps = np.diff(starts)
        if not (steps < 0).any():  # in timestamp order: contiguous runs per window
            bounds = [0, *(np.flatnonzero(steps) + 1).tolist(), n]
            for i in range(len(bounds) - 1):
                lo, hi = bounds[i], bounds[i + 1]
                self._fold_window(int(starts[lo]), keys[lo:hi], records[lo:hi])
            return True
        for s in np.unique(starts).tolist():
            idx = np.flatnonzero(starts == s).tolist()
            self._fold_window(s, [keys[i] for i in idx], [records[i] for i in idx])
        return True

    # ------------------------------------------------------------------ tumbling panes
    def _batch_keys(self, batch: Batch, records: list[Any]) -> list[Any]:
        selector = self._key_selector
        if selector is not None:
            try:
                return selector.keys_of_records(records, batch)
            except Exception:
                pass  # the generic selector below raises the error that names the record
        key_of = self.key_of
        try:
            return [key_of(r) for r in records]
        except Exception as exc:
            bad = next(r for r in records if not _safe(key_of, r))
            raise UserCodeError(bad, exc) from exc

    def _batch_timestamps(self, batch: Batch, records: list[Any]) -> tuple[np.ndarray | list[int], int, int]:
        """(timestamps as a list or int64 array, min, max) of a non-empty batch."""
        ts = self._carried(batch)
        if ts is not None and len(ts) == len(records):
            return ts, int(ts.min()), int(ts.max())
        if self._ts_getter is not None and not batch.is_columnar:
            try:
                raw = list(map(self._ts_getter, records))
                mn, mx = min(raw), max(raw)
                # (a bool is an int to min/max and numpy: with one among them, the minimum is <= 1)
                if type(mn) is int and type(mx) is int and (mn > 1 or all_ints(raw)):
                    return raw, mn, mx
            except Exception:
                pass  # timestamps() below raises the error that names the record
        arr = self._timestamps(batch)
        return arr, int(arr.min()), int(arr.max())

    def _pane_elements(
        self, batch: Batch, input_index: int
    ) -> tuple[list[Any], list[Any], np.ndarray | list[int], int, int]:
        """(values to store, keys, timestamps, min, max) of a non-empty batch (pane mode)."""
        records = batch.records()
        raw, mn, mx = self._batch_timestamps(batch, records)
        return records, self._batch_keys(batch, records), raw, mn, mx

    def _process_panes(self, batch: Batch, input_index: int) -> None:
        """Pane mode: assign the windows of a whole batch at once and fold each window's
        records into its pane; records of windows the watermark has passed are late."""
        if len(batch) == 0:
            return
        records, keys, raw, mn, mx = self._pane_elements(batch, input_index)
        self._check_window_ends(mx, records, raw)
        n = len(records)
        size, off = self._tumbling.size, self._tumbling.offset
        wm = self.timers.watermark
        first = mn - (mn - off) % size
        if mx - (mx - off) % size == first:  # the whole batch falls into one window
            if first + size - 1 <= wm:
                self._held.late.extend(records)
                self._held.late_ts.extend(np.asarray(raw, dtype=np.int64).tolist())
            else:
                self._fold_pane(first, keys, records)
            return
        st = np.asarray(raw, dtype=np.int64)
        starts = st - (st - off) % size
        steps = np.diff(starts)
        if not (steps < 0).any():  # in timestamp order: contiguous runs per window
            bounds = [0, *(np.flatnonzero(steps) + 1).tolist(), n]
            runs = [(int(starts[lo]), lo, hi) for lo, hi in zip(bounds, bounds[1:])]
            for start, lo, hi in runs:
                if start + size - 1 <= wm:
                    self._held.late.extend(records[lo:hi])
                    self._held.late_ts.extend(st[lo:hi].tolist())
                else:
                    self._fold_pane(start, keys[lo:hi], records[lo:hi])
            return
        order = np.argsort(starts, kind="stable")  # record order kept within each window
        sorted_starts = starts[order]
        cuts = [0, *(np.flatnonzero(np.diff(sorted_starts)) + 1).tolist(), n]
        late_idx: list[int] = []
        for lo, hi in zip(cuts, cuts[1:]):
            start = int(sorted_starts[lo])
            idx = order[lo:hi].tolist()
            if start + size - 1 <= wm:
                late_idx.extend(idx)
            else:
                self._fold_pane(start, [keys[i] for i in idx], [records[i] for i in idx])
        if late_idx:
            late_idx.sort()
            self._held.late.extend(records[i] for i in late_idx)
            self._held.late_ts.extend(st[late_idx].tolist())

    def _fold_pane(self, start: int, keys: list, values: list) -> None:
        """Add ``values`` (keyed by ``keys``, in record order) to the pane of window
        ``[start, start + size)``."""
        pane = self._panes.get(start)
        if pane is None:
            pane = self._panes[start] = {}
            fire = start + self._tumbling.size - 1
            if fire < self._pane_fire:
                self._pane_fire = fire
        kind = self.kind
        get = pane.get
        v: Any = None
        try:
            if kind == REDUCE:
                reduce = self._reduce
                for k, v in zip(keys, values):
                    acc = get(k, _NONE)
                    pane[k] = v if acc is _NONE else reduce(acc, v)
            elif kind == AGGREGATE:
                create, add = self._agg.create_accumulator, self._agg.add
                for k, v in zip(keys, values):
                    acc = get(k, _NONE)
                    pane[k] = add(v, create() if acc is _NONE else acc)
            else:
                for k, v in zip(keys, values):
                    acc = get(k)
                    if acc is None:
                        pane[k] = [v]
                    else:
                        acc.append(v)
        except Exception as exc:
            raise UserCodeError(v, exc) from exc

    def _fire_panes(self, watermark: int) -> None:
        """Emit every pane whose window ends at or before ``watermark``, oldest first,
        keys in the order they were first seen (as per-key timers would fire)."""
        panes, size = self._panes, self._tumbling.size
        for start in sorted(s for s in panes if s + size - 1 <= watermark):
            pane = panes.pop(start)
            if self.window_function is None:  # (every result of the pane carries its window's max timestamp)
                self._emit_plain_pane(pane, start, size)
                continue
            w = TimeWindow(start, start + size)
            if self.kind != LIST and self.window_function is not None and not self._clears:
                self._emit_pane(pane, w)
                self._stamp(start + size - 1)
                continue
            for key, acc in pane.items():
                self._emit_window(key, w, acc, False)
                if self._clears:  # (no allowed lateness: a pane is cleaned up as it fires)
                    self._clear_function(key, w)
            self._stamp(start + size - 1)
        self._pane_fire = min(panes, default=_NEVER - size) + size - 1

    def _emit_plain_pane(self, pane: dict[Any, Any], start: int, size: int) -> None:
        """The results of a pane without a window function: its reduced values, aggregates'
        results or listed records, key by key, as :meth:`_emit_window` gives them, stamped
        once for the pane."""
        out = self._out
        if self.kind == REDUCE:
            out.extend(pane.values())
        else:
            key: Any = None
            try:
                if self.kind == AGGREGATE:
                    get_result = self._agg.get_result
                    for key, acc in pane.items():  # noqa: B007 - (the error below names the key)
                        out.append(get_result(acc))
                else:
                    for key, acc in pane.items():  # noqa: B007 - (the error below names the key)
                        out.extend(acc)
            except Exception as exc:
                raise UserCodeError(f"window {TimeWindow(start, start + size)!r} of key {key!r}", exc) from exc
        self._stamp(start + size - 1)

    def _emit_pane(self, pane: dict[Any, Any], w: TimeWindow) -> None:
        """:meth:`_emit_window` of every (key, accumulator) of a reduce/aggregate pane with a
        window function (no ``clear``), in one loop: the same calls, checks and errors, without
        a frame and the attribute lookups per key (~a third of a window's firing)."""
        fn = self.window_function
        assert fn is not None  # (_fire_panes checked)
        process, out, wctx = fn.process, self._out, self.wctx
        result_of = self._agg.get_result if self.kind == AGGREGATE else None
        key: Any = None
        try:
            for key, acc in pane.items():
                wctx.window = w
                wctx.key = key
                result = process(key, wctx, [acc if result_of is None else result_of(acc)])
                if result is None:
                    continue
                t = type(result)
                if t is not _GENERATOR and t is not list and (
                        isinstance(result, (dict, str, bytes)) or not hasattr(result, "__iter__")):
                    self._not_records(result)  # (extended, a dict would give its keys as records)
                begin = len(out)
                out.extend(result)
                if OutputTag.made:  # (PyFlink's yield tag, value; a tag made while it ran counts)
                    move_side_outputs(out, begin, wctx, fn, "process")
        except Exception as exc:
            raise UserCodeError(f"window {w!r} of key {key!r}", exc) from exc

    def _fold_window(self, start: int, keys: list[Any], values: list[Any]) -> None:
        """Add ``values`` (keyed by ``keys``, in record order) to window ``[start, start +
        size)``; registers the window's timer(s) the first time a key is seen in it."""
        size = self._tumbling.size
        w = TimeWindow(start, start + size)
        mt = start + size - 1
        lateness = self.allowed_lateness
        cleanup = mt + lateness
        fresh: list[Any] = []  # keys new to the window: they get the window's timer(s)
        contents = self.contents
        kind = self.kind
        cur: dict[Any, Any] = {}
        get = cur.get
        v: Any = None
        try:
            if kind == REDUCE:
                reduce = self._reduce
                for k, v in zip(keys, values):
                    acc = get(k, _NONE)
                    if acc is _NONE:
                        per_key = contents.get(k)
                        if per_key is None:
                            per_key = contents[k] = {}
                        acc = per_key.get(w, _NONE)
                        if acc is _NONE:
                            fresh.append(k)
                            cur[k] = v
                            continue
                    cur[k] = reduce(acc, v)
            elif kind == AGGREGATE:
                create, add = self._agg.create_accumulator, self._agg.add
                for k, v in zip(keys, values):
                    acc = get(k, _NONE)
                    if acc is _NONE:
                        per_key = contents.get(k)
                        if per_key is None:
                            per_key = contents[k] = {}
                        acc = per_key.get(w, _NONE)
                        if acc is _NONE:
                            fresh.append(k)
                            acc = create()
                    cur[k] = add(v, acc)
            else:
                for k, v in zip(keys, values):
                    acc = get(k, _NONE)
                    if acc is _NONE:
                        per_key = contents.get(k)
                        if per_key is None:
                            per_key = contents[k] = {}
                        acc = per_key.get(w, _NONE)
                        if acc is _NONE:
                            fresh.append(k)
                            acc = []
                    acc.append(v)
                    cur[k] = acc
        except Exception as exc:
            raise UserCodeError(v, exc) from exc
        finally:
            for k, acc in cur.items():
                contents[k][w] = acc
            if fresh:
                event = self.timers.event
                if lateness:  # per key: trigger timer, then cleanup timer (as on_element does)
                    for k in fresh:
                        event.add(k, w, mt)
                        event.add(k, w, cleanup)
                else:
                    event.add_many(fresh, w, mt)

    def _is_late_element(self, ts: int) -> bool:
        return self.assigner.is_event_time and ts + self.allowed_lateness <= self.timers.watermark

    def _is_late_window(self, w: Window) -> bool:
        return self.assigner.is_event_time and w.max_timestamp() + self.allowed_lateness <= self.timers.watermark

    def _process_element(self, key: Any, value: Any, ts: int, now: int) -> None:
        sessions = self._sessions
        windows: Sequence[Window]
        if sessions is not None:
            session_windows = windows = sessions.assign_windows(value, ts, now)
        else:
            windows = self.assigner.assign_windows(value, ts, now)
        per_key = self.contents.get(key)
        if per_key is None:
            per_key = self.contents[key] = {}
        self.tctx.key = key
        skipped = True
        if sessions is not None:  # merging windows: the element goes to the merged window
            for sw in session_windows:
                try:
                    merged = self._merge(key, per_key, sw)
                except Exception as exc:  # merge(), on_merge(), clear() of user code: name the record
                    raise UserCodeError(value, exc) from exc
                if merged is not None:
                    skipped = False
                    self._add_to_window(key, per_key, merged, value, ts)
        else:
            for w in windows:
                if not self._is_late_window(w):
                    skipped = False
                    self._add_to_window(key, per_key, w, value, ts)
        if not per_key:
            self.contents.pop(key, None)
        if skipped and (windows or self._is_late_element(ts)):  # (no window: Flink's isElementLate)
            self._held.late.append(value)
            self._held.late_ts.append(ts)

    def _add_to_window(self, key: Any, per_key: dict[Any, Any], w: Window, value: Any, ts: int) -> None:
        """One element into one (not late) window of ``key``: add it to the window's
        contents, ask the trigger, fire/purge, register the window's cleanup."""
        tctx = self.tctx
        try:
            if self.evictor is None:
                per_key[w] = self._add(per_key.get(w, _NONE), value)
            else:  # an evicting window keeps its elements with their timestamps
                elements = per_key.get(w, _NONE)
                if elements is _NONE:
                    per_key[w] = [TimestampedValue(value, ts)]
                else:
                    elements.append(TimestampedValue(value, ts))
                    per_key[w] = elements
            tctx.window = w
            result = self.trigger.on_element(value, ts, w, tctx)
            if result.__class__ is not TriggerResult:
                self._not_a_result("on_element", result)
        except Exception as exc:
            raise UserCodeError(value, exc) from exc
        if result.is_fire or result.is_purge:
            self._apply(key, w, result)
        self._register_cleanup(key, w)

    def _add(self, acc: Any, value: Any) -> Any:
        kind = self.kind
        if kind == LIST:
            if acc is _NONE:
                return [value]
            acc.append(value)
            return acc
        if kind == REDUCE:
            return value if acc is _NONE else self._reduce(acc, value)
        if acc is _NONE:
            acc = self._agg.create_accumulator()
        return self._agg.add(value, acc)

    def _merge_acc(self, a: Any, b: Any) -> Any:
        if self.kind == LIST or self.evictor is not None:
            return a + b
        if self.kind == REDUCE:
            return self._reduce(a, b)
        return self._agg.merge(a, b)

    def _merge(self, key: Any, per_key: dict[Any, Any], w: TimeWindow) -> TimeWindow | None:
        """Merge ``w`` with the key's overlapping session windows; the resulting window,
        or None if ``w`` is late and merges with nothing. (``per_key``: the key's windows,
        all TimeWindows of the merging assigner, and their contents.)"""
        overlapping = [x for x in per_key if x.intersects(w)]
        if not overlapping:
            return None if self._is_late_window(w) else w
        merged = w
        for x in overlapping:
            merged = merged.cover(x)
        if len(overlapping) == 1 and overlapping[0] == merged:
            return merged
        tctx = self.tctx
        acc: Any = _NONE
        old_windows = sorted(overlapping)
        old_states = []
        trig = self.trig
        for x in old_windows:
            part = per_key.pop(x)
            acc = part if acc is _NONE else self._merge_acc(acc, part)
            st = trig.get(key, {}).get(x)
            old_states.append(dict(st) if st else {})
        if acc is not _NONE:
            per_key[merged] = acc
        # Flink's order: the trigger merges the old windows' state into the merged window,
        # then each old window is cleared (its trigger timers, state and cleanup timer).
        # Cleared first, a trigger whose clear() resets its state (CountTrigger) handed
        # on_merge the reset values: the merged window lost the old windows' counts.
        tctx.window = merged
        tctx._merged = old_states
        self.trigger.on_merge(merged, tctx)
        tctx._merged = []
        for x in old_windows:
            tctx.window = x
            self.trigger.clear(x, tctx)
            self._delete_cleanup(key, x)
            trig_key = trig.get(key)
            if trig_key is not None:
                trig_key.pop(x, None)  # what clear() left of the old window's state
                if not trig_key:
                    del trig[key]
        return merged

    # ------------------------------------------------------------------ firing
    def _cleanup_time(self, w: Window) -> int | None:
        t = w.max_timestamp()
        if t >= 2**63 - 1:
            return None  # the global window is never cleaned up
        if self.assigner.is_event_time:
            return t + self.allowed_lateness
        return t

    def _register_cleanup(self, key: Any, w: Window) -> None:
        t = self._cleanup_time(w)
        if t is None:
            return
        if self.assigner.is_event_time:
            self.timers.register_event_time_timer(key, w, t)
        else:
            self.timers.register_processing_time_timer(key, w, t)

    def _delete_cleanup(self, key: Any, w: Window) -> None:
        t = self._cleanup_time(w)
        if t is None:
            return
        if self.assigner.is_event_time:
            self.timers.delete_event_time_timer(key, w, t)
        else:
            self.timers.delete_processing_time_timer(key, w, t)

    def _apply(self, key: Any, w: Window, result: TriggerResult) -> None:
        per_key = self.contents.get(key)
        if per_key is None:
            return
        acc = per_key.get(w, _NONE)
        if acc is _NONE:
            return
        if result.is_fire:
            if self.evictor is None:
                self._emit_window(key, w, acc)
            elif not result.is_purge:  # what the evictor left is the window's contents
                remaining = self._emit_evicting(key, w, acc)
                if remaining:
                    per_key[w] = remaining
                else:
                    del per_key[w]
            else:
                self._emit_evicting(key, w, acc)
        if result.is_purge:
            del per_key[w]  # an emptied key entry is removed by the caller / cleanup

    def _emit_evicting(self, key: Any, w: Window, stored: list[TimestampedValue[Any]]) -> list[TimestampedValue[Any]]:
        """Fire an evicting window: ``evict_before``, the function over the remaining
        elements (reduce / aggregate fold them now), ``evict_after``; returns the elements
        left (Flink's ``EvictingWindowOperator.emitWindowContents``)."""
        evictor = self.evictor
        assert evictor is not None  # (only called for evicting windows)
        if stored and type(stored[0]) is not TimestampedValue:
            raise ConfigError(
                f"window {w!r} of key {key!r} holds {short_repr(stored[0], 60)}, not an element with its timestamp: "
                "its state was restored from a job without this evictor; adding or removing an evictor changes the "
                "window state (as in Flink), so start the job without its old state"
            )
        elements = list(stored)
        size = len(elements)
        self.tctx.key, self.tctx.window = key, w
        self._evict(evictor.evict_before, elements, size, key, w)
        values = [e.value for e in elements]
        kind = self.kind
        acc: Any = values
        if kind == REDUCE:
            if not values:  # all evicted: nothing to emit (Flink hands the function a null)
                acc = _NONE
            else:
                reduce = self._reduce
                acc = values[0]
                try:
                    for v in values[1:]:
                        acc = reduce(acc, v)
                except Exception as exc:
                    raise UserCodeError(v, exc) from exc
        elif kind == AGGREGATE:
            add = self._agg.add
            try:
                acc = self._agg.create_accumulator()
                for v in values:
                    acc = add(v, acc)
            except Exception as exc:
                raise UserCodeError(f"window {w!r} of key {key!r}", exc) from exc
        if acc is not _NONE:
            self._emit_window(key, w, acc)
        self._evict(evictor.evict_after, elements, size, key, w)
        return elements

    def _evict(self, method: Callable[..., Any], elements: list[TimestampedValue[Any]], size: int, key: Any,
               w: Window) -> None:
        """One evictor call, its failure named after the evictor, the window and the key."""
        name = f"{type(self.evictor).__name__}.{getattr(method, '__name__', 'evict')}() of window {w!r} of key {key!r}"
        try:
            result = method(elements, size, w, self.tctx)
        except Exception as exc:
            raise UserCodeError(name, exc) from exc
        if result is not None:
            raise ConfigError(
                f"{name} returned {short_repr(result, 60)}: an evictor removes elements from the list it is given, "
                "in place (del elements[i], elements[:] = [...]), and returns None"
            )
        if any(type(e) is not TimestampedValue for e in elements):
            bad = next(e for e in elements if type(e) is not TimestampedValue)
            raise ConfigError(
                f"{name} left {short_repr(bad, 60)} among the window's elements: an evictor only removes elements "
                "(TimestampedValue objects) from the list"
            )

    def _stamp(self, max_timestamp: int) -> None:
        """The results (and side outputs) emitted since the last stamp are a window's: they
        carry its ``max_timestamp`` (a run of the previous window's when it has the same)."""
        runs = self._held.runs
        if runs and runs[-1][1] == max_timestamp:
            runs[-1] = (len(self._out), max_timestamp)
        else:
            end = len(self._out)
            if end > (runs[-1][0] if runs else 0):
                runs.append((end, max_timestamp))
        if self.wctx._side:
            stamp_side(self.wctx._side, self._held.side_ts, max_timestamp)

    def _emit_window(self, key: Any, w: Window, acc: Any, stamp: bool = True) -> None:
        """Emit window ``w`` of ``key`` (its contents ``acc``); its results carry its
        ``max_timestamp()`` (``stamp`` False: the caller stamps them, a pane's at once)."""
        kind = self.kind
        try:
            if kind == LIST:
                elements = acc
            elif kind == REDUCE:
                elements = [acc]
            else:
                elements = [self._agg.get_result(acc)]
            if self.window_function is None:
                self._out.extend(elements)
            else:
                wctx = self.wctx
                wctx.window = w
                wctx.key = key
                result = self.window_function.process(key, wctx, list(elements))
                if result is not None:
                    if isinstance(result, (dict, str, bytes)) or not hasattr(result, "__iter__"):
                        self._not_records(result)  # (extended, a dict would give its keys as records)
                    start = len(self._out)
                    self._out.extend(result)
                    move_side_outputs(self._out, start, wctx, self.window_function, "process")  # (PyFlink's yield tag, value)
        except Exception as exc:
            raise UserCodeError(f"window {w!r} of key {key!r}", exc) from exc
        if stamp:
            self._stamp(w.max_timestamp())

    def _clear_function(self, key: Any, w: Window) -> None:
        """``window_function.clear(context)``: the window of ``key`` is cleaned up."""
        wctx = self.wctx
        wctx.window, wctx.key = w, key
        try:
            self.window_function.clear(wctx)  # type: ignore[union-attr]  # (_clears: it is set)
        except Exception as exc:
            raise UserCodeError(f"window {w!r} of key {key!r}", exc) from exc

    def _not_records(self, result: Any) -> NoReturn:
        fn = self.window_function
        inner = getattr(fn, "fn", None)  # apply(fn): name the user's function
        name = (getattr(fn, "described", None)
                or (f"apply() function {getattr(inner, '__name__', inner)!r}" if inner is not None and callable(inner)
                    else f"{type(fn).__name__}.process()"))
        raise ConfigError(
            f"{name} returned a {type(result).__name__} ({short_repr(result, 80)}), not an iterable of records: "
            "yield each record, or return a list of them (return [record] for one), or None for none"
        )

    def _not_a_result(self, method: str, result: Any) -> NoReturn:
        raise ConfigError(
            f"{type(self.trigger).__name__}.{method}() returned {result!r}: a Trigger method returns a "
            "TriggerResult (CONTINUE, FIRE, PURGE or FIRE_AND_PURGE)"
        )

    def _on_timer(self, key: Any, w: Window, time: int, event_time: bool) -> None:
        tctx = self.tctx
        tctx.key = key
        tctx.window = w
        method = "on_event_time" if event_time else "on_processing_time"
        try:
            if event_time:
                result = self.trigger.on_event_time(time, w, tctx)
            else:
                result = self.trigger.on_processing_time(time, w, tctx)
            if result.__class__ is not TriggerResult:
                self._not_a_result(method, result)
        except Exception as exc:  # name the trigger call, its window and key (a timer has no record)
            raise UserCodeError(f"{type(self.trigger).__name__}.{method}({time}) of window {w!r} of key {key!r}",
                                exc) from exc
        if result.is_fire or result.is_purge:
            self._apply(key, w, result)
            if not self.contents.get(key, True):
                del self.contents[key]
        if event_time == self.assigner.is_event_time and time == self._cleanup_time(w):
            self._clear_window(key, w)

    def _clear_window(self, key: Any, w: Window) -> None:
        if self._clears:
            self._clear_function(key, w)
        per_key = self.contents.get(key)
        if per_key is not None:
            per_key.pop(w, None)
            if not per_key:
                del self.contents[key]
        tctx = self.tctx
        tctx.key, tctx.window = key, w
        self.trigger.clear(w, tctx)
        trig = self.trig.get(key)
        if trig is not None:
            trig.pop(w, None)
            if not trig:
                del self.trig[key]

    def _on_event_time(self, key: Any, w: Window, time: int) -> None:
        self._on_timer(key, w, time, True)

    def _on_event_time_fast(self, key: Any, w: Window, time: int) -> None:
        """``_on_event_time`` with the default EventTimeTrigger inlined: fire at
        max_timestamp, clear at the cleanup time."""
        mt = w.max_timestamp()
        contents = self.contents
        per_key = contents.get(key)
        if time == mt and per_key:
            acc = per_key.get(w, _NONE)
            if acc is not _NONE:
                if self.kind == REDUCE and self.window_function is None:
                    self._out.append(acc)
                    self._held.runs.append((len(self._out), mt))
                else:
                    self._emit_window(key, w, acc)
        if time == mt + self.allowed_lateness:
            if self._clears:
                self._clear_function(key, w)
            if per_key is not None:
                per_key.pop(w, None)
                if not per_key:
                    del contents[key]
            if self.allowed_lateness:
                self.timers.delete_event_time_timer(key, w, mt)  # EventTimeTrigger.clear
            trig = self.trig.get(key)
            if trig is not None:
                trig.pop(w, None)
                if not trig:
                    del self.trig[key]

    def _on_processing_time(self, key: Any, w: Window, time: int) -> None:
        self._on_timer(key, w, time, False)
        self._flush()

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        self.timers.advance_watermark(watermark.timestamp)
        if self._panes and watermark.timestamp >= self._pane_fire:
            self._fire_panes(watermark.timestamp)
        self._flush()
        self.output.emit_watermark(watermark)

    def _flush(self) -> None:
        if self._out:
            out, self._out = self._out, []
            runs = self._held.runs
            self._held.runs = []
            self.output.emit(Batch.of_records(out, run_stamps(runs, len(out))))  # (every window's results are stamped)
        else:
            self._held.runs = []
        side = self.wctx._side
        side_ts = self._held.side_ts
        self._held.side_ts = {}
        if side:
            self.wctx._side = {}
            emit_side_outputs(self.output, side, side_ts)
        if self._held.late:
            held = self._held
            late, late_ts, held.late, held.late_ts = held.late, held.late_ts, [], []
            if self.late_tag is not None:
                self.output.emit_side(self.late_tag, Batch.stamped(late, late_ts if len(late_ts) == len(late) else None))
            else:
                metrics = self.ctx.metrics
                dropped = metrics.get("num_late_records_dropped", 0)
                metrics["num_late_records_dropped"] = dropped + len(late)
                if not dropped:  # the first drop of this subtask warns (the counter starts at 0)
                    log.warning(
                        "window operator %r dropped %d late record(s), first %r; use "
                        ".side_output_late_data(tag) or allowed_lateness(ms) to keep them",
                        self.ctx.operator_name, len(late), late[0],
                    )

    # ------------------------------------------------------------------ state
    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        if isinstance(self.contents, BackendWindowState):  # off-heap: all in the keyed snapshot
            return {"timers": self.timers.snapshot(), "groups": KeyGroupedState()}
        mp = self.ctx.max_parallelism
        # key group -> (key -> window -> contents, key -> window -> trigger state)
        groups: dict[int, tuple[dict[Any, dict[Window, Any]], dict[Any, dict[Window, dict[str, Any]]]]] = {}
        size = self._tumbling.size if self._panes_mode else 0
        for start, pane in self._panes.items():  # same layout as contents: key -> window -> contents
            w = TimeWindow(start, start + size)
            for key, acc in pane.items():
                groups.setdefault(key_group_for(key, mp), ({}, {}))[0].setdefault(key, {})[w] = acc
        for key, per_key in self.contents.items():
            groups.setdefault(key_group_for(key, mp), ({}, {}))[0][key] = per_key
        for key, trig in self.trig.items():
            groups.setdefault(key_group_for(key, mp), ({}, {}))[1][key] = trig
        return {
            "timers": self.timers.snapshot(),
            "groups": KeyGroupedState({kg: cloudpickle.dumps(v) for kg, v in groups.items()}),
        }

    def restore_state(self, states: list[Any]) -> None:
        self._restored = list(states)

    def num_open_windows(self) -> int:
        """Number of (key, window) pairs with contents (off-heap: a scan of the backend)."""
        contents = self.contents
        if isinstance(contents, BackendWindowState):
            return contents.num_entries()
        return sum(len(v) for v in self.contents.values()) + sum(len(p) for p in self._panes.values())


class _Held:
    """What a window operator holds until its next flush besides its results: the late
    records and their timestamps (their own, which Flink's late side output keeps), and the
    timestamps of the results and side outputs (Flink stamps a window's with the window's
    ``max_timestamp()``): ``runs`` of ``(end in the results, timestamp)``, ``side_ts`` per
    tag. (One attribute of the operator: an instance stays within CPython's 30 shared keys.)"""

    __slots__ = ("late", "late_ts", "runs", "side_ts")

    def __init__(self) -> None:
        self.late: list[Any] = []
        self.late_ts: list[int] = []
        self.runs: list[tuple[int, int]] = []
        self.side_ts: dict[str, list[int]] = {}


def _plain_selector(key_of: Callable[[Any], Any]) -> KeySelector | None:
    """The column/index KeySelector whose ``key_of`` is ``key_of``: its
    :meth:`~engine.partitioners.KeySelector.keys_of_records` takes a batch's keys with one
    C-level ``itemgetter`` pass (made canonical, so that every NaN key is one key)."""
    sel = getattr(key_of, "__self__", None)
    if type(sel) is KeySelector and getattr(key_of, "__func__", None) is KeySelector.key_of and not callable(sel.key):
        return sel
    return None


def _safe(fn: Callable[[Any], Any], r: Any) -> bool:
    try:
        fn(r)
        return True
    except Exception:
        return False


