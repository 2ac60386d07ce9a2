"""Event time: timestamp assigners, watermark strategies and the operator/source wrapper
that generates watermarks.

Event timestamps are a property of the record: a :class:`TimestampAssigner` reads them from
a column (vectorized on Arrow batches) or computes them with a function. Watermarks are
generated either inside the source reader, **per split** (when the strategy is applied
directly to a source stream), or by the :class:`TimestampsAndWatermarksOperator` after any
other operator. A watermark ``w`` promises that no record with timestamp ``<= w`` follows
(Flink semantics): :meth:`WatermarkStrategy.for_bounded_out_of_orderness` emits
``max_timestamp - bound - 1``.

Downstream event-time operators (windows, timers, joins) find the assigner of the nearest
upstream ``assign_timestamps_and_watermarks`` and apply it again to the records they see,
so the operators in between must keep the timestamp field (or pass ``timestamp=`` to the
event-time operator explicitly).

Example:
    >>> s = WatermarkStrategy.for_bounded_out_of_orderness(500).with_timestamp_column("ts")
    >>> g = s.create_generator()
    >>> g.on_timestamps_max(10_000); g.current_watermark()
    9499
"""

from __future__ import annotations

import copy
import datetime as dt
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Generic, Hashable, NoReturn, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raystream.engine.config import as_int
from raystream.engine.connectors import (
    END_OF_INPUT,
    NOTHING_AVAILABLE,
    PollResult,
    Source,
    SourceReader,
    split_weight,
)
from raystream.engine.errors import ConfigError, UserCodeError, short_repr
from raystream.engine.events import MIN_WATERMARK, Watermark
from raystream.engine.operator import Cancellable, OperatorContext, Output, StreamOperator
from raystream.engine.records import Batch

__all__ = [
    "epoch_ms",
    "duration_ms",
    "shown_ms",
    "all_ints",
    "TimestampAssigner",
    "as_timestamp_assigner",
    "WatermarkGenerator",
    "WatermarkOutput",
    "BoundedOutOfOrdernessWatermarks",
    "WatermarkStrategy",
    "TimestampsAndWatermarksOperator",
    "WatermarkedSource",
    "NO_TIMESTAMP",
    "DEFAULT_AUTO_WATERMARK_INTERVAL_MS",
    "auto_watermark_interval_ms",
    "Duration",
    "Time",
]

#: the watermark before any record was seen
NO_TIMESTAMP = MIN_WATERMARK

#: how often (processing time, ms) a user's :class:`WatermarkGenerator` gets
#: ``on_periodic_emit`` when no records come (Flink's ``ExecutionConfig.setAutoWatermarkInterval``,
#: default 200 ms); a task's ``OperatorContext.auto_watermark_interval_ms``, when it has one,
#: overrides it (0: only after batches)
DEFAULT_AUTO_WATERMARK_INTERVAL_MS = 200


def auto_watermark_interval_ms(ctx: Any) -> int:
    """The auto-watermark interval of the job an operator or reader runs in: the context's
    ``auto_watermark_interval_ms`` if it has one, else :data:`DEFAULT_AUTO_WATERMARK_INTERVAL_MS`.

    Example:
        >>> auto_watermark_interval_ms(None)
        200
    """
    given = as_int(getattr(ctx, "auto_watermark_interval_ms", None))
    return DEFAULT_AUTO_WATERMARK_INTERVAL_MS if given is None else max(0, given)

S = TypeVar("S")  # the split type of a wrapped source


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MS = dt.timedelta(milliseconds=1)
_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
#: Arrow timestamp units per millisecond (``s``: multiplied by 1000 instead)
_PER_MS = {"ms": 1, "us": 1_000, "ns": 1_000_000}


def epoch_ms(value: Any) -> int:
    """An event timestamp as epoch milliseconds: an int as it is, a float truncated, a
    ``datetime`` floored to its millisecond (a naive one read as UTC, as Arrow reads a
    timestamp column without a zone), a ``date`` at its midnight UTC, a ``numpy.datetime64``.

    Example:
        >>> epoch_ms(1_700_000_000_123), epoch_ms(dt.datetime(1970, 1, 1, 0, 0, 1, 999))
        (1700000000123, 1000)
        >>> epoch_ms(dt.datetime(2024, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))))
        1704067200000
    """
    if type(value) is int:
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return (value - _EPOCH) // _MS
    if isinstance(value, dt.date):
        return (value.toordinal() - _EPOCH_DAY) * 86_400_000
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[ms]").astype(np.int64))
    if isinstance(value, (str, bytes, bool, np.bool_)):  # int() would read "5" as 5 and True as 1
        raise TypeError(f"a {type(value).__name__} is no event timestamp")
    return int(value)


def duration_ms(value: object, name: str) -> int | None:
    """A span of time as whole milliseconds, as raystream takes one wherever it takes ms: an
    ``int`` (or a numpy integer, or PyFlink's :class:`Duration` / :class:`Time`, which are ints
    of ms) as it is, a ``datetime.timedelta`` (what Bytewax and plain Python code write)
    converted; None for anything else (the caller names what it wanted). The sign is the
    caller's to check.

    Raises:
        ConfigError: a ``timedelta`` with a part below a millisecond, naming ``name`` (it
            would otherwise be rounded silently).

    Example:
        >>> duration_ms(dt.timedelta(seconds=5), "size"), duration_ms(5000, "size"), duration_ms(5.0, "size")
        (5000, 5000, None)
        >>> duration_ms(dt.timedelta(microseconds=1500), "window size")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        raystream.engine.errors.ConfigError: window size must be whole milliseconds, got datetime.timedelta(microseconds=1500) ...
    """
    if isinstance(value, dt.timedelta):
        ms, rest = divmod(value, _MS)
        if rest:
            raise ConfigError(
                f"{name} must be whole milliseconds, got {value!r} (a part of {rest // dt.timedelta(microseconds=1)} "
                "microseconds below a millisecond); round it, e.g. timedelta(milliseconds=n)"
            )
        return int(ms)
    return as_int(value)


def shown_ms(value: object) -> str:
    """``value!r`` for an error message, with its milliseconds when it is a ``timedelta``
    (whose repr of a negative span, ``timedelta(days=-1, seconds=86395)``, hides its sign).

    Example:
        >>> shown_ms(dt.timedelta(seconds=-5)), shown_ms(7)
        ('datetime.timedelta(days=-1, seconds=86395) (-5000 ms)', '7')
    """
    if isinstance(value, dt.timedelta):
        return f"{value!r} ({value / _MS:g} ms)"
    return repr(value)


