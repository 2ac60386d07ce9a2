"""``write_parquet`` gathers small batches into row groups (up to ``ROW_GROUP_ROWS`` rows or
``ROW_GROUP_BYTES`` bytes, and at each checkpoint and the end) instead of writing a row group
per batch (no Ray).

Before, a stream of small batches (what a sink gets behind a shuffle at a low rate: a batch
per ``flush_ms``) made a row group per batch, and the Parquet writer holds every row group's
footer entry in memory until the file is finished: 100,000 batches of 3 rows took 260 MB in
the writer and made a 56 MB file of 300,000 rows (half of it footer) that took 11 s to read;
a job without checkpoints never finishes its file, so its memory grew for as long as it ran."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq

from raystream.engine.records import Batch
from raystream.engine.sink_operator import SinkOperator
from raystream.operators import sinks
from raystream.operators.sinks import ParquetSink
from raystream.operators.testing import OperatorHarness


def commit(sink: ParquetSink, committables: dict) -> None:
    sink.create_committer().commit([c for cs in committables.values() for c in cs])


def test_small_batches_make_one_row_group_per_file(tmp_path):
    sink = ParquetSink(str(tmp_path))
    harness = OperatorHarness(SinkOperator(sink))
    records = [{"k": i, "v": f"v{i}", "x": i / 2} for i in range(6000)]
    for i in range(0, 6000, 3):
        harness.process(records[i:i + 3])
    commit(sink, harness.end_input().committables)
    [part] = sorted(tmp_path.glob("part-*.parquet"))
    assert pq.ParquetFile(part).metadata.num_row_groups == 1  # (before: 2,000)
    assert pq.read_table(part).to_pylist() == records


def test_a_checkpoint_finishes_the_row_group_and_the_file(tmp_path):
    """The writer's contract (``SinkWriter.prepare_commit`` at each barrier): the rows
    gathered so far are in the file handed over, none wait for the next one."""
    sink = ParquetSink(str(tmp_path))
    writer = sink.create_writer(SimpleNamespace(subtask_index=0, operator_uid="sink"))
    committer = sink.create_committer()
    for i in range(100):
        writer.write(Batch.of_records([{"k": i}]))
    committer.commit(writer.prepare_commit(1))
    [part] = sorted(tmp_path.glob("part-*.parquet"))
    assert [r["k"] for r in pq.read_table(part).to_pylist()] == list(range(100))
    for i in range(100, 150):
        writer.write(Batch.of_records([{"k": i}]))
    committer.commit(writer.prepare_commit(None))
    parts = sorted(tmp_path.glob("part-*.parquet"))
    assert sorted(r["k"] for p in parts for r in pq.read_table(p).to_pylist()) == list(range(150))
    assert [pq.ParquetFile(p).metadata.num_row_groups for p in parts] == [1, 1]


def test_row_groups_are_cut_at_the_byte_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks, "ROW_GROUP_BYTES", 64 << 10)
    sink = ParquetSink(str(tmp_path))
    harness = OperatorHarness(SinkOperator(sink))
    records = [{"k": i, "blob": b"z" * 1000} for i in range(1000)]  # ~1 MB in batches of 10
    for i in range(0, 1000, 10):
        harness.process(records[i:i + 10])
    commit(sink, harness.end_input().committables)
    [part] = sorted(tmp_path.glob("part-*.parquet"))
    meta = pq.ParquetFile(part).metadata
    assert 10 <= meta.num_row_groups <= 20, meta.num_row_groups
    assert pq.read_table(part).to_pylist() == records


def test_types_that_change_between_batches_still_unify_or_start_a_file(tmp_path):
    sink = ParquetSink(str(tmp_path))
    harness = OperatorHarness(SinkOperator(sink))
    harness.process([{"k": 0, "x": None}])
    harness.process([{"k": 1, "x": "a"}])  # null then string: one file
    harness.process([{"k": 2, "x": "b", "y": 1}])  # a new field: a new file of the unified schema
    commit(sink, harness.end_input().committables)
    parts = sorted(tmp_path.glob("part-*.parquet"))
    rows = sorted((r for p in parts for r in pq.read_table(p).to_pylist()), key=lambda r: r["k"])
    assert [(r["k"], r["x"], r.get("y")) for r in rows] == [(0, None, None), (1, "a", None), (2, "b", 1)]
    assert len(parts) == 2 and [pq.read_schema(p).field("x").type for p in parts] == [pa.string(), pa.string()]


def test_a_row_group_of_many_small_batches_holds_about_its_data(tmp_path):
    """The batches gathered for a row group are merged as they come: 20,000 batches of one
    row held 3.8 MB of Arrow buffers (the padding of each small batch) for their 0.3 MB of
    rows, and in a job a row group of 25,000 such batches took 75 MB of the task's memory."""
    sink = ParquetSink(str(tmp_path))
    harness = OperatorHarness(SinkOperator(sink))
    harness.process([{"k": -1, "v": "x"}])  # (the file starts: the writer's own buffers)
    before = pa.total_allocated_bytes()
    for i in range(20_000):
        harness.process([{"k": i, "v": "x"}])
    held = pa.total_allocated_bytes() - before
    assert held < 1 << 20, held  # (before: 3.8 MB; now 0.27 MB)
    commit(sink, harness.end_input().committables)
    [part] = sorted(tmp_path.glob("part-*.parquet"))
    assert pq.read_table(part).column("k").to_pylist() == list(range(-1, 20_000))
