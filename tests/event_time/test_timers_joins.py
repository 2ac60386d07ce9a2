"""Timers, KeyedProcessFunction, two-input operators, joins and watermark generation, in-process."""

from __future__ import annotations

import datetime as dt

import pytest

from raystream.checkpoint import ValueStateDescriptor
from raystream.engine.connectors import END_OF_INPUT
from raystream.engine.errors import ConfigError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import ManualClock, OperatorContext
from raystream.engine.partitioners import KeySelector
from raystream.operators.connected import BroadcastProcessOperator, KeyedCoProcessOperator
from raystream.operators.functions import (
    BroadcastProcessFunction,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    OutputTag,
)
from raystream.operators.joins import CoGroupWindowOperator, IntervalJoinOperator, _CoGroup
from raystream.operators.keyed import KeyedProcessOperator
from raystream.operators.sources import CollectionSource
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import (
    TimestampAssigner,
    TimestampsAndWatermarksOperator,
    WatermarkedSource,
    WatermarkStrategy,
)
from raystream.operators.timers import InternalTimerService
from raystream.operators.windows import TumblingEventTimeWindows

TS1 = TimestampAssigner(column=1)


class Timeout(KeyedProcessFunction):
    """Emits (key, count, timer time) when a key was quiet for 100 ms of event time."""

    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        ctx.timer_service().register_event_time_timer(ctx.timestamp + 100)
        ctx.timer_service().register_event_time_timer(ctx.timestamp + 100)  # dedup
        ctx.timer_service().register_processing_time_timer(5000)
        if value[1] < 0:
            ctx.output(OutputTag("negative"), value)
        return []

    def on_timer(self, timestamp, ctx):
        yield (ctx.get_current_key(), self.count.value(), timestamp, ctx.time_domain())


def keyed_process_harness(**kw):
    return OperatorHarness(KeyedProcessOperator(KeySelector(0), Timeout(), TS1), **kw)


def test_timers_dedup_fire_in_order_and_processing_time(state_backend):
    h = keyed_process_harness(state_backend=state_backend)
    h.process([("b", 50), ("a", 10), ("a", 10), ("c", -5)])
    assert h.operator.timers.num_event_timers() == 3  # (a,110) once, (b,150), (c,95)
    h.advance_watermark(200)
    assert h.take() == [("c", 1, 95, "event_time"), ("a", 2, 110, "event_time"), ("b", 1, 150, "event_time")]
    assert h.side_records(OutputTag("negative")) == [("c", -5)]
    assert h.pending_processing_timers == [5000]  # registered with the task once per time
    h.advance_processing_time(5000)
    assert sorted(h.take()) == [("a", 2, 5000, "processing_time"), ("b", 1, 5000, "processing_time"),
                                ("c", 1, 5000, "processing_time")]


def test_delete_timer_and_timers_registered_in_the_past_fire():
    fired = []
    ts = InternalTimerService(128, lambda k, ns, t: fired.append((k, t)), lambda *a: None)
    ts.register_event_time_timer("a", None, 10)
    ts.delete_event_time_timer("a", None, 10)
    ts.advance_watermark(20)
    ts.register_event_time_timer("a", None, 5)
    ts.advance_watermark(20)
    assert fired == [("a", 5)]


class DatetimeTimeout(KeyedProcessFunction):
    """Event timestamps that are datetimes (as the timestamp assigner reads them): a timer a
    second after the record's own datetime."""

    def process_element(self, value, ctx):
        ctx.timer_service().register_event_time_timer(value[1] + dt.timedelta(seconds=1))
        return []

    def on_timer(self, timestamp, ctx):
        yield (ctx.get_current_key(), timestamp)