class Duration(int):
    """A span of time in milliseconds, as PyFlink's ``Duration`` is written
    (``Duration.of_seconds(2)``): an ``int`` of milliseconds, so it goes wherever
    raystream takes milliseconds (``WatermarkStrategy.for_bounded_out_of_orderness``,
    ``with_idleness``, window sizes, ``allowed_lateness``, timers).

    Example:
        >>> Duration.of_seconds(2), Duration.of_minutes(1).to_milliseconds()
        (Duration.of_millis(2000), 60000)
    """

    __slots__ = ()

    @classmethod
    def of_millis(cls, millis: int) -> "Duration":
        """``millis`` milliseconds."""
        return cls._of(millis, 1, "of_millis")

    @classmethod
    def of_seconds(cls, seconds: int) -> "Duration":
        """``seconds`` seconds."""
        return cls._of(seconds, 1_000, "of_seconds")

    @classmethod
    def of_minutes(cls, minutes: int) -> "Duration":
        """``minutes`` minutes."""
        return cls._of(minutes, 60_000, "of_minutes")

    @classmethod
    def of_hours(cls, hours: int) -> "Duration":
        """``hours`` hours."""
        return cls._of(hours, 3_600_000, "of_hours")

    @classmethod
    def of_days(cls, days: int) -> "Duration":
        """``days`` days."""
        return cls._of(days, 86_400_000, "of_days")

    @classmethod
    def _of(cls, amount: object, ms: int, method: str) -> Any:
        n = as_int(amount)
        if n is None:
            raise ConfigError(f"{cls.__name__}.{method}({amount!r}): give a whole number (an int)")
        return cls(n * ms)

    def to_milliseconds(self) -> int:
        """The span in milliseconds (a plain ``int``)."""
        return int(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}.of_millis({int(self)})" if type(self) is Duration else (
            f"{type(self).__name__}.milliseconds({int(self)})")

    __str__ = int.__repr__

    def __reduce__(self) -> tuple[Any, tuple[int]]:  # (unpickles as a plain int of ms)
        return int, (int(self),)


class Time(Duration):
    """PyFlink's window ``Time`` (``TumblingEventTimeWindows.of(Time.milliseconds(5))``):
    milliseconds as an ``int``, as :class:`Duration`.

    Example:
        >>> Time.milliseconds(5), Time.seconds(10), Time.minutes(1)
        (Time.milliseconds(5), Time.milliseconds(10000), Time.milliseconds(60000))
    """

    __slots__ = ()

    @classmethod
    def milliseconds(cls, milliseconds: int) -> "Time":
        """``milliseconds`` milliseconds."""
        return cls._of(milliseconds, 1, "milliseconds")

    @classmethod
    def seconds(cls, seconds: int) -> "Time":
        """``seconds`` seconds."""
        return cls._of(seconds, 1_000, "seconds")

    @classmethod
    def minutes(cls, minutes: int) -> "Time":
        """``minutes`` minutes."""
        return cls._of(minutes, 60_000, "minutes")

    @classmethod
    def hours(cls, hours: int) -> "Time":
        """``hours`` hours."""
        return cls._of(hours, 3_600_000, "hours")

    @classmethod
    def days(cls, days: int) -> "Time":
        """``days`` days."""
        return cls._of(days, 86_400_000, "days")


class TimestampAssigner:
    """Extracts event timestamps (epoch ms, int) from records: ints (ms), floats, datetimes
    and dates as :func:`epoch_ms` reads them.

    A PyFlink port subclasses it as Flink's ``TimestampAssigner``, with no arguments, and
    overrides ``extract_timestamp(value, record_timestamp)`` (``record_timestamp``: the
    timestamp the record already has from an upstream assigner, None when it has none);
    ``WatermarkStrategy.with_timestamp_assigner`` takes such an object (of this class or
    not) as well.

    Args:
        column: a column name (dict records, Arrow batches) or a tuple index.
        fn: a function ``fn(record) -> int`` (used when ``column`` is None); it may return
            a ``datetime`` too.

    Example:
        >>> TimestampAssigner(column="ts").timestamps(Batch.of_records([{"ts": 5}, {"ts": 7}])).tolist()
        [5, 7]
        >>> TimestampAssigner(fn=lambda r: r[1]).extract(("a", 42))
        42
        >>> TimestampAssigner(column="ts").timestamps(Batch.of_records([{"ts": dt.datetime(1970, 1, 1, 0, 0, 2)}])).tolist()
        [2000]
        >>> class First(TimestampAssigner):  # as in PyFlink
        ...     def extract_timestamp(self, value, record_timestamp):
        ...         return value[0]
        >>> First().timestamps(Batch.of_records([(5, "a"), (7, "b")])).tolist()
        [5, 7]
    """

    column: str | int | None = None
    fn: Callable[[Any], Any] | None = None
    #: where it became a stream's assigner (set by :meth:`WatermarkStrategy.require_assigner`:
    #: ``"assign_timestamps_and_watermarks(WatermarkStrategy(...))"``), named by the error of an
    #: event-time operator downstream that cannot read a record's timestamp; None: an assigner
    #: given to that operator itself (``with_timestamp``)
    origin: str | None = None

    def __init__(self, column: str | int | None = None, fn: Callable[[Any], int] | None = None) -> None:
        if column is None and fn is None and _overrides_extract_timestamp(self):
            fn = _ExtractTimestamp(self)
        if (column is None) == (fn is None):
            raise ConfigError(
                "TimestampAssigner needs exactly one of column= or fn= (or, as Flink's, subclass it and override "
                "extract_timestamp(value, record_timestamp))"
            )
        if fn is not None and not callable(fn):
            raise ConfigError(f"TimestampAssigner fn must be callable, got {fn!r}")
        self.column = column
        self.fn = fn

    def extract_timestamp(self, value: Any, record_timestamp: int | None) -> int:
        """The timestamp of ``value`` (Flink's method; a subclass overrides it)."""
        return self.extract(value)

    def extract(self, record: Any) -> int:
        """The timestamp of one record."""
        if self.fn is not None:
            return epoch_ms(self.fn(record))
        return epoch_ms(record[self._column()])

    def _column(self) -> str | int:
        column = self.column
        if column is None:  # (the constructor needs column= or fn=)
            raise ConfigError("TimestampAssigner has neither column= nor fn=")
        return column

    def timestamps_list(self, batch: Batch) -> list[int]:
        """The event timestamps of ``batch``'s records as a list: those the batch carries
        (one per record), else :meth:`timestamps` of its records (a process function's
        ``ctx.timestamp``)."""
        stamps = batch.timestamps
        if stamps is None or len(stamps) != len(batch.records()):
            stamps = self.timestamps(batch)
        return stamps.tolist()

    def timestamps(self, batch: Batch, *, first: bool = False) -> np.ndarray:
        """The timestamps of a whole batch as int64 (vectorized for a column of an Arrow batch).

        An event-time operator downstream of ``assign_timestamps_and_watermarks`` applies the
        stream's assigner again to the records it gets (``first=False``): a record it cannot
        read is a :class:`ConfigError` that says so, naming where the assigner was set
        (:attr:`origin`) and the remedies (an operator in between moved or dropped the field).
        The ``assign_timestamps_and_watermarks`` operator and source pass ``first=True``.
        """
        try:
            return self._read_timestamps(batch)
        except ConfigError as exc:
            if first or self.origin is None:
                raise
            raise ConfigError(f"{exc}. {self._applied_again()}") from exc

    def _applied_again(self) -> str:
        """What a record that an event-time operator cannot read the timestamp of means when
        the assigner is the one of an upstream ``assign_timestamps_and_watermarks``."""
        what = f"the field {self.column!r}" if self.fn is None else "the field it reads"
        return (
            f"This operator reads the event timestamps of the records reaching it by applying the timestamp "
            f"assigner of {self.origin} upstream to them again (the records carry no timestamp of their own), "
            f"so every operator in between (a map, flat_map, process...) must keep {what} in its output. "
            "Remedies: give this operator the timestamps where its records hold them now (window(...)"
            ".with_timestamp(fn or 'column')), call assign_timestamps_and_watermarks(...) after the operator that "
            "changed the records, or keep the field in that operator's output"
        )

    def _read_timestamps(self, batch: Batch) -> np.ndarray:
        if isinstance(self.column, str) and batch.is_columnar:
            rb = batch.arrow()
            i = rb.schema.get_field_index(self.column)
            if i < 0:
                raise ConfigError(
                    f"timestamp column {self.column!r} is not in the batch (columns: {rb.schema.names})"
                )
            return timestamp_column(rb, self.column, "assign_timestamps_and_watermarks")
        records = batch.records()
        try:
            if isinstance(self.fn, _ExtractTimestamp) and batch.timestamps is not None and len(batch.timestamps) == len(records):
                extract = self.fn.assigner.extract_timestamp  # (with the timestamps the records have)
                values = [extract(r, t) for r, t in zip(records, batch.timestamps.tolist())]
            elif self.fn is not None:
                fn = self.fn
                values = [fn(r) for r in records]
            else:
                c = self._column()
                values = [r[c] for r in records]
            try:  # np.fromiter would read "5" as 5 and True as 1: sum() refuses a str (cheaply, in C), and
                sum(values)  # a bool makes the minimum <= 1, where the types are checked
                arr = np.fromiter(values, dtype=np.int64, count=len(records))
                if len(arr) and arr.min() <= 1 and not _FAST_TYPES.issuperset(map(type, values)):
                    raise TypeError("a bool among the timestamps")
                return arr
            except TypeError:  # datetimes, dates, numpy scalars: converted one by one (a str or bool is refused)
                return np.fromiter(map(epoch_ms, values), dtype=np.int64, count=len(records))
        except Exception as exc:
            bad = next((r for r in records if not _has_ts(r, self)), records[0] if records else None)
            if isinstance(exc, (KeyError, IndexError, TypeError, ValueError, OverflowError)):  # a record without its timestamp
                raise ConfigError(_bad_timestamp_message(self, bad, exc)) from exc
            raise UserCodeError(bad, exc) from exc  # the assigner function failed: the task names operator and record

    def __repr__(self) -> str:
        if self.fn is not None:
            return f"TimestampAssigner(fn={getattr(self.fn, '__name__', self.fn)!r})"
        return f"TimestampAssigner(column={self.column!r})"


