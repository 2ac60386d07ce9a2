"""Built-in sinks: collect (results to the driver), print, and exactly-once file sinks.

``collect`` and the file sinks are transactional: what a task writes becomes visible only
when the checkpoint covering it completes (or when the whole job has finished), so a job
that recovers from failures still delivers every record exactly once.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import logging
import math
import re
import sys
import threading
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raystream.engine.collect import CLOSE_DRAIN_S, CollectEndpoint, CollectSender
from raystream.engine.connectors import Committer, Sink, SinkWriter
from raystream.engine.errors import (
    ConfigError,
    JobFailed,
    RaystreamError,
    UserCodeError,
    short_repr,
)
from raystream.engine.operator import OperatorContext
from raystream.engine.records import (
    KIND_KEY,
    Batch,
    arrow_to_records,
    batch_kind,
    concat_runs,
    equal_value,
    why_not_columns,
)

from .sources import filesystem_for

__all__ = ["CollectSink", "StreamingCollectSink", "PrintSink", "FileSink", "ParquetSink", "JsonLinesSink", "collected_records", "collected_table"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- collect
#: a committable of ``collect``: (subtask, ("chk", checkpoint id) or ("final", attempt), batches)
_Collected = tuple[int, tuple[str, int | None], list[pa.RecordBatch]]


class _CollectWriter(SinkWriter[_Collected]):
    def __init__(self, ctx: OperatorContext) -> None:
        self.subtask = ctx.subtask_index
        self.attempt = ctx.attempt
        self.buffer: list[pa.RecordBatch] = []

    def write(self, batch: Batch) -> None:
        self.buffer.append(batch.arrow())

    def prepare_commit(self, checkpoint_id: int | None) -> list[_Collected]:
        if not self.buffer:
            return []
        tag = ("chk", checkpoint_id) if checkpoint_id is not None else ("final", self.attempt)
        # few large batches: each is pickled, sent and unpickled on its way to the job master
        # and again to the driver (stateless record job, 1M ints collected at p=2: last task
        # finished -> driver returned 42 -> 31 ms, median of 6)
        out: list[_Collected] = [(self.subtask, tag, concat_runs(self.buffer))]
        self.buffer = []
        return out


class _CollectCommitter(Committer[_Collected]):
    in_memory = True  # the job master logs commits so that a master taking over can rebuild them

    def __init__(self) -> None:
        self.batches: list[_Collected] = []
        self.committed: set[tuple[int, tuple[str, int | None]]] = set()

    def commit(self, committables: list[_Collected]) -> None:
        for subtask, tag, batches in committables:
            if (subtask, tag) in self.committed:
                continue
            self.committed.add((subtask, tag))
            self.batches.append((subtask, tag, batches))

    def result(self) -> list[pa.RecordBatch]:
        return [b for _s, _t, batches in self.batches for b in batches]


class CollectSink(Sink[_Collected]):
    """Collects every record into the job result (``JobResult.collected``)."""

    def create_writer(self, ctx: OperatorContext) -> SinkWriter[_Collected]:
        return _CollectWriter(ctx)

    def create_committer(self) -> Committer[_Collected]:
        return _CollectCommitter()

    def describe(self) -> str:
        return "collect"


#: how many times its ``max_bytes`` (the job's ``buffer_bytes``) a streaming collect writer may
#: hold of output whose checkpoints have not completed before it fails its task (256 MiB of
#: output at the default 8 MiB): checkpoints that keep failing must not grow it without bound
HELD_BYTES_FACTOR = 32

#: a committable of a streamed collect: (subtask, ("final", attempt), batches held at the end
#: of input, (the writer's connection id, messages it sent))
_StreamTail = tuple[int, tuple[str, int | None], list[pa.RecordBatch], tuple[str, int]]


class _StreamingCollectWriter(SinkWriter[_StreamTail]):
    """Sends what a ``collect()`` sink task writes to the driver's iterator
    (:class:`engine.collect.CloseableIterator`) while the job runs.

    Without checkpointing each batch goes as it is written. With checkpointing, what was
    written before checkpoint ``n``'s barrier is one piece ``("chk", n)``, sent once
    checkpoint ``n`` (or a later one) completes, and kept in the writer's state until it has
    been sent (also while it waits for a slow driver): a job restored from a checkpoint
    sends the pieces its state holds again (the iterator delivers each ``(subtask, piece)``
    once), and what comes after the checkpoint is replayed. What the writer holds at the end
    of input (written after the last barrier, or for a checkpoint that has not completed
    yet) goes with its committable to the job master, which commits it as it commits
    ``collect()``'s (at the job's end, or with its final checkpoint): exactly once.

    What it holds for checkpoints that have not completed is bounded: past ``HELD_BYTES_FACTOR``
    times the sink's ``max_bytes`` (checkpoints keep failing, or do not complete for long) the
    writer fails its task naming the bound, and the job restarts from its last completed
    checkpoint (under its restart strategy), which frees it. It cannot pause its input
    instead: what it holds is released only when a checkpoint completes, whose barrier must
    reach the sink through the data it would not take.
    """

    def __init__(self, sink: StreamingCollectSink, ctx: OperatorContext) -> None:
        self.subtask = ctx.subtask_index
        self.parallelism = ctx.parallelism
        self.attempt = ctx.attempt
        self.aligned = ctx.checkpointing
        post = ctx.post
        self.sender = CollectSender(sink.endpoint, f"collect sink {ctx.task_name!r}",
                                    wake=(lambda: post(_nothing)) if post is not None else None,
                                    max_bytes=sink.max_bytes)
        self.buffer: list[pa.RecordBatch] = []  # written since the last barrier
        self.pending: list[tuple[int, list[pa.RecordBatch]]] = []  # (checkpoint, written before it): not complete
        # pieces of completed checkpoints handed to the sender: (message seq, subtask, checkpoint, batches)
        self.sending: list[tuple[int, int, int, list[pa.RecordBatch]]] = []
        self.seq = 0
        self.where = f"collect sink {ctx.task_name!r}"
        self.held_bytes = 0  # of buffer and pending: output of checkpoints not completed
        self._pending_bytes = 0  # of pending
        self.max_held_bytes = HELD_BYTES_FACTOR * sink.max_bytes

    def _send_piece(self, subtask: int, checkpoint_id: int, batches: list[pa.RecordBatch]) -> None:
        self.sending.append((self.sender.sent, subtask, checkpoint_id, batches))
        self.sender.send(subtask, ("chk", checkpoint_id), batches)

    def restore_state(self, states: list[Any]) -> None:
        # pieces of completed checkpoints (the one restored, or earlier ones) not known to be
        # sent: sent again, each by one new subtask (the iterator drops those it has)
        for held in states:
            for subtask, checkpoint_id, batches in held or []:
                if subtask % self.parallelism == self.subtask:
                    self._send_piece(subtask, checkpoint_id, batches)

    def write(self, batch: Batch) -> None:
        if self.aligned:
            data = batch.arrow()
            self.held_bytes += data.nbytes
            self.buffer.append(data)
            if self.held_bytes > self.max_held_bytes:
                self._too_much_held()
        else:
            self.sender.send(self.subtask, ("run", self.attempt, self.seq), [batch.arrow()])
            self.seq += 1

    def _too_much_held(self) -> None:
        waiting = [cid for cid, _batches in self.pending]
        since = f"checkpoints {waiting[0]}..{waiting[-1]} have not completed" if waiting else \
            "no checkpoint barrier came"
        raise RaystreamError(
            f"{self.where}: holds {self.held_bytes:,} bytes of output for the driver's iterator that no completed "
            f"checkpoint released ({since}), more than its bound of {self.max_held_bytes:,} bytes "
            f"(HELD_BYTES_FACTOR {HELD_BYTES_FACTOR} x buffer_bytes {self.max_held_bytes // HELD_BYTES_FACTOR:,}): "
            "checkpoints keep failing or take too long (see the job master's log for why); the job restarts from its "
            "last completed checkpoint. Fix the checkpoint storage, checkpoint more often, or give the job a larger "
            "StreamEnvironment(buffer_bytes=...)")

    def accepts_input(self) -> bool:
        return self.sender.has_room()

    def prepare_commit(self, checkpoint_id: int | None) -> list[_StreamTail]:
        if checkpoint_id is not None:
            if self.buffer:
                piece = concat_runs(self.buffer)
                self.pending.append((checkpoint_id, piece))
                self.buffer = []
                self._pending_bytes += sum(b.nbytes for b in piece)
                self.held_bytes = self._pending_bytes
            return []
        # end of input: what was sent must have arrived before the task reports its end
        self.sender.flush()
        held = [b for _cid, batches in self.pending for b in batches] + concat_runs(self.buffer)
        self.pending, self.buffer, self.sending = [], [], []
        self.held_bytes = self._pending_bytes = 0
        self.sender.close()
        return [(self.subtask, ("final", self.attempt), held, (self.sender.id, self.sender.sent))]

    def snapshot_state(self, checkpoint_id: int) -> list[tuple[int, int, list[pa.RecordBatch]]]:
        done = self.sender.done
        self.sending = [s for s in self.sending if s[0] >= done]
        return ([(subtask, cid, batches) for _seq, subtask, cid, batches in self.sending]
                + [(self.subtask, cid, batches) for cid, batches in self.pending])

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        complete = [p for p in self.pending if p[0] <= checkpoint_id]
        self.pending = [p for p in self.pending if p[0] > checkpoint_id]
        if complete:
            self._pending_bytes = sum(b.nbytes for _cid, batches in self.pending for b in batches)
            self.held_bytes = self._pending_bytes + sum(b.nbytes for b in self.buffer)
        for cid, batches in complete:
            self._send_piece(self.subtask, cid, batches)

    def close(self) -> None:
        # what it handed to the sender was committed (a checkpoint or a stop-with-savepoint
        # completed; without checkpointing, written): sent before the task ends, also when it
        # ends at a savepoint barrier with the driver still reading what came before
        self.sender.close(drain_s=CLOSE_DRAIN_S)


def _nothing() -> None:
    """A mailbox call that only wakes the task (its sink takes input again)."""


class _StreamTailCommitter(_CollectCommitter):
    def commit(self, committables: list[Any]) -> None:
        for subtask, tag, batches, sent in committables:
            if (subtask, tag) not in self.committed:
                self.committed.add((subtask, tag))
                self.batches.append((subtask, tag, batches, sent))  # type: ignore[arg-type]

    def result(self) -> list[_StreamTail]:  # type: ignore[override]
        return list(self.batches)  # type: ignore[arg-type]


class StreamingCollectSink(Sink[_StreamTail]):
    """The ``collect()`` sink of ``execute_and_collect(stream=True)`` / ``limit=``: sends
    the records to the driver's :class:`~engine.collect.CollectServer` at ``endpoint`` while
    the job runs (see :class:`_StreamingCollectWriter` for when). Its task takes no input
    while about ``max_bytes`` wait to be sent (a consumer slower than the job holds the job
    back; memory stays bounded)."""

    gates_input = True

    def __init__(self, endpoint: CollectEndpoint, max_bytes: int = 8 << 20) -> None:
        self.endpoint = endpoint
        self.max_bytes = max_bytes

    def create_writer(self, ctx: OperatorContext) -> SinkWriter[_StreamTail]:
        return _StreamingCollectWriter(self, ctx)

    def create_committer(self) -> Committer[_StreamTail]:
        return _StreamTailCommitter()  # type: ignore[return-value]

    def describe(self) -> str:
        return "collect"


def collected_records(batches: list[pa.RecordBatch]) -> list[Any]:
    """The records of collected batches, as Python objects."""
    out: list[Any] = []
    for b in batches:
        out.extend(arrow_to_records(b))
    return out


def collected_table(batches: list[pa.RecordBatch]) -> pa.Table:
    """Collected batches as one table, as ``execute_and_collect(as_table=True)`` returns it.

    The table depends only on the records, never on the parallelism or on where batches were
    cut: dict records make a column per key of any record (first-seen order, null where a
    record lacks the key; nested values as list and struct columns); other scalar records
    (int, float, str, bytes, bool, None, datetimes, Decimals...) one ``value`` column (None a
    null); tuples of one length columns ``f0``..``fn``. The values of a column take one Arrow
    type: ints and floats make doubles, a column that is null in some batches takes the
    others' type, datetimes of several zones the first one's zone. Every value comes back
    equal and of its kind (an int may come back a float, nothing else changes: never a str
    as bytes, a float as a Decimal, an int rounded).

    Raises:
        ConfigError: records that make no such table (objects, dicts mixed with scalars or
            tuples, tuples of several lengths, ints beyond 64 bits, a field of str and bytes,
            of ints and strs...), naming an offending record; collect the records as they
            are (``as_table=False``) instead.

    Example:
        >>> import datetime as dt
        >>> from raystream.engine.records import records_to_arrow
        >>> utc = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        >>> collected_table([records_to_arrow([{"at": utc, "n": 1}]), records_to_arrow([{"at": utc, "n": 2.5}])]).schema
        at: timestamp[us, tz=UTC]
        n: double
        >>> collected_table([records_to_arrow([1, 2.5, None])]).column("value").to_pylist()
        [1.0, 2.5, None]
    """
    pieces = [_collected_table_of(b) for b in batches if b.num_rows]
    if not pieces:  # (no record: the columns of the empty typed batches, if any)
        empty = [_strip(b) for b in batches if batch_kind(b.schema) != b"pickle"]
        return _unified([("row", t) for t in empty]) if empty else pa.table({})
    return _unified(pieces)


#: how records are laid out as columns: "row" (dicts), "scalar" (a ``value`` column), or
#: ("tuple", n) (columns ``f0``..``f{n-1}``)
_Shape = Any

_AS_RECORDS = "collect the records as they are (as_table=False), or give each field values of one kind"


def _strip(rb: pa.RecordBatch) -> pa.Table:
    return pa.Table.from_batches([rb.replace_schema_metadata(None)])


def _shape_of(record: Any) -> _Shape:
    if type(record) is dict:
        return "row"
    if type(record) is tuple:
        return ("tuple", len(record))
    if record is None or isinstance(record, (int, float, str, bytes, decimal.Decimal, dt.date, dt.time,
                                             dt.timedelta, np.generic)):
        return "scalar"
    return None


def _shape_name(shape: _Shape) -> str:
    if shape == "row":
        return "dicts (a column per key)"
    if shape == "scalar":
        return "scalars (one 'value' column)"
    return f"tuples of {shape[1]} fields (columns f0..f{shape[1] - 1})"


def _as_rows(records: list[Any], shape: _Shape) -> list[Any]:
    if shape == "row":
        return records
    if shape == "scalar":
        return [{"value": r} for r in records]
    return [{f"f{i}": v for i, v in enumerate(r)} for r in records]


def _collected_table_of(rb: pa.RecordBatch) -> tuple[_Shape, pa.Table]:
    """The shape and the table of one non-empty collected batch."""
    kind = batch_kind(rb.schema)
    if kind == b"scalar":
        return "scalar", _strip(rb)
    if kind == b"tuple":
        return ("tuple", rb.num_columns), _strip(rb)
    if kind != b"pickle":  # (typed dict records, exact as a channel sends them)
        return "row", _strip(rb)
    records = arrow_to_records(rb)
    shape = _shape_of(records[0])
    for r in records:
        s = _shape_of(r)
        if s is None:
            raise ConfigError(
                f"execute_and_collect(as_table=True): a record of type {type(r).__name__} has no table form "
                f"(records are dicts, tuples or scalars for a table): {short_repr(r)}; {_AS_RECORDS}"
            )
        if s != shape:
            raise _shapes_differ(shape, records[0], s, r)
    rows = _as_rows(records, shape)
    table = _table_of_rows(rows)
    if table is None:
        i = _first_offending(rows)
        raise ConfigError(
            f"execute_and_collect(as_table=True): {_why_not(rows, i)}: record {short_repr(records[i])}; {_AS_RECORDS}"
        )
    return shape, table


def _table_of_rows(rows: list[dict[str, Any]]) -> pa.Table | None:
    """Dict rows as a table whose values all come back equal and of their kind, else None."""
    rb = Batch.of_records(rows).columns(nested=True)
    if batch_kind(rb.schema) == b"pickle":
        return None
    table = _strip(rb)
    names = table.column_names
    for back, row in zip(table.to_pylist(), rows):
        if any(not _same(back[k], row.get(k)) for k in names):
            return None
    return table


def _first_offending(rows: list[dict[str, Any]]) -> int:
    """The index of a row that makes no table with the rows before it (or alone): the
    first rows up to it make one, up to and with it none (bisected)."""
    lo, hi = 0, len(rows)  # rows[:lo] make a table (none: trivially), rows[:hi] do not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _table_of_rows(rows[:mid]) is not None:
            lo = mid
        else:
            hi = mid
    return hi - 1


def _why_not(rows: list[dict[str, Any]], i: int) -> str:
    row = rows[i]
    for k, v in row.items():
        if _table_of_rows([{k: v}]) is None:
            return f"Arrow holds no exact value of field {k!r} = {short_repr(v)}"
    for k, v in row.items():
        before = next((r[k] for r in rows[:i] if r.get(k) is not None), None)
        if before is not None and v is not None and _table_of_rows([{k: before}, {k: v}]) is None:
            return (f"field {k!r} holds {type(before).__name__} and {type(v).__name__} values "
                    f"({short_repr(before)} and {short_repr(v)}), which make no one Arrow column")
    return "the record makes no one table with the records before it"


def _kind(value: Any) -> Any:
    """What kind of value ``value`` is, for :func:`_same`: ints and floats are one kind."""
    if isinstance(value, (bool, np.bool_)):
        return bool
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float
    if isinstance(value, (str, np.str_)):
        return str
    if isinstance(value, (bytes, np.bytes_)):
        return bytes
    return type(value)


def _same_kind(back: Any, value: Any) -> bool:
    kb, kv = _kind(back), _kind(value)
    return kb is kv or issubclass(kb, kv) or issubclass(kv, kb)


def _same(back: Any, value: Any) -> bool:
    """Whether ``back`` (a value as the table gives it back) is ``value`` as a table may hold
    it: equal and of its kind (nested values walked; an int may come back a float, a tuple or
    a 1-d numpy array a list; never a str as bytes, a bool as an int, a Decimal as a float)."""
    return equal_value(back, value, _same_kind)


def _shapes_differ(shape: _Shape, record: Any, other: _Shape, other_record: Any) -> ConfigError:
    return ConfigError(
        f"execute_and_collect(as_table=True): the records are {_shape_name(shape)} and {_shape_name(other)}, "
        f"which make no one table: {short_repr(record)} and {short_repr(other_record)}; collect the records "
        f"as they are (as_table=False), or map them to one form (e.g. every record a dict)"
    )


def _unified(pieces: list[tuple[_Shape, pa.Table]]) -> pa.Table:
    """The tables of collected batches as one: all of one shape; their schemas unified as
    ``pa.unify_schemas(promote_options="permissive")`` does, where every promoted value
    comes back equal and of its kind (ints as doubles; never strs as bytes)."""
    shape, first = pieces[0]
    for s, t in pieces:
        if s != shape:
            raise _shapes_differ(shape, _record_of(shape, first, 0), s, _record_of(s, t, 0))
    tables = [t for _s, t in pieces]
    if len(tables) == 1:
        return tables[0]
    tables = _one_zone(tables)
    target = tables[0].schema
    for t in tables[1:]:
        try:
            target = pa.unify_schemas([target, t.schema], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise ConfigError(
                f"execute_and_collect(as_table=True): the collected batches do not make one table: schema "
                f"{target.to_string(show_schema_metadata=False)!r} vs {t.schema.to_string(show_schema_metadata=False)!r} "
                f"({exc}): record {short_repr(_record_of(shape, t, 0))}; give the records one type per field, "
                f"or collect them as records (as_table=False)"
            ) from exc
    for t in tables:
        for name in t.column_names:
            want = target.field(name).type
            column = t.column(name)
            if column.type != want and not pa.types.is_null(column.type):
                _check_promoted(shape, t, name, column, want)
    return pa.concat_tables(tables, promote_options="permissive")


def _one_zone(tables: list[pa.Table]) -> list[pa.Table]:
    """The tables with every zoned timestamp column of a name in the zone it first has, as
    the datetimes of several zones in one batch are (the same instants)."""
    zone: dict[str, pa.DataType] = {}
    for t in tables:
        for f in t.schema:
            if pa.types.is_timestamp(f.type) and f.type.tz is not None:
                zone.setdefault(f.name, f.type)
    if not zone:
        return tables
    out = []
    for t in tables:
        for i, f in enumerate(t.schema):
            want = zone.get(f.name)
            if want is not None and pa.types.is_timestamp(f.type) and f.type.tz is not None and f.type.tz != want.tz:
                t = t.set_column(i, f.name, t.column(i).cast(pa.timestamp(f.type.unit, want.tz)))
        out.append(t)
    return out


_NO_VALUE = object()  # (a value that does not cast)


def _check_promoted(shape: _Shape, table: pa.Table, name: str, column: pa.ChunkedArray, want: pa.DataType) -> None:
    """Refuses a column whose values would not come back as they are when cast to ``want``."""
    values = column.to_pylist()
    try:
        backs = column.cast(want).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # (an int beyond 2**53 as a double)
        backs = []
        for v in values:
            try:
                backs.append(pa.array([v], column.type).cast(want)[0].as_py())
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                backs.append(_NO_VALUE)
    for i, (back, value) in enumerate(zip(backs, values)):
        if back is _NO_VALUE or not _same(back, value):
            raise ConfigError(
                f"execute_and_collect(as_table=True): field {name!r} holds {column.type} values in some "
                f"records and values that make it {want} in others, and {short_repr(value)} would "
                f"{'not fit' if back is _NO_VALUE else f'come back as {short_repr(back)}'}: record {short_repr(_record_of(shape, table, i))}; {_AS_RECORDS}"
            )


def _record_of(shape: _Shape, table: pa.Table, i: int) -> Any:
    """Row ``i`` of ``table`` as the record it is a row of (for error messages)."""
    if not table.num_rows:
        return None
    row = table.slice(i, 1).to_pylist()[0]
    return row if shape == "row" else row["value"] if shape == "scalar" else tuple(row.values())


# ---------------------------------------------------------------- print
class _PrintWriter(SinkWriter[object]):  # no committables: printed records are out
    def __init__(self, ctx: OperatorContext, prefix: str) -> None:
        tag = f"{ctx.subtask_index + 1}> " if ctx.parallelism > 1 else ""
        self.prefix = f"{prefix}{tag}"

    def write(self, batch: Batch) -> None:
        out = sys.stdout
        for r in batch.records():
            out.write(f"{self.prefix}{r}\n")
        out.flush()


class PrintSink(Sink[object]):
    """Prints every record to stdout (``"k> record"`` with the subtask k when parallel).
    Not transactional: records print as they arrive."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def create_writer(self, ctx: OperatorContext) -> SinkWriter[object]:
        return _PrintWriter(ctx, self.prefix)


