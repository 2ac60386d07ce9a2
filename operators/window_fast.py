"""The vectorized window fast path: count/sum/min/max/mean per key per tumbling or sliding
event-time window, computed on Arrow columns with pyarrow's hash group-by.

Each batch is grouped by ``(key, window_start)`` into a small partial table, kept per window
(one list of ``{key, <accumulators>}`` tables per window start, each table with one row per
key); a window's partials are merged (``group_by`` again: sums of sums, sums of counts, min
of mins, max of maxes) once, when the watermark closes it, or earlier when enough piled up.
Open windows are never merged again at a firing. A window ``[s, s + size)``
is emitted once the watermark reaches ``s + size - 1`` as one Arrow batch of rows
``{key, window_start, window_end, <aggregates>}``. Records whose windows have all closed
(judged against the watermark before the batch) are late: they go to the side output.

Used by ``keyed.window(Tumbling/SlidingEventTimeWindows...).aggregate(n=("value", "count"))``
when the key and the timestamps are columns and the default trigger is used with no
allowed lateness; other cases run the record-API :class:`WindowOperator` with the same output.

With a combiner before the shuffle (:class:`~operators.window_combiner.VectorWindowCombiner`,
the default) the operator also reads **partial batches**: rows ``{key, PANE_COLUMN,
<accumulators>}`` already grouped per key and pane (a pane is a slice of ``gcd(size, slide)``
ms; for tumbling windows, the window itself). Each pane row goes into every window that
contains the pane, exactly as the pane's raw records would. A window is merged at its firing
only when its partials may hold a key twice: when they came in more than one table, or in
one batch from more than one combiner call (each call's rows, one per key and pane, carry
its number in ``EMISSION_COLUMN``; a channel may coalesce several calls' batches into one).
"""

from __future__ import annotations

import logging
import pickle
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raystream.engine.errors import ConfigError, GraphError, RaystreamError
from raystream.engine.events import MIN_WATERMARK, Watermark
from raystream.engine.keygroups import key_groups_of_array
from raystream.engine.operator import KeyGroupedState, OperatorContext, Output, StreamOperator
from raystream.engine.records import Batch

from .arrow_aggregate import group_aggregate
from .time import timestamp_column
from .windows import SlidingEventTimeWindows, TumblingEventTimeWindows

if TYPE_CHECKING:
    from ._stream_base import UnstampedAfterWindow

__all__ = ["EMISSION_COLUMN", "PANE_COLUMN", "VectorWindowAggregateOperator", "WINDOW_AGGREGATIONS", "assign_windows", "base_aggregations",
           "canonical_nan_keys"]

log = logging.getLogger(__name__)

WINDOW_AGGREGATIONS = ("count", "sum", "min", "max", "mean")
_MERGE = {"sum": "sum", "count": "sum", "min": "min", "max": "max"}
_COMPACT_EVERY = 32
#: the pane start column of a combiner's partial batch (its presence marks a partial batch)
PANE_COLUMN = "__raystream_pane"
#: the number of the combiner call that made a partial row (the same on all its rows, which
#: are one per key and pane): rows of one window in a batch that share it need no merge
EMISSION_COLUMN = "__raystream_emission"


