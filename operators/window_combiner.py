"""Window combiners: pre-aggregation per (key, pane) *before* the ``key_by`` shuffle.

A keyed window aggregate normally ships every record to the subtask of its key, so a hot key
puts all its raw records on one subtask and every record crosses the exchange. A combiner
chained to the upstream operator (Flink's local/two-phase aggregation) folds each batch per
key and *pane* first, and the shuffle carries one partial per (key, pane) and batch; the
keyed window operator merges the partials into its windows. A pane is a slice of
``gcd(size, slide)`` ms: every record of a pane belongs to the same windows (for tumbling
windows the pane is the window), so a pane partial stands for its records in each of them.

* :class:`VectorWindowCombiner`: before
  :class:`~operators.window_fast.VectorWindowAggregateOperator` (the named-spec
  ``aggregate(n=("value", "count"))``, tumbling or sliding): one pyarrow group-by per batch,
  partial rows ``{key, PANE_COLUMN, <accumulators>, EMISSION_COLUMN}`` (the last: the number of
  the call that made them, the same on all its rows).
* :class:`WindowAggregateCombiner`: before :class:`CombinedWindowOperator` (the record API's
  ``aggregate(AggregateFunction)`` over tumbling event-time windows with the default
  trigger, any allowed lateness): ``add()`` per record into one accumulator per (key, window)
  and batch, partial records ``(key, window_start, False, accumulator)``; the keyed operator
  merges them with ``merge()``.

**Same output as without the combiner.** Lateness is decided downstream, against the keyed
operator's watermark, which never passes the combiner's own (the combiner emits its partials
before it forwards a later watermark, and keeps its watermark in its snapshot). So the
combiner pre-aggregates only panes whose every window is still open at *its* watermark (they
are open downstream too: no late drop, no late firing can be involved), and passes the
records of every other pane through unchanged (raw rows; record API: ``(key, timestamp,
True, record)``), which the keyed operator handles record by record as it would without a
combiner: late records to the side output, firings within the allowed lateness per record.

**Exactly once.** Nothing is buffered: every batch is folded and emitted before the next
input, so nothing is pending when a barrier passes. The combiner snapshots only the largest
watermark it forwarded, as a :class:`~checkpoint.operator_state.DroppableState`: a job
restored without the combiner (``combine=False``) drops it without
``allow_non_restored_state``, and rescaling restores like any other parallelism change (the
node is in the graph at every parallelism, passing batches through at 1, and keeps its
watermark there too). Restored, it is the maximum over the old subtasks.

**When its watermark bounds the keyed operator's.** In a fresh job the keyed operator's
watermark starts where the combiner's does. The keyed operator's watermark is the smallest
over its inputs of what the combiners forwarded, so at a checkpoint it is at or below the
largest watermark any combiner forwarded: a restored combiner starts there (the maximum of
its old subtasks' snapshots), at or above the keyed operator's restored watermark, also when
a source subtask was idle at the checkpoint (the keyed operator's watermark had followed the
other subtasks' past the idle one's, and the restored stream's watermarks start below it).
Restored from a snapshot of an older release without its watermark, it passes every record
through unchanged until the first watermark of its run. A combiner whose input went idle (a
watermark strategy ``with_idleness``) passes every record through for the rest of its run:
while it was idle the keyed operator's watermark followed the other subtasks' and may be
anywhere past the combiner's. (Before 2026-12-07 a subtask that resumed after idling, with
records of windows that had closed meanwhile, failed the job with "a pre-aggregated partial
... arrived after every window of its pane closed" instead of giving them to the late side
output; and a restore of a checkpoint taken while a source subtask was idle started the
combiners at the restored stream's watermark, below the keyed operator's, with that error at
every restart: tests/event_time/test_probe_backlog_combiner_idle_restore.py.)

Example:
    >>> from raystream.operators.windows import TumblingEventTimeWindows
    >>> from raystream.operators.testing import OperatorHarness
    >>> import pyarrow as pa
    >>> h = OperatorHarness(VectorWindowCombiner("k", "ts", TumblingEventTimeWindows.of(10),
    ...                                          {"n": ("v", "count")}))
    >>> h.process(pa.RecordBatch.from_pydict({"k": ["a", "a", "b"], "v": [1, 2, 3], "ts": [1, 2, 13]}))
    >>> sorted(h.table().to_pylist(), key=str)  # doctest: +NORMALIZE_WHITESPACE
    [{'k': 'a', '__raystream_pane': 0, 'v_count': 2, '__raystream_emission': 1},
     {'k': 'b', '__raystream_pane': 10, 'v_count': 1, '__raystream_emission': 1}]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pyarrow as pa

from raystream.checkpoint.descriptors import AggregateFunction
from raystream.checkpoint.operator_state import DroppableState
from raystream.engine.errors import ConfigError, GraphError, RaystreamError, UserCodeError
from raystream.engine.events import MIN_WATERMARK, Watermark
from raystream.engine.keygroups import canonical_keys
from raystream.engine.operator import OperatorContext, Output, StreamOperator
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch

from .arrow_aggregate import group_aggregate
from .time import TimestampAssigner, timestamp_column
from .window_fast import (
    EMISSION_COLUMN,
    PANE_COLUMN,
    base_aggregations,
    canonical_nan_keys,
    carried_timestamps,
)
from .window_operator import AGGREGATE, WindowOperator
from .windows import (
    ProcessWindowFunction,
    SlidingEventTimeWindows,
    TimeWindow,
    TumblingEventTimeWindows,
)

if TYPE_CHECKING:
    from ._stream_base import UnstampedAfterWindow

__all__ = ["CombinedWindowOperator", "VectorWindowCombiner", "WindowAggregateCombiner", "first_window_ends"]

_MISSING: Any = object()


def _stamped_arrow(rb: pa.RecordBatch, stamps: np.ndarray | None) -> Batch:
    """``rb`` as a batch carrying its rows' event timestamps ``stamps`` (None: none)."""
    out = Batch.of_arrow(rb)
    out.timestamps = stamps
    return out


