"""RecordWriter ships the buffered batches of one send as one batch where no record changes:
after a hash partition each producer batch leaves a slice per target, and a send of dozens
of slices would cost the consumer one call (group-by, key lookup) per slice."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from raystream.engine.channels import OutputInfo, RecordWriter
from raystream.engine.events import EndOfInput, Watermark
from raystream.engine.partitioners import KeyGroupPartitioner, KeySelector
from raystream.engine.records import Batch
from tests.unit.test_watermark_buffering import _Recording


def _hash_writer(targets: int = 2, batch_size: int = 10_000) -> tuple[RecordWriter, list[_Recording]]:
    senders = [_Recording() for _ in range(targets)]
    info = OutputInfo(KeyGroupPartitioner(KeySelector("k")), target_vertex=1, num_targets=targets, channel_index=0)
    return RecordWriter(info, list(senders), 0, 128, batch_size, 50), senders


def _rows(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for it in items:
        out.extend(it.to_pylist() if isinstance(it, pa.RecordBatch) else [it])
    return out


def test_the_slices_of_one_send_go_as_one_arrow_batch_in_order() -> None:
    w, senders = _hash_writer()
    written = []
    for b in range(5):
        rows = [{"k": f"k{i % 7}", "v": b * 100 + i} for i in range(20)]
        written.extend(rows)
        w.write(Batch.of_arrow(pa.RecordBatch.from_pylist(rows)))
    w.send_event(EndOfInput())
    got = []
    for s in senders:
        (items,) = s.sent
        assert [type(it) for it in items] == [pa.RecordBatch, EndOfInput]
        got.extend(_rows(items)[:-1])
        assert s.metrics.batches == 1 and s.metrics.rows == items[0].num_rows
    # every record once; within a target the producer's order
    assert sorted(got, key=lambda r: r["v"]) == written
    for s in senders:
        vs = [r["v"] for r in _rows(s.sent[0])[:-1]]
        assert vs == sorted(vs)


def test_watermarks_split_the_coalesced_runs() -> None:
    w, senders = _hash_writer(targets=1)
    w.write(Batch.of_arrow(pa.RecordBatch.from_pydict({"k": ["a"], "v": [1]})))
    w.write(Batch.of_arrow(pa.RecordBatch.from_pydict({"k": ["b"], "v": [2]})))
    w.send_event(Watermark(5))
    w.write(Batch.of_arrow(pa.RecordBatch.from_pydict({"k": ["c"], "v": [3]})))
    w.send_event(EndOfInput())
    (items,) = senders[0].sent
    assert [type(it) for it in items] == [pa.RecordBatch, Watermark, pa.RecordBatch, EndOfInput]
    assert _rows(items) == [{"k": "a", "v": 1}, {"k": "b", "v": 2}, Watermark(5), {"k": "c", "v": 3}, EndOfInput()]


def test_batches_of_other_schemas_or_kinds_are_not_merged() -> None:
    w, senders = _hash_writer(targets=1)
    w.write(Batch.of_arrow(pa.RecordBatch.from_pydict({"k": ["a"], "v": [1]})))
    w.write(Batch.of_arrow(pa.RecordBatch.from_pydict({"k": ["b"], "v": [2.5]})))  # another type
    w.write(Batch.of_records([{"k": "c", "v": 3}]))  # Python records
    w.send_event(EndOfInput())
    (items,) = senders[0].sent
    assert [it.schema.field("v").type for it in items[:-1]] == [pa.int64(), pa.float64(), pa.int64()]
    assert [Batch.of_arrow(it).records() for it in items[:-1]] == [
        [{"k": "a", "v": 1}], [{"k": "b", "v": 2.5}], [{"k": "c", "v": 3}]]


def test_python_record_batches_still_go_as_one_list() -> None:
    w, senders = _hash_writer(targets=1)
    w.write(Batch.of_records([{"k": "a", "v": 1}]))
    w.write(Batch.of_records([{"k": "b", "v": 2}, {"k": "c", "v": 3}]))
    w.send_event(EndOfInput())
    (items,) = senders[0].sent
    assert len(items) == 2
    assert Batch.of_arrow(items[0]).records() == [{"k": "a", "v": 1}, {"k": "b", "v": 2}, {"k": "c", "v": 3}]
