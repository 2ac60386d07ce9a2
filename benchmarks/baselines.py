"""Reference implementations (``python`` and ``arrow`` baselines) of the standard workloads.

Every contender, baseline or engine, is a plain function ``fn(parquet_path) -> result``.

Timed region (the same rule for every contender): **reading the Parquet file is inside it.**
A streaming engine has to read and decode the same file, so a baseline that starts from
rows already in memory would get that work for free. Concretely:

* ``python`` reads 8192-row batches with ``pyarrow.parquet.ParquetFile.iter_batches``,
  turns each into dict rows with ``RecordBatch.to_pylist()`` and runs the hand-written loop;
  the decode to dicts is part of what a record-at-a-time user pays.
* ``arrow`` reads the same 8192-row batches and processes them vectorized, carrying state
  from batch to batch (no whole-file operations).

Both read all three columns (no projection pushdown), as the engine's source does.

Workloads and their output rows (column order used for digests, :data:`OUTPUT_COLUMNS`):

* ``stateless``: filter ``value % 2 == 0``, map ``value * 3``, then count and sum:
  one row ``(count, sum)``.
* ``keyed_sum``: running sum of ``value`` per key, final sum per key: ``(key, sum)``.
* ``window``: tumbling event-time windows of 1 s, count per key per window:
  ``(key, window_start, count)``. Watermark = max ``ts`` seen so far. A window
  ``[s, s + 1000)`` closes (is emitted) as soon as the watermark reaches ``s + 1000``, i.e.
  once an event at or after its end has been seen; all open windows close at end of input.
  An event whose window has already closed is late and dropped (none are, for the in-order
  data set). Note the deliberate ``>= end`` rather than Flink's ``>= end - 1``: with 10
  events per millisecond, closing at ``end - 1`` would drop 9 events per window.

:func:`digest` normalises any result form (Arrow table/batches, dict rows, tuples) to sorted
tuples and hashes them, so every contender can be checked against the reference.

Example:
    >>> from benchmarks import datagen
    >>> batches = list(datagen.iter_batches(20_000, 8192))
    >>> py = python_window_batches(batches)
    >>> ar = arrow_window_batches(batches)
    >>> digest("window", py) == digest("window", ar)
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "WORKLOADS",
    "OUTPUT_COLUMNS",
    "WINDOW_MS",
    "BATCH_SIZE",
    "read_batches",
    "canonical_rows",
    "digest",
    "python_stateless",
    "python_keyed_sum",
    "python_window",
    "arrow_stateless",
    "arrow_keyed_sum",
    "arrow_window",
    "python_stateless_batches",
    "python_keyed_sum_batches",
    "python_window_batches",
    "arrow_stateless_batches",
    "arrow_keyed_sum_batches",
    "arrow_window_batches",
    "BASELINES",
]

WORKLOADS = ("stateless", "keyed_sum", "window")
OUTPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "stateless": ("count", "sum"),
    "keyed_sum": ("key", "sum"),
    "window": ("key", "window_start", "count"),
}
WINDOW_MS = 1000
BATCH_SIZE = 8192
_NO_WATERMARK = -(2**63)

Row = tuple[Any, ...]


def read_batches(path: str, batch_size: int = BATCH_SIZE) -> Iterator[pa.RecordBatch]:
    """Stream ``path`` as RecordBatches of ``batch_size`` rows (all columns)."""
    return pq.ParquetFile(path).iter_batches(batch_size=batch_size)


# --------------------------------------------------------------------------- digests


def canonical_rows(workload: str, result: Any) -> list[Row]:
    """Return ``result`` as a sorted list of plain tuples in :data:`OUTPUT_COLUMNS` order.

    Accepted forms: a ``pyarrow.Table`` or ``RecordBatch`` (or a list of them) with the
    output column names; a sequence of dicts with those names; a sequence of tuples in
    column order; for ``stateless`` also a single ``(count, sum)`` tuple or dict.
    """
    try:
        cols = OUTPUT_COLUMNS[workload]
    except KeyError:
        raise ValueError(f"unknown workload {workload!r}; expected one of {WORKLOADS!r}") from None
    if isinstance(result, (pa.Table, pa.RecordBatch)):
        result = [result]
    if isinstance(result, Mapping):
        result = [result]
    if workload == "stateless" and isinstance(result, tuple) and len(result) == 2:
        result = [result]
    rows = list(result)
    if rows and isinstance(rows[0], (pa.Table, pa.RecordBatch)):
        out: list[Row] = []
        for part in rows:
            missing = [c for c in cols if c not in part.schema.names]
            if missing:
                raise ValueError(
                    f"{workload!r} result is missing columns {missing!r}; has {part.schema.names!r}"
                )
            out.extend(zip(*(part.column(c).to_pylist() for c in cols), strict=True))
        rows = out
    elif rows and isinstance(rows[0], Mapping):
        rows = [tuple(r[c] for c in cols) for r in rows]
    else:
        rows = [tuple(r) for r in rows]
    for r in rows[:1]:
        if len(r) != len(cols):
            raise ValueError(f"{workload!r} rows must have columns {cols!r}, got {r!r}")
    rows.sort()
    return rows


def digest(workload: str, result: Any) -> str:
    """Return the sha256 (hex) of the sorted, tab-separated output rows of ``result``."""
    h = hashlib.sha256()
    rows = canonical_rows(workload, result)
    h.update(f"{workload}\t{len(rows)}\n".encode())
    h.update("".join("\t".join(map(str, r)) + "\n" for r in rows).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- python baseline
# Plain loops over dict rows, as a user writes them by hand.


def python_stateless_batches(batches: Iterable[pa.RecordBatch]) -> list[Row]:
    """Filter even values, map ``* 3``, count and sum, one dict row at a time."""
    count = 0
    total = 0
    for batch in batches:
        for row in batch.to_pylist():
            if row["value"] % 2 == 0:
                mapped = row["value"] * 3
                count += 1
                total += mapped
    return [(count, total)]


def python_keyed_sum_batches(batches: Iterable[pa.RecordBatch]) -> list[Row]:
    """Running sum of ``value`` per key in a dict; the final sums."""
    sums: dict[str, int] = {}
    for batch in batches:
        for row in batch.to_pylist():
            key = row["key"]
            sums[key] = sums.get(key, 0) + row["value"]
    return list(sums.items())


def python_window_batches(
    batches: Iterable[pa.RecordBatch], out: list[Row] | None = None
) -> list[Row]:
    """Count per key per tumbling 1 s event-time window, emitting each window when it closes.

    Closed windows are appended to ``out`` (a new list by default) as they close.
    """
    out = [] if out is None else out
    windows: dict[int, dict[str, int]] = {}  # window start -> key -> count
    watermark = _NO_WATERMARK
    next_end = 2**63 - 1  # earliest end among open windows
    late = 0

    def fire(wm: int) -> int:
        for start in sorted(s for s in windows if s + WINDOW_MS <= wm):
            for key, n in windows.pop(start).items():
                out.append((key, start, n))
        return min(windows, default=2**63 - 1 - WINDOW_MS) + WINDOW_MS

    for batch in batches:
        for row in batch.to_pylist():
            ts = row["ts"]
            start = ts - ts % WINDOW_MS
            if start + WINDOW_MS <= watermark:
                late += 1
                continue
            counts = windows.get(start)
            if counts is None:
                counts = windows[start] = {}
                next_end = min(next_end, start + WINDOW_MS)
            key = row["key"]
            counts[key] = counts.get(key, 0) + 1
            if ts > watermark:
                watermark = ts
                if watermark >= next_end:
                    next_end = fire(watermark)
    fire(2**63 - 1)  # end of input: the final watermark closes everything
    return out


# --------------------------------------------------------------------------- arrow baseline
# The same jobs vectorized per 8192-row batch, state carried between batches.

_COMPACT_EVERY = 32  # partial aggregates kept before they are merged


def arrow_stateless_batches(batches: Iterable[pa.RecordBatch]) -> list[Row]:
    """Filter/map/count/sum with numpy on each batch's value column."""
    count = 0
    total = 0
    for batch in batches:
        v = batch.column("value").to_numpy()
        mapped = v[(v & 1) == 0] * 3
        count += len(mapped)
        total += int(mapped.sum())
    return [(count, total)]


