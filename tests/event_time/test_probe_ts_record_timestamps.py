"""Every record carries its event timestamp (Flink's ``StreamRecord`` timestamp), operator by
operator, in one process (``OperatorHarness``) and through the channels' transports.

Before, ``Batch.timestamps`` (set by ``assign_timestamps_and_watermarks``) reached only the
next chained operator: ``map``/``filter``/process functions emitted batches without it, a
window's results carried none and every channel dropped it, so each event-time operator
applied the upstream assigner again to the records it got. After a window that read a field
of a result: a ``KeyedProcessFunction`` after a window whose results are ``(key, count)``
saw the count as ``ctx.timestamp``, and its event-time timers fired at the wrong watermark.
Flink stamps a window's results with ``window.max_timestamp()``, keeps a record's timestamp
through map / filter / flat_map / process functions, gives an event-time timer's output the
timer's time (a processing-time timer's none) and an interval join's pair ``max(left, right)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from raystream.engine.channels import LocalSender, OutputInfo, RecordWriter
from raystream.engine.partitioners import KeyGroupPartitioner, KeySelector
from raystream.engine.records import Batch
from raystream.engine.socket_channels import decode_frame, encode_frame
from raystream.operators.basic import (
    FilterOperator,
    FlatMapOperator,
    MapBatchesOperator,
    MapOperator,
    ProcessOperator,
)
from raystream.operators.functions import KeyedProcessFunction, ProcessFunction
from raystream.operators.join_operators import IntervalJoinOperator
from raystream.operators.keyed import KeyedProcessOperator
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner, WatermarkStrategy
from raystream.operators.window_fast import VectorWindowAggregateOperator
from raystream.operators.window_operator import LIST, REDUCE, WindowOperator
from raystream.operators.windows import (
    CountTrigger,
    GlobalWindows,
    ProcessWindowFunction,
    PurgingTrigger,
    TumblingEventTimeWindows,
)


def stream_assigner(read: Any) -> TimestampAssigner:
    """The assigner of an upstream ``assign_timestamps_and_watermarks`` (as the graph hands it on)."""
    return WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(read).require_assigner("test")


def stamped(records: list, stamps: list[int]) -> Batch:
    """A batch of ``records`` carrying ``stamps`` (as ``assign_timestamps_and_watermarks`` emits it)."""
    b = Batch.of_records(records)
    b.timestamps = np.array(stamps, dtype=np.int64)
    return b


def emitted(h: OperatorHarness) -> list[tuple[Any, int | None]]:
    """(record, its timestamp) of every record the harnessed operator emitted."""
    out = []
    for b in h.output.batches:
        ts = b.timestamps.tolist() if b.timestamps is not None else [None] * len(b)
        out.extend(zip(b.records(), ts))
    return out


class CountPerKey(ProcessWindowFunction):
    """A window's result is ``(key, count)``: field 1, which the upstream assigner reads, is the count."""

    def process(self, key, context, elements):
        yield (key, len(list(elements)))


class TimerAfterWindow(KeyedProcessFunction):
    """Sees each window result's ``ctx.timestamp`` and sets an event-time timer 500 ms after it."""

    def process_element(self, value, ctx):
        ctx.timer_service().register_event_time_timer(ctx.timestamp + 500)
        yield ("seen", value[0], ctx.timestamp)

    def on_timer(self, timestamp, ctx):
        yield ("timer", ctx.get_current_key(), timestamp)


def window_counts() -> list[Batch]:
    """The output batches of a 1 s tumbling window counting ``(key, ts)`` records per key."""
    assigner = stream_assigner(lambda r: r[1])
    h = OperatorHarness(WindowOperator(lambda r: r[0], TumblingEventTimeWindows.of(1000), LIST, None, CountPerKey(),
                                       timestamp_assigner=assigner))
    records = [("a", 100), ("a", 900), ("b", 950), ("a", 1_500), ("b", 2_100), ("b", 2_200), ("b", 2_999)]
    h.process(stamped(records, [r[1] for r in records]))
    h.advance_watermark(3_000)
    return h.output.batches