def _without(rb: pa.RecordBatch, ts: np.ndarray, drop: np.ndarray) -> tuple[pa.RecordBatch, np.ndarray]:
    """``rb`` and its timestamps ``ts`` without the rows of mask ``drop``."""
    if not drop.any():
        return rb, ts
    keep = ~drop
    return rb.filter(pa.array(keep)), ts[keep]


def first_window_ends(panes: np.ndarray, size: int, slide: int, offset: int) -> np.ndarray:
    """The end of the *earliest* window containing each pane start (aligned to
    ``gcd(size, slide)`` past ``offset``); a pane is still fully open at watermark ``wm`` iff
    ``end - 1 > wm``.

    Example:
        >>> first_window_ends(np.array([0, 500, 1500]), 2000, 500, 0).tolist()
        [500, 1000, 2000]
    """
    lo = panes - size + 1
    return lo + (offset - lo) % slide + size


class _WatermarkState:
    """The combiner's watermark: the largest it forwarded. ``known`` from the start of a fresh
    job (the keyed operator starts at the same minimum) and after a restore of its snapshot
    (the maximum over the old subtasks), else once one came (until then every record passes
    through unchanged: the keyed operator's watermark is a restored one)."""

    watermark: int = MIN_WATERMARK
    known: bool = False
    #: the combiner's input went idle once in this run: from then on it cannot bound the
    #: keyed operator's watermark, which moved on without it (by any amount)
    went_idle: bool = False

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)  # type: ignore[misc]
        if not ctx.restored:
            self.known = True

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        self.known = not self.went_idle
        if watermark.timestamp > self.watermark:
            self.watermark = watermark.timestamp
        self.output.emit_watermark(watermark)  # type: ignore[attr-defined]

    def process_watermark_status(self, idle: bool, input_index: int = 0) -> None:
        """The stream became idle (or active again): passed on. While it is idle the keyed
        operator's watermark follows the other subtasks' and may pass this combiner's by any
        amount (an active-again channel counts only once it caught up), so from the first
        idleness on every record passes through unchanged, for the keyed operator to judge."""
        if idle:
            self.went_idle, self.known = True, False
        emit_status = getattr(self.output, "emit_watermark_status", None)  # type: ignore[attr-defined]
        if emit_status is not None:
            emit_status(idle)

    def snapshot_state(self, checkpoint_id: int) -> DroppableState:
        """The largest watermark forwarded, droppable: a job restored without this combiner
        (``combine=False``) loses nothing."""
        return DroppableState({"watermark": self.watermark})

    def restore_state(self, states: list[Any]) -> None:
        """The largest watermark any old subtask forwarded (older releases: none, or a plain
        dict): the keyed operator's restored one is at or below it."""
        for st in states:
            if isinstance(st, DroppableState):
                st = st.value
            if isinstance(st, dict) and "watermark" in st:
                self.known = True
                self.watermark = max(self.watermark, st["watermark"])


