"""A FIFO of message records with a memory budget that spills to local disk beyond it.

The :class:`~statefun_api.dispatcher.FunctionDispatcher` keeps every message it accepted
and has not invoked yet in one :class:`SpillingQueue`: messages that arrive over the
feedback edge (from other subtasks, possibly as Arrow batches), local fan-out that does
not fit the dispatcher's active set, and restored messages. The feedback edge must never
block (a blocked cycle deadlocks), so the queue never refuses a push; instead, once the
chunks held in memory exceed ``memory_bytes``, further chunks are written to segment files
in a local directory (Arrow IPC streams) and read back when they reach the head. Order is
first in, first out across memory and disk.

A queue's spill directory names its owner process (file ``owner``); a queue that makes its
directory first removes those of dead processes of this host (:func:`remove_stale_spill_dirs`):
a killed task cannot delete its own, so without this the disk held grew with every failure.

Memory held: the in-memory chunks (at most ``memory_bytes``, plus the head chunk read back
from disk, at most ``max(memory_bytes, 4 MiB)`` unless one record is larger, plus a small
placeholder per spilled chunk). Disk held: the spilled chunks not
consumed yet; a segment file is deleted as soon as all of its chunks were read.

Example:
    >>> q = SpillingQueue(memory_bytes=1_000, chunk_rows=100)
    >>> q.push([("f/a", str(i), "", "", "t/int", b"x" * 10, True) for i in range(500)])
    >>> len(q), q.spilled_messages > 0
    (500, True)
    >>> from raystream.statefun_api.routing import TARGET_ID
    >>> [r[TARGET_ID] for r in q.pop(3)], len(q)
    (['0', '1', '2'], 497)
    >>> sum(len(q.pop(1000)) for _ in range(5)), q.disk_bytes
    (497, 0)
    >>> q.close()
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections import deque
from collections.abc import Sequence
from operator import countOf, itemgetter, length_hint
from typing import Any

import pyarrow as pa

from raystream.engine.records import arrow_to_records
from raystream.statefun_api.routing import VALUE, CompactMessages, typed_records_batch

__all__ = ["SpillingQueue", "estimate_bytes", "estimate_values_bytes", "remove_stale_spill_dirs"]

#: a queue's private spill directory: ``<directory>/raystream-statefun-spill-XXXXXXXX``
SPILL_DIR_PREFIX = "raystream-statefun-spill-"
#: the file in it naming its owner process (:func:`_owner`)
OWNER_FILE = "owner"

#: bytes counted per queued record besides its value (tuple, strings, list slot)
RECORD_OVERHEAD = 200
#: a chunk may hold this much even under a smaller budget (``SpillingQueue.chunk_bytes``)
MIN_CHUNK_BYTES = 4 << 20


def estimate_bytes(records: Sequence[Any]) -> int:
    """Approximate memory of message records: a constant per record plus its value's length:
    the bytes of a serialized value, the characters of a string held decoded (a number or a
    bool held decoded counts nothing more). Computed without a Python-level loop: when every
    value is of the first one's exact type (one C pass comparing the types by identity), an
    int, float or bool counts nothing and a str or bytes its ``len``; else one
    ``operator.length_hint`` a record (the length of what has one, else 0), which looks up
    ``__length_hint__`` on a number's type each time (~530 instructions a record of an int
    value, ~290 with the pass, cachegrind on 8,192 records).

    Example:
        >>> estimate_bytes([("f/a", "1", "", "", "t/int", b"1234", True), ("f/a", "1", "", "", "t/int", 5, True)])
        404
        >>> estimate_bytes([("f/a", "1", "", "", "io.statefun.types/string", "x" * 1000, True)])
        1200
        >>> estimate_bytes([("f/a", "1", "", "", "io.statefun.types/int", 5, True)] * 3)
        600
    """
    n = len(records)
    if not n:
        return 0
    first = type(records[0][VALUE])
    if countOf(map(type, map(_value_of, records)), first) == n:
        if first in _UNSIZED:
            return n * RECORD_OVERHEAD
        if first is str or first is bytes:
            return n * RECORD_OVERHEAD + sum(map(len, map(_value_of, records)))
    return n * RECORD_OVERHEAD + sum(map(length_hint, map(_value_of, records)))


def estimate_values_bytes(values: Sequence[Any]) -> int:
    """:func:`estimate_bytes` of the records of messages whose values are ``values`` (what a
    :class:`~statefun_api.routing.CompactMessages` counts: the same as its records).

    Example:
        >>> estimate_values_bytes([5, 6, 7]), estimate_values_bytes(["ab", "c"]), estimate_values_bytes([1, "ab"])
        (600, 403, 402)
    """
    n = len(values)
    if not n:
        return 0
    first = type(values[0])
    if countOf(map(type, values), first) == n:
        if first in _UNSIZED:
            return n * RECORD_OVERHEAD
        if first is str or first is bytes:
            return n * RECORD_OVERHEAD + sum(map(len, values))
    return n * RECORD_OVERHEAD + sum(map(length_hint, values))


_value_of = itemgetter(VALUE)
#: value types without a length (length_hint 0): a record of one counts RECORD_OVERHEAD only
_UNSIZED = (int, float, bool)


class _Mem:
    """A chunk held in memory: Python records, messages in compact form (``compact``, read from
    ``pos`` on), or an Arrow batch decoded on first use."""

    __slots__ = ("records", "arrow", "compact", "pos", "rows", "nbytes")

    def __init__(
        self, records: list | None, arrow: pa.RecordBatch | None, nbytes: int, compact: CompactMessages | None = None
    ) -> None:
        self.records = records
        self.arrow = arrow
        self.compact = compact
        self.pos = 0
        if records is not None:
            self.rows = len(records)
        elif compact is not None:
            self.rows = len(compact)
        else:
            self.rows = arrow.num_rows  # type: ignore[union-attr]
        self.nbytes = nbytes

    def compact_rest(self) -> CompactMessages:
        """The compact messages of the chunk from ``pos`` on."""
        c = self.compact
        assert c is not None
        if not self.pos:
            return c
        return CompactMessages(c.typename, c.value_typename, c.ids[self.pos :], c.values[self.pos :])


class _Segment:
    """One spill file: chunks are appended; it is deleted once every chunk was read."""

    __slots__ = ("path", "file", "size", "live")

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = open(path, "w+b")  # noqa: SIM115 - closed by SpillingQueue (release/close)
        self.size = 0
        self.live = 0


class _Spilled:
    """A chunk on disk: where its Arrow IPC stream is."""

    __slots__ = ("segment", "offset", "length", "rows")

    def __init__(self, segment: _Segment, offset: int, length: int, rows: int) -> None:
        self.segment = segment
        self.offset = offset
        self.length = length
        self.rows = rows


def _owner() -> str:
    """This process as a spill directory's owner: ``"<host> <pid namespace> <pid>"`` (the pid
    namespace tells processes of two containers of one host apart, where it can be read)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "-"
    return f"{socket.gethostname()} {namespace} {os.getpid()}"


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # (PermissionError: alive, another user's)
        return False
    return False


