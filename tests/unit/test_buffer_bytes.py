"""Records of megabytes go a buffer at a time (``TaskConfig.buffer_bytes``): an output buffer is
sent once it holds about that many bytes, not only ``batch_size`` rows, and a task calls its
chain on slices of an input batch when the chain writes more than that per call. Before, a
map from 3,000 ids to 1 MB blobs held a whole source batch's output (2.6 GB in a task) and sent
it as one batch."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

import raystream as rs
from raystream.engine.channels import OutputInfo, RecordWriter
from raystream.engine.config import JobConfig, TaskConfig
from raystream.engine.connectors import Sink, SinkWriter
from raystream.engine.events import EndOfInput
from raystream.engine.local_runtime import run_in_process
from raystream.engine.operator import OperatorContext
from raystream.engine.partitioners import ForwardPartitioner
from raystream.engine.records import Batch, arrow_to_records, record_bytes
from tests.unit.test_watermark_buffering import _Recording

MB = 1 << 20


def _writer(buffer_bytes: int, batch_size: int = 65536) -> tuple[RecordWriter, _Recording]:
    sender = _Recording()
    info = OutputInfo(ForwardPartitioner(), target_vertex=1, num_targets=1, channel_index=0)
    return RecordWriter(info, [sender], 0, 128, batch_size, 600_000, buffer_bytes), sender


def _sent_rows(sender: _Recording) -> list[list[Any]]:
    """The rows of each send (events left out)."""
    return [[r for it in items if isinstance(it, pa.RecordBatch) for r in arrow_to_records(it)] for items in sender.sent]


def test_records_of_megabytes_are_sent_a_buffer_at_a_time_in_order():
    w, sender = _writer(buffer_bytes=4 * MB)
    records = [(i, b"x" * MB) for i in range(50)]
    w.write(Batch.of_records(records))  # one batch: split between sends
    w.send_event(EndOfInput())
    sends = [rows for rows in _sent_rows(sender) if rows]
    assert all(len(rows) <= 4 for rows in sends), [len(r) for r in sends]
    assert [r for rows in sends for r in rows] == records
    assert w.bytes_written >= 50 * MB


def test_arrow_batches_are_split_by_their_bytes_too():
    w, sender = _writer(buffer_bytes=4 * MB)
    rb = pa.RecordBatch.from_pydict({"i": list(range(40)), "blob": [b"y" * MB] * 40})
    w.write(Batch.of_arrow(rb))
    w.send_event(EndOfInput())
    sends = [rows for rows in _sent_rows(sender) if rows]
    assert max(len(rows) for rows in sends) <= 4 and [r["i"] for rows in sends for r in rows] == list(range(40))


def test_small_records_go_as_before_at_batch_size_rows():
    w, sender = _writer(buffer_bytes=4 * MB, batch_size=1000)
    w.write(Batch.of_records([(i, "v") for i in range(2500)]))  # a write's part is not split
    for i in range(3):
        w.write(Batch.of_records([(i, "w")] * 400))
    w.send_event(EndOfInput())
    assert [len(rows) for rows in _sent_rows(sender)] == [2500, 1200, 0]


def test_small_rows_buffered_before_large_ones_are_sent_first():
    w, sender = _writer(buffer_bytes=4 * MB)
    w.write(Batch.of_records([(i, "small") for i in range(10)]))
    w.write(Batch.of_records([(10 + i, "b" * MB) for i in range(5)]))  # more than a buffer: in slices, after the 10
    w.send_event(EndOfInput())
    sends = _sent_rows(sender)
    assert [len(rows) for rows in sends][:1] == [10], [len(rows) for rows in sends]
    assert [r[0] for rows in sends for r in rows] == list(range(15))


def test_record_bytes_sizes_containers_by_their_elements():
    assert record_bytes(b"x" * 1000) >= 1000
    assert record_bytes({"a": "x" * 5000, "b": 1}) >= 5000
    assert record_bytes([b"z" * 100] * 1000) >= 100_000  # sampled, scaled to the length
    assert record_bytes(3) == 8


# --------------------------------------------------------------------------- in a job
#: the row counts the map saw per call (the in-process runtime runs it in this process)
CALLS: list[int] = []
#: the row counts the sink got per batch
SINK_BATCHES: list[int] = []


def _blobs(batch: pa.RecordBatch) -> pa.RecordBatch:
    CALLS.append(batch.num_rows)
    ids = batch.column(0).to_pylist()
    return pa.RecordBatch.from_pydict({"k": [i % 4 for i in ids], "blob": [b"z" * MB] * len(ids)})


class _Sizes(SinkWriter[Any]):
    def write(self, batch: Batch) -> None:
        SINK_BATCHES.append(len(batch))


class _SizesSink(Sink[Any]):
    def create_writer(self, ctx: OperatorContext) -> SinkWriter[Any]:
        return _Sizes()


def test_a_chain_that_makes_records_large_is_called_on_slices_of_its_input():
    CALLS.clear()
    SINK_BATCHES.clear()
    env = rs.StreamEnvironment(parallelism=1)
    (env.generate(300, batch_size=300)
     .map_batches(_blobs)
     .key_by("k").sink_to(_SizesSink()).set_parallelism(2))
    config = JobConfig(name="blobs", task=TaskConfig(buffer_bytes=4 * MB))
    run_in_process(env.get_job_graph(), config, timeout_s=120)
    assert sum(CALLS) == 300 and sum(SINK_BATCHES) == 300
    assert CALLS[0] == 64, CALLS  # the probe, then slices of about a buffer
    assert max(CALLS[1:]) <= 4, CALLS
    assert max(SINK_BATCHES) <= 4, SINK_BATCHES


def test_buffer_bytes_is_a_setting_of_the_environment():
    import pytest

    from raystream.engine.errors import ConfigError

    assert rs.StreamEnvironment(buffer_bytes=MB).task_config.buffer_bytes == MB
    with pytest.raises(ConfigError, match="buffer_bytes must be an int >= 1"):
        rs.StreamEnvironment(buffer_bytes=0)