def test_timers_at_datetimes_fire_at_their_epoch_ms(state_backend):
    # before: register_event_time_timer(datetime) failed the job with a bare
    # "TypeError: int() argument must be ... not 'datetime.datetime'", although event
    # timestamps may be datetimes
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    h = OperatorHarness(KeyedProcessOperator(KeySelector(0), DatetimeTimeout(), TS1), state_backend=state_backend)
    h.process([("a", t0), ("b", t0 + dt.timedelta(milliseconds=1500)), ("a", dt.datetime(2024, 1, 1, 0, 0, 2))])
    ms = 1_704_067_200_000
    h.advance_watermark(ms + 2_999)
    assert h.take() == [("a", ms + 1000), ("b", ms + 2500)]
    h.advance_watermark(ms + 3_000)
    assert h.take() == [("a", ms + 3000)]  # (a naive datetime is UTC, as the timestamp assigner reads it)


@pytest.mark.parametrize("bad", [None, "7", "2024-01-01", b"7", True, float("nan"), float("inf"), object()])
def test_a_timer_at_no_point_of_time_is_refused_naming_the_call(bad):
    # before: None or an object gave "int() argument must be ...", NaN "cannot convert float
    # NaN to integer", and "7" or True silently became timers at 7 and 1
    ts = InternalTimerService(128, lambda *a: None, lambda *a: None)
    for method in ("register_event_time_timer", "delete_event_time_timer",
                   "register_processing_time_timer", "delete_processing_time_timer"):
        with pytest.raises(ConfigError, match=rf"{method}\(.*\): a timer's time is epoch milliseconds"):
            getattr(ts, method)("k", None, bad)
    assert ts.num_event_timers() == 0


def test_timers_survive_snapshot_and_restore_with_rescaling(state_backend):
    h = keyed_process_harness(state_backend=state_backend)
    h.process([(f"k{i}", i) for i in range(40)])
    snap = h.snapshot()
    h.advance_watermark(10_000)
    expected = sorted(h.take())
    restored = [keyed_process_harness(subtask_index=i, parallelism=3, restore=[snap], state_backend=state_backend)
                for i in range(3)]
    got = []
    for r in restored:
        assert r.pending_processing_timers in ([], [5000])
        r.advance_watermark(10_000)
        got.extend(r.take())
    assert sorted(got) == expected


class Match(KeyedCoProcessFunction):
    def open(self, ctx):
        self.seen = ctx.get_state(ValueStateDescriptor("seen"))

    def process_element1(self, value, ctx):
        self.seen.update(value)
        ctx.timer_service().register_event_time_timer(ctx.timestamp + 10)

    def process_element2(self, value, ctx):
        if self.seen.value() is not None:
            yield ("match", self.seen.value(), value)

    def on_timer(self, timestamp, ctx):
        yield ("expired", ctx.get_current_key(), timestamp)


def test_keyed_co_process_min_watermark_of_both_inputs(state_backend):
    op = KeyedCoProcessOperator(Match(), (KeySelector(0), KeySelector(0)), (TS1, TS1))
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("a", 1)], 0)
    h.process([("a", 2), ("b", 3)], 1)
    assert h.take() == [("match", ("a", 1), ("a", 2))]
    h.advance_watermark(100, 0)
    assert h.take() == [] and h.watermarks == []  # input 1 still at its minimum
    h.advance_watermark(50, 1)
    assert h.take() == [("expired", "a", 11)] and h.watermarks == [50]


class Threshold(BroadcastProcessFunction):
    def process_broadcast_element(self, value, ctx):
        ctx.get_broadcast_state("rules")["limit"] = value

    def process_element(self, value, ctx):
        limit = ctx.get_broadcast_state("rules").get("limit")
        if limit is not None and value > limit:
            yield value


def test_broadcast_state_read_only_and_restored():
    h = OperatorHarness(BroadcastProcessOperator(Threshold(), ["rules"]))
    h.process([1, 5, 9], 0)
    h.process([4], 1)
    h.process([1, 5, 9], 0)
    assert h.take() == [5, 9]
    snap = h.snapshot()
    h2 = OperatorHarness(BroadcastProcessOperator(Threshold(), ["rules"]), restore=[snap, snap])
    h2.process([3, 7], 0)
    assert h2.take() == [7]

    class Bad(Threshold):
        def process_element(self, value, ctx):
            ctx.get_broadcast_state("rules")["limit"] = 0

    h3 = OperatorHarness(BroadcastProcessOperator(Bad(), ["rules"]))
    with pytest.raises(Exception, match="read-only"):
        h3.process([1], 0)