def _overrides_extract_timestamp(obj: object) -> bool:
    """Whether ``obj`` has Flink's ``extract_timestamp(value, record_timestamp)`` of its own
    (not :class:`TimestampAssigner`'s, which reads the column or calls the function)."""
    method = getattr(type(obj), "extract_timestamp", None)
    return callable(method) and method is not TimestampAssigner.extract_timestamp


class _ExtractTimestamp:
    """A Flink-style assigner object as a function of the record: its
    ``extract_timestamp(record, None)`` (the batch path passes the records' timestamps)."""

    def __init__(self, assigner: Any) -> None:
        self.assigner = assigner

    def __call__(self, record: Any) -> Any:
        return self.assigner.extract_timestamp(record, None)

    @property
    def __name__(self) -> str:  # (errors name the user's class, or function)
        if isinstance(self.assigner, _TwoArgumentAssigner):
            return self.assigner.name
        return f"{type(self.assigner).__name__}.extract_timestamp"


class _TwoArgumentAssigner:
    """A function ``(value, record_timestamp) -> timestamp`` (Flink's ``SerializableTimestampAssigner``
    lambda, PyFlink's ``extract_timestamp`` signature) as an assigner object."""

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def extract_timestamp(self, value: Any, record_timestamp: Any) -> Any:
        return self.fn(value, record_timestamp)