# ---------------------------------------------------------------- files
@dataclass
class FileCommittable:
    """A pending file to publish: rename ``pending`` to ``final`` (idempotent).

    ``final`` holds the token of the writer that wrote it (unique per writer instance), so no
    other writer, sink, run or restored attempt ever commits to the same name; ``size`` is the
    file's length in bytes when it was finished (None in committables of older versions).
    """

    pending: str
    final: str
    size: int | None = None


class _FileCommitter(Committer[FileCommittable]):
    def __init__(self, sink: "FileSink") -> None:
        self.sink = sink
        # the part files committed, in order (a dict: a re-commit is found in O(1); a list
        # scanned for it made a long job's commits cost time in the files it had written:
        # 54 s of the job master's time over the first 50,000)
        self.files: dict[str, None] = {}
        # the savepoint markers this committer wrote -> the pending files they name that are not
        # committed yet (a marker goes with the commit of its last file)
        self.markers: dict[str, set[str]] = {}
        self.lock = threading.Lock()  # (a savepoint's markers are written while a commit may run)

    def protect_savepoint(self, checkpoint_id: int, committables: list[FileCommittable]) -> None:
        """Savepoint ``checkpoint_id`` records ``committables`` (the job master calls this before
        it writes the savepoint): write a marker (``.savepoint-<id>-<random>`` in :data:`WORK_DIR`) naming
        their pending files, which the clean-up after a failure then keeps, since a job resumed
        from the savepoint commits them. The marker is deleted once they are all committed (by
        this committer, or by a later clean-up that finds them gone). Raises when it cannot be
        written: the savepoint then fails, and the job goes on."""
        pending = {c.pending.rsplit("/", 1)[-1] for c in committables}
        if not pending:
            return
        fs = self.sink.filesystem()
        work = f"{self.sink.base}/{WORK_DIR}"
        fs.create_dir(work, recursive=True)
        path = f"{work}/.savepoint-{checkpoint_id}-{uuid.uuid4().hex[:16]}"
        with fs.open_output_stream(path) as f:
            f.write(json.dumps({"savepoint": checkpoint_id, "files": sorted(pending)}).encode())
        with self.lock:
            self.markers[path] = pending

    def unprotect_savepoint(self, checkpoint_id: int, job_id: str, uid: str) -> int:
        """Savepoint ``checkpoint_id`` of job ``job_id`` was deleted (a stop that never
        completed, replaced by a fresh savepoint: ``CheckpointStorage.discard_unrecorded_stop``):
        nothing restores the pending files it recorded any more. Delete the files its markers
        name, then the markers; only markers naming files of this job's sink (``uid``) alone
        (another job's savepoint of the same number is never touched). Returns how many files
        went. Raises OSError when listing, reading or deleting fails (the job master logs it:
        a later clean-up deletes what is left once no marker names it)."""
        fs = self.sink.filesystem()
        work = f"{self.sink.base}/{WORK_DIR}"
        tag = _job_tag(job_id, uid)
        removed = 0
        for info in fs.get_file_info(pafs.FileSelector(work, allow_not_found=True)):
            m = _MARKER.match(info.base_name)
            if m is None or int(m[1]) != checkpoint_id:
                continue
            with fs.open_input_stream(info.path) as f:
                listed = json.loads(f.read())["files"]
            if not isinstance(listed, list) or not all(
                    isinstance(name, str) and (n := _INPROGRESS.match(name)) is not None and n[1] == tag
                    for name in listed):
                continue
            removed += sum(_delete(fs, f"{work}/{name}") for name in listed)
            _delete(fs, info.path)
        return removed

    def clean_up_after_job(self, job_id: str, uid: str, recorded: list[Any]) -> int:
        """Job ``job_id`` ended for good (failed, or cancelled): delete the in-progress and
        pending part files its sink ``uid`` left in :data:`WORK_DIR` (any attempt's: none runs
        any more), except the ones a complete checkpoint of the job records (``recorded``, the
        committables the job master read from them: a job started from a retained checkpoint
        commits them) and the ones a savepoint marker names (a job resumed from the savepoint
        commits them); markers whose files are all gone go too. Other jobs', other sinks' and
        untagged (older releases') files are never touched. The job master calls it once the
        job's tasks are gone and no ``_metadata`` write is in flight. Returns how many files
        went.

        Raises:
            OSError: listing, reading a marker or deleting failed (the job master logs it and
                reports it in the job's ``info()["sink_cleanup"]``; the job's end stands).
        """
        fs = self.sink.filesystem()
        tag = _job_tag(job_id, uid)
        keep = {c.pending.rsplit("/", 1)[-1] for c in recorded if isinstance(c, FileCommittable)}
        return _remove_uncommitted(fs, f"{self.sink.base}/{WORK_DIR}", lambda m: m[1] == tag, keep)

    def commit(self, committables: list[FileCommittable]) -> None:
        fs = self.sink.filesystem()
        for c in committables:
            self._commit(fs, c)
            self.files[c.final] = None
        self._unmark(fs, committables)

    def _unmark(self, fs: pafs.FileSystem, committables: list[FileCommittable]) -> None:
        """Delete the savepoint markers whose files are all committed now (best effort: a
        clean-up deletes a marker whose files are all gone)."""
        with self.lock:
            if not self.markers:
                return
            names = {c.pending.rsplit("/", 1)[-1] for c in committables}
            done = []
            for path, pending in self.markers.items():
                pending -= names
                if not pending:
                    done.append(path)
            for path in done:
                del self.markers[path]
        for path in done:
            try:
                fs.delete_file(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("file sink %r: could not delete savepoint marker %r: %s", self.sink.path, path, exc)

    def commit_restored(self, committables: list[FileCommittable]) -> None:
        """Commit the part files a restored checkpoint or savepoint records (the job master's
        re-commit at a restore). One whose pending and final files are both gone was committed
        by an earlier job or attempt and removed since (a downstream consumer took it: the
        stop, consume, resume workflow) and is skipped with a warning, as Flink's file sink's
        ``commitAfterRecovery`` does; a first :meth:`commit` of such a file fails the job."""
        fs = self.sink.filesystem()
        gone = []
        for c in committables:
            pending, final = fs.get_file_info([c.pending, c.final])
            if pending.type == pafs.FileType.NotFound and final.type == pafs.FileType.NotFound:
                gone.append(c.final)
                continue
            self._commit(fs, c)
            self.files[c.final] = None
        self._unmark(fs, committables)
        if gone:
            log.warning("file sink %r: %d part files that the restored checkpoint or savepoint records were neither "
                        "pending nor in place (committed before and removed since, e.g. %r); not committed again",
                        self.sink.path, len(gone), gone[0])

    def _commit(self, fs: pafs.FileSystem, c: FileCommittable) -> None:
        """Rename ``c.pending`` to ``c.final``; a no-op when an earlier commit of ``c`` did it
        (a re-commit after recovery). Never replaces a file that is not ``c``'s."""
        pending, final = fs.get_file_info([c.pending, c.final])
        if final.type == pafs.FileType.NotFound:
            if pending.type != pafs.FileType.File:
                raise JobFailed(
                    f"file sink {self.sink.path!r}: cannot commit {c.final!r}: the pending file "
                    f"{c.pending!r} is gone"
                )
            fs.move(c.pending, c.final)
            return
        # the target exists: this committable's earlier commit, or someone else's file
        has_pending = pending.type == pafs.FileType.File
        ours = (
            final.type == pafs.FileType.File
            and (c.size is None or final.size == c.size)
            and (not has_pending or pending.size == final.size)
        )
        if not ours:
            raise JobFailed(
                f"file sink {self.sink.path!r}: cannot commit {c.final!r}: a file of that name exists "
                f"({final.size!r} bytes) and is not this commit's (pending file {c.pending!r}: "
                f"{pending.size if has_pending else 'gone'!r}, {c.size!r} bytes when written); part "
                "file names hold a token unique to each sink writer, so something other than this "
                "sink wrote it; move it away (the sink never replaces a file)"
            )
        if has_pending:  # a move that copied and did not delete (object stores): finish it
            fs.delete_file(c.pending)

    def result(self) -> list[str]:
        return list(self.files)


#: the hidden directory (in the sink's) of the in-progress and pending part files of writers
#: that know their job, and of the savepoint markers: a clean-up lists only it, so its cost
#: follows the files not committed yet, never the committed output
WORK_DIR = ".raystream"
#: an in-progress (or pending) part file of a writer that knows its job, in :data:`WORK_DIR`:
#: ``.inprogress-<job tag>-<attempt>-<subtask>-<seq>-<token>``
_INPROGRESS = re.compile(r"^\.inprogress-([0-9a-f]{12})-(\d+)-(\d+)-(\d+)-([0-9a-f]{16})$")
#: a marker naming the pending files a savepoint records, which a clean-up keeps:
#: ``.savepoint-<checkpoint id>-<random>`` (see :meth:`_FileCommitter.protect_savepoint`)
_MARKER = re.compile(r"^\.savepoint-(\d+)-([0-9a-f]{16})$")


def _job_tag(job_id: str, uid: str) -> str:
    """The tag of one job's sink (operator uid) in its in-progress file names (stable: sha1)."""
    return hashlib.sha1(f"{job_id}\0{uid}".encode()).hexdigest()[:12]


class _MarkerUnreadable(OSError):
    """A savepoint marker that cannot be read (being written?): it may name any file, so a
    clean-up deletes nothing."""


def _delete(fs: pafs.FileSystem, path: str) -> int:
    try:
        fs.delete_file(path)
        return 1
    except FileNotFoundError:
        return 0


def _remove_uncommitted(fs: pafs.FileSystem, work: str, orphan: Callable[[re.Match[str]], bool],
                        keep: Collection[str] = ()) -> int:
    """Delete the in-progress and pending part files in the work directory ``work`` whose name
    match ``orphan`` says are orphans, except the ones a savepoint marker names (a job resumed
    from the savepoint commits them) and the names in ``keep``; delete the markers whose files
    are all gone (they protect nothing). Lists ``work`` once. Returns how many files went.

    Raises:
        _MarkerUnreadable: a marker could not be read (nothing was deleted).
        OSError: listing or deleting failed.
    """
    infos = fs.get_file_info(pafs.FileSelector(work, allow_not_found=True))
    names = {info.base_name for info in infos}
    orphans: list[str] = []
    markers: list[str] = []
    for info in infos:
        m = _INPROGRESS.match(info.base_name)
        if m is not None:
            if orphan(m):
                orphans.append(info.path)
            continue
        if _MARKER.match(info.base_name) is not None:
            markers.append(info.path)
    kept: set[str] = set(keep)
    gone: list[str] = []
    for path in markers:
        try:
            with fs.open_input_stream(path) as f:
                listed = json.loads(f.read())["files"]
            if not isinstance(listed, list):
                raise ValueError(f"'files' is a {type(listed).__name__}")
        except Exception as exc:  # noqa: BLE001 - unreadable (being written?): it may name anything
            raise _MarkerUnreadable(f"savepoint marker {path!r} cannot be read ({exc})") from exc
        alive = [name for name in listed if name in names]
        if alive:
            kept.update(alive)
        else:  # (every file it names was committed or deleted: it protects nothing)
            gone.append(path)
    for path in gone:
        _delete(fs, path)
    return sum(_delete(fs, path) for path in orphans if path.rsplit("/", 1)[-1] not in kept)


class _FileWriter(SinkWriter[FileCommittable]):
    """One subtask's part files: in-progress -> pending (handed over at a barrier) -> committed.

    A writer that knows its job (``OperatorContext.job_id``) writes them into the sink's hidden
    :data:`WORK_DIR`, named ``.inprogress-<job tag>-<attempt>-<subtask>-<seq>-<token>``.

    Clean-up after failures (subtask 0 of each attempt, once, before its first file; it lists
    :data:`WORK_DIR` only, never the committed output): the
    in-progress and pending files that earlier attempts of the *same job and sink* left (the
    open file of a task whose process died; pending files of checkpoints that never completed,
    dropped by the restore because their data is replayed) are deleted, except

    * files the restored checkpoint covers (its writers' tokens, below the sequence number
      each had reached at the barrier): the restore commits them;
    * files a savepoint records, which a job resumed from it commits: the committer lists
      them in a marker (``.savepoint-*``) before the savepoint is written;
    * files of the running attempt (its other subtasks write already), of other jobs, other
      sinks and older releases (names without a job tag): never touched.

    A checkpoint newer than the restored one cannot complete any more: the job master waits
    for every metadata write in flight before it plans a restore, and numbers the new
    attempt's checkpoints after them. Best effort: a clean-up that fails is logged and never
    fails the job. Needs the task to say its job (``OperatorContext.job_id``); without it
    nothing is cleaned up, and the files are named as before.
    """

    def __init__(self, sink: "FileSink", ctx: OperatorContext) -> None:
        self.sink = sink
        self.fs = sink.filesystem()
        self.subtask = ctx.subtask_index
        self.uid = ctx.operator_uid
        self.attempt = getattr(ctx, "attempt", 0)
        self.seq = 0
        job_id = getattr(ctx, "job_id", "") or ""
        # this job's sink in the in-progress names (None: the task does not say its job, nothing
        # can tell what is whose, and nothing is cleaned up)
        self.tag = _job_tag(job_id, self.uid) if job_id else None
        # where its in-progress files go: the sink's directory itself for an untagged writer
        self.work = f"{sink.base}/{WORK_DIR}" if self.tag is not None else sink.base
        self.restored: dict[str, int] = {}  # token of a restored writer -> its seq at the restored barrier
        self.cleaned = self.tag is None or self.subtask != 0
        # unique to this writer instance (this sink, subtask, run and attempt): in the names of its
        # part files, so they never collide with another writer's (as Flink's FileSink's uid)
        self.token = uuid.uuid4().hex[:16]
        self.current: str | None = None
        self.handle: pa.NativeFile | None = None  # the in-progress file, while one is open
        self.finished: list[FileCommittable] = []  # part files rolled since the last prepare_commit
        self.writer: pq.ParquetWriter | None = None  # ParquetSink's writer on the handle
        self.schema: pa.Schema | None = None  # ParquetSink: the current file's schema
        self.held: list[pa.RecordBatch] = []  # ParquetSink: batches held until the schema settles
        self.held_bytes = 0
        self.group: list[pa.RecordBatch] = []  # ParquetSink: batches of the file's schema for its next row group
        self.group_rows = 0
        self.group_bytes = 0
        self.group_merged = 0  # ParquetSink: the first entries of group that are merged runs of batches

    @property
    def stream(self) -> pa.NativeFile:
        """The open in-progress file (``write`` opens it before ``write_batch``)."""
        if self.handle is None:
            raise RuntimeError(f"file sink {self.sink.path!r}: no in-progress file is open")
        return self.handle

    def restore_state(self, states: list[Any]) -> None:
        mine = [s for s in states if s and s.get("subtask") == self.subtask]
        if mine:
            self.seq = max(s["seq"] for s in mine)
        for s in states:  # (every old subtask's: a rescaled restore covers them all)
            if s and isinstance(s.get("token"), str):
                self.restored[s["token"]] = max(self.restored.get(s["token"], 0), int(s["seq"]))

    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        return {"subtask": self.subtask, "seq": self.seq, "token": self.token}

    def open_file(self) -> None:
        """Start a new in-progress file (``write`` does before the first batch of each)."""
        if not self.cleaned:
            self.clean_up()
        self.fs.create_dir(self.work, recursive=True)
        if self.tag is not None:
            name = f".inprogress-{self.tag}-{self.attempt}-{self.subtask}-{self.seq}-{self.token}"
        else:
            name = f".inprogress-{self.subtask}-{self.seq}-{self.token}"
        self.current = f"{self.work}/{name}"
        self.handle = self.fs.open_output_stream(self.current)

    def clean_up(self) -> int:
        """Delete what earlier attempts of this job's sink left (see the class docstring);
        returns how many files went. Never raises: a failure is logged."""
        self.cleaned = True
        try:
            return self._remove_orphans()
        except Exception as exc:  # noqa: BLE001 - best effort: never fails the job
            log.warning("file sink %r: could not delete the in-progress files earlier attempts left (they stay, "
                        "hidden; delete them by hand once the job has ended): %s: %s", self.sink.path,
                        type(exc).__name__, exc)
            return 0

    def _remove_orphans(self) -> int:
        try:
            removed = _remove_uncommitted(
                self.fs, self.work,
                # (only the running attempt writes; the restored checkpoint's files, below the seq
                # each restored writer had reached at its barrier, the restore commits)
                lambda m: m[1] == self.tag and int(m[2]) != self.attempt and int(m[4]) >= self.restored.get(m[5], -1))
        except _MarkerUnreadable as exc:
            log.warning("file sink %r: %s: nothing is cleaned up", self.sink.path, exc)
            return 0
        if removed:
            log.info("file sink %r: deleted %d in-progress files of earlier attempts (their data is replayed)",
                     self.sink.path, removed)
        return removed

    def write(self, batch: Batch) -> None:
        if self.current is None:
            self.open_file()
        self.sink.write_batch(self, batch)

    def roll(self) -> None:
        """Finish the in-progress file: it becomes a pending part file, handed over at the next
        ``prepare_commit`` (the next ``write`` starts a new file)."""
        if self.current is None:
            return
        self.sink.close_file(self)
        size = _written(self.stream)
        self.stream.close()
        final = f"{self.sink.base}/part-{self.token}-{self.subtask:04d}-{self.seq:06d}.{self.sink.extension}"
        self.finished.append(FileCommittable(self.current, final, size))
        self.current = None
        self.handle = None
        self.writer = None
        self.schema = None
        self.held = []
        self.held_bytes = 0
        self.group, self.group_rows, self.group_bytes, self.group_merged = [], 0, 0, 0
        self.seq += 1

    def prepare_commit(self, checkpoint_id: int | None) -> list[FileCommittable]:
        if not self.cleaned:
            self.clean_up()
        self.roll()
        out, self.finished = self.finished, []
        return out

    def close(self) -> None:
        aborted = [c.pending for c in self.finished]  # (finished, never handed over)
        self.finished = []
        if self.handle is not None:
            try:
                self.handle.close()
            finally:
                if self.current is not None:
                    aborted.append(self.current)
            self.handle = None
        for path in aborted:
            try:
                self.fs.delete_file(path)  # aborted: never committed
            except OSError:
                pass


class FileSink(Sink[FileCommittable]):
    """Base of the exactly-once file sinks: in-progress -> pending (at a checkpoint barrier)
    -> committed (renamed to ``part-<token>-<subtask>-<seq>.<ext>`` when the checkpoint
    completes). ``path`` is a local directory or any ``pyarrow.fs`` URI.

    ``<token>`` is random per writer instance (one per subtask, run and restored attempt), so
    a job writing into a directory that holds files (an earlier run's, another sink's) adds
    files and never replaces one; a commit finding a file of its name that is not its own
    fails the job instead of overwriting it.
    """

    extension = "dat"

    def __init__(self, path: str) -> None:
        self.path = path
        if "://" in path:
            self.base = pafs.FileSystem.from_uri(path)[1]
        else:
            import os

            self.base = os.path.abspath(os.path.expanduser(path))  # ("~/out": in the home directory)

    def filesystem(self) -> pafs.FileSystem:
        return filesystem_for(self.path)

    def create_writer(self, ctx: OperatorContext) -> SinkWriter[FileCommittable]:
        return _FileWriter(self, ctx)

    def create_committer(self) -> Committer[FileCommittable]:
        return _FileCommitter(self)

    def write_batch(self, w: _FileWriter, batch: Batch) -> None:
        raise NotImplementedError

    def close_file(self, w: _FileWriter) -> None:
        """Finish the format's footer before the file is closed."""


class ParquetSink(FileSink):
    """Writes Parquet files, exactly once (see :class:`FileSink`).

    A field's type may differ between batches (all None in one, strings in the next; ints,
    then floats): a part file takes the types the batches unify to (as
    ``pa.unify_schemas(promote_options="permissive")``: a null field takes any type, ints and
    floats become doubles, struct fields are merged, a missing field is null). Batches in
    which a field has no type yet (only Nones) are held, up to 8 MiB, until it gets one, so
    where the batches were cut does not change the file. When the part file written so far
    cannot hold a later batch's type (ints written, then a float), it is finished and a new
    part file of the unified schema begins: read such a directory with one schema (e.g.
    ``pq.read_table(dir, schema=...)``). Types that do not unify (strings and ints in one
    field) fail the job naming the field, both types and a record.
    """

    extension = "parquet"

    def write_batch(self, w: _FileWriter, batch: Batch) -> None:
        rb = batch.arrow()
        meta = rb.schema.metadata or {}
        if rb.num_rows and meta.get(KIND_KEY) == b"pickle":  # (no flat typed columns)
            records = batch.records()
            if all(r is None for r in records) and (w.schema is None or w.schema.names == [_SCALAR_COLUMN]):
                # None records of a stream of scalars: nulls of its column, as in a batch of
                # scalars with a None among them (a batch of Nones alone has no type yet)
                rb = pa.RecordBatch.from_arrays([pa.nulls(len(records))], names=[_SCALAR_COLUMN])
            else:
                rb = self._nested_columns(records)
        elif any(k.startswith(b"raystream.") for k in meta):  # (how records travel: not the file's business)
            rb = rb.replace_schema_metadata({k: v for k, v in meta.items() if not k.startswith(b"raystream.")} or None)
        if not rb.num_rows:  # nothing to write; an empty file still gets a schema from it
            if w.schema is None:
                w.schema = rb.schema
                w.held.append(rb)
            return
        if w.writer is None and w.held and not any(b.num_rows for b in w.held):
            w.schema, w.held = None, []  # (only empty batches so far: their schema does not count)
        if w.schema is None:
            w.schema = rb.schema
        elif not rb.schema.equals(w.schema, check_metadata=False):
            if w.schema == _NONE_RECORDS and _SCALAR_COLUMN not in rb.schema.names:
                raise self._refused(None, "None records among records of fields "
                                          f"{rb.schema.names} (a None record has no fields)")
            unified = self._unify(w.schema, rb)
            if w.writer is not None and not unified.equals(w.schema, check_metadata=False):
                w.roll()  # the file written so far cannot hold the new types: a new one of the unified schema
                w.open_file()
            w.schema = unified
        if w.writer is None:
            w.held.append(rb)
            w.held_bytes += rb.nbytes
            if w.held_bytes < _SETTLE_BYTES and any(_has_null_type(f.type) for f in w.schema):
                return  # (a field of no type yet: hold the batches until it gets one)
            self._start(w)
        else:
            self._add_to_group(w, self._conform(rb, w.schema))

    def _start(self, w: _FileWriter) -> None:
        """Open the Parquet writer of the file's schema and write the held batches."""
        schema = w.schema
        if schema is None:
            raise RuntimeError(f"write_parquet({self.path!r}): a file started before its schema was known")
        w.writer = pq.ParquetWriter(w.stream, schema)
        held, w.held, w.held_bytes = w.held, [], 0
        for rb in held:
            self._add_to_group(w, self._conform(rb, schema))

    def _add_to_group(self, w: _FileWriter, rb: pa.RecordBatch) -> None:
        """Gather ``rb`` (in the file's schema) into the next row group, written once it holds
        :data:`ROW_GROUP_ROWS` rows or :data:`ROW_GROUP_BYTES` bytes, or when the file is
        finished: a row group per batch made files of thousands of tiny row groups from a
        stream of small batches, whose footer the writer holds in memory (~2.5 KB each: 100,000
        batches of 3 rows took 260 MB and made a 56 MB file of 300,000 rows, 11 s to read)."""
        w.group.append(rb)
        w.group_rows += rb.num_rows
        w.group_bytes += rb.nbytes
        if w.group_rows >= ROW_GROUP_ROWS or w.group_bytes >= ROW_GROUP_BYTES:
            self._write_group(w)
        elif len(w.group) - w.group_merged >= _MERGE_BATCHES:
            # a run of small batches becomes one: a batch of a few rows costs more in objects
            # than in data (25,000 such batches held 75 MB for 8 MB of rows)
            w.group[w.group_merged:] = [pa.concat_batches(w.group[w.group_merged:])]
            w.group_merged += 1

    def _write_group(self, w: _FileWriter) -> None:
        if w.group and w.writer is not None:
            table = pa.Table.from_batches(w.group, schema=w.writer.schema)
            w.writer.write_table(table, row_group_size=max(1, table.num_rows))
        w.group, w.group_rows, w.group_bytes, w.group_merged = [], 0, 0, 0

    def _unify(self, schema: pa.Schema, rb: pa.RecordBatch) -> pa.Schema:
        """The schema of the file so far unified with the batch's, or a failure naming the field."""
        try:
            return pa.unify_schemas([schema, rb.schema], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            for field in rb.schema:
                i = schema.get_field_index(field.name)
                if i < 0:
                    continue
                try:
                    pa.unify_schemas([pa.schema([schema.field(i)]), pa.schema([field])], promote_options="permissive")
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as field_exc:
                    raise self._type_error(field.name, schema.field(i).type, rb, field_exc) from exc
            raise JobFailed(
                f"write_parquet({self.path!r}): a batch of schema {rb.schema} does not unify with the "
                f"file's schema {schema}: {exc}"
            ) from exc

    def _conform(self, rb: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        """``rb`` in the file's ``schema``: columns in its order and types, a missing one null."""
        if rb.schema.equals(schema, check_metadata=False):
            return rb
        columns = []
        for field in schema:
            i = rb.schema.get_field_index(field.name)
            column = rb.column(i) if i >= 0 else pa.nulls(rb.num_rows, field.type)
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                    raise self._type_error(field.name, field.type, rb, exc) from exc
            columns.append(column)
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    def _type_error(self, name: str, file_type: pa.DataType, rb: pa.RecordBatch, exc: Exception) -> UserCodeError:
        column = rb.column(rb.schema.get_field_index(name))
        valid = column.is_valid().to_pylist()
        row = valid.index(True) if True in valid else 0
        record = rb.slice(row, 1).to_pylist()[0]
        return UserCodeError(record, ValueError(
            f"write_parquet({self.path!r}): field {name!r} is {column.type} in this batch and {file_type} in "
            f"the batches before ({exc}); one Parquet column holds one type: convert the field's values "
            "first (e.g. all str, or all float)"
        ))

    def _nested_columns(self, records: list[Any]) -> pa.RecordBatch:
        """Dict records whose values Arrow holds, nested ones included (lists, dicts: list and
        struct columns), as one batch: values equal to the records' of the same types or of
        their base types (an ``IntEnum`` written as its int, a tz-aware datetime in a
        timestamp column with its zone), a column for every key of every record (null where a
        record lacks it, as in a batch without the key); anything else (ints among floats)
        fails naming the record and why (never pickled bytes in a Parquet file)."""
        if records and all(type(r) is dict for r in records):
            names = list(dict.fromkeys(k for r in records for k in r))
            rows = [{k: r.get(k) for k in names} for r in records]  # (every key, in one order)
            try:
                rb = pa.RecordBatch.from_pylist(rows)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
                pass
            else:
                back = rb.to_pylist()  # held as they were: equal values of the same Python types, or of a
                # subclass that the file holds as its base (an IntEnum as its int, a str Enum as its str)
                if back == rows and all(isinstance(r, type(b)) for b, r in zip(_leaves(back), _leaves(rows))):
                    return rb
            if all(isinstance(k, str) for k in names):
                index, why = why_not_columns(rows)
                raise self._refused(records[index], why)
        index, why = why_not_columns(records)
        raise self._refused(records[index], why)

    def _refused(self, record: Any, why: str) -> UserCodeError:
        return UserCodeError(record, ValueError(
            f"write_parquet({self.path!r}) writes typed columns, and these records cannot be: {why}; convert "
            "them first (e.g. one type per key, or json.dumps the values of mixed types)"
        ))

    def close_file(self, w: _FileWriter) -> None:
        if w.writer is None and w.held:
            self._start(w)
        if w.writer is not None:
            self._write_group(w)
            w.writer.close()


class JsonLinesSink(FileSink):
    """Writes one JSON document per record (``.jsonl``), exactly once (see :class:`FileSink`).

    Values JSON has no type for are written as Flink's JSON format writes them: numpy scalars
    as the numbers and bools they hold, numpy arrays, tuples and sets as lists, ``datetime``,
    ``date`` and ``time`` in ISO 8601 (``isoformat()``), bytes as base64 strings, and a
    ``Decimal`` as the string of its exact value (``str(d)``: ``Decimal(s)`` gives it back;
    a JSON number would be read back as a float). NaN and infinite floats (Python's, numpy's,
    inside arrays too) are written as ``null``: the files are strict JSON (RFC 8259 has no
    NaN), as ``JSON.stringify`` and pandas' ``to_json`` write them. Anything else fails
    naming the record and the field (never a silent ``str()``).

    Example:
        >>> import datetime as dt, decimal, numpy as np
        >>> _to_json({"n": np.int64(1), "at": dt.date(2024, 1, 2), "b": b"\\x00\\xff", "d": decimal.Decimal("0.10")})
        '{"n": 1, "at": "2024-01-02", "b": "AP8=", "d": "0.10"}'
    """

    extension = "jsonl"

    def write_batch(self, w: _FileWriter, batch: Batch) -> None:
        records = batch.records()
        try:
            data = "".join([_to_json(r) + "\n" for r in records])
        except (TypeError, ValueError, OverflowError, RecursionError):
            for r in records:  # (the error path: find the record and the field)
                try:
                    _to_json(r)
                except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                    field, value = _not_json(r)
                    where = "the record" if not field else "field " + "".join(f"[{k!r}]" for k in field)
                    raise UserCodeError(r, ValueError(
                        f"write_jsonl({self.path!r}): {where} holds {type(value).__name__} "
                        f"{short_repr(value, 80)}, which JSON cannot hold ({exc}); convert it first "
                        "(e.g. to a str, a number, a list or a dict)"
                    )) from exc
            raise
        w.stream.write(data.encode())


def _json_value(value: Any) -> Any:
    """``json.dumps``'s ``default``: a JSON-able stand-in for a value JSON has no type for."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, np.datetime64):
        return np.datetime_as_string(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "M":
            return np.datetime_as_string(value).tolist()
        if value.dtype.kind not in "m":
            return _finite(value.tolist())
    elif isinstance(value, np.generic) and not isinstance(value, np.timedelta64):
        return _finite(value.item())  # (np.int64 -> int, np.bool_ -> bool, np.float32 -> float)
    elif isinstance(value, (set, frozenset)):
        try:
            return _finite(sorted(value))
        except TypeError:
            return _finite(list(value))
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _finite(value: Any) -> Any:
    """``value`` with every NaN and infinite float inside it (dict values, list items) None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _to_json(record: Any) -> str:
    """One JSON document for ``record``: strict JSON (RFC 8259), so a NaN or infinite float
    is written as ``null``, as JavaScript's ``JSON.stringify`` and pandas' ``to_json`` write
    it (``json.dumps`` alone would write a bare ``NaN``, which JSON parsers refuse)."""
    try:
        return json.dumps(record, default=_json_value, allow_nan=False)
    except ValueError as exc:
        if not str(exc).startswith("Out of range float values"):
            raise
    # (a dict key that is a NaN float stays the string "NaN", a valid JSON key)
    return json.dumps(_finite(record), default=_json_value)


def _not_json(value: Any, path: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], Any]:
    """The path to the first value inside ``value`` (dict keys, list indices) that JSON
    cannot hold (a dict key that is not a str, number, bool or None is the value itself)."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return path, value
    for k, v in items:
        if isinstance(value, dict) and not (k is None or isinstance(k, (str, int, float, bool))):
            return path + (k,), k
        try:
            _to_json(v)
        except (TypeError, ValueError, OverflowError, RecursionError):
            return _not_json(v, path + (k,)) if len(path) < 50 else (path + (k,), v)
    return path, value


#: the column of a stream of scalars (records_to_arrow's), and its schema while only None
#: records have come
_SCALAR_COLUMN = "value"
_NONE_RECORDS = pa.schema([(_SCALAR_COLUMN, pa.null())])
#: a part file's batches held while a field has no type yet (only Nones), at most
_SETTLE_BYTES = 8 << 20
#: a Parquet row group is written once the batches gathered for it hold this many rows (as
#: pyarrow's default row group size)...
ROW_GROUP_ROWS = 1 << 20
#: ...or this many bytes of Arrow data (a writer holds at most about this much)
ROW_GROUP_BYTES = 32 << 20
#: the batches gathered for a row group are merged into one every this many
_MERGE_BATCHES = 256


def _has_null_type(t: pa.DataType) -> bool:
    """``t`` is the null type or nests one (a list of nulls, a struct with a null field)."""
    return pa.types.is_null(t) or any(_has_null_type(t.field(i).type) for i in range(t.num_fields))


def _written(stream: pa.NativeFile) -> int | None:
    """Bytes written to an output stream, or None where it cannot tell."""
    try:
        return int(stream.tell())
    except (OSError, ValueError, AttributeError, NotImplementedError):
        return None


def _leaves(value: Any) -> Any:
    """The scalar values inside ``value`` (lists and dicts walked), in order."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value
