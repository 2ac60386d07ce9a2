"""Joins on event time: interval join and window join / co-group.

* ``a.key_by(k1).interval_join(b.key_by(k2)).between(lower, upper).process(fn)`` joins
  ``l`` with every ``r`` of the same key with ``l.ts + lower <= r.ts <= l.ts + upper``.
  Buffered records are dropped by event-time timers once no future partner can arrive.
* ``a.join(b).where(k1).equal_to(k2).window(assigner).apply(fn)`` joins the pairs of each
  window; ``a.co_group(b)...apply(fn(key, lefts, rights))`` sees both sides' lists.

Example:
    >>> # bids.key_by("auction").interval_join(auctions.key_by("id")).between(-10_000, 0)
    >>> #     .process(lambda bid, auction: {**bid, "seller": auction["seller"]})
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any, Callable, Iterable

import cloudpickle

from engine.errors import GraphError, UserCodeError
from engine.events import Watermark
from engine.keygroups import key_group_for
from engine.operator import StreamOperator
from engine.partitioners import KeyGroupPartitioner, KeySelector
from engine.records import Batch

from .connected import TwoInputWatermarks, add_two_input
from .functions import tag_name
from .timers import InternalTimerService
from .window_operator import LIST, WindowOperator
from .windows import ProcessWindowFunction, WindowAssigner

if TYPE_CHECKING:
    from .datastream import DataStream, KeyedStream

__all__ = ["ProcessJoinFunction", "IntervalJoinOperator", "IntervalJoin", "JoinedStreams", "CoGroupWindowOperator"]


class ProcessJoinFunction:
    """Called for each joined pair: ``process_element(left, right, ctx)`` yields results
    (``ctx.left_timestamp``, ``ctx.right_timestamp``, ``ctx.key``)."""

    def process_element(self, left: Any, right: Any, ctx: Any) -> Iterable[Any] | None:
        raise NotImplementedError(f"{type(self).__name__}.process_element")


class _JoinCtx:
    __slots__ = ("key", "left_timestamp", "right_timestamp")

    key: Any
    left_timestamp: int
    right_timestamp: int


class IntervalJoinOperator(StreamOperator):
    """Keyed interval join of input 0 (left) and input 1 (right); see the module docstring.

    Late records (timestamp <= the current watermark) go to ``late_tag`` if set, else are
    counted in ``ctx.metrics["num_late_records_dropped"]``.
    """

    keyed = True

    def __init__(self, selectors: tuple[KeySelector, KeySelector], assigners: tuple[Any, Any],
                 lower: int, upper: int, fn: Any, late_tag: str | None = None) -> None:
        if lower > upper:
            raise GraphError(f"interval_join: lower bound {lower!r} must be <= upper bound {upper!r}")
        self.selectors = selectors
        self.assigners = assigners
        self.lower, self.upper = lower, upper
        self.fn = fn
        self.late_tag = late_tag
        self.buffers: dict[Any, tuple[list, list]] = {}  # key -> ([(ts, rec)], [(ts, rec)])
        self.wms = TwoInputWatermarks()
        self._restored: list = []

    def open(self, ctx: Any, output: Any) -> None:
        super().open(ctx, output)
        self.timers = InternalTimerService(ctx.max_parallelism, self._cleanup, lambda *a: None, None, ctx.clock)
        for st in self._restored:
            for kg, blob in (st or {}).get("groups", {}).items():
                if kg in ctx.key_group_range:
                    self.buffers.update(pickle.loads(blob))
            if st:
                self.wms.current = max(self.wms.current, st.get("watermark", self.wms.current))
                self.timers.watermark = self.wms.current
        self.timers.restore([s.get("timers") for s in self._restored if s], ctx.key_group_range)
        self._restored = []
        self.jctx = _JoinCtx()
        ctx.metrics.setdefault("num_late_records_dropped", 0)

    def _join(self, left: tuple, right: tuple, key: Any, out: list) -> None:
        fn = self.fn
        if isinstance(fn, ProcessJoinFunction):
            c = self.jctx
            c.key, c.left_timestamp, c.right_timestamp = key, left[0], right[0]
            res = fn.process_element(left[1], right[1], c)
            if res is not None:
                out.extend(res)
        else:
            v = fn(left[1], right[1])
            if v is not None:
                out.append(v)

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        records = batch.records()
        key_of = self.selectors[input_index].key_of
        stamps = self.assigners[input_index].timestamps(batch).tolist()
        wm = self.wms.current
        lo, hi = self.lower, self.upper
        out: list = []
        late: list = []
        for r, ts in zip(records, stamps):
            if ts <= wm:
                late.append(r)
                continue
            try:
                key = key_of(r)
                bufs = self.buffers.get(key)
                if bufs is None:
                    bufs = self.buffers[key] = ([], [])
                me = (ts, r)
                if input_index == 0:
                    for other in bufs[1]:
                        if ts + lo <= other[0] <= ts + hi:
                            self._join(me, other, key, out)
                    cleanup = ts + hi
                else:
                    for other in bufs[0]:
                        if other[0] + lo <= ts <= other[0] + hi:
                            self._join(other, me, key, out)
                    cleanup = ts - lo
            except Exception as exc:
                raise UserCodeError(r, exc) from exc
            if cleanup > wm:
                bufs[input_index].append(me)
                self.timers.register_event_time_timer(key, input_index, cleanup)
        if out:
            self.output.emit(Batch.of_records(out))
        if late:
            if self.late_tag is not None:
                self.output.emit_side(self.late_tag, Batch.of_records(late))
            else:
                self.ctx.metrics["num_late_records_dropped"] += len(late)

    def _cleanup(self, key: Any, side: int, time: int) -> None:
        bufs = self.buffers.get(key)
        if bufs is None:
            return
        lo, hi = self.lower, self.upper
        limit = (lambda ts: ts + hi) if side == 0 else (lambda ts: ts - lo)
        bufs[side][:] = [e for e in bufs[side] if limit(e[0]) > time]
        if not bufs[0] and not bufs[1]:
            del self.buffers[key]

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        wm = self.wms.update(watermark.timestamp, input_index)
        if wm is not None:
            self.timers.advance_watermark(wm)
            self.output.emit_watermark(Watermark(wm))

    def snapshot_state(self, checkpoint_id: int) -> Any:
        groups: dict[int, dict] = {}
        for key, bufs in self.buffers.items():
            groups.setdefault(key_group_for(key, self.ctx.max_parallelism), {})[key] = bufs
        return {"groups": {kg: cloudpickle.dumps(v) for kg, v in groups.items()},
                "timers": self.timers.snapshot(), "watermark": self.wms.current}

    def restore_state(self, states: list[Any]) -> None:
        self._restored = list(states)


class IntervalJoin:
    """``left.interval_join(right)``: set the bounds with :meth:`between`, then :meth:`process`."""

    def __init__(self, left: "KeyedStream", right: "KeyedStream") -> None:
        self.left, self.right = left, right
        self.bounds: tuple[int, int] | None = None
        self._late_tag: str | None = None

    def between(self, lower_ms: int, upper_ms: int) -> "IntervalJoin":
        """Join ``l`` with ``r`` when ``l.ts + lower_ms <= r.ts <= l.ts + upper_ms``."""
        if lower_ms > upper_ms:
            raise GraphError(f"between({lower_ms!r}, {upper_ms!r}): lower bound must be <= upper bound")
        self.bounds = (lower_ms, upper_ms)
        return self

    def side_output_late_data(self, tag: Any) -> "IntervalJoin":
        """Send late records of either side to side output ``tag``."""
        self._late_tag = tag_name(tag)
        return self

    def process(self, fn: Callable[[Any, Any], Any] | ProcessJoinFunction) -> "DataStream":
        """``fn(left, right) -> record`` (None skips) or a :class:`ProcessJoinFunction`."""
        from .windowed_stream import find_timestamp_assigner

        if self.bounds is None:
            raise GraphError("interval_join(...) needs .between(lower_ms, upper_ms) before process()")
        if not (callable(fn) or isinstance(fn, ProcessJoinFunction)):
            raise GraphError(f"interval_join process() expects a function or ProcessJoinFunction, got {fn!r}")
        ts = (find_timestamp_assigner(self.left.node), find_timestamp_assigner(self.right.node))
        if ts[0] is None or ts[1] is None:
            raise GraphError("interval_join needs event timestamps on both inputs: assign_timestamps_and_watermarks(...) upstream")
        sels = (self.left.selector, self.right.selector)
        lo, hi = self.bounds
        tag = self._late_tag
        IntervalJoinOperator(sels, ts, lo, hi, fn, tag)
        return add_two_input(self.left, self.right, "interval_join",
                             lambda: IntervalJoinOperator(sels, ts, lo, hi, fn, tag), True,
                             (KeyGroupPartitioner(sels[0]), KeyGroupPartitioner(sels[1])))


class CoGroupWindowOperator(WindowOperator):
    """A window operator over two inputs: stores ``(input_index, record)`` and hands both
    sides of a window to a co-group function."""

    def __init__(self, selectors: tuple[KeySelector, KeySelector], assigners: tuple[Any, Any],
                 assigner: WindowAssigner, function: ProcessWindowFunction, trigger: Any = None,
                 allowed_lateness: int = 0, late_tag: str | None = None) -> None:
        super().__init__(lambda v: v, assigner, LIST, None, function, trigger, allowed_lateness, late_tag, None)
        self.selectors = selectors
        self.side_assigners = assigners
        self.wms = TwoInputWatermarks()

    def _elements(self, batch: Batch, input_index: int) -> tuple[list, list, list | None]:
        records = batch.records()
        key_of = self.selectors[input_index].key_of
        try:
            keys = [key_of(r) for r in records]
        except Exception as exc:
            raise UserCodeError(records[0] if records else None, exc) from exc
        stamps = None
        if self.assigner.is_event_time:
            stamps = self.side_assigners[input_index].timestamps(batch).tolist()
        return [(input_index, r) for r in records], keys, stamps

    def _pane_elements(self, batch: Batch, input_index: int) -> tuple[list, list, Any, int, int]:
        values, keys, stamps = self._elements(batch, input_index)
        assert stamps is not None  # pane mode is event time only
        return values, keys, stamps, min(stamps), max(stamps)

    def _flush(self) -> None:
        if self._late:
            self._late = [v[1] for v in self._late]
        super()._flush()

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        wm = self.wms.update(watermark.timestamp, input_index)
        if wm is not None:
            super().process_watermark(Watermark(wm), 0)


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
        out = []
        for left in lefts:
            for right in rights:
                v = join(left, right)  # type: ignore[misc]
                if v is not None:
                    out.append(v)
        return out


class JoinedStreams:
    """``a.join(b)`` / ``a.co_group(b)``: ``.where(k1).equal_to(k2).window(assigner).apply(fn)``."""

    def __init__(self, first: "DataStream", second: "DataStream", co_group: bool = False) -> None:
        self.first, self.second, self.co_group = first, second, co_group
        self.k1: KeySelector | None = None
        self.k2: KeySelector | None = None
        self.assigner: WindowAssigner | None = None
        self._trigger: Any = None
        self._lateness = 0

    def where(self, key: Any) -> "JoinedStreams":
        """Key of the first stream."""
        self.k1 = KeySelector(key)
        return self

    def equal_to(self, key: Any) -> "JoinedStreams":
        """Key of the second stream."""
        self.k2 = KeySelector(key)
        return self

    def window(self, assigner: WindowAssigner) -> "JoinedStreams":
        """The windows in which records are joined."""
        if not isinstance(assigner, WindowAssigner):
            raise GraphError(f"window() expects a WindowAssigner, got {assigner!r}")
        self.assigner = assigner
        return self

    def trigger(self, trigger: Any) -> "JoinedStreams":
        """A custom trigger."""
        self._trigger = trigger
        return self

    def allowed_lateness(self, ms: int) -> "JoinedStreams":
        """Allowed lateness of the windows."""
        self._lateness = ms
        return self

    def apply(self, fn: Callable[..., Any]) -> "DataStream":
        """join: ``fn(left, right) -> record`` per pair (None skips); co_group:
        ``fn(key, lefts, rights) -> iterable``."""
        from .windowed_stream import find_timestamp_assigner

        if self.k1 is None or self.k2 is None or self.assigner is None:
            raise GraphError("join/co_group needs .where(key1).equal_to(key2).window(assigner) before apply()")
        if not callable(fn):
            raise GraphError(f"apply() expects a function, got {fn!r}")
        ts = (find_timestamp_assigner(self.first.node), find_timestamp_assigner(self.second.node))
        if self.assigner.is_event_time and (ts[0] is None or ts[1] is None):
            raise GraphError("an event-time window join needs timestamps on both inputs: assign_timestamps_and_watermarks(...)")
        sels = (self.k1, self.k2)
        assigner, trig, lateness = self.assigner, self._trigger, self._lateness
        function = _CoGroup(fn, None) if self.co_group else _CoGroup(None, fn)
        name = "window_co_group" if self.co_group else "window_join"
        return add_two_input(self.first, self.second, name,
                             lambda: CoGroupWindowOperator(sels, ts, assigner, function, trig, lateness), True,
                             (KeyGroupPartitioner(sels[0]), KeyGroupPartitioner(sels[1])))
