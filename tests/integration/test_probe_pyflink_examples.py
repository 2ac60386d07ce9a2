"""Ports of Apache Flink's Python DataStream examples (``flink-python/pyflink/examples/
datastream``: word count, state access, JSON data, basic operations, event-time timer,
tumbling / sliding / dynamic-gap session / count windows) and of the Flink training
exercises (ride cleansing, rides and fares, long ride alerts), written as a PyFlink user
writes them with raystream's imports (see docs/pyflink.md), on Ray at parallelism 1 and 2,
each against a plain-Python reference of what Flink prints. Flink's ``from_collection`` is a
non-parallel source: where a result depends on the order of a key's records, the port gives
its source ``set_parallelism(1)`` as docs/pyflink.md says.
"""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.operators import Duration, StreamExecutionEnvironment, Time, TimestampAssigner


@pytest.fixture(params=[1, 2], ids=lambda p: f"p{p}")
def env(request):
    return StreamExecutionEnvironment.get_execution_environment(parallelism=request.param)


LINES = ["To be, or not to be,--that is the question:--", "Whether 'tis nobler in the mind to suffer",
         "The slings and arrows of outrageous fortune", "Or to take arms against a sea of troubles,"]


def test_word_count(env):
    def split(line):
        yield from line.split()

    ds = (env.from_collection(LINES).flat_map(split).map(lambda i: (i, 1))
          .key_by(lambda i: i[0]).reduce(lambda i, j: (i[0], i[1] + j[1])))
    counts = Counter(w for line in LINES for w in line.split())
    # the rolling updates: (w, 1) .. (w, n) for every word, in whatever order the words came
    assert sorted(ds.execute_and_collect()) == sorted((w, i) for w, n in counts.items() for i in range(1, n + 1))


class Sum(rs.KeyedProcessFunction):
    def open(self, runtime_context):
        self.state = runtime_context.get_state(ValueStateDescriptor("state"))

    def process_element(self, value, ctx):
        current = self.state.value()
        if current is None:
            current = 0
        current += value[1]
        self.state.update(current)
        yield value[0], current


def test_state_access(env):
    data = [("Alice", 110.1), ("Bob", 30.2), ("Alice", 20.0), ("Bob", 53.1), ("Alice", 13.1), ("Bob", 3.1),
            ("Bob", 16.1), ("Alice", 20.1)]
    out = env.from_collection(collection=data).set_parallelism(1).key_by(lambda value: value[0]).process(Sum())
    expected, sums = [], {}
    for name, v in data:
        sums[name] = sums.get(name, 0) + v
        expected.append((name, sums[name]))
    assert sorted(out.execute_and_collect()) == sorted(expected)


PEOPLE = [(1, '{"name": "Flink", "tel": 123, "addr": {"country": "Germany", "city": "Berlin"}}'),
          (2, '{"name": "hello", "tel": 135, "addr": {"country": "China", "city": "Shanghai"}}'),
          (3, '{"name": "world", "tel": 124, "addr": {"country": "USA", "city": "NewYork"}}'),
          (4, '{"name": "PyFlink", "tel": 32, "addr": {"country": "China", "city": "Hangzhou"}}')]


def test_process_json_data_and_basic_operations(env):
    def update_tel(data):
        json_data = json.loads(data[1])
        json_data["tel"] += 1
        return data[0], json_data

    ds = env.from_collection(collection=PEOPLE).set_parallelism(1)
    china = ds.map(update_tel).filter(lambda data: "China" in data[1]["addr"]["country"]).execute_and_collect()
    assert sorted(china, key=lambda r: r[0]) == [
        (2, {"name": "hello", "tel": 136, "addr": {"country": "China", "city": "Shanghai"}}),
        (4, {"name": "PyFlink", "tel": 33, "addr": {"country": "China", "city": "Hangzhou"}})]
    by_country = (ds.map(lambda data: (json.loads(data[1])["addr"]["country"], json.loads(data[1])["tel"]))
                  .key_by(lambda data: data[0]).reduce(lambda a, b: (a[0], a[1] + b[1])))
    assert sorted(by_country.execute_and_collect()) == [("China", 135), ("China", 167), ("Germany", 123), ("USA", 124)]


