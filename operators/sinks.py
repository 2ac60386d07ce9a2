"""Built-in sinks: collect (results to the driver), print, and exactly-once file sinks.

``collect`` and the file sinks are transactional: what a task writes becomes visible only
when the checkpoint covering it completes (or when the whole job has finished), so a job
that recovers from failures still delivers every record exactly once.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raystream.engine.connectors import Committer, Sink, SinkWriter
from raystream.engine.errors import ConfigError, JobFailed, UserCodeError, short_repr
from raystream.engine.operator import OperatorContext
from raystream.engine.records import KIND_KEY, Batch, arrow_to_records, concat_runs, why_not_columns

from .sources import filesystem_for

__all__ = ["CollectSink", "PrintSink", "FileSink", "ParquetSink", "JsonLinesSink", "collected_records", "collected_table"]


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


def collected_records(batches: list[pa.RecordBatch]) -> list[Any]:
    """The records of collected batches, as Python objects."""
    out: list[Any] = []
    for b in batches:
        out.extend(arrow_to_records(b))
    return out


def collected_table(batches: list[pa.RecordBatch]) -> pa.Table:
    """Collected batches as one table, as ``execute_and_collect(as_table=True)`` returns it.

    Batches of records that crossed the channels pickled become columns: typed as
    ``Batch.columns`` types them (IntEnums among ints, Decimals of several exponents...), else
    as ``pa.Table.from_pylist`` makes them of dict records (nested values, all-null columns;
    a column for every key of every record, in first-seen order, null where a record lacks it).
    The batches' schemas are unified as ``pa.concat_tables(promote_options="permissive")``
    does (ints and floats of one column become doubles; a column missing from a batch is
    null there); records of no tabular form stay a column of pickled values.

    Raises:
        ConfigError: schemas that do not unify (a column of ints in one batch and of
            strings in another), naming both.

    Example:
        >>> import datetime as dt
        >>> from raystream.engine.records import records_to_arrow
        >>> utc = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        >>> collected_table([records_to_arrow([{"at": utc, "n": 1}]), records_to_arrow([{"at": utc, "n": 2.5}])]).schema
        at: timestamp[us, tz=UTC]
        n: double
    """
    if not batches:
        return pa.table({})
    tables = [_collected_table_of(b) for b in batches]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        first = tables[0].schema
        other = next((t.schema for t in tables if not t.schema.equals(first)), first)
        raise ConfigError(
            f"execute_and_collect(as_table=True): the collected batches do not make one table: schema "
            f"{first.to_string(show_schema_metadata=False)!r} vs {other.to_string(show_schema_metadata=False)!r} "
            f"({exc}); give the records one type per field, or collect them as records (as_table=False)"
        ) from exc


def _collected_table_of(rb: pa.RecordBatch) -> pa.Table:
    if (rb.schema.metadata or {}).get(KIND_KEY) == b"pickle" and rb.num_rows:
        batch = Batch.of_arrow(rb)
        typed = batch.columns()
        if (typed.schema.metadata or {}).get(KIND_KEY) != b"pickle":
            rb = typed
        else:
            records = batch.records()
            if all(type(r) is dict for r in records):
                try:
                    return _table_of_dicts(records)
                except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
                    pass
    return pa.Table.from_batches([rb.replace_schema_metadata(None)])


def _table_of_dicts(records: list[dict[str, Any]]) -> pa.Table:
    """Dict records as a table with a column for every key of every record, in the order the
    keys are first seen, null where a record lacks the key (``pa.Table.from_pylist`` alone
    takes its columns from the first record and drops the others' keys).

    Example:
        >>> _table_of_dicts([{"a": 1}, {"b": 2}, {"a": 3, "c": "x"}]).to_pylist()
        [{'a': 1, 'b': None, 'c': None}, {'a': None, 'b': 2, 'c': None}, {'a': 3, 'b': None, 'c': 'x'}]
    """
    keys = records[0].keys()
    if all(r.keys() == keys for r in records):  # (uniform: from_pylist's own column order)
        return pa.Table.from_pylist(records)
    names = dict.fromkeys(k for r in records for k in r)
    return pa.Table.from_pydict({k: [r.get(k) for r in records] for k in names})


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
        self.files: list[str] = []

    def commit(self, committables: list[FileCommittable]) -> None:
        fs = self.sink.filesystem()
        for c in committables:
            self._commit(fs, c)
            if c.final not in self.files:
                self.files.append(c.final)

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


class _FileWriter(SinkWriter[FileCommittable]):
    def __init__(self, sink: "FileSink", ctx: OperatorContext) -> None:
        self.sink = sink
        self.fs = sink.filesystem()
        self.subtask = ctx.subtask_index
        self.uid = ctx.operator_uid
        self.seq = 0
        # unique to this writer instance (this sink, subtask, run and attempt): in the names of its
        # part files, so they never collide with another writer's (as Flink's FileSink's uid)
        self.token = uuid.uuid4().hex[:16]
        self.current: str | None = None
        self.handle: pa.NativeFile | None = None  # the in-progress file, while one is open
        self.writer: pq.ParquetWriter | None = None  # ParquetSink's writer on the handle
        self.schema: pa.Schema | None = None

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

    def snapshot_state(self, checkpoint_id: int) -> dict[str, int]:
        return {"subtask": self.subtask, "seq": self.seq}

    def _open_file(self) -> None:
        self.fs.create_dir(self.sink.base, recursive=True)
        self.current = f"{self.sink.base}/.inprogress-{self.subtask}-{self.seq}-{self.token}"
        self.handle = self.fs.open_output_stream(self.current)

    def write(self, batch: Batch) -> None:
        if self.current is None:
            self._open_file()
        self.sink.write_batch(self, batch)

    def prepare_commit(self, checkpoint_id: int | None) -> list[FileCommittable]:
        if self.current is None:
            return []
        self.sink.close_file(self)
        size = _written(self.stream)
        self.stream.close()
        final = f"{self.sink.base}/part-{self.token}-{self.subtask:04d}-{self.seq:06d}.{self.sink.extension}"
        pending = self.current
        self.current = None
        self.handle = None
        self.writer = None
        self.seq += 1
        return [FileCommittable(pending, final, size)]

    def close(self) -> None:
        if self.handle is not None:
            try:
                self.handle.close()
            finally:
                try:
                    self.fs.delete_file(self.current)  # aborted: never committed
                except OSError:
                    pass
            self.handle = None


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

            self.base = os.path.abspath(path)

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
    """Writes Parquet files, exactly once (see :class:`FileSink`)."""

    extension = "parquet"

    def write_batch(self, w: _FileWriter, batch: Batch) -> None:
        rb = batch.arrow()
        meta = rb.schema.metadata or {}
        if rb.num_rows and meta.get(KIND_KEY) == b"pickle":  # (no flat typed columns)
            rb = self._nested_columns(batch.records())
        elif any(k.startswith(b"raystream.") for k in meta):  # (how records travel: not the file's business)
            rb = rb.replace_schema_metadata({k: v for k, v in meta.items() if not k.startswith(b"raystream.")} or None)
        if w.writer is None:
            w.schema = rb.schema
            w.writer = pq.ParquetWriter(w.stream, rb.schema)
        elif not rb.schema.equals(w.schema, check_metadata=False):
            raise JobFailed(
                f"write_parquet({self.path!r}): a batch with schema {rb.schema} does not match the "
                f"file's schema {w.schema}"
            )
        w.writer.write_batch(rb)

    def _nested_columns(self, records: list[Any]) -> pa.RecordBatch:
        """Dict records whose values Arrow holds, nested ones included (lists, dicts: list and
        struct columns), as one batch: values equal to the records' of the same types or of
        their base types (an ``IntEnum`` written as its int, a tz-aware datetime in a
        timestamp column with its zone); anything else (ints among floats) fails naming the
        record and why (never pickled bytes in a Parquet file)."""
        if records and all(type(r) is dict for r in records):
            try:
                rb = pa.RecordBatch.from_pylist(records)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
                pass
            else:
                back = rb.to_pylist()  # held as they were: equal values of the same Python types, or of a
                # subclass that the file holds as its base (an IntEnum as its int, a str Enum as its str)
                if back == records and all(isinstance(r, type(b)) for b, r in zip(_leaves(back), _leaves(records))):
                    return rb
        index, why = why_not_columns(records)
        raise UserCodeError(records[index], ValueError(
            f"write_parquet({self.path!r}) writes typed columns, and these records cannot be: {why}; convert "
            "them first (e.g. one type per key, or json.dumps the values of mixed types)"
        ))

    def close_file(self, w: _FileWriter) -> None:
        if w.writer is not None:
            w.writer.close()


class JsonLinesSink(FileSink):
    """Writes one JSON document per record (``.jsonl``), exactly once (see :class:`FileSink`).

    Values JSON has no type for are written as Flink's JSON format writes them: numpy scalars
    as the numbers and bools they hold, numpy arrays, tuples and sets as lists, ``datetime``,
    ``date`` and ``time`` in ISO 8601 (``isoformat()``), bytes as base64 strings, and a
    ``Decimal`` as the string of its exact value (``str(d)``: ``Decimal(s)`` gives it back;
    a JSON number would be read back as a float). Anything else fails naming the record and
    the field (never a silent ``str()``).

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
        except (TypeError, ValueError, OverflowError):
            for r in records:  # (the error path: find the record and the field)
                try:
                    _to_json(r)
                except (TypeError, ValueError, OverflowError) as exc:
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
            return value.tolist()
    elif isinstance(value, np.generic) and not isinstance(value, np.timedelta64):
        return value.item()  # (np.int64 -> int, np.bool_ -> bool, np.float32 -> float)
    elif isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _to_json(record: Any) -> str:
    return json.dumps(record, default=_json_value)


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