def test_a_windows_results_carry_the_windows_max_timestamp():
    out = [(r, t) for b in window_counts() for r, t in zip(b.records(), b.timestamps.tolist())]
    assert sorted(out) == [(("a", 1), 1_999), (("a", 2), 999), (("b", 1), 999), (("b", 3), 2_999)]


def test_a_keyed_process_function_after_a_window_sees_the_windows_end_minus_one_and_its_timer_fires_there():
    h = OperatorHarness(KeyedProcessOperator(KeySelector(0), TimerAfterWindow(), stream_assigner(lambda r: r[1])))
    for b in window_counts():
        h.process(b)
    # ctx.timestamp is the window's max_timestamp, not the count the upstream assigner reads
    assert sorted(r for r, _t in emitted(h)) == [("seen", "a", 999), ("seen", "a", 1_999), ("seen", "b", 999),
                                                 ("seen", "b", 2_999)]
    assert sorted(emitted(h)) == sorted((r, r[2]) for r, _t in emitted(h))  # (each result keeps its record's stamp)
    h.output.batches.clear()
    h.advance_watermark(1_498)
    assert emitted(h) == []
    h.advance_watermark(1_499)  # 999 + 500: both keys' first windows
    assert sorted(emitted(h)) == [(("timer", "a", 1_499), 1_499), (("timer", "b", 1_499), 1_499)]
    h.output.batches.clear()
    h.advance_watermark(3_498)
    assert emitted(h) == [(("timer", "a", 2_499), 2_499)]
    h.output.batches.clear()
    h.advance_watermark(3_499)
    assert emitted(h) == [(("timer", "b", 3_499), 3_499)]


class ProcessingTimer(KeyedProcessFunction):
    def process_element(self, value, ctx):
        ctx.timer_service().register_processing_time_timer(50)

    def on_timer(self, timestamp, ctx):
        yield ("p", timestamp)


def test_a_processing_time_timers_output_carries_no_timestamp():
    h = OperatorHarness(KeyedProcessOperator(KeySelector(0), ProcessingTimer()))
    h.process(stamped([("a", 1)], [7_000]))
    h.advance_processing_time(50)
    assert emitted(h) == [(("p", 50), None)]


def test_map_filter_flat_map_and_process_keep_each_records_timestamp():
    batch = stamped([1, 2, 3, 4], [10, 20, 30, 40])
    cases = [
        (MapOperator(lambda x: x * 10), [(10, 10), (20, 20), (30, 30), (40, 40)]),
        (FilterOperator(lambda x: x % 2 == 0), [(2, 20), (4, 40)]),
        (FlatMapOperator(lambda x: [x] * (x - 1)), [(2, 20), (3, 30), (3, 30), (4, 40), (4, 40), (4, 40)]),
        (FlatMapOperator(lambda x: (y for y in range(x - 2))), [(0, 30), (0, 40), (1, 40)]),
    ]
    for op, expected in cases:
        h = OperatorHarness(op)
        h.process(batch)
        assert emitted(h) == expected, op

    class Twice(ProcessFunction):
        def process_element(self, value, ctx):
            yield (value, ctx.timestamp)
            if value > 2:
                yield (value, "again")

    h = OperatorHarness(ProcessOperator(Twice(), stream_assigner(lambda r: 0)))  # (the carried ones win)
    h.process(batch)
    assert emitted(h) == [((1, 10), 10), ((2, 20), 20), ((3, 30), 30), ((3, "again"), 30), ((4, 40), 40),
                          ((4, "again"), 40)]


def test_map_batches_output_carries_no_timestamps():
    h = OperatorHarness(MapBatchesOperator(lambda rb: rb.slice(1)))
    h.process(stamped([{"v": 1}, {"v": 2}], [10, 20]))
    assert emitted(h) == [({"v": 2}, None)]