class FirstField(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp):
        return int(value[0])


class TimerSum(rs.KeyedProcessFunction):
    def open(self, runtime_context):
        self.state = runtime_context.get_state(ValueStateDescriptor("state"))

    def process_element(self, value, ctx):
        current = self.state.value()
        if current is None:
            current = 0
        self.state.update(current + value[2])
        ctx.timer_service().register_event_time_timer(ctx.timestamp + 2000)

    def on_timer(self, timestamp, ctx):
        yield ctx.get_current_key(), self.state.value()


def test_event_time_timer(env):
    events = [(1000, "Alice", 110.1), (4000, "Bob", 30.2), (3000, "Alice", 20.0), (2000, "Bob", 53.1),
              (5000, "Alice", 13.1), (3000, "Bob", 3.1), (7000, "Bob", 16.1), (10000, "Alice", 20.1)]
    ds = env.from_collection(collection=events).set_parallelism(1).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(2)).with_timestamp_assigner(FirstField()))
    out = ds.key_by(lambda value: value[1]).process(TimerSum()).execute_and_collect()
    # all records come in one batch before any watermark: each distinct timer fires with the key's total
    totals = {}
    for _, name, amount in events:
        totals[name] = totals.get(name, 0) + amount
    timers = {(name, ts + 2000) for ts, name, _ in events}
    assert sorted(out) == sorted((name, totals[name]) for name, _ in timers)


class SecondField(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp):
        return int(value[1])


class GapFromRecord:
    def extract(self, element):
        return element[1]


class CountWindowProcessFunction(rs.ProcessWindowFunction):
    def process(self, key, context, elements):
        return [(key, context.window().start, context.window().end, len([e for e in elements]))]


HI = [("hi", 1), ("hi", 2), ("hi", 3), ("hi", 4), ("hi", 5), ("hi", 8), ("hi", 9), ("hi", 15)]


@pytest.mark.parametrize("example, assigner, data, expected", [
    ("tumbling_time_window", rs.TumblingEventTimeWindows.of(Time.milliseconds(5)), HI,
     [("hi", 0, 5, 4), ("hi", 5, 10, 3), ("hi", 15, 20, 1)]),
    ("sliding_time_window", rs.SlidingEventTimeWindows.of(Time.milliseconds(5), Time.milliseconds(2)), HI,
     [("hi", -2, 3, 2), ("hi", 0, 5, 4), ("hi", 2, 7, 4), ("hi", 4, 9, 3), ("hi", 6, 11, 2), ("hi", 8, 13, 2),
      ("hi", 12, 17, 1), ("hi", 14, 19, 1)]),
    ("session_with_dynamic_gap_window", rs.EventTimeSessionWindows.with_dynamic_gap(GapFromRecord()),
     [("hi", 1), ("hi", 2), ("hi", 3), ("hi", 4), ("hi", 9), ("hi", 9), ("hi", 15)],
     [("hi", 1, 8, 4), ("hi", 9, 30, 3)]),
], ids=lambda v: v if isinstance(v, str) else "")
def test_time_windows(env, example, assigner, data, expected):
    ds = (env.from_collection(data).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(SecondField()))
        .key_by(lambda x: x[0]).window(assigner).process(CountWindowProcessFunction()))
    assert sorted(ds.execute_and_collect()) == expected


class SumWindowFunction(rs.WindowFunction):
    def apply(self, key, window, inputs):
        result = 0
        for i in inputs:
            result += i[0]
        return [(key, result)]


