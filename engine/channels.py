"""Channels: everything between a producing task's last operator and a consuming task's
input: the output side (:class:`NetworkOutput` -> one :class:`RecordWriter` per output edge,
which partitions, buffers and flushes batches into a :class:`ChannelSender` per target) and
the input side (:class:`InputChannel`: ordered items, barrier alignment flags, watermark).

A :class:`ChannelSender` ships a list of items (Arrow RecordBatches and control events,
in order) to one input channel of one downstream task; to a task in the same process
(:class:`LocalSender`) record batches go as :class:`~engine.records.Batch` objects holding
their Python list, never converted to Arrow. It enforces **credit-based
back-pressure**: at most ``window`` sends may be unacknowledged; a consumer acknowledges a
send only after it has *processed* every item in it, so in-flight data per channel is
bounded by ``window`` sends. Feedback channels (``window=None``) never block.

Transports: :class:`LocalSender` connects tasks in one process (co-located tasks, the
in-process runtime, tests); :class:`~engine.socket_channels.SocketSender` connects task
executors on the same node over a Unix domain socket; the Ray actor-call transport
(``RaySender``, other nodes and the fallback) lives in :mod:`engine.ray_runtime`, since Ray
stays there.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa

from .events import MIN_WATERMARK, Watermark
from .partitioners import BroadcastPartitioner, Partitioner
from .records import Batch, concat_timestamps, record_bytes, with_timestamp_column

__all__ = ["ChannelMetrics", "ChannelSender", "LocalSender", "Cancelled", "InputInfo", "OutputInfo", "InputChannel",
           "RecordWriter", "NetworkOutput"]

log = logging.getLogger(__name__)

#: about how many bytes an output buffer holds before it is sent (``TaskConfig.buffer_bytes``)
DEFAULT_BUFFER_BYTES = 8 << 20


#: records of a Python batch sized to estimate its bytes per row (:func:`row_bytes`)
ROW_SAMPLES = 16

#: seconds of its consumer's work a back-pressured channel holds in flight, about (Flink's
#: buffer debloating target, ``taskmanager.network.memory.buffer-debloat.target``: 1 s):
#: its sends shrink to ``rate * DEBLOAT_TARGET_S / credits`` rows, ``rate`` the rows a second
#: the consumer acknowledged while the producer waited for credit
DEBLOAT_TARGET_S = 1.0

#: seconds over which a channel measures the rate its consumer acknowledges rows at
DEBLOAT_PERIOD_S = 0.2

#: about how many bytes a send of a channel holds until its first period is measured
#: (Flink's network buffers: 32 KiB): its first sends went at ``batch_size`` rows or
#: ``buffer_bytes`` (8 MiB), minutes of a slow consumer's work in flight before
#: back-pressure could be measured at all
INITIAL_SEND_BYTES = 32 << 10


def row_bytes(batch: Batch) -> int:
    """About how many bytes a row of ``batch`` takes (>= 1): its Arrow buffers per row, else
    the mean :func:`~.records.record_bytes` of up to :data:`ROW_SAMPLES` + 1 records spread
    evenly over the batch, first and last included. Records of one stream differ in size (a
    document of a line, the next of megabytes): sized by their first alone, a batch whose
    first record was small went whole, gigabytes, past ``buffer_bytes``.

    Example:
        >>> row_bytes(Batch.of_records([b""] + [b"x" * 1000] * 99)) > 900
        True
    """
    if batch.is_arrow:
        return batch.row_bytes()
    records = batch.records()
    n = len(records)
    if n <= ROW_SAMPLES + 1:
        picks = records
    else:
        picks = [records[i * (n - 1) // ROW_SAMPLES] for i in range(ROW_SAMPLES + 1)]
    return max(1, sum(map(record_bytes, picks)) // len(picks)) if picks else 1


class Cancelled(Exception):
    """Raised inside a task thread when the task was cancelled while blocked."""


@dataclass
class ChannelMetrics:
    """Counters of one output channel (read by tests and metrics)."""

    sends: int = 0
    batches: int = 0
    rows: int = 0
    bytes: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    blocked_s: float = 0.0
    #: rows per send the channel is held to while back-pressured (0: not held, -1: not
    #: measured yet)
    send_rows: int = -1


class ChannelSender(ABC):
    """Sends item lists to one downstream input channel, with a credit window.

    A channel whose producer waits for credit also measures the rate its consumer
    acknowledges rows at, and :meth:`rows_per_send` tells the producer's
    :class:`RecordWriter` how many rows a send may hold so that the ``window`` sends in
    flight are about :data:`DEBLOAT_TARGET_S` of the consumer's work (Flink's buffer
    debloating): a checkpoint barrier queues behind that much, not behind ``window`` full
    buffers (a sink at 1 ms a record behind 4 sends of 36,000 rows: minutes, every
    checkpoint timed out)."""

    transport = "abstract"  # shown in the channel metrics

    def __init__(self, channel_index: int, window: int | None) -> None:
        self.channel_index = channel_index
        self.window = window
        self.metrics = ChannelMetrics()
        self._seq = 0
        self._unacked_rows: deque[int] = deque()  # rows of each send in flight, oldest first
        self._period_start = time.monotonic()
        self._period_rows = 0  # rows acknowledged since _period_start
        self._period_blocked = False  # the producer waited for credit since _period_start
        # rows a send holds at most; 0: not back-pressured, any size; -1: not measured yet
        # (a channel with a credit window sends about INITIAL_SEND_BYTES at a time until then)
        self._rows_per_send = 0 if window is None else -1

    def send(self, items: list[Any], rows: int = 0, nbytes: int = 0, batches: int = 0) -> None:
        """Ship ``items`` in order; blocks while ``window`` sends are unacknowledged."""
        seq = self._seq
        self._seq += 1
        if self.window is not None and self.metrics.in_flight >= self.window:
            start = time.perf_counter()
            self._period_blocked = True
            self._wait_for_credit()
            self.metrics.blocked_s += time.perf_counter() - start
        self._transmit(seq, items)
        m = self.metrics
        m.sends += 1
        m.batches += batches
        m.rows += rows
        m.bytes += nbytes
        m.in_flight += 1
        if m.in_flight > m.max_in_flight:
            m.max_in_flight = m.in_flight
        unacked = self._unacked_rows
        while len(unacked) >= m.in_flight and unacked:  # (a transport that reset in_flight)
            unacked.popleft()
        unacked.append(rows)
        if self._rows_per_send == -1 and self._seq == 1:  # the first measurement starts at the first send
            self._period_start = time.monotonic()

    def _acked(self, n: int = 1) -> None:
        self.metrics.in_flight -= n
        unacked = self._unacked_rows
        for _ in range(min(n, len(unacked))):
            self._period_rows += unacked.popleft()
        if self.window is None:
            return
        now = time.monotonic()
        elapsed = now - self._period_start
        if elapsed < DEBLOAT_PERIOD_S and self._rows_per_send != -1:
            # (the first ack measures at once: sends of INITIAL_SEND_BYTES for a whole period
            # made a fast job's channels send 4x as often, and most jobs' channels live less
            # than a period)
            return
        if self._period_blocked:
            # back-pressured: the consumer took _period_rows in ``elapsed`` (at least 1 row
            # a send: a consumer stuck on one send does not shrink them to nothing at once)
            per_send = self._period_rows / elapsed * DEBLOAT_TARGET_S / self.window
            last = self._rows_per_send
            if last > 0:
                per_send = (per_send + last) / 2
            self._rows_per_send = max(1, int(per_send))
        else:
            self._rows_per_send = 0  # the consumer keeps up: sends of any size again
        self.metrics.send_rows = self._rows_per_send
        self._period_start = now
        self._period_rows = 0
        self._period_blocked = False

    def rows_per_send(self, row_bytes: int) -> int:
        """How many rows (of about ``row_bytes`` each) a send should hold at most (0: no
        limit): about :data:`DEBLOAT_TARGET_S` of the consumer's work over the credit window
        while the producer waits for credit, :data:`INITIAL_SEND_BYTES` until the channel
        measured its consumer."""
        held = self._rows_per_send
        return held if held >= 0 else max(1, INITIAL_SEND_BYTES // max(1, row_bytes))

    @abstractmethod
    def _transmit(self, seq: int, items: list[Any]) -> None:
        """Start shipping one numbered send (must not block on the consumer)."""

    @abstractmethod
    def _wait_for_credit(self) -> None:
        """Block until at least one earlier send is acknowledged (or raise Cancelled)."""

    def drain(self) -> None:
        """Block until every send is acknowledged."""
        while self.metrics.in_flight > 0:
            self._wait_for_credit()

    def close(self) -> None:
        """Release the transport's resources once the producing task is done with the
        channel (a socket connection); nothing to do for most transports."""


class LocalSender(ChannelSender):
    """In-process channel: ``deliver(channel_index, seq, items, ack)`` is the consumer's
    thread-safe entry point (normally ``Task.deliver``)."""

    transport = "local"

    def __init__(
        self,
        channel_index: int,
        window: int | None,
        deliver: Callable[[int, int, list, Callable[[], None]], None],
        is_cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(channel_index, window)
        self._deliver = deliver
        self._cond = threading.Condition()
        self._acks = 0
        self._is_cancelled = is_cancelled

    def _ack(self) -> None:
        with self._cond:
            self._acks += 1
            self._cond.notify_all()

    def _collect_acks(self) -> None:
        with self._cond:
            n, self._acks = self._acks, 0
        if n:
            self._acked(n)

    def _transmit(self, seq: int, items: list[Any]) -> None:
        self._collect_acks()
        self._deliver(self.channel_index, seq, items, self._ack)

    def _wait_for_credit(self) -> None:
        with self._cond:
            while self._acks == 0:
                if self._is_cancelled():
                    raise Cancelled()
                self._cond.wait(0.05)
        self._collect_acks()


@dataclass
class InputInfo:
    """One input channel of a task."""

    input_index: int
    upstream: str
    feedback: bool = False


@dataclass
class OutputInfo:
    """One output edge of a task: a partitioner over ``num_targets`` downstream subtasks."""

    partitioner: Partitioner
    target_vertex: int
    num_targets: int
    channel_index: int  # our channel index at every target
    feedback: bool = False
    side_tag: str | None = None  # None: the main output


class InputChannel:
    """The receiving end of one channel inside a task: ordered items, alignment flags, watermark."""

    __slots__ = ("index", "info", "next_seq", "early", "items", "blocked", "ended", "watermark", "idle")

    def __init__(self, index: int, info: InputInfo) -> None:
        self.index = index
        self.info = info
        self.next_seq = 0
        self.early: dict[int, tuple[list, Callable[[], None]]] = {}
        self.items: deque = deque()
        self.blocked = False
        self.ended = False
        self.watermark = MIN_WATERMARK
        self.idle = False


class NetworkOutput:
    """Output of a chain's last operator: the record writers of every output edge (main and
    side outputs); watermarks and control events go to all of them."""

    def __init__(self, writers: list[RecordWriter], metrics: Any, task_name: str) -> None:
        self.task_name = task_name
        self.metrics = metrics  # the last chained operator's counters (records_out), or None
        self.writers = writers
        self.main = [w for w in self.writers if w.info.side_tag is None]
        self.side: dict[str, list[RecordWriter]] = {}
        for w in self.writers:
            if w.info.side_tag is not None:
                self.side.setdefault(w.info.side_tag, []).append(w)
        self.dropped_side: dict[str, int] = {}
        self.last_watermark = MIN_WATERMARK

    def emit(self, batch: Batch) -> None:
        n = len(batch)
        if not n:
            return
        if self.metrics is not None:
            self.metrics.records_out += n
        for w in self.main:
            w.write(batch)

    def emit_side(self, tag: str, batch: Batch) -> None:
        writers = self.side.get(tag)
        if writers is None:
            # Like Flink, a side output nobody consumes goes nowhere, but it is counted and
            # logged once so that nothing disappears unnoticed.
            if tag not in self.dropped_side:
                log.warning("task %s: side output %r has no consumer; its records are discarded", self.task_name, tag)
            self.dropped_side[tag] = self.dropped_side.get(tag, 0) + len(batch)
            return
        for w in writers:
            w.write(batch)

    def emit_watermark(self, watermark: Watermark) -> None:
        if watermark.timestamp <= self.last_watermark:
            return
        self.last_watermark = watermark.timestamp
        for w in self.writers:
            if not w.info.feedback:  # event time of a loop is driven by its regular inputs
                w.send_event(watermark)

    def broadcast_event(self, event: Any) -> None:
        for w in self.writers:
            w.send_event(event)

    def flush_due(self, now: float) -> None:
        for w in self.writers:
            w.flush_due(now)

    def flush_all(self) -> None:
        for w in self.writers:
            w.flush_all()


def _shipped(rb: pa.RecordBatch, timestamps: Any) -> Batch:
    """What a channel sends of an Arrow batch with event timestamps: a :class:`Batch`
    holding only its Arrow data and the timestamps (see :meth:`Batch.__reduce__`)."""
    out = Batch(arrow=rb)
    out.timestamps = timestamps
    return out


def _coalesced(buf: list[Batch]) -> list[Batch]:
    """Consecutive buffered batches of one send as one batch where that keeps every record:
    Python records as one list, Arrow batches of one schema as one RecordBatch
    (``pa.concat_batches``, one copy of the rows on the producer). After a hash partition a
    producer batch leaves a slice per target, so a send would otherwise carry dozens of small
    batches, each pickled with its schema and processed by the consumer in its own call (a
    group-by, a key lookup against every known key, ...). Mixed or differently typed
    batches go as they are, and so do batches with event timestamps among batches without
    (a merged batch carries its records' timestamps when every part has them)."""
    first = buf[0]
    stamps = None
    if first.timestamps is not None or any(b.timestamps is not None for b in buf):
        stamps = concat_timestamps(buf)
        if stamps is None:  # (batches with and without event timestamps: as they are)
            return buf
    if not first.is_arrow:
        if any(b.is_arrow for b in buf):
            return buf
        merged: list = []
        for b in buf:
            merged.extend(b.records())
        return [Batch.of_records(merged, stamps)]
    schema = first.arrow().schema
    if not all(b.is_arrow and b.arrow().schema.equals(schema, check_metadata=True) for b in buf):
        return buf
    out = Batch.of_arrow(pa.concat_batches([b.arrow() for b in buf]))
    out.timestamps = stamps
    return [out]


class RecordWriter:
    """Partitions batches of one output edge and buffers them per target channel.

    A target's buffer is sent when it holds ``batch_size`` rows, when its oldest entry is
    ``flush_ms`` old (the buffer timeout), or with a control event. Watermarks are the
    exception among events: like Flink, which writes a watermark into the output buffer and
    ships it with the buffer, a watermark is *buffered* behind the data before it and goes
    with the next send (a later watermark with no data in between replaces it), so a
    source that makes one watermark per batch does not cost one send per batch and target.
    Barriers, end of input and stream status flush the buffer at once."""

    def __init__(self, info: OutputInfo, senders: list[ChannelSender], subtask_index: int, max_parallelism: int,
                 batch_size: int, flush_ms: int, buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> None:
        self.info = info
        self.senders = senders
        self.partitioner = info.partitioner
        self.partitioner.setup(subtask_index, info.num_targets, max_parallelism)
        #: per target, in order: Batch objects and buffered Watermarks
        self.buffers: list[list[Any]] = [[] for _ in senders]
        # Co-located targets (a LocalSender: same process) get record batches as Python lists,
        # with no Arrow conversion on either side (issue 12). Not on broadcast edges (every
        # target would share the same record objects) nor on feedback edges (their in-flight
        # records are logged as Arrow in checkpoints).
        shared = info.feedback or isinstance(self.partitioner, BroadcastPartitioner)
        self.hand_over = [not shared and s.transport == "local" for s in senders]
        self.rows = [0] * len(senders)
        self.bytes = [0] * len(senders)  # about how many bytes each target's buffer holds
        self.since = [0.0] * len(senders)
        self.batch_size = batch_size
        self.flush_s = flush_ms / 1000.0
        self.buffer_bytes = buffer_bytes
        #: about how many bytes were written (:func:`row_bytes`): the task sizes its
        #: calls of the chain by the bytes they write
        self.bytes_written = 0

    def write(self, batch: Batch) -> None:
        """Buffer ``batch``'s records for their targets; a target's buffer is sent once it
        holds ``batch_size`` rows or about ``buffer_bytes`` (:func:`row_bytes`). A part
        larger than ``buffer_bytes`` (records of megabytes) goes in slices of about that
        many bytes, after what the buffer held."""
        row = row_bytes(batch)  # (once per batch, for the parts of every target)
        for target, part in self.partitioner.select(batch):
            n = len(part)
            size = row * n
            self.bytes_written += size
            held = self.senders[target].rows_per_send(row)  # back-pressured: smaller sends
            if (size > self.buffer_bytes or 0 < held < n) and n > 1:
                if self.buffers[target]:
                    self._flush(target, None)
                step = max(1, self.buffer_bytes // row)
                if held:
                    step = min(step, held)
                for start in range(0, n, step):
                    stop = min(n, start + step)
                    self._buffer(target, part.slice(start, stop), stop - start, row * (stop - start))
            else:
                self._buffer(target, part, n, size)

    def _buffer(self, target: int, part: Batch, rows: int, size: int) -> None:
        buf = self.buffers[target]
        held = self.senders[target].rows_per_send(max(1, size // max(1, rows)))
        if buf and (self.bytes[target] + size > self.buffer_bytes  # (a send stays within buffer_bytes)
                    or 0 < held < self.rows[target] + rows):  # (and, back-pressured, within its rows)
            self._flush(target, None)
            buf = self.buffers[target]
        if not buf:
            self.since[target] = time.monotonic()
        buf.append(part)
        self.rows[target] += rows
        self.bytes[target] += size
        limit = min(self.batch_size, held) if held else self.batch_size
        if self.rows[target] >= limit or self.bytes[target] >= self.buffer_bytes:
            self._flush(target, None)

    def _flush(self, target: int, event: Any) -> None:
        buf = self.buffers[target]
        items: list[Any] = []
        rows = 0
        nbytes = 0
        batches = 0
        if buf:
            run: list[Batch] = []
            for entry in buf:
                if isinstance(entry, Batch):
                    run.append(entry)
                    continue
                if run:  # the data before a buffered watermark
                    r, b = self._items_of(target, run, items)
                    rows, nbytes = rows + r, nbytes + b
                    run = []
                items.append(entry)
            if run:
                r, b = self._items_of(target, run, items)
                rows, nbytes = rows + r, nbytes + b
            batches = sum(1 for it in items if not isinstance(it, Watermark))
            self.buffers[target] = []
            self.rows[target] = 0
            self.bytes[target] = 0
        if event is not None:
            items.append(event)
        if items:
            self.senders[target].send(items, rows=rows, nbytes=nbytes, batches=batches)

    def _items_of(self, target: int, buf: list[Batch], items: list[Any]) -> tuple[int, int]:
        """Append the channel items of consecutive buffered batches ``buf`` to ``items``;
        returns their (rows, Arrow bytes)."""
        rows = 0
        nbytes = 0
        if len(buf) > 1:
            buf = _coalesced(buf)
        hand_over = self.hand_over[target]
        for b in buf:
            ts = b.timestamps
            if hand_over and not b.is_arrow:
                # the records as they are, with their event timestamps (a fresh Batch: the
                # producer keeps no reference to what the consumer gets)
                items.append(Batch.of_records(b.records(), ts))
                rows += len(b)
                continue
            rb = b.arrow()
            if ts is None:
                items.append(rb)
            elif not self.info.feedback:
                # Arrow with the int64 event timestamps beside it (Flink's StreamRecord
                # timestamps; the schema is the records'): a Batch, pickled as both
                items.append(_shipped(rb, ts))
            else:  # (a feedback edge sends Arrow only, logged in checkpoints as it is: the
                # timestamps as its last column, taken off by Batch.of_arrow; Flink's iterations keep them)
                items.append(with_timestamp_column(rb, ts))
            rows += rb.num_rows
            nbytes += rb.nbytes
        return rows, nbytes

    def flush_due(self, now: float) -> None:
        for t, buf in enumerate(self.buffers):
            if buf and now - self.since[t] >= self.flush_s:
                self._flush(t, None)

    def flush_all(self) -> None:
        for t, buf in enumerate(self.buffers):
            if buf:
                self._flush(t, None)

    def send_event(self, event: Any) -> None:
        """Flush every channel and append ``event`` to the same send (piggybacking); a
        watermark is buffered instead and goes with the next send (see the class docstring)."""
        if type(event) is Watermark and self.flush_s > 0:
            for t, buf in enumerate(self.buffers):
                if not buf:
                    self.since[t] = time.monotonic()
                    buf.append(event)
                elif type(buf[-1]) is Watermark:
                    buf[-1] = event  # superseded: no data in between
                else:
                    buf.append(event)
            return
        for t in range(len(self.senders)):
            self._flush(t, event)
