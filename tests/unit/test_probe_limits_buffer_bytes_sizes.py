"""``buffer_bytes`` holds when the records of a batch differ in size: a batch is sized by
records spread over it, not by its first record alone.

Before, a batch whose first record was small (an empty document, then blobs of a megabyte)
was taken for a batch of small records: the output buffer sent it whole and the task called
its chain on all of its input at once. A map from 3,000 ids to 1 MB blobs, every 64th one
empty, peaked at 4.6 GB in a task at p=2 (uniform blobs: 0.28 GB); now 0.25 GB."""

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
from raystream.engine.records import Batch, arrow_to_records
from tests.unit.test_watermark_buffering import _Recording

MB = 1 << 20


def _writer(buffer_bytes: int) -> tuple[RecordWriter, _Recording]:
    sender = _Recording()
    info = OutputInfo(ForwardPartitioner(), target_vertex=1, num_targets=1, channel_index=0)
    return RecordWriter(info, [sender], 0, 128, 65536, 600_000, buffer_bytes), sender


def _sent_rows(sender: _Recording) -> list[list[Any]]:
    return [[r for it in items if isinstance(it, pa.RecordBatch) for r in arrow_to_records(it)] for items in sender.sent]


def _blob(i: int, every: int) -> tuple[int, bytes]:
    return (i, b"" if i % every == 0 else b"x" * MB)


def test_a_batch_whose_first_record_is_small_is_still_sent_a_buffer_at_a_time():
    w, sender = _writer(buffer_bytes=4 * MB)
    records = [_blob(i, 10_000) for i in range(40)]  # only the first is small
    w.write(Batch.of_records(records))
    w.send_event(EndOfInput())
    sends = [rows for rows in _sent_rows(sender) if rows]
    assert max(len(rows) for rows in sends) <= 5, [len(r) for r in sends]
    assert [r for rows in sends for r in rows] == records


def test_small_records_among_large_ones_do_not_hide_them():
    w, sender = _writer(buffer_bytes=4 * MB)
    records = [_blob(i, 8) for i in range(64)]  # every 8th is small, the first among them
    w.write(Batch.of_records(records))
    w.send_event(EndOfInput())
    sends = [rows for rows in _sent_rows(sender) if rows]
    assert max(len(rows) for rows in sends) <= 6, [len(r) for r in sends]
    assert [r for rows in sends for r in rows] == records


def test_row_bytes_is_the_mean_over_records_spread_over_the_batch():
    from raystream.engine.channels import row_bytes

    assert row_bytes(Batch.of_records([b""] + [b"x" * 1000] * 999)) >= 900
    assert row_bytes(Batch.of_records([b"x" * 1000] * 999 + [b""])) >= 900
    assert row_bytes(Batch.of_records([("k", 1)] * 10_000)) < 100
    assert row_bytes(Batch.of_records([])) == 1
    assert row_bytes(Batch.of_arrow(pa.RecordBatch.from_pydict({"b": [b"y" * 1000] * 10}))) >= 1000


# --------------------------------------------------------------------------- in a job
#: the row counts the map saw per call (the in-process runtime runs it in this process)
CALLS: list[int] = []
#: the row counts the sink got per batch
SINK_BATCHES: list[int] = []


def _blobs(i: int) -> tuple[int, bytes]:
    CALLS.append(i)
    return _blob(i, 16)


class _Sizes(SinkWriter[Any]):
    def write(self, batch: Batch) -> None:
        SINK_BATCHES.append(len(batch))


class _SizesSink(Sink[Any]):
    def create_writer(self, ctx: OperatorContext) -> SinkWriter[Any]:
        return _Sizes()


def test_a_chain_making_records_of_mixed_sizes_is_called_on_slices_of_its_input():
    CALLS.clear()
    SINK_BATCHES.clear()
    env = rs.StreamEnvironment(parallelism=1)
    (env.generate(300, batch_size=300)
     .map(_blobs)
     .rebalance().sink_to(_SizesSink()).set_parallelism(2))
    config = JobConfig(name="mixed blobs", task=TaskConfig(buffer_bytes=4 * MB))
    run_in_process(env.get_job_graph(), config, timeout_s=120)
    assert sorted(CALLS) == list(range(300)) and sum(SINK_BATCHES) == 300
    assert max(SINK_BATCHES) <= 6, SINK_BATCHES  # (before: 236 of the 300 in one batch)


#: the rows each call of the head map got, and the records it turned into blobs
HEAD_CALLS: list[int] = []


def _blobs_after_64(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Nothing for ids below 64 (a filter's work), a 1 MB blob for every other id."""
    HEAD_CALLS.append(batch.num_rows)
    ids = [i for i in batch.column(0).to_pylist() if i >= 64]
    return pa.RecordBatch.from_pydict({"k": ids, "blob": [b"z" * MB] * len(ids)},
                                      schema=pa.schema([("k", pa.int64()), ("blob", pa.binary())]))


def test_after_calls_that_wrote_nothing_the_slices_grow_step_by_step():
    """Before, a call that wrote nothing sent the rest of the batch in one call: the first 64
    ids made nothing, then 236 blobs of 1 MB were made at once (2 GB at 2,000 ids in a job)."""
    HEAD_CALLS.clear()
    SINK_BATCHES.clear()
    env = rs.StreamEnvironment(parallelism=1)
    (env.generate(300, batch_size=300)
     .map_batches(_blobs_after_64)
     .rebalance().sink_to(_SizesSink()).set_parallelism(2))
    config = JobConfig(name="blobs after nothing", task=TaskConfig(buffer_bytes=4 * MB))
    run_in_process(env.get_job_graph(), config, timeout_s=120)
    assert sum(HEAD_CALLS) == 300 and sum(SINK_BATCHES) == 300 - 64
    assert HEAD_CALLS[0] == 64 and HEAD_CALLS[1] <= 128, HEAD_CALLS  # (before: [64, 236])
    assert max(HEAD_CALLS[2:]) <= 4, HEAD_CALLS
    assert max(SINK_BATCHES) <= 6, SINK_BATCHES