class VectorWindowCombiner(_WatermarkState, StreamOperator):
    """Per batch: ``group_by(key, pane)`` of the window aggregate's accumulators (count, sum,
    min, max; mean as sum and count), emitted as one partial Arrow batch; rows of panes that
    may be late downstream are emitted unchanged. Chained before the shuffle; its only state
    is its watermark.

    Args:
        key_column: the key column; ts_column: the event-time column (int64 ms).
        assigner: the window aggregate's tumbling or sliding event-time windows.
        aggregations: ``{output: (column, fn)}`` as for the keyed operator.
        passing: every batch passes through unchanged: ``aggregate(..., combine=None)`` at
            parallelism 1, where every record stays in its subtask and a combiner does not pay.
            The node is in the graph either way, so a job without ``uid()``s has the same
            operator ids at every parallelism and its savepoints rescale between 1 and more
            (before 2026-12-07 the node existed only above parallelism 1: the window's automatic
            uid, and every later operator's, differed, and the restore was refused).
    """

    def __init__(self, key_column: str, ts_column: str, assigner: TumblingEventTimeWindows | SlidingEventTimeWindows,
                 aggregations: dict[str, tuple[str, str]], passing: bool = False, carried: bool = True,
                 unstamped: UnstampedAfterWindow | None = None) -> None:
        if not isinstance(assigner, (TumblingEventTimeWindows, SlidingEventTimeWindows)) or not assigner.is_event_time:
            raise GraphError(f"a window combiner needs tumbling or sliding event-time windows, got {assigner!r}")
        self.key_column = key_column
        self.ts_column = ts_column
        #: the timestamps records carry come first (False: ``with_timestamp(column)``, which wins)
        self.carried = carried
        #: downstream of a window (operators._stream_base.UnstampedAfterWindow): a record without
        #: a timestamp is refused, its time column is a field of a window's result
        self.unstamped = unstamped
        self.size = assigner.size
        self.slide = getattr(assigner, "slide", assigner.size)
        self.offset = assigner.offset
        self.pane = math.gcd(self.size, self.slide)
        self.base = base_aggregations(aggregations)
        self.acc_names = [f"{c}_{f}" for c, f in self.base]
        self.passing = passing
        #: partial batches emitted in this run (each call's number, in EMISSION_COLUMN)
        self.emissions = 0

    def _first_end(self, pane: int) -> int:
        lo = pane - self.size + 1
        return lo + (self.offset - lo) % self.slide + self.size

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        if self.passing:
            self.output.emit(batch)
            return
        # (the records' own timestamps, Flink's StreamRecord timestamps, before the time column)
        carried = carried_timestamps(batch, self.carried, self.unstamped)
        fields = (self.key_column, *(() if carried is not None else (self.ts_column,)), *(c for c, _ in self.base))
        rb = batch.typed_columns("window aggregate (local)", fields)
        if not rb.num_rows:
            return
        names = rb.schema.names
        for c in fields:
            if c not in names:
                raise GraphError(f"window aggregate: column {c!r} is not in the batch (columns: {names})")
        if not self.known:  # the keyed operator judges every record until a watermark came
            self.output.emit(_stamped_arrow(rb, carried))
            return
        ts = carried if carried is not None else timestamp_column(rb, self.ts_column, "window aggregate (local)")
        if self.size < self.slide:  # rows between two windows are in none
            gap = ts - (ts - self.offset) % self.slide <= ts - self.size
            if gap.any():  # late ones go on for the keyed operator to judge, the rest are in no window
                rb, ts = _without(rb, ts, gap & (ts > self.watermark))
                if not rb.num_rows:
                    return
        panes = ts - (ts - self.offset) % self.pane
        raw = None
        # the first window's end grows with the pane: only a batch whose oldest pane may have
        # a closed window needs the per-row test
        if self._first_end(int(panes.min())) - 1 <= self.watermark:
            raw = first_window_ends(panes, self.size, self.slide, self.offset) - 1 <= self.watermark
        if self.size < self.slide:
            gap = ts - (ts - self.offset) % self.slide <= ts - self.size
            if gap.any():
                raw = gap if raw is None else raw | gap
        if raw is not None and raw.any():  # maybe late downstream: the keyed operator judges these itself
            self.output.emit(_stamped_arrow(rb.filter(pa.array(raw)), ts[raw] if carried is not None else None))
            keep = pa.array(~raw)
            rb = rb.filter(keep)
            panes = panes[~raw]
            if not rb.num_rows:
                return
        cols: dict[str, pa.Array | pa.ChunkedArray] = {self.key_column: canonical_nan_keys(rb.column(self.key_column))}
        for c, _ in self.base:
            cols[c] = rb.column(c)
        cols[PANE_COLUMN] = pa.array(panes, pa.int64())
        grouped = group_aggregate(pa.table(cols), [self.key_column, PANE_COLUMN], self.base, "window aggregate (local)")
        grouped = grouped.select([self.key_column, PANE_COLUMN, *self.acc_names])
        # this call's number on every row: its rows are one per (key, pane), so a window whose
        # rows of a received batch all carry one number needs no merge (see window_fast)
        self.emissions += 1
        grouped = grouped.append_column(EMISSION_COLUMN, pa.array(np.full(grouped.num_rows, self.emissions, np.int64)))
        for out in grouped.to_batches():
            self.output.emit(Batch.of_arrow(out))