def test_a_map_that_rewrites_the_time_field_leaves_the_record_in_its_window():
    """Flink keeps the record's timestamp: the window reads it, not the moved field."""
    moved = MapOperator(lambda r: {**r, "ts": r["ts"] + 5_000})
    h_map = OperatorHarness(moved)
    h_map.process(stamped([{"k": "a", "ts": 100}, {"k": "a", "ts": 900}], [100, 900]))
    [after_map] = h_map.output.batches
    window = WindowOperator(lambda r: r["k"], TumblingEventTimeWindows.of(1000), REDUCE,
                            lambda a, b: {**a, "n": a.get("n", 1) + 1}, timestamp_assigner=stream_assigner(lambda r: r["ts"]))
    h = OperatorHarness(window)
    h.process(after_map)
    h.advance_watermark(999)
    assert emitted(h) == [({"k": "a", "ts": 5_100, "n": 2}, 999)]


def test_the_vectorized_window_reads_and_stamps_timestamps():
    op = VectorWindowAggregateOperator("k", "ts", TumblingEventTimeWindows.of(1000), {"n": ("v", "count")})
    h = OperatorHarness(op)
    # the rows' ts column was rewritten after the timestamps were assigned: the carried ones count
    rows = pa.record_batch({"k": ["a", "a", "b"], "ts": [5_000, 5_000, 5_000], "v": [1, 1, 1]})
    b = Batch.of_arrow(rows)
    b.timestamps = np.array([100, 1_100, 200], dtype=np.int64)
    h.process(b)
    h.advance_watermark(2_000)
    got = sorted((r["k"], r["window_start"], r["n"], t) for r, t in emitted(h))
    assert got == [("a", 0, 1, 999), ("a", 1_000, 1, 1_999), ("b", 0, 1, 999)]


def test_a_count_window_stamps_the_global_windows_max_timestamp():
    op = WindowOperator(lambda r: r[0], GlobalWindows.create(), REDUCE, lambda a, b: (a[0], a[1] + b[1]),
                        trigger=PurgingTrigger.of(CountTrigger.of(2)))
    h = OperatorHarness(op)
    h.process(stamped([("a", 1), ("a", 2)], [5, 6]))
    assert emitted(h) == [(("a", 3), 2**63 - 1)]


def test_late_records_go_to_the_side_output_with_their_own_timestamps():
    op = WindowOperator(lambda r: r[0], TumblingEventTimeWindows.of(1000), REDUCE, lambda a, b: a,
                        late_tag="late", timestamp_assigner=stream_assigner(lambda r: r[1]))
    h = OperatorHarness(op)
    h.advance_watermark(1_999)
    h.process(stamped([("a", 5), ("a", 2_500)], [500, 2_500]))
    [late] = h.output.side["late"]
    assert list(zip(late.records(), late.timestamps.tolist())) == [(("a", 5), 500)]


class Pair:
    def __call__(self, left, right):
        return (left, right)


def test_an_interval_joins_pairs_carry_the_larger_timestamp():
    assigners = (stream_assigner(lambda r: 0), stream_assigner(lambda r: 0))  # (the carried ones win)
    op = IntervalJoinOperator((KeySelector(0), KeySelector(0)), assigners, -1_000, 1_000, Pair())
    h = OperatorHarness(op)
    h.process(stamped([("k", "l1"), ("k", "l2")], [1_000, 3_000]), 0)
    h.process(stamped([("k", "r1")], [1_500]), 1)
    h.process(stamped([("k", "l3")], [1_200]), 0)
    assert emitted(h) == [((("k", "l1"), ("k", "r1")), 1_500), ((("k", "l3"), ("k", "r1")), 1_500)]
    h.output.batches.clear()
    h.process(stamped([("k", "r2")], [2_500]), 1)
    assert sorted(emitted(h)) == [((("k", "l2"), ("k", "r2")), 3_000)]