def _sum_by(table: pa.Table, keys: list[str], col: str, out: str) -> pa.Table:
    """``group_by(keys).sum(col)`` with the result columns named ``[*keys, out]``."""
    t = table.group_by(keys, use_threads=False).aggregate([(col, "sum")])
    return t.select([*keys, f"{col}_sum"]).rename_columns([*keys, out])


def arrow_keyed_sum_batches(batches: Iterable[pa.RecordBatch]) -> pa.Table:
    """Per batch ``group_by(key).sum(value)``; partial sums are merged every few batches."""
    parts: list[pa.Table] = []
    for batch in batches:
        parts.append(_sum_by(pa.Table.from_batches([batch]), ["key"], "value", "sum"))
        if len(parts) >= _COMPACT_EVERY:
            parts = [_sum_by(pa.concat_tables(parts), ["key"], "sum", "sum")]
    if not parts:
        return pa.table({"key": pa.array([], pa.string()), "sum": pa.array([], pa.int64())})
    return _sum_by(pa.concat_tables(parts), ["key"], "sum", "sum")


def arrow_window_batches(
    batches: Iterable[pa.RecordBatch], out: list[pa.Table] | None = None
) -> pa.Table:
    """Per batch ``group_by(key, window_start).count``; windows merged and emitted when closed.

    Each firing appends a table of closed windows to ``out`` (a new list by default).
    """
    out = [] if out is None else out
    pending: list[pa.Table] = []  # partial counts of open windows
    watermark = _NO_WATERMARK
    next_end = 2**63 - 1

    def fire(wm: int) -> int:
        merged = _sum_by(pa.concat_tables(pending), ["key", "window_start"], "count", "count")
        ws = merged.column("window_start").to_numpy()
        closed = ws + WINDOW_MS <= wm
        pending.clear()
        if closed.all():
            out.append(merged)
            return 2**63 - 1
        out.append(merged.filter(pa.array(closed)))
        rest = merged.filter(pa.array(~closed))
        pending.append(rest)
        return int(rest.column("window_start").to_numpy().min()) + WINDOW_MS

    for batch in batches:
        ts = batch.column("ts").to_numpy()
        if len(ts) == 0:
            continue
        starts = ts - ts % WINDOW_MS
        # Per-record watermark before each event: late if its window already closed.
        seen = np.maximum.accumulate(ts)
        before = np.empty_like(ts)
        before[0] = watermark
        before[1:] = np.maximum(seen[:-1], watermark)
        keep = starts + WINDOW_MS > before
        keys = batch.column("key")
        if not keep.all():
            mask = pa.array(keep)
            keys = keys.filter(mask)
            starts = starts[keep]
        if len(starts):
            part = pa.table({"key": keys, "window_start": starts}).group_by(
                ["key", "window_start"], use_threads=False
            )
            part = part.aggregate([([], "count_all")]).rename_columns(
                ["key", "window_start", "count"]
            )
            pending.append(part)
            next_end = min(next_end, int(starts.min()) + WINDOW_MS)
        watermark = max(watermark, int(seen[-1]))
        if watermark >= next_end:
            next_end = fire(watermark)
        elif len(pending) >= _COMPACT_EVERY:
            next_end = fire(watermark)
    if pending:
        fire(2**63 - 1)
    if not out:
        return pa.table(
            {
                "key": pa.array([], pa.string()),
                "window_start": pa.array([], pa.int64()),
                "count": pa.array([], pa.int64()),
            }
        )
    return pa.concat_tables(out)


# --------------------------------------------------------------------------- path wrappers


def _from_path(fn: Callable[[Iterable[pa.RecordBatch]], Any]) -> Callable[[str], Any]:
    def run(path: str) -> Any:
        return fn(read_batches(path, BATCH_SIZE))

    run.__name__ = fn.__name__.removesuffix("_batches")
    run.__qualname__ = run.__name__
    run.__doc__ = f"{fn.__doc__} Reads ``path`` in {BATCH_SIZE}-row batches."
    return run


python_stateless = _from_path(python_stateless_batches)
python_keyed_sum = _from_path(python_keyed_sum_batches)
python_window = _from_path(python_window_batches)
arrow_stateless = _from_path(arrow_stateless_batches)
arrow_keyed_sum = _from_path(arrow_keyed_sum_batches)
arrow_window = _from_path(arrow_window_batches)

#: workload -> baseline name -> ``fn(parquet_path) -> result``; "python" is the reference.
BASELINES: dict[str, dict[str, Callable[[str], Any]]] = {
    "stateless": {"python": python_stateless, "arrow": arrow_stateless},
    "keyed_sum": {"python": python_keyed_sum, "arrow": arrow_keyed_sum},
    "window": {"python": python_window, "arrow": arrow_window},
}
