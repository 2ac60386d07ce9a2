"""RecordWriter buffers watermarks behind the data (Flink's output buffer), so a source that
makes one watermark per batch does not cost one send per batch: the watermark goes with the
next send (buffer full, buffer timeout, or a barrier/end of input), in order."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from raystream.engine.channels import ChannelSender, OutputInfo, RecordWriter
from raystream.engine.events import Barrier, EndOfInput, Watermark
from raystream.engine.partitioners import ForwardPartitioner
from raystream.engine.records import Batch


class _Recording(ChannelSender):
    """A sender that keeps every send (never blocks)."""

    transport = "ray"  # as a remote target: batches go as Arrow

    def __init__(self) -> None:
        super().__init__(0, None)
        self.sent: list[list[Any]] = []

    def _transmit(self, seq: int, items: list[Any]) -> None:
        self.sent.append(list(items))

    def _wait_for_credit(self) -> None:
        raise AssertionError("a window-less sender never waits")


def _writer(batch_size: int = 1000, flush_ms: int = 50) -> tuple[RecordWriter, _Recording]:
    sender = _Recording()
    info = OutputInfo(ForwardPartitioner(), target_vertex=1, num_targets=1, channel_index=0)
    return RecordWriter(info, [sender], 0, 128, batch_size, flush_ms), sender


def _rb(values: list[int]) -> Batch:
    return Batch.of_arrow(pa.RecordBatch.from_pydict({"v": values}))


def _kinds(items: list[Any]) -> list[Any]:
    return [it.column(0).to_pylist() if isinstance(it, pa.RecordBatch) else it for it in items]


def test_watermarks_wait_for_the_buffer_timeout_and_go_in_order() -> None:
    w, sender = _writer()
    w.write(_rb([1, 2]))
    w.send_event(Watermark(2))
    w.write(_rb([3]))
    w.send_event(Watermark(3))
    w.send_event(Watermark(4))  # no data since the last one: replaces it
    assert sender.sent == []
    w.flush_due(time.monotonic() + 1.0)
    assert [_kinds(s) for s in sender.sent] == [[[1, 2], Watermark(2), [3], Watermark(4)]]
    assert sender.metrics.batches == 2 and sender.metrics.rows == 3


def test_a_lone_watermark_is_flushed_by_the_timer() -> None:
    w, sender = _writer()
    w.send_event(Watermark(7))
    w.flush_due(time.monotonic() - 1.0)  # not due yet
    assert sender.sent == []
    w.flush_due(time.monotonic() + 1.0)
    assert sender.sent == [[Watermark(7)]]


def test_barriers_and_end_of_input_flush_buffered_watermarks_first() -> None:
    w, sender = _writer()
    w.write(_rb([1]))
    w.send_event(Watermark(1))
    w.send_event(Barrier(5))
    w.send_event(Watermark(9))
    w.send_event(EndOfInput())
    assert [_kinds(s) for s in sender.sent] == [[[1], Watermark(1), Barrier(5)], [Watermark(9), EndOfInput()]]


def test_a_full_buffer_takes_the_watermarks_before_it_along() -> None:
    w, sender = _writer(batch_size=3)
    w.write(_rb([1]))
    w.send_event(Watermark(1))
    w.write(_rb([2, 3]))  # 3 rows: full
    assert [_kinds(s) for s in sender.sent] == [[[1], Watermark(1), [2, 3]]]


def test_without_a_buffer_timeout_watermarks_are_sent_at_once() -> None:
    w, sender = _writer(flush_ms=0)
    w.write(_rb([1]))
    w.send_event(Watermark(1))
    assert [_kinds(s) for s in sender.sent] == [[[1], Watermark(1)]]