class WindowAggregateCombiner(_WatermarkState, StreamOperator):
    """Per batch: ``add()`` every record into one accumulator per (key, window) (tumbling
    event-time windows), emitted as records ``(key, window_start, False, accumulator)``;
    records of windows that may have fired downstream go out as ``(key, timestamp, True,
    record)``. Chained before the shuffle (the edge after it is keyed by field 0);
    stateless but for its watermark."""

    def __init__(self, key_selector: KeySelector, assigner: TumblingEventTimeWindows,
                 aggregate_function: AggregateFunction[Any, Any, Any], timestamp_assigner: TimestampAssigner) -> None:
        if type(assigner) is not TumblingEventTimeWindows:
            raise GraphError(f"the window aggregate combiner needs tumbling event-time windows, got {assigner!r}")
        self.key_selector = key_selector
        self.size = assigner.size
        self.offset = assigner.offset
        self.agg = aggregate_function
        self.timestamp_assigner = timestamp_assigner

    def _keys(self, batch: Batch, records: list[Any]) -> list[Any]:
        sel = self.key_selector
        try:
            # from the records already made (as the keyed window operator takes them), not from
            # the key column converted a second time: the same keys (canonical, with the
            # column's type: NaNs one key), one Python object per key instead of two (the
            # benchmark's string keys: 5,842 -> 5,746 instructions an event, cachegrind)
            return sel.keys_of_records(records, batch)
        except Exception as exc:
            key_of = sel.key_of
            for r in records:
                try:
                    key_of(r)
                except Exception as bad:  # noqa: BLE001 - the record to name
                    raise UserCodeError(r, bad) from bad
            raise UserCodeError(None, exc) from exc

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        records = batch.records()
        n = len(records)
        if not n:
            return
        ts = batch.timestamps
        own = self.timestamp_assigner.origin is None  # (with_timestamp: the window's own assigner wins)
        if ts is None or len(ts) != n or own:
            ts = self.timestamp_assigner.timestamps(batch)
        keys = self._keys(batch, records)
        size = self.size
        starts = ts - (ts - self.offset) % size
        out: list[tuple[Any, int, bool, Any]] = []
        if not self.known:  # the keyed operator judges every record until a watermark came
            raw: np.ndarray | None = np.ones(n, dtype=bool)
        elif int(starts.min()) + size - 1 <= self.watermark:
            raw = starts + (size - 1) <= self.watermark
        else:
            raw = None
        if raw is not None and raw.any():
            idx = np.flatnonzero(raw).tolist()
            stamps = ts.tolist()
            out.extend((keys[i], stamps[i], True, records[i]) for i in idx)
        fold = np.flatnonzero(~raw) if out and raw is not None else None
        steps = np.diff(starts if fold is None else starts[fold])
        if fold is None and not (steps < 0).any():  # in timestamp order: contiguous runs per window
            bounds = [0, *(np.flatnonzero(steps) + 1).tolist(), n]
            for lo, hi in zip(bounds, bounds[1:]):
                self._fold(int(starts[lo]), keys[lo:hi], records[lo:hi], out)
        else:
            rows = np.arange(n) if fold is None else fold
            for s in np.unique(starts[rows]).tolist():
                idx = rows[starts[rows] == s].tolist()
                self._fold(s, [keys[i] for i in idx], [records[i] for i in idx], out)
        self.output.emit(Batch.of_records(out))

    def _fold(self, start: int, keys: list[Any], records: list[Any], out: list[tuple[Any, int, bool, Any]]) -> None:
        create, add = self.agg.create_accumulator, self.agg.add
        accs: dict[Any, Any] = {}
        get = accs.get
        r = None
        try:
            for k, r in zip(keys, records):
                acc = get(k, _MISSING)
                accs[k] = add(r, create() if acc is _MISSING else acc)
        except Exception as exc:
            raise UserCodeError(r, exc) from exc
        out.extend((k, start, False, acc) for k, acc in accs.items())