def canonical_nan_keys(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A float key column with every NaN the canonical one (``float("nan")``'s bits): Arrow's
    group-by tells NaNs apart by their bits (``nan``, ``-nan``, other payloads), but every
    NaN is one key (``engine.keygroups.canonical_key``, as in Flink). Any other column, or a
    float column without NaN, is returned as it is.

    Example:
        >>> import struct
        >>> neg = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000000))[0]
        >>> col = canonical_nan_keys(pa.array([float("nan"), neg, 1.0]))
        >>> len(set(struct.pack("<d", x) for x in col.to_pylist()[:2]))
        1
    """
    if not pa.types.is_floating(col.type) or not pc.any(pc.is_nan(col)).as_py():
        return col
    return pc.if_else(pc.is_nan(col), pa.scalar(float("nan"), col.type), col)


def carried_timestamps(batch: Batch, use: bool, unstamped: UnstampedAfterWindow | None) -> np.ndarray | None:
    """The event timestamps ``batch``'s records carry, for a vectorized window that reads them
    (``use``) before its time column; None when they carry none, which is a ConfigError naming
    the first record where a window upstream means they must (``unstamped``: an
    :class:`~operators._stream_base.UnstampedAfterWindow`)."""
    carried = batch.timestamps if use else None
    if carried is not None and len(carried) != len(batch):
        carried = None
    if carried is None and unstamped is not None and len(batch):
        raise unstamped.refusal(batch.records()[0])
    return carried


def base_aggregations(aggregations: dict[str, tuple[str, str]]) -> list[tuple[str, str]]:
    """The accumulated ``(column, fn)`` pairs behind ``aggregations`` (``mean`` is kept as
    sum and count), each once, in first-use order; accumulator ``i`` is named
    ``f"{column}_{fn}"``."""
    base: list[tuple[str, str]] = []
    for col, fn in aggregations.values():
        for b in (("sum", "count") if fn == "mean" else (fn,)):
            if (col, b) not in base:
                base.append((col, b))
    return base


def assign_windows(ts: np.ndarray, size: int, slide: int, offset: int,
                   watermark: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Windows of timestamps ``ts`` that the watermark has not closed.

    Returns ``(starts, rows, late)``: one window start per (row, open window) pair, the row
    of each (None: row ``i`` for start ``i``, every row in exactly one window), and a mask of
    rows whose windows are all closed (late). A window ``[s, s + size)`` is closed once
    ``watermark >= s + size - 1``. With ``slide > size`` a row between two windows is in
    none: it is late if the watermark has passed its timestamp, else dropped (as Flink's
    window operator treats an element no window took).
    """
    last = ts - (ts - offset) % slide
    k = -(-size // slide)
    if k == 1:
        open_ = last + (size - 1) > watermark
        if size < slide:  # gaps between the windows
            inside = last > ts - size
            keep = inside & open_
            late = ~keep & (inside | (ts <= watermark))
        else:
            keep = open_
            late = ~keep
        if keep.all():
            return last, None, late
        rows = np.flatnonzero(keep)
        return last[rows], rows, late
    cand = last[None, :] - (np.arange(k, dtype=np.int64) * slide)[:, None]  # (k, n)
    valid = (cand > ts[None, :] - size) & (cand + (size - 1) > watermark)
    j, rows = np.nonzero(valid)
    return cand[j, rows], rows, ~valid.any(axis=0)


class VectorWindowAggregateOperator(StreamOperator):
    """Vectorized keyed window aggregates (see the module docstring).

    Args:
        key_column: the key column; ts_column: the event-time column (int64 ms).
        assigner: a TumblingEventTimeWindows or SlidingEventTimeWindows.
        aggregations: ``{output: (column, "count"|"sum"|"min"|"max"|"mean")}``.
        late_tag: side output for late records (None: count them in the metrics).
    """

    keyed = True

    def __init__(self, key_column: str, ts_column: str, assigner: TumblingEventTimeWindows | SlidingEventTimeWindows,
                 aggregations: dict[str, tuple[str, str]], late_tag: str | None = None, carried: bool = True,
                 unstamped: UnstampedAfterWindow | None = None) -> None:
        if not isinstance(assigner, (TumblingEventTimeWindows, SlidingEventTimeWindows)) or not assigner.is_event_time:
            raise GraphError(f"the vectorized window path needs tumbling or sliding event-time windows, got {assigner!r}")
        for out, spec in aggregations.items():
            if not (isinstance(spec, tuple) and len(spec) == 2 and spec[1] in WINDOW_AGGREGATIONS):
                raise ConfigError(f"window aggregation {out!r}: expected (column, one of {WINDOW_AGGREGATIONS}), got {spec!r}")
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
        self.aggregations = dict(aggregations)
        self.late_tag = late_tag
        base = base_aggregations(aggregations)
        self.base = base
        self.acc_names = [f"{c}_{f}" for c, f in base]
        #: window start -> partial tables {key, <accumulators>} (each one row per key, but
        #: for the windows in ``_repeats``)
        self.windows: dict[int, list[pa.Table]] = {}
        #: windows a table of which may hold a key twice: a combiner's partials are one row
        #: per key and pane for each of its calls, and one send may carry the partials of
        #: several calls (a task calls its chain on slices of a batch of large records; the
        #: sends of a channel coalesce consecutive batches)
        self._repeats: set[int] = set()
        self.watermark = MIN_WATERMARK
        self._restored: list[Any] = []
        self.late_dropped = 0

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        for st in self._restored:
            if not st:
                continue
            self.watermark = max(self.watermark, st.get("watermark", MIN_WATERMARK))
            for kg, blob in st.get("groups", {}).items():
                if kg in ctx.key_group_range:
                    t = pickle.loads(blob)  # {key, window_start, <accumulators>}, one row per key and window
                    self._add_pending(t, t.column("window_start").to_numpy())
        self._restored = []

    # ------------------------------------------------------------------ input
    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        if PANE_COLUMN in batch.arrow().schema.names:  # a combiner's partials
            self._process_partials(batch.typed_columns("window aggregate"))
            return
        # (the fields it reads: a record without one fails naming it, at any parallelism and
        # batch cut, instead of being counted as a null where its batch held other shapes);
        # the timestamps the records carry (Flink's StreamRecord timestamps: an upstream
        # window's max_timestamp(), a map's input's) before the time column
        carried = carried_timestamps(batch, self.carried, self.unstamped)
        fields = (self.key_column, *(() if carried is not None else (self.ts_column,)), *(c for c, _ in self.base))
        rb = batch.typed_columns("window aggregate", fields)
        n = rb.num_rows
        if not n:
            return
        names = rb.schema.names
        for c in fields:
            if c not in names:
                raise GraphError(f"window aggregate: column {c!r} is not in the batch (columns: {names})")
        ts = carried if carried is not None else timestamp_column(rb, self.ts_column, "window aggregate")
        starts, idx, row_late = assign_windows(ts, self.size, self.slide, self.offset, self.watermark)
        if row_late.any():
            self._late(rb.filter(pa.array(row_late)), ts[row_late] if carried is not None else None)
        if starts.size == 0:
            return
        cols: dict[str, pa.Array | pa.ChunkedArray] = {}
        take = pa.array(idx) if idx is not None else None
        for c in dict.fromkeys([self.key_column, *(c for c, _ in self.base)]):
            col = rb.column(c)
            cols[c] = col if take is None else col.take(take)
        cols[self.key_column] = canonical_nan_keys(cols[self.key_column])  # (one group per NaN key)
        cols["window_start"] = pa.array(starts, pa.int64())
        part = group_aggregate(pa.table(cols), [self.key_column, "window_start"], self.base, "window aggregate")
        self._add_pending(part, part.column("window_start").to_numpy())

    def _process_partials(self, rb: pa.RecordBatch) -> None:
        """A combiner's partial batch: each pane row goes into the open windows containing
        the pane (merged with the other partials at compaction or firing). The combiner only
        pre-aggregates panes none of whose windows its own watermark has closed, and this
        operator's watermark never passes the combiner's, so no pane row can be late here."""
        panes = rb.column(PANE_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        starts, idx, row_late = assign_windows(panes, self.size, self.slide, self.offset, self.watermark)
        if row_late.any():
            first = rb.filter(pa.array(row_late)).slice(0, 1).to_pylist()
            raise RaystreamError(
                f"window aggregate {self.ctx.operator_name!r}: a pre-aggregated partial {first!r} arrived "
                f"after every window of its pane closed (watermark {self.watermark}); the combiner "
                "before the shuffle must run with this operator (restoring a savepoint taken without "
                "it? then use aggregate(..., combine=False))"
            )
        if starts.size == 0:
            return
        take = pa.array(idx) if idx is not None else None
        cols: dict[str, pa.Array | pa.ChunkedArray] = {}
        for c in (self.key_column, *self.acc_names):
            col = rb.column(c)
            cols[c] = col if take is None else col.take(take)
        cols[self.key_column] = canonical_nan_keys(cols[self.key_column])  # (a combiner's are already)
        cols["window_start"] = pa.array(starts, pa.int64())
        part = pa.table(cols)
        if self.slide != self.size:  # several panes of a key fall into one window: merge them
            specs = [(name, _MERGE[f]) for name, (_c, f) in zip(self.acc_names, self.base)]
            part = group_aggregate(part, [self.key_column, "window_start"], specs, "window aggregate").select(
                [self.key_column, "window_start", *(f"{n}_{m}" for n, m in specs)]).rename_columns(
                [self.key_column, "window_start", *self.acc_names])
            starts = part.column("window_start").to_numpy()
            self._add_pending(part, starts)
            return
        emissions = None
        if EMISSION_COLUMN in rb.schema.names:
            emissions = rb.column(EMISSION_COLUMN).to_numpy(zero_copy_only=False)
            if idx is not None:
                emissions = emissions[idx]
        self._add_pending(part, starts, unique=False, emissions=emissions)

    def _add_pending(self, part: pa.Table, starts: np.ndarray, unique: bool = True,
                     emissions: np.ndarray | None = None) -> None:
        """File the rows of ``part`` (``{key, window_start, <accumulators>}``, at most one row
        per key and window unless not ``unique``; ``starts`` is its window_start column) under
        their windows until they are fired; a window holding many partials is merged.
        ``emissions`` (with ``unique`` False): the combiner call of each row; a window whose
        rows here all come from one call holds each key once."""
        if not len(starts):
            return
        steps = np.diff(starts)
        if (steps < 0).any():  # not grouped by window: bring each window's rows together
            order = np.argsort(starts, kind="stable")
            starts = starts[order]
            part = part.take(pa.array(order))
            steps = np.diff(starts)
            if emissions is not None:
                emissions = emissions[order]
        part = part.select([self.key_column, *self.acc_names])
        bounds = [0, *(np.flatnonzero(steps) + 1).tolist(), len(starts)]
        windows = self.windows
        repeats = self._repeats
        for lo, hi in zip(bounds, bounds[1:]):
            start = int(starts[lo])
            tables = windows.get(start)
            piece = part.slice(lo, hi - lo) if hi - lo < len(starts) else part
            if not unique and (emissions is None or emissions[lo] != emissions[hi - 1]
                               or (hi - lo > 2 and (emissions[lo:hi] != emissions[lo]).any())):
                repeats.add(start)
            if tables is None:
                windows[start] = [piece]
            else:
                tables.append(piece)
                if len(tables) >= _COMPACT_EVERY:
                    windows[start] = [self._merge(tables)]
                    repeats.discard(start)

    def _late(self, late: pa.RecordBatch, stamps: np.ndarray | None = None) -> None:
        if self.late_tag is not None:
            out = Batch.of_arrow(late)
            out.timestamps = stamps  # (their own timestamps, if they carried them)
            self.output.emit_side(self.late_tag, out)
            return
        if not self.late_dropped:
            log.warning("window aggregate %r dropped late records (first %r); use side_output_late_data(tag)",
                        self.ctx.operator_name, late.slice(0, 1).to_pylist())
        self.late_dropped += late.num_rows
        self.ctx.metrics["num_late_records_dropped"] = self.late_dropped

    def _merge(self, tables: list[pa.Table], repeats: bool = False) -> pa.Table:
        """One table ``{key, <accumulators>}`` with one row per key from partials of one window
        (``repeats``: a single table may hold a key twice)."""
        if len(tables) == 1 and not repeats:
            return tables[0]
        specs = [(name, _MERGE[f]) for name, (_c, f) in zip(self.acc_names, self.base)]
        g = group_aggregate(pa.concat_tables(tables, promote_options="default"), self.key_column, specs, "window aggregate")
        return g.select([self.key_column, *(f"{n}_{m}" for n, m in specs)]).rename_columns(
            [self.key_column, *self.acc_names])

    def _with_starts(self, starts: list[int]) -> pa.Table:
        """The merged rows ``{key, window_start, <accumulators>}`` of the windows ``starts``
        (each window merged, the merged table kept as its only partial)."""
        merged = []
        repeats = self._repeats
        for s in starts:
            t = self._merge(self.windows[s], s in repeats)
            self.windows[s] = [t]
            repeats.discard(s)
            merged.append(t)
        return self._stacked(starts, merged)

    def _take_merged(self, starts: list[int]) -> pa.Table:
        """Remove the windows ``starts`` (ascending) and return their merged rows ``{key,
        window_start, <accumulators>}`` as one single-chunk table (one output batch per
        firing, not one per window: fewer, larger sends and collected batches)."""
        windows = self.windows
        repeats = self._repeats
        merged = []
        for s in starts:
            merged.append(self._merge(windows.pop(s), s in repeats))
            repeats.discard(s)
        return self._stacked(starts, merged)

    def _stacked(self, starts: list[int], merged: list[pa.Table]) -> pa.Table:
        """The per-window tables ``merged`` ({key, <accumulators>}) one after the other, with
        their window's start as a ``window_start`` column (built once for all of them: the
        per-window cost is paid by every subtask, so at p=2 twice per window)."""
        t = pa.concat_tables(merged, promote_options="default").combine_chunks() if len(merged) > 1 else merged[0]
        rows = [m.num_rows for m in merged]
        column = pa.array(np.repeat(np.asarray(starts, dtype=np.int64), rows), pa.int64())
        t = t.append_column("window_start", column)
        return t.select([self.key_column, "window_start", *self.acc_names])

    # ------------------------------------------------------------------ firing
    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        wm = watermark.timestamp
        if wm > self.watermark:
            self.watermark = wm
        last = wm - (self.size - 1)  # windows starting at or before this one close
        closed = sorted(s for s in self.windows if s <= last) if self.windows else ()
        if closed:
            self._emit(self._take_merged(closed))
        self.output.emit_watermark(watermark)

    def _emit(self, t: pa.Table) -> None:
        if not t.num_rows:
            return
        ws = t.column("window_start")
        cols: dict[str, pa.Array | pa.ChunkedArray] = {
            self.key_column: t.column(self.key_column),
            "window_start": ws,
            "window_end": pc.add(ws, self.size),
        }
        for out, (c, f) in self.aggregations.items():
            if f == "mean":
                cols[out] = pc.divide(pc.cast(t.column(f"{c}_sum"), pa.float64()), t.column(f"{c}_count"))
            else:
                cols[out] = t.column(f"{c}_{f}")
        table = pa.table(cols)
        # Flink stamps a window's results with the window's max_timestamp() (end - 1)
        stamps = ws.to_numpy().astype(np.int64, copy=False) + (self.size - 1)
        start = 0
        for rb in table.to_batches():
            results = Batch.of_arrow(rb)
            results.timestamps = stamps[start:start + rb.num_rows]
            start += rb.num_rows
            self.output.emit(results)

    # ------------------------------------------------------------------ state
    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        groups = KeyGroupedState()  # key group -> its (key, window) rows, pickled
        if self.windows:
            merged = self._with_starts(sorted(self.windows))
            kgs = key_groups_of_array(merged.column(self.key_column), self.ctx.max_parallelism)
            order = np.argsort(kgs, kind="stable")
            sorted_kgs = kgs[order]
            t = merged.take(pa.array(order))
            bounds = np.flatnonzero(np.diff(sorted_kgs)) + 1
            starts = np.concatenate(([0], bounds))
            ends = np.concatenate((bounds, [len(order)]))
            for s, e in zip(starts.tolist(), ends.tolist()):
                groups[int(sorted_kgs[s])] = pickle.dumps(t.slice(s, e - s), protocol=5)
        return {"watermark": self.watermark, "groups": groups}

    def restore_state(self, states: list[Any]) -> None:
        self._restored = list(states)

    def num_open_windows(self) -> int:
        """Number of open (key, window) pairs."""
        return sum(self._merge(tables, s in self._repeats).num_rows for s, tables in self.windows.items())
