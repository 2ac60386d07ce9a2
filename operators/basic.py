"""Core operators without a key: map, flat_map, filter, process (record API) and map_batches (batch API)."""

from __future__ import annotations

from itertools import compress, islice
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from raystream.engine.channels import row_bytes
from raystream.engine.errors import ConfigError, UserCodeError
from raystream.engine.events import MIN_WATERMARK, Watermark
from raystream.engine.operator import Clock, OperatorContext, Output, StreamOperator
from raystream.engine.records import Batch

from .functions import (
    NOT_RECORDS,
    ProcessContext,
    ProcessFunction,
    RuntimeContext,
    add_results,
    flink_hint,
    not_records,
)
from .time import TimestampAssigner
from .timers import NonKeyedTimerService

__all__ = ["MapOperator", "FlatMapOperator", "FilterOperator", "ProcessOperator", "MapBatchesOperator", "to_arrow_batch",
           "stamp_side", "emit_side_outputs", "run_stamps", "result_stamps"]


def _failed_record(records: list[Any], it: Any, exc: Exception) -> UserCodeError:
    """The record ``fn`` raised on: ``map``/``filter`` pulled it from ``it`` just before the
    exception, so it is the one before what is left (fn is not run again: its side effects
    happen once)."""
    index = len(records) - it.__length_hint__() - 1
    return UserCodeError(records[index] if 0 <= index < len(records) else "<unknown record>", exc)


def stamp_side(side: dict[str, list[Any]], side_ts: dict[str, list[int]], stamp: int) -> None:
    """Give the side-output values a record added (``ctx.output(tag, value)``: those in
    ``side`` beyond the stamps in ``side_ts``) that record's timestamp ``stamp``."""
    for tag, values in side.items():
        st = side_ts.get(tag)
        if st is None:
            st = side_ts[tag] = []
        if len(values) > len(st):
            st.extend([stamp] * (len(values) - len(st)))


def run_stamps(runs: list[tuple[int, int]], n: int) -> np.ndarray | None:
    """The timestamps of ``n`` records held in ``(end, timestamp)`` runs (the records up to
    ``end``, from the previous run's, carry ``timestamp``), or None unless the runs cover
    exactly the ``n`` records.

    Example:
        >>> run_stamps([(2, 9), (3, 4)], 3).tolist(), run_stamps([(2, 9)], 3)
        ([9, 9, 4], None)
    """
    if not runs or runs[-1][0] != n:
        return None
    ends = np.fromiter((e for e, _t in runs), dtype=np.int64, count=len(runs))
    values = np.fromiter((t for _e, t in runs), dtype=np.int64, count=len(runs))
    lengths = np.diff(ends, prepend=np.int64(0)).astype(np.int64)
    return np.repeat(values, lengths)


def record_stamps(batch: Batch, n: int, assigner: TimestampAssigner | None) -> tuple[np.ndarray | None, list[int] | None]:
    """``(carried, stamps)``: the timestamps of the ``n`` records of ``batch`` a process
    function's ``ctx.timestamp`` takes, as a list (``stamps``): those the records carry
    (Flink's StreamRecord timestamps, also returned as the array ``carried``), else what
    ``assigner`` reads from them (``carried`` None), else None (records without timestamps).

    Example:
        >>> carried, stamps = record_stamps(Batch.stamped(["a", "b"], [5, 6]), 2, None)
        >>> stamps, record_stamps(Batch.of_records(["a"]), 1, None)
        ([5, 6], (None, None))
    """
    carried = batch.timestamps
    if carried is not None and len(carried) == n:
        return carried, carried.tolist()
    return None, (None if assigner is None else assigner.timestamps_list(batch))


def result_stamps(stamps: np.ndarray, ends: list[int], start: int = 0) -> np.ndarray:
    """The timestamps of a batch's results: ``ends[i]`` is the count of results after record
    ``i`` (of timestamp ``stamps[i]``; counted from ``start``), each result carries its
    record's timestamp. When every record gave exactly one result, ``stamps`` itself (no copy).

    Example:
        >>> result_stamps(np.array([5, 6, 7]), [2, 2, 3]).tolist(), result_stamps(np.array([5, 6]), [1, 2]).tolist()
        ([5, 5, 7], [5, 6])
    """
    n = len(ends)
    if n and ends[-1] - start == n and ends[0] - start == 1:  # (maybe one each: compared as lists, not
        one_each = _ONE_EACH[0]  # converted to numpy, in the common case)
        if len(one_each) != n or one_each[0] != start + 1:
            one_each = _ONE_EACH[0] = list(range(start + 1, start + n + 1))
        if ends == one_each:
            return stamps
    counts: np.ndarray = np.diff(np.fromiter(ends, dtype=np.int64, count=n), prepend=np.int64(start))
    return np.repeat(stamps, counts)