def _takes_two_arguments(fn: Any) -> bool:
    """Whether ``fn`` must be called with exactly two positional arguments (no ``*args``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # (some builtins have no signature)
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 2 and all(p.default is p.empty for p in positional)


def as_timestamp_assigner(fn: Any, where: str) -> TimestampAssigner:
    """What ``with_timestamp_assigner`` takes as a :class:`TimestampAssigner`: one such, an
    object with Flink's ``extract_timestamp(value, record_timestamp)``, a function
    ``record -> timestamp``, or a function ``(record, record_timestamp) -> timestamp`` (Flink's
    assigner lambdas; ``record_timestamp`` is the record's timestamp so far, None if it has none).

    Raises:
        ConfigError: anything else, or an assigner class where its instance belongs.

    Example:
        >>> as_timestamp_assigner(lambda r: r[0], "demo").extract((5, "a"))
        5
        >>> as_timestamp_assigner(lambda event, ts: event[0], "demo").extract((7, "a"))
        7
    """
    if isinstance(fn, type):
        raise ConfigError(f"{where}: got the class {fn.__name__}; pass an instance, {fn.__name__}()")
    if isinstance(fn, TimestampAssigner):
        if fn.fn is None and fn.column is None:  # (a subclass whose __init__ did not call TimestampAssigner's)
            if not _overrides_extract_timestamp(fn):
                raise ConfigError(f"{where}: {fn!r} has no column, no function and no extract_timestamp(value, record_timestamp)")
            return TimestampAssigner(fn=_ExtractTimestamp(fn))
        return fn
    if _overrides_extract_timestamp(fn):
        return TimestampAssigner(fn=_ExtractTimestamp(fn))
    if callable(fn) and _takes_two_arguments(fn):  # (value, record_timestamp), as Flink's assigner lambdas
        return TimestampAssigner(fn=_ExtractTimestamp(_TwoArgumentAssigner(fn)))
    if callable(fn):
        return TimestampAssigner(fn=fn)
    raise ConfigError(
        f"{where}: expected a function record -> timestamp (ms) or an object with extract_timestamp(value, "
        f"record_timestamp) (Flink's TimestampAssigner), got {type(fn).__name__} {short_repr(fn, 80)}"
    )


def timestamp_column(rb: pa.RecordBatch, column: str, where: str) -> np.ndarray:
    """The event timestamps (int64 ms) of column ``column`` of ``rb``: integers or floats
    (truncated) as they are, Arrow timestamps of any unit floored to the millisecond (the
    epoch they hold: UTC for a zoned column, the wall clock read as UTC without a zone, as
    :func:`epoch_ms` reads datetimes), dates at midnight.

    Raises:
        ConfigError: a null timestamp (naming its row and record: a null would otherwise
            become the smallest int64 and its record be dropped as late) or a column of
            another type.

    Example:
        >>> rb = pa.RecordBatch.from_pydict({"ts": [5, None], "v": [1, 2]})
        >>> timestamp_column(rb.slice(0, 1), "ts", "demo").tolist()
        [5]
        >>> timestamp_column(rb, "ts", "demo")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        raystream.engine.errors.ConfigError: demo: the timestamp column 'ts' is null in row 1 of a batch of 2 (record {'ts': None, 'v': 2}); ...
    """
    col = rb.column(column)
    if col.null_count:
        row = pc.index(col.is_null(), True).as_py()
        raise ConfigError(
            f"{where}: the timestamp column {column!r} is null in row {row} of a batch of {rb.num_rows} "
            f"(record {rb.slice(row, 1).to_pylist()[0]!r}); filter out or fill null timestamps before "
            "event-time operators"
        )
    t = col.type
    if pa.types.is_timestamp(t):  # (a cast to timestamp[ms] refuses sub-millisecond values)
        ticks = col.cast(pa.int64()).to_numpy(zero_copy_only=False)
        return ticks * 1000 if t.unit == "s" else ticks // _PER_MS[t.unit]
    if pa.types.is_date32(t):
        return col.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64) * 86_400_000
    if pa.types.is_date64(t):
        return col.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise ConfigError(
            f"{where}: the timestamp column {column!r} must hold integers (ms), Arrow timestamps or dates, "
            f"got {t} (first value {col[0].as_py()!r})"
        )
    values = col.to_numpy(zero_copy_only=False)
    if values.dtype.kind == "f":  # NaN, ±inf and floats beyond int64 have no int64 ms (a cast makes them -2**63)
        bad = ~((values >= -_INT64_BOUND) & (values < _INT64_BOUND))
        if bad.any():
            row = int(np.argmax(bad))
            raise ConfigError(
                f"{where}: the timestamp column {column!r} holds {float(values[row])!r} in row {row} of a batch of "
                f"{rb.num_rows} (record {rb.slice(row, 1).to_pylist()[0]!r}), which is no time in epoch milliseconds; "
                "filter out or fill such timestamps before event-time operators"
            )
    return values.astype(np.int64, copy=False)


_INT64_BOUND = float(2**63)  # the float timestamps that fit an int64 lie in [-2**63, 2**63)
#: value types the fast path of TimestampAssigner.timestamps hands to np.fromiter as they are
_FAST_TYPES = frozenset((int, float, np.int64, np.int32, np.uint32, np.float64, np.float32))


_INTS = frozenset((int,))


def all_ints(values: list[Any]) -> bool:
    """Whether every value is a plain ``int`` (not a bool, which ``min``/``max`` and numpy
    take for 0 / 1): the check of the operators' own fast timestamp paths.

    Example:
        >>> all_ints([3, 5]), all_ints([3, True, 5]), all_ints([3, "5"])
        (True, False, False)
    """
    return _INTS.issuperset(map(type, values))


def _bad_timestamp_message(assigner: TimestampAssigner, record: Any, exc: Exception) -> str:
    """The ConfigError message for a record whose timestamp cannot be read: names the field
    (or function), the value and its type, the record and the remedy."""
    where = f"the timestamp field {assigner.column!r}" if assigner.fn is None else (
        f"the timestamp assigner {getattr(assigner.fn, '__name__', assigner.fn)!r}")
    try:
        value = assigner.fn(record) if assigner.fn is not None else record[assigner._column()]
    except Exception:
        return f"cannot extract an event timestamp ({assigner!r}) from record {record!r}: {exc!r}"
    if isinstance(value, (str, bytes, bool, np.bool_)):
        return (
            f"cannot extract an event timestamp ({assigner!r}) from record {record!r}: {where} gives {value!r} "
            f"(a {type(value).__name__}); event timestamps must be "
            "integers (ms), floats, datetimes, dates or numpy.datetime64, as an Arrow timestamp column must hold "
            "integers, timestamps or dates; convert the field first (e.g. int(record['ts']) or "
            "datetime.fromisoformat(record['ts'])) in a map or the timestamp assigner"
        )
    return f"cannot extract an event timestamp ({assigner!r}) from record {record!r}: {exc!r}"


def _has_ts(record: Any, assigner: TimestampAssigner) -> bool:
    """Whether ``record`` has a timestamp an int64 holds (finding the record to blame)."""
    try:
        return -(2**63) <= assigner.extract(record) < 2**63
    except Exception:
        return False


class WatermarkOutput:
    """What a :class:`WatermarkGenerator` emits to (Flink's ``WatermarkOutput``): the
    largest watermark emitted counts (a smaller one is ignored: watermarks never go back);
    ``mark_idle()`` marks the stream (split) idle until its next watermark or
    ``mark_active()``."""

    __slots__ = ("watermark", "idle")

    def __init__(self) -> None:
        self.watermark = NO_TIMESTAMP
        self.idle = False

    def emit_watermark(self, watermark: Watermark | int) -> None:
        t = watermark.timestamp if isinstance(watermark, Watermark) else as_int(watermark)
        if t is None:
            raise ConfigError(f"emit_watermark({watermark!r}): a watermark is a Watermark(t) or an int t (ms)")
        self.idle = False
        if t > self.watermark:
            self.watermark = t

    def mark_idle(self) -> None:
        self.idle = True

    def mark_active(self) -> None:
        self.idle = False


class WatermarkGenerator:
    """Generates watermarks from the records (Flink's ``WatermarkGenerator``); subclass it
    and pass a factory to :meth:`WatermarkStrategy.for_generator`.

    ``on_event(event, event_timestamp, output)`` is called for every record, in order;
    ``on_periodic_emit(output)`` after each batch of records and, as in Flink, every
    auto-watermark interval of processing time (200 ms) whether records came or not, so a
    generator whose watermark follows the clock (Flink's ``TimeLagWatermarkGenerator``:
    ``now - max_lag``) advances event time while its input is quiet (an emitted watermark
    smaller than one before is ignored: watermarks never go back; a stream or split idle by
    ``with_idleness`` is not asked). A punctuated generator emits in ``on_event``: its watermark
    goes out before any later record it makes late (the batch is cut there), so what is late
    does not depend on how the input was cut into batches.

    Example:
        >>> class Punctuated(WatermarkGenerator):
        ...     def on_event(self, event, event_timestamp, output):
        ...         if event.get("end_of_minute"):
        ...             output.emit_watermark(Watermark(event_timestamp))
        ...     def on_periodic_emit(self, output):
        ...         pass
    """

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        """A record with its timestamp."""

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        """After each batch and every auto-watermark interval: emit the watermark the records
        seen so far (or the clock) imply."""


@dataclass
class BoundedOutOfOrdernessWatermarks(WatermarkGenerator):
    """Bounded-out-of-orderness watermark generator (``bound_ms = 0``: monotonous).

    The watermark is ``max_timestamp - bound_ms - 1``, so with ``bound_ms = 0`` a window
    ``[s, e)`` closes once a record with timestamp ``>= e`` has been seen.
    """

    bound_ms: int = 0
    max_timestamp: int = NO_TIMESTAMP
    last_activity_ms: int | None = None
    idle: bool = False

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        if event_timestamp > self.max_timestamp:
            self.max_timestamp = event_timestamp

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        if self.max_timestamp != NO_TIMESTAMP:
            output.emit_watermark(Watermark(self.current_watermark()))

    def on_batch(self, records: Any, ts: np.ndarray, now_ms: int | None = None) -> None:
        """A batch of records with timestamps ``ts`` (non-empty): vectorized, its maximum."""
        self.on_timestamps_max(int(ts.max()), now_ms)

    def on_timestamps_max(self, ts_max: int, now_ms: int | None = None) -> None:
        """Records up to ``ts_max`` were seen (at processing time ``now_ms``)."""
        if ts_max > self.max_timestamp:
            self.max_timestamp = ts_max
        self.last_activity_ms = now_ms

    def current_watermark(self) -> int:
        """The watermark implied by the records seen so far."""
        if self.max_timestamp == NO_TIMESTAMP:
            return NO_TIMESTAMP
        return self.max_timestamp - self.bound_ms - 1


class _UserGenerator:
    """A user's :class:`WatermarkGenerator`: ``on_event`` per record and ``on_periodic_emit``
    per batch that goes out (:meth:`on_records` cuts a batch before a record that a watermark
    of the records before it makes late); the watermark is the largest it emitted, ``idle``
    whether it marked itself idle since."""

    def __init__(self, generator: WatermarkGenerator, factory: Any) -> None:
        self.generator = generator
        self.factory = factory
        self.output = WatermarkOutput()
        self.max_timestamp = NO_TIMESTAMP  # (checkpointed by the operators; not used here)
        self.last_activity_ms: int | None = None

    @property
    def idle(self) -> bool:
        return self.output.idle

    def on_records(self, records: list, ts: list[int], start: int, now_ms: int | None = None) -> int:
        """``on_event`` for ``records[start:]`` (timestamps ``ts``) in order, up to the first
        record that the watermark the records before it raised makes late (``ts <=`` that
        watermark: a punctuated watermark must reach downstream before it, as in Flink), then
        ``on_periodic_emit``: the records up to the returned index go out as one batch,
        followed by :meth:`current_watermark`; the caller calls again from that index for the
        rest. So which records are late downstream does not depend on how the records were
        cut into batches, and a batch is cut only where a record is late (a generator that
        raises the watermark at every record of in-order data cuts nothing)."""
        g, out = self.generator, self.output
        name = type(g).__name__
        sent = out.watermark  # (the caller emitted it after the previous piece)
        n = len(ts)
        i, periodic = start, False
        try:
            while i < n:
                if ts[i] <= out.watermark and out.watermark > sent:
                    break  # late behind a watermark of this piece's records: that watermark goes first
                g.on_event(records[i], ts[i], out)
                i += 1
            periodic = True
            g.on_periodic_emit(out)
        except ConfigError:
            raise
        except Exception as exc:
            where = (f"{name}.on_periodic_emit after record {short_repr(records[i - 1], 200)}" if periodic
                     else f"{name}.on_event of record {short_repr(records[i], 200)}")
            raise UserCodeError(where, exc) from exc
        top = max(ts[start:i])
        if top > self.max_timestamp:
            self.max_timestamp = top
        self.last_activity_ms = now_ms
        return i

    def periodic(self) -> None:
        """``on_periodic_emit`` without records (every auto-watermark interval)."""
        g = self.generator
        try:
            g.on_periodic_emit(self.output)
        except ConfigError:
            raise
        except Exception as exc:
            raise UserCodeError(f"{type(g).__name__}.on_periodic_emit (every auto-watermark interval)", exc) from exc

    def current_watermark(self) -> int:
        return self.output.watermark


class WatermarkStrategy:
    """How to get timestamps and watermarks for a stream (Flink's ``WatermarkStrategy``).

    Example:
        >>> s = (WatermarkStrategy.for_bounded_out_of_orderness(2000)
        ...      .with_timestamp_column("ts").with_idleness(10_000))
        >>> s.bound_ms, s.idleness_ms
        (2000, 10000)
    """

    #: True only for :meth:`no_watermarks` (a source read with it gets no timestamps)
    emits_nothing: bool = False

    def __init__(self, bound_ms: int | dt.timedelta = 0, assigner: TimestampAssigner | None = None,
                 idleness_ms: int | dt.timedelta | None = None, generator_factory: Callable[[], WatermarkGenerator] | None = None) -> None:
        bound = duration_ms(bound_ms, "the out-of-orderness bound")
        if bound is None or bound < 0:
            raise ConfigError(f"out-of-orderness bound must be a non-negative int (ms) or timedelta, got {shown_ms(bound_ms)}")
        idleness = None if idleness_ms is None else duration_ms(idleness_ms, "the idleness")
        if idleness_ms is not None and (idleness is None or idleness <= 0):
            raise ConfigError(f"idleness must be a positive int (ms) or timedelta, got {shown_ms(idleness_ms)}")
        self.bound_ms = bound
        self.assigner = assigner
        self.idleness_ms = idleness
        self.generator_factory = generator_factory

    @staticmethod
    def for_bounded_out_of_orderness(max_out_of_orderness_ms: int | dt.timedelta) -> "WatermarkStrategy":
        """Watermark = max timestamp seen - ``max_out_of_orderness_ms`` - 1 (ms, a
        ``timedelta`` or PyFlink's ``Duration``: ``for_bounded_out_of_orderness(timedelta(seconds=2))``)."""
        return WatermarkStrategy(max_out_of_orderness_ms)

    @staticmethod
    def for_generator(factory: Callable[[], WatermarkGenerator]) -> "WatermarkStrategy":
        """Watermarks from a :class:`WatermarkGenerator` that ``factory()`` makes (one per
        split or operator subtask; Flink's ``forGenerator``), e.g. a punctuated one.
        Its state is not checkpointed (as in Flink): a restored generator starts fresh."""
        if not callable(factory):
            raise ConfigError(f"WatermarkStrategy.for_generator({factory!r}): pass a function that returns a WatermarkGenerator")
        return WatermarkStrategy(0, None, None, factory)

    @staticmethod
    def for_monotonous_timestamps() -> "WatermarkStrategy":
        """Timestamps never decrease: watermark = max timestamp seen - 1."""
        return WatermarkStrategy(0)

    @staticmethod
    def no_watermarks() -> "WatermarkStrategy":
        """No event timestamps and no watermarks (PyFlink's ``WatermarkStrategy.no_watermarks()``):
        ``env.from_source(source, WatermarkStrategy.no_watermarks(), "name")`` reads records
        without them, as ``from_source(source, None, "name")``. It assigns nothing, so
        ``assign_timestamps_and_watermarks`` refuses it, as do ``with_timestamp_*``.

        Example:
            >>> WatermarkStrategy.no_watermarks().emits_nothing
            True
        """
        return _NoWatermarks()

    def with_timestamp_column(self, column: str | int) -> "WatermarkStrategy":
        """Read timestamps from ``column`` (a column name or tuple index)."""
        return WatermarkStrategy(self.bound_ms, TimestampAssigner(column=column), self.idleness_ms, self.generator_factory)

    def with_timestamp_assigner(self, fn: Callable[[Any], int] | TimestampAssigner) -> "WatermarkStrategy":
        """Compute timestamps with ``fn(record) -> int``, a :class:`TimestampAssigner`, or an
        object with Flink's ``extract_timestamp(value, record_timestamp)``."""
        assigner = as_timestamp_assigner(fn, "WatermarkStrategy.with_timestamp_assigner()")
        return WatermarkStrategy(self.bound_ms, assigner, self.idleness_ms, self.generator_factory)

    def with_idleness(self, idleness_ms: int | dt.timedelta) -> "WatermarkStrategy":
        """A split without records for ``idleness_ms`` of processing time stops holding the
        watermark back (it is excluded from the minimum until it has records again)."""
        return WatermarkStrategy(self.bound_ms, self.assigner, idleness_ms, self.generator_factory)

    def create_generator(self) -> BoundedOutOfOrdernessWatermarks | _UserGenerator:
        """A fresh generator (one per split or per operator subtask)."""
        factory = self.generator_factory
        if factory is None:
            return BoundedOutOfOrdernessWatermarks(self.bound_ms)
        try:
            g = factory()
        except Exception as exc:
            raise ConfigError(f"WatermarkStrategy.for_generator: the factory {factory!r} raised {exc!r}") from exc
        if not isinstance(g, WatermarkGenerator):
            raise ConfigError(
                f"WatermarkStrategy.for_generator: the factory {factory!r} returned {short_repr(g, 80)}, not a "
                "WatermarkGenerator (subclass it: on_event(event, event_timestamp, output), on_periodic_emit(output))"
            )
        return _UserGenerator(g, factory)

    def require_assigner(self, where: str) -> TimestampAssigner:
        """The timestamp assigner, or a ConfigError naming ``where`` it was needed."""
        if self.assigner is None:
            raise ConfigError(
                f"{where}: the WatermarkStrategy has no timestamp assigner; add "
                ".with_timestamp_column('ts') or .with_timestamp_assigner(fn)"
            )
        if self.assigner.origin is None:  # (an assigner shared by two strategies keeps the first's)
            self.assigner.origin = f"assign_timestamps_and_watermarks({self!r})"
        return self.assigner

    def __repr__(self) -> str:
        return f"WatermarkStrategy(bound_ms={self.bound_ms}, assigner={self.assigner!r}, idleness_ms={self.idleness_ms})"


class _NoWatermarks(WatermarkStrategy):
    """:meth:`WatermarkStrategy.no_watermarks`: nothing to assign."""

    emits_nothing = True

    def _refuse(self, method: str) -> NoReturn:
        raise ConfigError(
            f"WatermarkStrategy.no_watermarks().{method}(): a strategy without watermarks assigns no timestamps; "
            "for timestamps, start from for_monotonous_timestamps() or for_bounded_out_of_orderness(ms)"
        )

    def with_timestamp_column(self, column: str | int) -> "WatermarkStrategy":
        self._refuse("with_timestamp_column")

    def with_timestamp_assigner(self, fn: Any) -> "WatermarkStrategy":
        self._refuse("with_timestamp_assigner")

    def with_idleness(self, idleness_ms: int | dt.timedelta) -> "WatermarkStrategy":
        self._refuse("with_idleness")

    def require_assigner(self, where: str) -> TimestampAssigner:
        raise ConfigError(
            f"{where}(WatermarkStrategy.no_watermarks()): nothing to assign; leave the call out for records without "
            "event timestamps, or give a strategy with a timestamp assigner"
        )

    def __repr__(self) -> str:
        return "WatermarkStrategy.no_watermarks()"


class TimestampsAndWatermarksOperator(StreamOperator):
    """Attaches timestamps (``Batch.timestamps``) and emits watermarks after each batch (a
    user's punctuated generator's also before any record of the batch it makes late: the
    batch is cut there).

    Upstream watermarks are not forwarded (this operator replaces them), except the final
    end-of-input watermark, and neither is the upstream stream status (idle/active): the
    stream's event time is this operator's (as in Flink). With ``with_idleness(ms)`` the
    operator's own output goes IDLE when no record has reached it for ``ms`` of processing
    time, and ACTIVE again before its next record (Flink's ``WatermarksWithIdleness``), so a
    subtask that receives nothing does not hold back event time downstream.

    A user's :class:`WatermarkGenerator` also gets ``on_periodic_emit`` every auto-watermark
    interval (``auto_watermark_interval_ms``; by default the task's, see
    :func:`auto_watermark_interval_ms`) through a processing-time timer, as in Flink's
    operator: its watermark goes out when it advanced. The timer stops at the final
    watermark, so it never keeps a task whose input ended alive.
    """

    def __init__(self, strategy: WatermarkStrategy, auto_watermark_interval_ms: int | None = None) -> None:
        self.assigner = strategy.require_assigner("assign_timestamps_and_watermarks")
        self.generator = strategy.create_generator()
        self.idleness_ms = strategy.idleness_ms
        interval = as_int(auto_watermark_interval_ms)
        if auto_watermark_interval_ms is not None and (interval is None or interval < 0):
            raise ConfigError(f"auto_watermark_interval_ms must be a non-negative int (ms), got {auto_watermark_interval_ms!r}")
        self.interval_ms = interval
        self._emitted = NO_TIMESTAMP
        self._idle = False
        self._last_activity_ms = 0
        self._idle_check: Cancellable | None = None
        self._periodic_timer: Cancellable | None = None
        self._ended = False

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        self._last_activity_ms = ctx.clock.now_ms()  # idle only after the idleness has passed
        self._arm_idle_check()
        if self.interval_ms is None:
            self.interval_ms = auto_watermark_interval_ms(ctx)
        self._arm_periodic(ctx.clock.now_ms())

    def _arm_periodic(self, now_ms: int) -> None:
        register = self.ctx.register_processing_timer
        # (a user's generator only: the built-in ones emit all they know after each batch)
        if (isinstance(self.generator, _UserGenerator) and self.interval_ms and register is not None
                and not self._ended and self._periodic_timer is None):
            self._periodic_timer = register(now_ms + self.interval_ms, self._on_periodic)

    def _on_periodic(self, now_ms: int) -> None:
        """Flink's periodic emission: ``on_periodic_emit`` with no records, then the watermark
        if it advanced. A stream idle by ``with_idleness`` is not asked (Flink's
        ``WatermarksWithIdleness``); a watermark after the generator's own ``mark_idle`` makes
        the output active again."""
        self._periodic_timer = None
        g = self.generator
        assert isinstance(g, _UserGenerator)  # (armed only for one)
        if self.idleness_ms is None or now_ms - self._last_activity_ms < self.idleness_ms:
            g.periodic()
            if g.idle:
                self._set_idle(True)
            elif g.current_watermark() > self._emitted:
                self._set_idle(False)
                self._emit_watermark(g.current_watermark())
        self._arm_periodic(now_ms)

    def _arm_idle_check(self) -> None:
        register = self.ctx.register_processing_timer
        if self.idleness_ms is not None and register is not None and self._idle_check is None:
            self._idle_check = register(self._last_activity_ms + self.idleness_ms, self._check_idle)

    def _check_idle(self, now_ms: int) -> None:
        self._idle_check = None
        assert self.idleness_ms is not None  # (armed only with an idleness)
        if now_ms - self._last_activity_ms >= self.idleness_ms:
            self._set_idle(True)  # armed again by the next record
        else:
            self._arm_idle_check()

    def _set_idle(self, idle: bool) -> None:
        if idle != self._idle:
            self._idle = idle
            emit_status = getattr(self.output, "emit_watermark_status", None)
            if emit_status is not None:
                emit_status(idle)

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        ts = self.assigner.timestamps(batch, first=True)
        out = Batch.of_arrow(batch.arrow()) if batch.is_arrow else Batch.of_records(batch.records())
        out.timestamps = ts
        if self.idleness_ms is not None and len(ts):
            self._last_activity_ms = self.ctx.clock.now_ms()
            self._set_idle(False)  # ACTIVE goes before the records
            self._arm_idle_check()
        if len(ts) and self._idle:
            self._set_idle(False)  # ACTIVE goes before the records (a user's generator may have marked it idle)
        g = self.generator
        if not len(ts):
            self.output.emit(out)
            return
        if isinstance(g, _UserGenerator):  # a punctuated watermark goes out before the records it makes late
            records, stamps, n, start = out.records(), ts.tolist(), len(ts), 0
            while start < n:
                end = g.on_records(records, stamps, start, self.ctx.clock.now_ms())
                self.output.emit(out if start == 0 and end == n else out.slice(start, end))
                if not g.idle:
                    self._emit_watermark(g.current_watermark())
                start = end
            if g.idle:  # (a user's generator marked the stream idle)
                self._set_idle(True)
            return
        self.output.emit(out)
        g.on_batch(None, ts, self.ctx.clock.now_ms())
        self._emit_watermark(g.current_watermark())

    def _emit_watermark(self, wm: int) -> None:
        if wm > self._emitted:
            self._emitted = wm
            self.output.emit_watermark(Watermark(wm))

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        if watermark.timestamp == 2**63 - 1:
            self._stop_periodic()  # the input has ended: nothing more to emit periodically
        if watermark.timestamp == 2**63 - 1 and watermark.timestamp > self._emitted:
            self._set_idle(False)  # (an idle output carries no watermark, not even the last)
            self._emitted = watermark.timestamp
            self.output.emit_watermark(watermark)

    def process_watermark_status(self, idle: bool, input_index: int = 0) -> None:
        """An upstream stream status is not passed on: the watermarks downstream are this
        operator's, and they do not stop because the stream before it went idle (its own
        idleness, if the strategy has one, follows from the records it stops getting)."""

    def _stop_periodic(self) -> None:
        self._ended = True
        if self._periodic_timer is not None:
            self._periodic_timer.cancel()
            self._periodic_timer = None

    def end_input(self) -> None:
        self._stop_periodic()

    def close(self) -> None:
        self._stop_periodic()
        if self._idle_check is not None:
            self._idle_check.cancel()
            self._idle_check = None

    def snapshot_state(self, checkpoint_id: int) -> dict[str, int]:
        return {"max_timestamp": self.generator.max_timestamp}

    def restore_state(self, states: list[Any]) -> None:
        # conservative on rescale: the smallest max timestamp of the old subtasks
        maxima = [s["max_timestamp"] for s in states if s]
        if maxima:
            self.generator.max_timestamp = min(maxima)


# --------------------------------------------------------------------------- per-split watermarks


@dataclass
class _SplitWatermark(Generic[S]):
    """A split with the state of its watermark generator (what a checkpoint stores)."""

    split: S
    max_timestamp: int = NO_TIMESTAMP
    #: records of the split the reader had read but not emitted yet (a list of records or an
    #: Arrow RecordBatch): a punctuated watermark cut their batch; the restored reader emits
    #: them before anything else (older snapshots: None)
    held: Any = None

    def weight(self) -> float:
        """The wrapped split's (:func:`~raystream.engine.connectors.split_weight`)."""
        return split_weight(self.split)


@dataclass
class _HeldRecords:
    """The split of :attr:`_SplitWatermark.held` records whose own split had ended when the
    snapshot was taken (the reader had read all of it): only those records are left of it."""

    split_id: Hashable
    rows: Any  # a list of records or an Arrow RecordBatch

    def weight(self) -> float:
        return float(len(self.rows))


class _HeldBatch:
    """Records a reader has read and not yet emitted, from ``start`` on (a punctuated
    watermark cut their batch): the next polls emit them before reading on."""

    __slots__ = ("sid", "batch", "records", "stamps", "start")

    def __init__(self, sid: Hashable, batch: Batch, stamps: list[int]) -> None:
        self.sid, self.batch, self.records, self.stamps, self.start = sid, batch, batch.records(), stamps, 0

    def rest(self) -> Any:
        """The records not emitted yet, for a snapshot: Arrow rows stay Arrow."""
        part = self.batch.slice(self.start, len(self.stamps))
        return part.arrow() if self.batch.is_arrow else part.records()


class WatermarkedSource(Source["S | _SplitWatermark[S]"], Generic[S]):
    """Wraps a split-based source so that its readers generate watermarks **per split**.

    The reader keeps one :class:`WatermarkGenerator` per split it reads and reports the
    minimum over its active splits (splits idle longer than the strategy's idleness are
    excluded; finished splits drop out). Splits are checkpointed with their generator state.
    A user's generator whose watermark makes a later record of the batch late cuts the batch
    before that record: the rest is held and returned by the next polls (checkpointed with
    its split, or as a split of its own once its split has ended, and emitted first by the
    restored reader).
    The built-in sources read their splits one after the other, so the active split is the
    one being read; a reader that interleaves splits reports the batch's split through
    ``current_split_id()``.

    Example:
        >>> from raystream.operators.sources import CollectionSource
        >>> src = WatermarkedSource(CollectionSource([{"ts": 1}, {"ts": 5}]),
        ...     WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts"))
        >>> src.bounded
        True
    """

    def __init__(self, source: Source[S], strategy: WatermarkStrategy) -> None:
        strategy.require_assigner(f"watermarks for source {source.describe()!r}")
        self.source = source
        self.strategy = strategy
        self.bounded = source.bounded
        self.split_type = source.split_type  # (of the wrapped splits; see accepts_restored_split)

    def resolve_at_submit(self) -> WatermarkedSource[S]:
        """A copy around the wrapped source's :meth:`~engine.connectors.Source.resolve_at_submit`
        (this wrapper when the wrapped source resolves nothing)."""
        inner = self.source.resolve_at_submit()
        if inner is self.source:
            return self
        outer = copy.copy(self)
        outer.source = inner
        return outer

    def create_splits(self, parallelism: int) -> list[S | _SplitWatermark[S]]:
        return list(self.source.create_splits(parallelism))

    def accepts_restored_split(self, split: Any) -> bool:
        """A split of the wrapped source, bare or with its watermark state (``_SplitWatermark``)."""
        inner = split.split if isinstance(split, _SplitWatermark) else split
        return isinstance(inner, _HeldRecords) or self.source.accepts_restored_split(inner)

    def create_reader(self, ctx: OperatorContext) -> SourceReader[S | _SplitWatermark[S]]:
        return _WatermarkedReader(self.source.create_reader(ctx), self.strategy, ctx)

    def describe(self) -> str:
        return f"{self.source.describe()} with watermarks"


def _split_id(split: object) -> Hashable:
    return getattr(split, "split_id", id(split))


class _WatermarkedReader(SourceReader["S | _SplitWatermark[S]"], Generic[S]):
    def __init__(self, inner: SourceReader[S], strategy: WatermarkStrategy, ctx: OperatorContext) -> None:
        self.inner = inner
        self.strategy = strategy
        self.assigner = strategy.require_assigner("source watermarks")
        self.clock = ctx.clock
        self.generators: dict[Hashable, BoundedOutOfOrdernessWatermarks | _UserGenerator] = {}  # split id -> generator
        self.wm = NO_TIMESTAMP
        # idleness counts from here until a split has records (as Flink's idleness timer starts
        # at its first check): a reader whose first poll finds nothing is not idle at once
        self._started_ms = self.clock.now_ms()
        # records read and not emitted yet (a punctuated watermark cut their batch), first first
        self._held: list[_HeldBatch] = []
        # a user's generators get on_periodic_emit every auto-watermark interval (Flink's
        # periodic emission), from a processing-time timer of the task (which also wakes an
        # idle source's loop to report the watermark); without one, from poll_watermark
        self._interval_ms = auto_watermark_interval_ms(ctx) if strategy.generator_factory is not None else 0
        self._register = getattr(ctx, "register_processing_timer", None)
        self._next_periodic_ms = self._started_ms + self._interval_ms
        self._periodic_timer: Cancellable | None = None
        self._arm_periodic()

    def _arm_periodic(self) -> None:
        if self._interval_ms and self._register is not None and self._periodic_timer is None:
            self._periodic_timer = self._register(self._next_periodic_ms, self._on_periodic)

    def _on_periodic(self, now_ms: int) -> None:
        self._periodic_timer = None
        self._periodic(now_ms)
        self._arm_periodic()

    def _periodic(self, now_ms: int) -> None:
        """``on_periodic_emit`` of every split's user generator, except a split idle by the
        strategy's idleness (as Flink's ``WatermarksWithIdleness``); poll_watermark reports
        the result."""
        self._next_periodic_ms = now_ms + self._interval_ms
        idle = self.strategy.idleness_ms
        for g in self.generators.values():
            if isinstance(g, _UserGenerator) and not (
                    idle is not None and g.last_activity_ms is not None and now_ms - g.last_activity_ms >= idle):
                g.periodic()

    def add_splits(self, splits: list[S | _SplitWatermark[S]]) -> None:
        raw: list[S] = []
        for s in splits:
            if isinstance(s, _SplitWatermark):
                sid = s.split.split_id if isinstance(s.split, _HeldRecords) else _split_id(s.split)
                if s.max_timestamp != NO_TIMESTAMP:  # a split that was never read stays unstarted
                    g = self.strategy.create_generator()
                    g.max_timestamp = s.max_timestamp
                    # restored: active, idle again only after the idleness (with no activity
                    # at all it could never become idle)
                    g.last_activity_ms = self.clock.now_ms()
                    self.generators[sid] = g
                rows = s.split.rows if isinstance(s.split, _HeldRecords) else s.held
                if rows is not None and len(rows):  # read before the snapshot, not emitted: first
                    batch = Batch.of_arrow(rows) if isinstance(rows, pa.RecordBatch) else Batch.of_records(rows)
                    ts = self.assigner.timestamps(batch, first=True)
                    batch.timestamps = ts
                    self._held.append(_HeldBatch(sid, batch, ts.tolist()))
                if not isinstance(s.split, _HeldRecords):
                    raw.append(s.split)
            else:
                raw.append(s)
        self.inner.add_splits(raw)

    def _current_split(self) -> Hashable:
        current = getattr(self.inner, "current_split_id", None)
        if current is not None:
            return current()
        splits = getattr(self.inner, "splits", None)
        return _split_id(splits[0]) if splits else None

    def _live_ids(self) -> set[Hashable]:
        splits = getattr(self.inner, "splits", None)
        live = {_split_id(s) for s in splits} if splits is not None else set(self.generators)
        return live | {h.sid for h in self._held}  # (a split read to its end with records held)

    def _generator(self, sid: Hashable) -> BoundedOutOfOrdernessWatermarks | _UserGenerator:
        g = self.generators.get(sid)
        if g is None:
            g = self.generators[sid] = self.strategy.create_generator()
        return g

    def poll_next(self) -> PollResult:
        if not self._held:
            result = self.inner.poll_next()
            if result is NOTHING_AVAILABLE or result is END_OF_INPUT:
                return result
            assert isinstance(result, Batch)  # poll_next returns a Batch or one of the two sentinels
            sid = self._current_split()
            ts = self.assigner.timestamps(result, first=True)
            result.timestamps = ts
            if not len(ts):
                return result
            g = self._generator(sid)
            if not isinstance(g, _UserGenerator):
                g.on_batch(None, ts, self.clock.now_ms())
                return result
            self._held.append(_HeldBatch(sid, result, ts.tolist()))
        # a user's generator: the batch goes out up to a record that a watermark of the records
        # before it makes late; poll_watermark reports that watermark before the rest is polled
        held = self._held[0]
        start, n = held.start, len(held.stamps)
        g = self._generator(held.sid)
        assert isinstance(g, _UserGenerator)  # (records are held only after a user's generator cut them)
        end = g.on_records(held.records, held.stamps, start, self.clock.now_ms())
        if end >= n:
            self._held.pop(0)
        else:
            held.start = end
        return held.batch if start == 0 and end == n else held.batch.slice(start, end)

    def poll_watermark(self) -> int | None:
        live = self._live_ids()
        for sid in [s for s in self.generators if s not in live]:
            del self.generators[sid]  # finished split: no longer holds time back
        now = self.clock.now_ms()
        if self._interval_ms and self._register is None and now >= self._next_periodic_ms:
            self._periodic(now)  # (a context without processing-time timers)
        idle = self.strategy.idleness_ms
        marks = [
            g.current_watermark()
            for sid, g in self.generators.items()
            if not (g.idle or idle is not None and g.last_activity_ms is not None and now - g.last_activity_ms >= idle)
        ]
        if not marks:
            return None
        wm = min(marks)
        if wm > self.wm:
            self.wm = wm
            return wm
        return None

    def is_idle(self) -> bool:
        if self._held:  # records to emit
            return False
        if self.inner.is_idle():  # (the reader's own word: e.g. it has no split to read)
            return True
        if self.generators and all(g.idle for g in self.generators.values()):
            return True  # (user generators that marked themselves idle)
        idle = self.strategy.idleness_ms
        if idle is None:
            return False
        now = self.clock.now_ms()
        if not self.generators:
            return now - self._started_ms >= idle
        return all(g.last_activity_ms is not None and now - g.last_activity_ms >= idle for g in self.generators.values())

    def snapshot_state(self, checkpoint_id: int) -> list[S | _SplitWatermark[S]]:
        held = {h.sid: h.rest() for h in self._held}  # read, not emitted: restored first
        out: list[S | _SplitWatermark[S]] = []
        for s in self.inner.snapshot_state(checkpoint_id):
            sid = _split_id(s)
            g = self.generators.get(sid)
            out.append(_SplitWatermark(copy.copy(s), g.max_timestamp if g else NO_TIMESTAMP, held.pop(sid, None)))
        for sid, rows in held.items():  # their split has ended
            g = self.generators.get(sid)
            out.append(_SplitWatermark(_HeldRecords(sid, rows), g.max_timestamp if g else NO_TIMESTAMP))  # type: ignore[arg-type]
        return out

    def close(self) -> None:
        if self._periodic_timer is not None:
            self._periodic_timer.cancel()
            self._periodic_timer = None
        self.inner.close()
