"""A punctuated watermark (``WatermarkStrategy.for_generator`` with a generator that emits in
``on_event``) goes out right after its record, as in Flink, on the operator path
(``TimestampsAndWatermarksOperator``) and pushed into the source reader: the batch is cut
after that record and the rest follows the watermark.

Before, it took effect after the whole batch holding its record, so which later records were
late depended on how the records were cut into batches: records ``5, 10 (mark), 3, 12, 20
(mark), 15, 30`` in 10 ms windows gave late records ``3`` and ``15`` at batch size 1, only
``3`` at batch size 2 and none at batch size 100 (windows ``[0, 10)`` summed 1, 5 or 5).
A reader that has cut a batch holds the rest until its next polls; a checkpoint taken in
between keeps those records with their split (or alone, when the split has ended) and the
restored reader emits them first.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import pytest

import raystream as rs
from raystream.engine.connectors import END_OF_INPUT, NOTHING_AVAILABLE, Source, SourceReader
from raystream.engine.events import Watermark
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import ManualClock, OperatorContext
from raystream.engine.records import Batch
from raystream.operators.functions import OutputTag
from raystream.operators.sources import CollectionSource
from raystream.operators.testing import CollectingOutput, OperatorHarness
from raystream.operators.time import (
    TimestampsAndWatermarksOperator,
    WatermarkedSource,
    WatermarkGenerator,
    WatermarkStrategy,
)
from raystream.operators.windows import TumblingEventTimeWindows


class Punctuated(WatermarkGenerator):
    """A watermark at each record flagged ``mark``."""

    def on_event(self, event, event_timestamp, output):
        if event.get("mark"):
            output.emit_watermark(Watermark(event_timestamp))

    def on_periodic_emit(self, output):
        pass


def strategy():
    return WatermarkStrategy.for_generator(Punctuated).with_timestamp_column("ts")


ROWS = [{"ts": 5, "v": 1}, {"ts": 10, "v": 2, "mark": True}, {"ts": 3, "v": 4}, {"ts": 12, "v": 8},
        {"ts": 20, "v": 16, "mark": True}, {"ts": 15, "v": 32}, {"ts": 30, "v": 64}, {"ts": 25, "v": 128, "mark": True},
        {"ts": 40, "v": 256, "mark": True}, {"ts": 41, "v": 512}]
#: Flink's order: each watermark right after its record
FLINK = [5, 10, ("wm", 10), 3, 12, 20, ("wm", 20), 15, 30, 25, ("wm", 25), 40, ("wm", 40), 41]


def late_of(log):
    """Per record of ``log`` (in order): whether a watermark at or past its timestamp went out
    before it (what makes it late for a window, join or timer downstream)."""
    wm, late = None, []
    for e in log:
        if isinstance(e, tuple):
            wm = e[1] if wm is None else max(wm, e[1])
        else:
            late.append(wm is not None and e <= wm)
    return late


FLINK_LATE = late_of(FLINK)
assert FLINK_LATE == [False, False, True, False, False, True, False, False, False, False]


class Log(CollectingOutput):
    """Records and watermarks in the order they went out."""

    def __init__(self):
        super().__init__()
        self.log = []

    def emit(self, batch):
        super().emit(batch)
        self.log.extend(r["ts"] for r in batch.records())

    def emit_watermark(self, watermark):
        super().emit_watermark(watermark)
        self.log.append(("wm", watermark.timestamp))


def cuts(rows, size):
    return [rows[i:i + size] for i in range(0, len(rows), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 4, len(ROWS)])
def test_operator_emits_a_punctuated_watermark_right_after_its_record(size):
    out = Log()
    h = OperatorHarness(TimestampsAndWatermarksOperator(strategy()), output=out)
    for part in cuts(ROWS, size):
        h.process(part)
    assert late_of(out.log) == FLINK_LATE  # the same records late, whatever the cuts
    assert h.records() == ROWS
    if size == len(ROWS):  # cut only before the records a watermark makes late (3 and 15)
        assert [len(b) for b in out.batches] == [2, 3, 5]


def test_a_generator_raising_the_watermark_at_every_record_of_in_order_data_cuts_nothing():
    class EveryRecord(WatermarkGenerator):
        def on_event(self, event, event_timestamp, output):
            output.emit_watermark(event_timestamp - 1)

    out = Log()
    h = OperatorHarness(TimestampsAndWatermarksOperator(
        WatermarkStrategy.for_generator(EveryRecord).with_timestamp_column("ts")), output=out)
    h.process([{"ts": t} for t in range(100)])
    h.process([{"ts": t} for t in (100, 100, 99, 101)])  # 99 is at the watermark 100 raised: cut before it
    assert [len(b) for b in out.batches] == [100, 2, 2]
    assert out.log[-7:] == [("wm", 98), 100, 100, ("wm", 99), 99, 101, ("wm", 100)]
    assert late_of(out.log) == [False] * 102 + [True, False]


@pytest.mark.parametrize("size", [1, 2, 3, len(ROWS)])
def test_operator_cuts_arrow_batches_too(size):
    import pyarrow as pa

    rows = [{"ts": r["ts"], "v": r["v"], "mark": bool(r.get("mark"))} for r in ROWS]
    out = Log()
    h = OperatorHarness(TimestampsAndWatermarksOperator(strategy()), output=out)
    for part in cuts(rows, size):
        h.process(pa.RecordBatch.from_pylist(part))
    assert late_of(out.log) == FLINK_LATE
    assert all(b.is_arrow for b in out.batches)  # (the pieces stay Arrow)


def context():
    return OperatorContext("src", "src", "src (1/1)", 0, 1, 128, KeyGroupRange(0, 127), clock=ManualClock(0))


def drain(reader, log):
    """Poll as the source task does: a batch, then the watermark."""
    while True:
        b = reader.poll_next()
        if b is END_OF_INPUT or b is NOTHING_AVAILABLE:
            return
        log.extend(r["ts"] for r in b.records())
        wm = reader.poll_watermark()
        if wm is not None:
            log.append(("wm", wm))


@pytest.mark.parametrize("size", [1, 2, 3, len(ROWS)])
def test_source_reader_emits_a_punctuated_watermark_right_after_its_record(size):
    src = WatermarkedSource(CollectionSource(ROWS, batch_size=size), strategy())
    reader = src.create_reader(context())
    reader.add_splits(src.create_splits(1))
    log = []
    drain(reader, log)
    assert late_of(log) == FLINK_LATE
    assert [e for e in log if not isinstance(e, tuple)] == [r["ts"] for r in ROWS]


@pytest.mark.parametrize("size", [3, len(ROWS)])
def test_records_held_after_a_cut_survive_a_checkpoint_of_the_reader(size):
    src = WatermarkedSource(CollectionSource(ROWS, batch_size=size), strategy())
    reader = src.create_reader(context())
    reader.add_splits(src.create_splits(1))
    first = reader.poll_next()  # up to the record the first mark makes late: the rest of the batch is held
    assert [r["ts"] for r in first.records()] == [5, 10]
    assert reader.poll_watermark() == 10
    assert not reader.is_idle()
    state = reader.snapshot_state(1)
    restored = src.create_reader(context())
    restored.add_splits(state)
    log = [5, 10, ("wm", 10)]
    drain(restored, log)
    assert [e for e in log if not isinstance(e, tuple)] == [r["ts"] for r in ROWS]  # every record once, in order
    assert late_of(log) == FLINK_LATE
    again = [5, 10, ("wm", 10)]
    drain(reader, again)  # (the reader that was not restored goes on as well)
    assert again == log


@dataclass
class ListSplit:
    split_id: str
    rows: list


class _PopReader(SourceReader):
    """Reads each split in one batch and drops it at once (as a reader that knows its split
    ended does): records held after a cut outlive their split."""

    def __init__(self):
        self.splits = []
        self.last = None

    def add_splits(self, splits):
        self.splits.extend(splits)

    def current_split_id(self):
        return self.last

    def poll_next(self):
        if not self.splits:
            return END_OF_INPUT
        split = self.splits.pop(0)
        self.last = split.split_id
        return Batch.of_records(split.rows)

    def snapshot_state(self, checkpoint_id):
        return [ListSplit(s.split_id, list(s.rows)) for s in self.splits]


class _PopSource(Source):
    split_type = ListSplit

    def __init__(self, parts):
        self.parts = parts

    def create_splits(self, parallelism):
        return [ListSplit(f"s{i}", p) for i, p in enumerate(self.parts)]

    def create_reader(self, ctx):
        return _PopReader()


def test_records_held_after_their_split_ended_survive_a_checkpoint():
    src = WatermarkedSource(_PopSource([ROWS[:6], ROWS[6:]]), strategy())
    reader = src.create_reader(context())
    reader.add_splits(src.create_splits(1))
    assert [r["ts"] for r in reader.poll_next().records()] == [5, 10]
    assert reader.poll_watermark() == 10
    state = reader.snapshot_state(1)  # split s0 is gone from the reader: its rest is a split of its own
    assert len(state) == 2 and all(src.accepts_restored_split(s) for s in state)
    restored = src.create_reader(context())
    restored.add_splits(state)
    log = [5, 10, ("wm", 10)]
    drain(restored, log)
    assert [e for e in log if not isinstance(e, tuple)] == [r["ts"] for r in ROWS]
    assert late_of(log) == FLINK_LATE


def reference(rows, size):
    """Flink: per record, late when its window's last millisecond is at or behind the
    watermark the records before it set; the others summed per window."""
    wm, sums, late = -(2**63), defaultdict(int), []
    for r in rows:
        start = r["ts"] - r["ts"] % size
        if start + size - 1 <= wm:
            late.append(r["ts"])
        else:
            sums[start] += r["v"]
        if r.get("mark"):
            wm = max(wm, r["ts"])
    return sorted(sums.items()), sorted(late)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("on_source", [True, False])
@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_late_records_do_not_depend_on_the_batch_size(parallelism, on_source, batch_size):
    rows = [{**r, "k": "a"} for r in ROWS]
    env = rs.StreamEnvironment(parallelism=parallelism)
    stream = env.from_collection(rows, batch_size=batch_size).set_parallelism(1)
    if not on_source:
        stream = stream.map(lambda r: dict(r)).set_parallelism(1)  # the operator path (not pushed into the reader)
    late = OutputTag("late")
    stamped = stream.assign_timestamps_and_watermarks(strategy())
    if not on_source:
        stamped = stamped.set_parallelism(1)  # one generator sees every record, in order
    sums = (stamped
            .key_by("k").window(TumblingEventTimeWindows.of(10)).side_output_late_data(late)
            .reduce(lambda a, b: {**a, "v": a["v"] + b["v"]}))
    out = sums.map(lambda r: ("sum", r["ts"] - r["ts"] % 10, r["v"])).union(
        sums.get_side_output(late).map(lambda r: ("late", r["ts"], 0))).execute_and_collect()
    want_sums, want_late = reference(rows, 10)
    assert sorted((w, v) for kind, w, v in out if kind == "sum") == want_sums
    assert sorted(t for kind, t, _ in out if kind == "late") == want_late == [3, 15]