class CombinedWindowOperator(WindowOperator):
    """The keyed half of a combined ``aggregate(AggregateFunction)`` window: a
    :class:`~operators.window_operator.WindowOperator` whose input is the
    :class:`WindowAggregateCombiner`'s records. Partials are merged into their (key, window)
    with ``merge()``; passed-through records take the record path (lateness, side output,
    firings within the allowed lateness). Snapshots as the plain operator does."""

    def __init__(self, key_of: Callable[[Any], Any], assigner: TumblingEventTimeWindows,
                 aggregate_function: AggregateFunction[Any, Any, Any],
                 window_function: ProcessWindowFunction | None = None, allowed_lateness: int = 0,
                 late_tag: str | None = None, timestamp_assigner: TimestampAssigner | None = None) -> None:
        super().__init__(key_of, assigner, AGGREGATE, aggregate_function, window_function, None, allowed_lateness,
                         late_tag, timestamp_assigner)
        if not self._fast_tumbling:
            raise ConfigError(f"a combined window aggregate needs tumbling event-time windows, got {assigner!r}")

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        items = batch.records()
        lo = 0
        n = len(items)
        while lo < n:  # runs of partials and of passed-through records, in arrival order
            kind = items[lo][2]
            hi = lo + 1
            while hi < n and items[hi][2] is kind:
                hi += 1
            if kind:
                raw = Batch.of_records([it[3] for it in items[lo:hi]])
                raw.timestamps = np.fromiter((it[1] for it in items[lo:hi]), dtype=np.int64, count=hi - lo)
                super().process_batch(raw, input_index)
            else:
                self._merge_partials(items[lo:hi])
            lo = hi

    def _merge_partials(self, partials: list[tuple[Any, int, bool, Any]]) -> None:
        size = self._tumbling.size
        wm = self.timers.watermark
        merge = self._agg.merge
        # (a partial that crossed a channel as Arrow carries a new float object for every NaN
        # key: canonical, one key, as the combiner folded it and as raw records are keyed)
        keys = canonical_keys([p[0] for p in partials])
        lo, n = 0, len(partials)
        while lo < n:  # runs of one window (the combiner emits a window's partials together)
            start = partials[lo][1]
            hi = lo + 1
            while hi < n and partials[hi][1] == start:
                hi += 1
            if start + size - 1 <= wm:
                raise RaystreamError(
                    f"window operator {self.ctx.operator_name!r}: a pre-aggregated partial of key "
                    f"{partials[lo][0]!r} arrived after its window [{start}, {start + size}) fired (watermark "
                    f"{wm}); the combiner before the shuffle must run with this operator (restoring a "
                    "savepoint taken without it? then use aggregate(..., combine=False))"
                )
            key: Any = None
            try:
                if self._panes_mode:
                    pane = self._panes.get(start)
                    if pane is None:
                        pane = self._panes[start] = {}
                        if start + size - 1 < self._pane_fire:
                            self._pane_fire = start + size - 1
                    get = pane.get
                    for key, (_k, _s, _raw, acc) in zip(keys[lo:hi], partials[lo:hi]):
                        cur = get(key, _MISSING)
                        pane[key] = acc if cur is _MISSING else merge(cur, acc)
                else:
                    w = TimeWindow(start, start + size)
                    contents = self.contents
                    for key, (_k, _s, _raw, acc) in zip(keys[lo:hi], partials[lo:hi]):
                        per_key = contents.get(key)
                        if per_key is None:
                            per_key = contents[key] = {}
                        cur = per_key.get(w, _MISSING)
                        if cur is _MISSING:
                            per_key[w] = acc
                            self.timers.register_event_time_timer(key, w, w.max_timestamp())  # as EventTimeTrigger
                            self._register_cleanup(key, w)
                        else:
                            per_key[w] = merge(cur, acc)
            except Exception as exc:
                raise UserCodeError(f"merge() of a partial of key {key!r}, window start {start}", exc) from exc
            lo = hi