# --------------------------------------------------------------------------- channels


def written(hand_over: bool, batches: list[Batch]) -> list[list[tuple[Any, int | None]]]:
    """What each of 2 targets of a hash edge receives of ``batches``: (record, timestamp) pairs,
    through a co-located target (records handed over) or one that gets Arrow (a socket's frame)."""
    got: list[list[Any]] = [[], []]

    def deliver(channel, seq, items, ack):
        if not hand_over:  # (what a socket or Ray carries: the items pickled)
            _seq, items = decode_frame(b"".join(bytes(v) for v in encode_frame(seq, items)))
        for it in items:
            if isinstance(it, pa.RecordBatch):
                got[channel].extend((r, None) for r in Batch.of_arrow(it).records())
            elif isinstance(it, Batch):
                ts = it.timestamps.tolist() if it.timestamps is not None else [None] * len(it)
                got[channel].extend(zip(it.records(), ts))
        ack()

    senders = [LocalSender(i, 8, deliver) for i in range(2)]
    if not hand_over:
        for s in senders:
            s.transport = "socket"
    writer = RecordWriter(OutputInfo(KeyGroupPartitioner(KeySelector("k")), 1, 2, 0), senders, 0, 128, 1 << 16, 100)
    for b in batches:
        writer.write(b)
    writer.flush_all()
    return got


def test_timestamps_cross_a_hash_channel_as_records_and_as_arrow():
    records = [{"k": f"k{i % 7}", "v": i} for i in range(40)]
    first = stamped(records[:25], list(range(1_000, 1_025)))
    arrow = Batch.of_arrow(pa.RecordBatch.from_pylist(records[25:]))
    arrow.timestamps = np.arange(2_000, 2_015, dtype=np.int64)
    expected = {r["v"]: t for r, t in zip(records, [*range(1_000, 1_025), *range(2_000, 2_015)])}
    for hand_over in (True, False):
        got = written(hand_over, [first, arrow])
        assert sorted(r["v"] for part in got for r, _t in part) == list(range(40))
        assert all(got), "both targets get records"
        for part in got:
            assert all(t == expected[r["v"]] for r, t in part), (hand_over, part)


def test_batches_without_timestamps_cross_as_before():
    records = [{"k": f"k{i % 7}", "v": i} for i in range(20)]
    for hand_over in (True, False):
        got = written(hand_over, [Batch.of_records(records[:10]), Batch.of_records(records[10:])])
        assert sorted(r["v"] for part in got for r, _t in part) == list(range(20))
        assert {t for part in got for _r, t in part} == {None}


def test_stamped_and_unstamped_batches_of_one_send_keep_theirs():
    records = [{"k": "k1", "v": i} for i in range(6)]
    for hand_over in (True, False):
        got = written(hand_over, [stamped(records[:3], [7, 8, 9]), Batch.of_records(records[3:])])
        assert sorted(((r["v"], t) for part in got for r, t in part), key=lambda x: x[0]) == [
            (0, 7), (1, 8), (2, 9), (3, None), (4, None), (5, None)]


def test_a_rolling_keyed_aggregates_rows_carry_their_keys_last_records_timestamp():
    """Flink's rolling aggregate emits an update per record with that record's timestamp; the
    vectorized one emits a key's update of its last record in the batch: that record's."""
    from raystream.operators.keyed import AggregateOperator

    h = OperatorHarness(AggregateOperator("k", {"total": ("v", "sum")}, "updates"))
    b = Batch.of_arrow(pa.record_batch({"k": ["a", "b", "a", None], "v": [1, 2, 3, 4]}))
    b.timestamps = np.array([10, 20, 30, 40], dtype=np.int64)
    h.process(b)
    assert sorted(emitted(h), key=repr) == sorted([({"k": "a", "total": 4}, 30), ({"k": "b", "total": 2}, 20),
                                                   ({"k": None, "total": 4}, 40)], key=repr)