def remove_stale_spill_dirs(directory: str) -> int:
    """Delete the spill directories in ``directory`` whose owner process is dead (a task
    killed, or its worker, before its queue was closed); returns how many. Only directories
    of this host and pid namespace whose owner file names a process that does not exist are
    removed: those of live processes, of other hosts (a shared file system) and those without
    an owner file (being made, or not a queue's) are left alone.

    Example:
        >>> remove_stale_spill_dirs(tempfile.mkdtemp())
        0
    """
    try:
        names = [n for n in os.listdir(directory) if n.startswith(SPILL_DIR_PREFIX)]
    except OSError:
        return 0
    host, namespace, _pid = _owner().rsplit(" ", 2)
    removed = 0
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(os.path.join(path, OWNER_FILE)) as f:
                owner_host, owner_namespace, pid = f.read().rsplit(" ", 2)
            dead = owner_host == host and owner_namespace == namespace and _dead(int(pid))
        except (OSError, ValueError):
            continue
        if dead:
            shutil.rmtree(path, ignore_errors=True)
            removed += not os.path.exists(path)
    return removed


class SpillingQueue:
    """FIFO of records kept in memory up to ``memory_bytes``, spilled to disk beyond it.

    Args:
        memory_bytes: budget for chunks held in memory (estimated with :func:`estimate_bytes`
            for Python records, ``nbytes`` for Arrow batches).
        directory: where spill segments are created (a private subdirectory is made in it on
            the first spill; default: the system temporary directory).
        chunk_rows: records per chunk; a larger push is split, so a chunk read back from disk
            is bounded; a chunk of more than ``max(memory_bytes, 4 MiB)`` (big values) is split
            further, down to one record.
        segment_bytes: a new segment file is started once the current one exceeds this.
        label: names the queue in errors (e.g. the task).

    Not thread-safe: one owner thread (the task's mailbox thread).
    """

    def __init__(
        self,
        memory_bytes: int,
        directory: str | None = None,
        chunk_rows: int = 8192,
        segment_bytes: int = 64 << 20,
        label: str = "",
    ) -> None:
        if memory_bytes < 0 or chunk_rows < 1 or segment_bytes < 1:
            raise ValueError(
                f"SpillingQueue needs memory_bytes >= 0, chunk_rows >= 1 and segment_bytes >= 1, got "
                f"{memory_bytes!r}, {chunk_rows!r}, {segment_bytes!r}"
            )
        self.memory_budget = memory_bytes
        #: a chunk estimated above this is split (down to one record): what a spilled chunk
        #: brings back into memory at once when it reaches the head
        self.chunk_bytes = max(memory_bytes, MIN_CHUNK_BYTES)
        self.directory = directory
        self.chunk_rows = chunk_rows
        self.segment_bytes = segment_bytes
        self.label = label
        self._chunks: deque[_Mem | _Spilled] = deque()
        self._count = 0
        self.memory_bytes = 0
        self.disk_bytes = 0
        self.spilled_bytes = 0  # written to disk, cumulative
        self.spilled_messages = 0  # cumulative
        self._dir: str | None = None
        self.stale_dirs_removed = 0  # spill directories of dead processes this queue removed
        self._segment: _Segment | None = None
        self._segments: set[_Segment] = set()  # open segment files

    def __len__(self) -> int:
        return self._count

    # ------------------------------------------------------------------ writing
    def push(self, records: list) -> None:
        """Append ``records`` (message record tuples), oldest first; never blocks."""
        step = self.chunk_rows
        if len(records) > step:
            for i in range(0, len(records), step):
                self._push_mem(records[i : i + step], None)
        elif records:
            self._push_mem(records, None)

    def push_compact(self, messages: CompactMessages) -> None:
        """Append ingress messages in compact form (counted and spilled as their records; the
        queue takes ``messages`` over)."""
        step = self.chunk_rows
        while len(messages) > step:
            self._push_compact(messages.split(step))
        if len(messages):
            self._push_compact(messages)

    def _push_compact(self, messages: CompactMessages) -> None:
        nbytes = estimate_values_bytes(messages.values)
        if nbytes > self.chunk_bytes and len(messages) > 1:  # (big values: halves, as _push_mem)
            self._push_compact(messages.split(len(messages) // 2))
            self._push_compact(messages)
            return
        self._add(_Mem(None, None, nbytes, messages))

    def push_arrow(self, batch: pa.RecordBatch) -> None:
        """Append the records of an Arrow batch (as made by ``records_to_arrow``); decoded
        only when they reach the head."""
        n = batch.num_rows
        step = self.chunk_rows
        if n > step:
            for i in range(0, n, step):
                self._push_mem(None, batch.slice(i, step))
        elif n:
            self._push_mem(None, batch)

    def _push_mem(self, records: list | None, arrow: pa.RecordBatch | None) -> None:
        nbytes = estimate_bytes(records) if records is not None else arrow.nbytes  # type: ignore[union-attr]
        rows = len(records) if records is not None else arrow.num_rows  # type: ignore[union-attr]
        if nbytes > self.chunk_bytes and rows > 1:  # (big values: halves, so a chunk read back stays bounded)
            half = rows // 2
            if records is not None:
                self._push_mem(records[:half], None)
                self._push_mem(records[half:], None)
            else:
                self._push_mem(None, arrow.slice(0, half))  # type: ignore[union-attr]
                self._push_mem(None, arrow.slice(half))  # type: ignore[union-attr]
            return
        self._add(_Mem(records, arrow, nbytes))

    def _add(self, chunk: _Mem) -> None:
        nbytes = chunk.nbytes
        self._count += chunk.rows
        if self.memory_bytes + nbytes > self.memory_budget and (self._chunks or nbytes > self.memory_budget):
            self._chunks.append(self._spill(chunk))
        else:
            self.memory_bytes += nbytes
            self._chunks.append(chunk)

    def _spill(self, chunk: _Mem) -> _Spilled:
        if chunk.arrow is not None:
            rb = chunk.arrow
        elif chunk.compact is not None:
            rb = typed_records_batch(chunk.compact.records())
        else:
            rb = typed_records_batch(chunk.records or [])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, rb.schema) as writer:
            writer.write_batch(rb)
        data = sink.getvalue()
        seg = self._segment
        if seg is None or seg.size >= self.segment_bytes:
            seg = self._segment = self._new_segment()
        try:
            seg.file.seek(seg.size)
            seg.file.write(data)
        except OSError as exc:
            raise OSError(
                f"statefun spill{self._where()}: cannot write {len(data)} bytes to {seg.path!r}: {exc}; "
                f"free disk space there or set the spill directory (StatefulFunctionsJob(spill_dir=...))"
            ) from exc
        spilled = _Spilled(seg, seg.size, len(data), chunk.rows)
        seg.size += len(data)
        seg.live += 1
        self.disk_bytes += len(data)
        self.spilled_bytes += len(data)
        self.spilled_messages += chunk.rows
        return spilled

    def _new_segment(self) -> _Segment:
        if self._dir is None:
            base = self.directory
            if base is not None:
                os.makedirs(base, exist_ok=True)
            removed = remove_stale_spill_dirs(base if base is not None else tempfile.gettempdir())
            if removed:
                self.stale_dirs_removed += removed
            self._dir = tempfile.mkdtemp(prefix=SPILL_DIR_PREFIX, dir=base)
            try:  # (who owns it: a queue whose process died leaves it, for the next one to remove)
                with open(os.path.join(self._dir, OWNER_FILE), "w") as f:
                    f.write(_owner())
            except OSError as exc:
                raise OSError(
                    f"statefun spill{self._where()}: cannot write to {self._dir!r}: {exc}; free disk space there "
                    f"or set the spill directory (StatefulFunctionsJob(spill_dir=...))"
                ) from exc
        seg = _Segment(os.path.join(self._dir, f"segment-{self.spilled_bytes:x}.arrows"))
        self._segments.add(seg)
        return seg

    def _where(self) -> str:
        return f" of {self.label}" if self.label else ""

    # ------------------------------------------------------------------ reading
    def _load(self, spilled: _Spilled) -> _Mem:
        seg = spilled.segment
        seg.file.seek(spilled.offset)
        data = seg.file.read(spilled.length)
        if len(data) != spilled.length:
            raise OSError(
                f"statefun spill{self._where()}: {seg.path!r} holds {len(data)} bytes at offset "
                f"{spilled.offset}, expected {spilled.length} (was the file changed or removed?)"
            )
        rb = pa.ipc.open_stream(data).read_next_batch()
        seg.live -= 1
        self.disk_bytes -= spilled.length
        if seg.live == 0:
            if seg is self._segment:  # the segment being written: start it over
                seg.file.seek(0)
                seg.file.truncate()
                seg.size = 0
            else:
                self._release(seg)
                self._segments.discard(seg)
        chunk = _Mem(None, rb, rb.nbytes)
        self.memory_bytes += chunk.nbytes
        return chunk

    @staticmethod
    def _release(seg: _Segment) -> None:
        seg.file.close()
        try:
            os.unlink(seg.path)
        except FileNotFoundError:
            pass

    def pop(self, max_n: int) -> list:
        """Remove and return up to ``max_n`` of the oldest records."""
        out: list = []
        chunks = self._chunks
        while chunks and len(out) < max_n:
            head = chunks[0]
            if type(head) is _Spilled:
                head = chunks[0] = self._load(head)
            assert type(head) is _Mem
            if head.compact is not None:  # (as records: see pop_pieces)
                head.records = head.compact_rest().records()
                head.compact = None
                head.rows -= head.pos
                head.pos = 0
            if head.records is None:
                head.records = arrow_to_records(head.arrow)  # type: ignore[arg-type]
                head.arrow = None
            take = min(max_n - len(out), head.rows - head.pos)
            if head.pos == 0 and take == head.rows:
                out.extend(head.records)
            else:
                out.extend(head.records[head.pos : head.pos + take])
            head.pos += take
            if head.pos >= head.rows:
                chunks.popleft()
                self.memory_bytes -= head.nbytes
        self._count -= len(out)
        return out

    def pop_pieces(self, max_n: int) -> list[list | CompactMessages]:
        """Remove and return up to ``max_n`` of the oldest messages as pieces in order: lists
        of records (consecutive ones in one list), and messages pushed in compact form as
        :class:`CompactMessages` (a spilled chunk comes back as records)."""
        out: list[list | CompactMessages] = []
        taken = 0
        own_last = False  # whether out[-1] is a list made here
        chunks = self._chunks
        while chunks and taken < max_n:
            head = chunks[0]
            if type(head) is _Spilled:
                head = chunks[0] = self._load(head)
            assert type(head) is _Mem
            take = min(max_n - taken, head.rows - head.pos)
            c = head.compact
            if c is not None:
                if head.pos == 0 and take == head.rows:
                    out.append(c)
                else:
                    out.append(CompactMessages(c.typename, c.value_typename, c.ids[head.pos : head.pos + take], c.values[head.pos : head.pos + take]))
            else:
                if head.records is None:
                    head.records = arrow_to_records(head.arrow)  # type: ignore[arg-type]
                    head.arrow = None
                whole = head.pos == 0 and take == head.rows  # (then the list pushed: not ours to change)
                piece = head.records if whole else head.records[head.pos : head.pos + take]
                if out and type(out[-1]) is list:  # consecutive records: one piece
                    if own_last:
                        out[-1].extend(piece)  # type: ignore[union-attr]
                    else:
                        out[-1] = out[-1] + piece  # type: ignore[operator]
                        own_last = True
                else:
                    out.append(piece)
                    own_last = not whole
            taken += take
            head.pos += take
            if head.pos >= head.rows:
                chunks.popleft()
                self.memory_bytes -= head.nbytes
        self._count -= taken
        return out

    def snapshot(self) -> list[pa.RecordBatch]:
        """Every queued record, oldest first, as Arrow batches (spilled chunks are read, not
        consumed): for checkpoints."""
        out = []
        for chunk in self._chunks:
            if isinstance(chunk, _Spilled):
                seg = chunk.segment
                seg.file.seek(chunk.offset)
                out.append(pa.ipc.open_stream(seg.file.read(chunk.length)).read_next_batch())
            elif chunk.records is not None:
                out.append(typed_records_batch(chunk.records[chunk.pos :]))
            elif chunk.compact is not None:
                out.append(typed_records_batch(chunk.compact_rest().records()))
            else:
                assert chunk.arrow is not None
                out.append(chunk.arrow.slice(chunk.pos))
        return out

    def close(self) -> None:
        """Drop everything and delete the spill files (idempotent)."""
        self._chunks.clear()
        self._count = 0
        self.memory_bytes = 0
        self.disk_bytes = 0
        self._segment = None
        for seg in self._segments:
            seg.file.close()
        self._segments.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