def test_tumbling_count_window(env):
    data = [(1, "hi"), (2, "hello"), (3, "hi"), (4, "hello"), (5, "hi"), (6, "hello"), (6, "hello")]
    ds = env.from_collection(data).set_parallelism(1).key_by(lambda x: x[1]).count_window(3).apply(SumWindowFunction())
    assert sorted(ds.execute_and_collect()) == [("hello", 12), ("hi", 9)]


HOUR = 3_600_000


def rides():
    """(ride id, is start, event time, lon, lat); a ride in 13 never ends."""
    rng = random.Random(7)
    out = []
    for rid in range(1, 121):
        start = rng.randrange(0, 5 * HOUR)
        lon, lat = rng.uniform(-74.3, -73.6), rng.uniform(40.4, 41.0)
        out.append((rid, True, start, lon, lat))
        if rid % 13:
            out.append((rid, False, start + rng.choice([10, 90, 150]) * 60_000, lon, lat))
    return sorted(out, key=lambda r: r[2])


def in_nyc(lon, lat):
    return -74.05 <= lon <= -73.7 and 40.5 <= lat <= 40.9


class NYCFilter(rs.FilterFunction):
    def filter(self, ride):
        return in_nyc(ride[3], ride[4])


class EnrichmentFunction(rs.KeyedCoProcessFunction):
    def open(self, runtime_context):
        self.ride_state = runtime_context.get_state(ValueStateDescriptor("saved ride"))
        self.fare_state = runtime_context.get_state(ValueStateDescriptor("saved fare"))

    def process_element1(self, ride, ctx):
        fare = self.fare_state.value()
        if fare is not None:
            self.fare_state.clear()
            yield ride, fare
        else:
            self.ride_state.update(ride)

    def process_element2(self, fare, ctx):
        ride = self.ride_state.value()
        if ride is not None:
            self.ride_state.clear()
            yield ride, fare
        else:
            self.fare_state.update(fare)


class AlertFunction(rs.KeyedProcessFunction):
    """Long ride alerts: a ride id once its ride lasted more than two hours (or never ended)."""

    def open(self, runtime_context):
        self.ride_state = runtime_context.get_state(ValueStateDescriptor("ride event"))

    def process_element(self, ride, ctx):
        first = self.ride_state.value()
        if first is None:
            self.ride_state.update(ride)
            if ride[1]:
                ctx.timer_service().register_event_time_timer(ride[2] + 2 * HOUR)
            return
        start, end = (ride, first) if ride[1] else (first, ride)
        if not ride[1]:
            ctx.timer_service().delete_event_time_timer(first[2] + 2 * HOUR)
        if end[2] - start[2] > 2 * HOUR:
            yield ride[0]
        self.ride_state.clear()

    def on_timer(self, timestamp, ctx):
        yield self.ride_state.value()[0]
        self.ride_state.clear()


def test_training_exercises(env):
    data = rides()
    cleansed = env.from_collection(data).filter(NYCFilter()).execute_and_collect()
    assert sorted(cleansed) == sorted(r for r in data if in_nyc(r[3], r[4]))

    fares = [(r[0], r[2] + 1000, float(r[0] % 17) + 0.5) for r in data if r[1]]
    starts = env.from_collection(data).filter(lambda r: r[1]).key_by(lambda r: r[0])
    enriched = starts.connect(env.from_collection(fares).key_by(lambda f: f[0])).process(EnrichmentFunction())
    assert sorted(enriched.execute_and_collect()) == sorted(zip((r for r in data if r[1]), fares))

    stamped = env.from_collection(data).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(60)).with_timestamp_assigner(lambda r: r[2]))
    alerts = stamped.key_by(lambda r: r[0]).process(AlertFunction()).execute_and_collect()
    ends = {r[0]: r[2] for r in data if not r[1]}
    expected = [r[0] for r in data if r[1] and (r[0] not in ends or ends[r[0]] - r[2] > 2 * HOUR)]
    assert sorted(alerts) == sorted(expected) and len(expected) > 10