#: the ``ends`` of the last batch whose records gave one result each (see result_stamps)
_ONE_EACH: list[list[int]] = [[]]


def emit_side_outputs(output: Output, side: dict[str, list[Any]], side_ts: dict[str, list[int]] | None) -> None:
    """Emit each side output's values, with their records' timestamps when ``side_ts`` has
    them (Flink's side outputs keep the timestamp of the record that made them)."""
    for tag, values in side.items():
        stamps = side_ts.get(tag) if side_ts is not None else None
        output.emit_side(tag, Batch.stamped(values, stamps if stamps is not None and len(stamps) == len(values) else None))


class MapOperator(StreamOperator):
    """Applies ``fn`` to every record."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        records = batch.records()
        it = iter(records)
        try:
            out = list(map(self.fn, it))
        except Exception as exc:
            raise _failed_record(records, it, exc) from exc
        self.output.emit(Batch.of_records(out, batch.timestamps))  # (each result keeps its record's timestamp)


class FilterOperator(StreamOperator):
    """Keeps the records for which ``fn`` returns true."""

    def __init__(self, fn: Callable[[Any], bool]) -> None:
        self.fn = fn

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        records = batch.records()
        stamps = batch.timestamps
        it = iter(records)
        if stamps is not None:  # the records kept keep their event timestamps
            try:
                keep = np.fromiter(map(bool, map(self.fn, it)), dtype=np.bool_, count=len(records))
            except Exception as exc:
                raise _failed_record(records, it, exc) from exc
            self.output.emit(Batch.of_records(list(compress(records, keep.tolist())), stamps[keep]))
            return
        try:
            out = list(filter(self.fn, it))
        except Exception as exc:
            raise _failed_record(records, it, exc) from exc
        self.output.emit(Batch.of_records(out))


class FlatMapOperator(StreamOperator):
    """Emits every element of the iterable ``fn`` returns for each record (None: nothing).
    ``fn`` returning one record (a dict, str or bytes: iterating it would give its keys or
    characters) or no iterable fails naming the function and the record.

    The output goes out in pieces of about ``buffer_bytes`` (the rows of a piece follow the
    size of the records of the piece before), also from within one record's results when
    ``fn`` returns a generator or another iterator: one record that fans out into millions
    holds about one piece in memory, and back-pressure applies between the pieces (Flink's
    ``Collector`` emits each record as it comes). A list or tuple ``fn`` returns is already
    whole; it goes out with the rest of the batch's output, in pieces too.
    """

    #: rows of the first piece, before any record size is known
    FIRST_PIECE_ROWS = 64
    #: the most rows of a piece, however small the records
    MAX_PIECE_ROWS = 1 << 16

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self._piece = self.FIRST_PIECE_ROWS

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        if batch.timestamps is not None:
            self._process_stamped(batch, batch.timestamps)
            return
        out: list[Any] = []
        fn = self.fn
        for r in batch.records():
            try:
                result = fn(r)
            except Exception as exc:
                raise UserCodeError(r, exc) from exc
            if result is None:
                continue
            if type(result) is list or type(result) is tuple:
                out.extend(result)
            else:  # a generator (or any iterable): taken a piece at a time
                items = self._iterated(r, result)
                while True:
                    room = self._piece - len(out)
                    try:
                        taken = list(islice(items, room))
                    except Exception as exc:
                        raise UserCodeError(r, exc) from exc
                    out.extend(taken)
                    if len(taken) < room:
                        break
                    out = self._emit_piece(out)
            if len(out) >= self._piece:
                out = self._emit_piece(out)
        if out:
            self.output.emit(Batch.of_records(out))

    def _iterated(self, record: Any, result: Any) -> Iterator[Any]:
        """An iterator over ``result``, what ``fn(record)`` returned that is not a list or tuple:
        a generator or any iterable; no iterable, or one record (a dict, str or bytes, whose
        iteration would give its keys or characters), fails naming the function and the record."""
        try:
            items = iter(result)
        except Exception as exc:  # no iterable: no records
            bad = not_records(result, self._name()) if not hasattr(result, "__iter__") else exc
            raise UserCodeError(record, bad) from exc
        if items is not result and isinstance(result, NOT_RECORDS):  # (an iterator, a generator, is none)
            raise UserCodeError(record, not_records(result, self._name()))
        return items

    def _process_stamped(self, batch: Batch, stamps: np.ndarray) -> None:
        """:meth:`process_batch` of records with event timestamps: every result of a record
        carries that record's timestamp (Flink's ``TimestampedCollector``), given per piece
        (:func:`result_stamps` over ``ends``: the results of the batch so far after each record)."""
        out: list[Any] = []
        records = batch.records()
        ends = [0] * len(records)
        emitted = 0  # (results of the batch in pieces emitted)
        first = 0  # (the first record whose results are in ``out``)
        fn = self.fn
        for i, r in enumerate(records):
            try:
                result = fn(r)
            except Exception as exc:
                raise UserCodeError(r, exc) from exc
            if result is None:
                ends[i] = emitted + len(out)
                continue
            if type(result) is list or type(result) is tuple:
                out.extend(result)
            else:  # a generator (or any iterable): taken a piece at a time
                items = self._iterated(r, result)
                while True:
                    room = self._piece - len(out)
                    try:
                        taken = list(islice(items, room))
                    except Exception as exc:
                        raise UserCodeError(r, exc) from exc
                    out.extend(taken)
                    if len(taken) < room:
                        break
                    ends[i] = emitted + len(out)  # (record i goes on in the next piece: counted from ``emitted``)
                    piece_stamps = result_stamps(stamps[first:i + 1], ends[first:i + 1], emitted)
                    emitted += len(out)
                    first = i
                    out = self._emit_piece(out, piece_stamps)
            ends[i] = emitted + len(out)
            if len(out) >= self._piece:
                piece_stamps = result_stamps(stamps[first:i + 1], ends[first:i + 1], emitted)
                emitted += len(out)
                first = i + 1
                out = self._emit_piece(out, piece_stamps)
        if out:
            self.output.emit(Batch.of_records(out, result_stamps(stamps[first:], ends[first:], emitted)))

    def _name(self) -> str:
        return f"flat_map function {getattr(self.fn, '__name__', self.fn)!r}"

    def _emit_piece(self, out: list[Any], stamps: np.ndarray | None = None) -> list[Any]:
        """Emit ``out`` (a full piece, or more; ``stamps``: their event timestamps); the size
        of its records sets the rows of the next piece (records of a stream differ in size:
        each piece is sized again)."""
        piece = Batch.of_records(out, stamps)
        self._piece = max(1, min(self.MAX_PIECE_ROWS, self.ctx.buffer_bytes // row_bytes(piece)))
        self.output.emit(piece)
        return []


class _OneInputTimerService(NonKeyedTimerService):
    """The timer service of a :class:`ProcessFunction`: reads the watermark and the clock;
    a timer is refused naming the operator (a timer belongs to a key)."""

    __slots__ = ("_operator",)

    def __init__(self, watermark: Callable[[], int], clock: Clock, operator: str) -> None:
        super().__init__(watermark, clock)
        self._operator = operator

    def _refuse(self, time: int) -> None:
        raise ConfigError(
            f"operator {self._operator!r}: a timer (at {time!r}) needs a key: timers are only supported on keyed "
            "streams: key_by first (stream.key_by(k).process(KeyedProcessFunction))"
        )


class ProcessOperator(StreamOperator):
    """Runs a :class:`~operators.functions.ProcessFunction` on a stream without a key: one
    call per record, its results and side outputs (``ctx.output(tag, value)``) emitted after
    each batch, watermarks forwarded. ``timestamp_assigner`` (from
    ``assign_timestamps_and_watermarks`` upstream) sets ``ctx.timestamp``."""

    def __init__(self, function: ProcessFunction, timestamp_assigner: TimestampAssigner | None = None) -> None:
        self.function = function
        self.timestamp_assigner = timestamp_assigner
        self._watermark = MIN_WATERMARK

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        self.pctx: ProcessContext[Any] = ProcessContext()
        self.pctx._timer_service = _OneInputTimerService(self._current_watermark, ctx.clock, ctx.operator_name)
        self.function.open(RuntimeContext(ctx))

    def _current_watermark(self) -> int:
        return self._watermark

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        out: list[Any] = []
        pctx = self.pctx
        fn = self.function.process_element
        records = batch.records()
        carried, stamps = record_stamps(batch, len(records), self.timestamp_assigner)
        if stamps is None:  # (records without timestamps: ctx.timestamp is None, not the last batch's)
            pctx.timestamp = None
            for r in records:
                try:
                    result = fn(r, pctx)
                    if result is not None:
                        add_results(out, result, self.function, "process_element", pctx)
                except Exception as exc:
                    raise UserCodeError(r, flink_hint(exc)) from exc
            if out:
                self.output.emit(Batch.of_records(out))
            emit_side_outputs(self.output, pctx._take_side(), None)
            return
        ends = [0] * len(records)  # (results after each record: their timestamps per batch, result_stamps)
        side_ts: dict[str, list[int]] = {}
        side = pctx._side  # (the same dict until _take_side)
        for i, r in enumerate(records):
            try:
                pctx.timestamp = stamps[i]
                result = fn(r, pctx)
                if result is not None:
                    add_results(out, result, self.function, "process_element", pctx)
                ends[i] = len(out)
                if side:
                    stamp_side(side, side_ts, stamps[i])
            except Exception as exc:
                raise UserCodeError(r, flink_hint(exc)) from exc
        if out:
            arr = carried if carried is not None else np.array(stamps, dtype=np.int64)
            self.output.emit(Batch.of_records(out, result_stamps(arr, ends)))
        emit_side_outputs(self.output, pctx._take_side(), side_ts)

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        if watermark.timestamp > self._watermark:
            self._watermark = watermark.timestamp
        self.output.emit_watermark(watermark)

    def close(self) -> None:
        self.function.close()


def to_arrow_batch(value: Any, where: str) -> pa.RecordBatch:
    """Normalize what a batch function returned into one RecordBatch."""
    if isinstance(value, pa.RecordBatch):
        return value
    if isinstance(value, pa.Table):
        value = value.combine_chunks()
        batches = value.to_batches()
        return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=value.schema)
    if isinstance(value, dict):
        return _batch_of_columns(value, where)
    try:
        import pandas as pd  # optional

        if isinstance(value, pd.DataFrame):
            return pa.RecordBatch.from_pandas(value, preserve_index=False)
    except ImportError:
        pass
    raise TypeError(
        f"{where} must return a pyarrow.RecordBatch, pyarrow.Table or a dict of columns, "
        f"got {type(value).__name__}"
    )


def _as_numpy(column: Any) -> Any:
    """A column a ``"numpy"`` batch function returned as a list: as numpy would make it (its
    numbers of one dtype), unless numpy cannot hold it as one 1-d array (rows of lists or
    arrays of several lengths: left to Arrow, which makes a list column of them)."""
    if isinstance(column, (np.ndarray, pa.Array, pa.ChunkedArray)):
        return column
    try:
        arr = np.asarray(column)
    except (ValueError, TypeError):
        return column
    return arr if arr.ndim == 1 and arr.dtype != object else column


def _batch_of_columns(columns: dict[Any, Any], where: str) -> pa.RecordBatch:
    """A dict of columns (Arrow arrays, numpy arrays, lists) as one RecordBatch; a column
    that is no 1-d sequence of values, or of another length than the first, is named.

    Example:
        >>> _batch_of_columns({"a": np.zeros((2, 2))}, "map_batches function 'f'")
        Traceback (most recent call last):
        ...
        TypeError: map_batches function 'f' returned column 'a' as a numpy array of shape (2, 2); columns are 1-dimensional (one value per row): give a list per row, e.g. list(a) for rows of arrays
    """
    arrays: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name, v in columns.items():
        if isinstance(v, np.ndarray) and v.ndim != 1:
            raise TypeError(
                f"{where} returned column {name!r} as a numpy array of shape {v.shape}; columns are 1-dimensional "
                f"(one value per row): give a list per row, e.g. list({name}) for rows of arrays"
            )
        try:
            arrays[name] = v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"{where} returned column {name!r} that Arrow cannot hold as one typed column: {exc}") from exc
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{where} returned columns of different lengths: {lengths}; every column needs one value per row")
    return pa.RecordBatch.from_pydict(arrays)


class MapBatchesOperator(StreamOperator):
    """Applies ``fn`` to whole batches: a RecordBatch (``"pyarrow"``) or a dict of numpy arrays
    (``"numpy"``). The fast path: stays columnar end to end."""

    def __init__(self, fn: Callable[[Any], Any], batch_format: str = "pyarrow") -> None:
        self.fn = fn
        self.batch_format = batch_format

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        rb = batch.columns(nested=True)
        if self.batch_format == "numpy":
            arg: dict[str, np.ndarray] | pa.RecordBatch = {
                name: col.to_numpy(zero_copy_only=False) for name, col in zip(rb.schema.names, rb.columns)
            }
        else:
            arg = rb
        try:
            result = self.fn(arg)
        except Exception as exc:
            raise UserCodeError(f"<batch of {rb.num_rows} rows, columns {rb.schema.names}>", exc) from exc
        if result is None:  # (most likely a function that forgot its return: not silently nothing)
            raise UserCodeError(
                f"<batch of {rb.num_rows} rows, columns {rb.schema.names}>",
                TypeError(
                    f"map_batches function {getattr(self.fn, '__name__', self.fn)!r} returned None; it must return "
                    "a pyarrow.RecordBatch, pyarrow.Table or a dict of columns (an empty one, e.g. batch.slice(0, 0), "
                    "to emit nothing)"
                ),
            )
        if self.batch_format == "numpy" and isinstance(result, dict):
            result = {k: _as_numpy(v) for k, v in result.items()}
        self.output.emit(Batch.of_arrow(to_arrow_batch(result, f"map_batches function {getattr(self.fn, '__name__', self.fn)!r}")))