def brute_interval(left, right, lo, hi):
    return sorted((a, r) for a in left for r in right if a[0] == r[0] and a[1] + lo <= r[1] <= a[1] + hi)


@pytest.mark.parametrize("lo,hi", [(-5, 5), (0, 20), (-30, -10)])
def test_interval_join_matches_brute_force_and_cleans_up(lo, hi, state_backend):
    import random

    rng = random.Random(lo * 100 + hi)
    left = [(f"k{rng.randrange(5)}", i * 2) for i in range(200)]
    right = [(f"k{rng.randrange(5)}", i * 2 + 1) for i in range(200)]
    op = IntervalJoinOperator((KeySelector(0), KeySelector(0)), (TS1, TS1), lo, hi, lambda a, r: (a, r), late_tag="late")
    h = OperatorHarness(op, state_backend=state_backend)
    for i in range(0, 200, 20):
        h.process(left[i : i + 20], 0)
        h.process(right[i : i + 20], 1)
        wm = min(left[i + 19][1], right[i + 19][1]) - 40
        h.advance_watermark(wm, 0)
        h.advance_watermark(wm, 1)
    assert sorted(h.records()) == brute_interval(left, right, lo, hi)
    assert 0 < op.num_buffered() < 100  # pruned by timers
    h.process([("k0", 0)], 0)
    assert h.side_records("late") == [("k0", 0)]


def test_window_join_and_co_group(state_backend):
    op = CoGroupWindowOperator((KeySelector(0), KeySelector(0)), (TS1, TS1), TumblingEventTimeWindows.of(10),
                               _CoGroup(None, lambda a, r: (a[0], a[1], r[1])))
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("a", 1), ("a", 2), ("b", 3), ("a", 15)], 0)
    h.process([("a", 5), ("c", 6), ("a", 12)], 1)
    h.end_input()
    assert sorted(h.records()) == [("a", 1, 5), ("a", 2, 5), ("a", 15, 12)]


def test_watermark_strategy_and_operator():
    s = WatermarkStrategy.for_bounded_out_of_orderness(10).with_timestamp_column("ts")
    h = OperatorHarness(TimestampsAndWatermarksOperator(s))
    h.process([{"ts": 100}, {"ts": 90}])
    h.process([{"ts": 95}])
    h.process([{"ts": 120}])
    assert h.watermarks == [89, 109]
    with pytest.raises(ConfigError, match="timestamp assigner"):
        TimestampsAndWatermarksOperator(WatermarkStrategy.for_monotonous_timestamps())
    with pytest.raises(ConfigError, match="record"):
        h.process([{"nots": 1}])


def test_per_split_watermarks_with_idleness_and_checkpoint():
    clock = ManualClock(0)
    ctx = OperatorContext("src", "src", "src (1/1)", 0, 1, 128, KeyGroupRange(0, 127), clock=clock)
    src = WatermarkedSource(CollectionSource([{"ts": t} for t in range(0, 100)], batch_size=10),
                            WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts").with_idleness(1000))
    splits = src.create_splits(2)
    reader = src.create_reader(ctx)
    reader.add_splits(splits)
    b = reader.poll_next()
    assert b.timestamps.tolist() == list(range(10))
    assert reader.poll_watermark() == 8
    state = reader.snapshot_state(1)
    assert state[0].max_timestamp == 9
    clock.advance(1000)
    assert reader.is_idle() and reader.poll_watermark() is None
    r2 = src.create_reader(ctx)
    r2.add_splits(state)
    assert r2.poll_watermark() == 8  # restored generator state
    marks = []
    while reader.poll_next() is not END_OF_INPUT:
        marks.append(reader.poll_watermark())  # the task polls after every batch
    assert [m for m in marks if m is not None][-1] == 98
