"""Cascaded event-time windows, as in Flink: per-key 1 s sums, then a 10 s window over them,
give the 10 s window's totals directly, at parallelism 1 and 2 (where the first window's
results cross a hash channel to the second), through the vectorized ``aggregate`` and the
record path, and through a ``map`` and a ``filter`` in between. The second window reads the
timestamps the first window's results carry (each its window's ``max_timestamp()``).

Before, records carried no timestamp across operators and channels; a window after a window
was refused at build time (or, through a ``reduce``, read a field of a result with the
upstream assigner), and a ``map`` that dropped the time field failed the window after it.
Where an operator in between truly drops the timestamps (``map_batches`` returns a new
table), the graph is still refused, naming it and the remedies.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import GraphError
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.windows import TumblingEventTimeWindows

#: 4 keys, 10 events a second over 35 s, in event-time order
EVENTS = [{"k": f"k{i % 4}", "ts": i * 100, "v": 1 + i % 5} for i in range(350)]
STRATEGY = rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
SECOND, TEN = 1_000, 10_000


class Total(rs.ProcessWindowFunction):
    def process(self, key, context, elements):
        yield {"k": key, "window_start": context.window().start, "total": sum(e["s"] for e in elements)}


class SeenAndTimer(rs.KeyedProcessFunction):
    """A window result's ``ctx.timestamp`` and an event-time timer 500 ms after it."""

    def process_element(self, value, ctx):
        ctx.timer_service().register_event_time_timer(ctx.timestamp + 500)
        yield ("seen", value["k"], ctx.timestamp)

    def on_timer(self, timestamp, ctx):
        yield ("timer", ctx.get_current_key(), timestamp)


def reference(keep=lambda k: True) -> list[tuple]:
    totals: dict = {}
    for e in EVENTS:
        if keep(e["k"]):
            w = e["ts"] - e["ts"] % TEN
            totals[(e["k"], w)] = totals.get((e["k"], w), 0) + e["v"]
    return sorted((k, w, t) for (k, w), t in totals.items())


def rows(records: list) -> list[tuple]:
    return sorted((r["k"], r["window_start"], r["total"]) for r in records)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_cascaded_windows_give_the_direct_windows_totals(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    events = env.from_collection(EVENTS).assign_timestamps_and_watermarks(STRATEGY)
    by_key = events.key_by("k")
    sinks = {}
    sinks["direct"] = by_key.window(TumblingEventTimeWindows.of(TEN)).aggregate(total=("v", "sum"))
    seconds = by_key.window(TumblingEventTimeWindows.of(SECOND)).aggregate(s=("v", "sum"))
    sinks["vectorized"] = seconds.key_by("k").window(TumblingEventTimeWindows.of(TEN)).aggregate(total=("s", "sum"))
    # the record path, the time field dropped by a map before the first window, then a map
    # and a filter between the windows
    pairs = events.map(lambda e: (e["k"], e["v"]))
    per_second = pairs.key_by(0).window(TumblingEventTimeWindows.of(SECOND)).reduce(lambda a, b: (a[0], a[1] + b[1]))
    between = per_second.map(lambda r: {"k": r[0], "s": r[1]}).filter(lambda r: r["k"] != "k3")
    sinks["record"] = between.key_by("k").window(TumblingEventTimeWindows.of(TEN)).process(Total())
    sinks["timers"] = seconds.key_by("k").process(SeenAndTimer())
    for s in sinks.values():
        s.collect()
    results = run_in_process(env.get_job_graph(), JobConfig(name="cascaded-windows"), timeout_s=120)["results"]
    got = dict(zip(sinks, (collected_records(b) for b in results.values())))
    assert rows(got["direct"]) == reference()
    assert rows(got["vectorized"]) == reference()
    assert rows(got["record"]) == reference(lambda k: k != "k3")
    # a process function after a window: ctx.timestamp is the window's end - 1, its timer
    # fires 500 ms later and its output carries the timer's time
    ends = sorted({(e["k"], e["ts"] - e["ts"] % SECOND + SECOND - 1) for e in EVENTS})
    assert sorted(got["timers"]) == sorted([("seen", k, t) for k, t in ends] + [("timer", k, t + 500) for k, t in ends])


def test_a_window_after_map_batches_after_a_window_is_refused_naming_it_and_the_remedies():
    env = rs.StreamEnvironment(parallelism=1)
    events = env.from_collection(EVENTS).assign_timestamps_and_watermarks(STRATEGY)
    seconds = events.key_by("k").window(TumblingEventTimeWindows.of(SECOND)).aggregate(s=("v", "sum"))
    tabled = seconds.map_batches(lambda b: b)
    with pytest.raises(GraphError, match=r"reads the results of window 'window_aggregate' through 'map_batches'.*"
                                         r"use a record operator.*with_timestamp\(fn\).*assign_timestamps_and_watermarks"):
        tabled.key_by("k").window(TumblingEventTimeWindows.of(TEN)).aggregate(total=("s", "sum"))
    # the remedies build: a time of its own for the window, or timestamps assigned again
    tabled.key_by("k").window(TumblingEventTimeWindows.of(TEN)).with_timestamp(lambda r: r["window_end"] - 1).aggregate(
        total=("s", "sum"))
    tabled.assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("window_start")
    ).key_by("k").window(TumblingEventTimeWindows.of(TEN)).aggregate(total=("s", "sum"))
    # without a window before it, map_batches keeps today's reading with the upstream assigner
    events.map_batches(lambda b: b).key_by("k").window(TumblingEventTimeWindows.of(TEN)).aggregate(total=("v", "sum"))


class Stamp(rs.ProcessFunction):
    def process_element(self, value, ctx):
        yield ctx.timestamp


def test_a_process_function_after_map_batches_after_a_window_sees_no_timestamp():
    """As Flink's ``ctx.timestamp()`` of a record without one: None, not a field of a result."""
    env = rs.StreamEnvironment(parallelism=1)
    events = env.from_collection(EVENTS[:20]).assign_timestamps_and_watermarks(STRATEGY)
    seconds = events.key_by("k").window(TumblingEventTimeWindows.of(SECOND)).aggregate(s=("v", "sum"))
    seconds.map_batches(lambda b: b).process(Stamp()).collect()
    seconds.process(Stamp()).collect()
    results = run_in_process(env.get_job_graph(), JobConfig(name="lost-timestamps"), timeout_s=120)["results"]
    lost, kept = (collected_records(b) for b in results.values())
    assert lost == [None] * 8
    assert sorted(kept) == [999] * 4 + [1_999] * 4


class StampOf(rs.KeyedProcessFunction):
    def process_element(self, value, ctx):
        yield (value, ctx.timestamp)


def test_a_window_joins_pairs_carry_the_windows_max_timestamp():
    """Flink stamps a window join's pairs with the window's max_timestamp(); before, the
    process function after it read the left record's field with the upstream assigner."""
    env = rs.StreamEnvironment(parallelism=1)
    by_time = rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1])
    left = env.from_collection([("a", 100), ("a", 1_200)]).assign_timestamps_and_watermarks(by_time)
    right = env.from_collection([("a", 300), ("a", 1_900)]).assign_timestamps_and_watermarks(by_time)
    pairs = (left.join(right).where(lambda r: r[0]).equal_to(lambda r: r[0])
             .window(TumblingEventTimeWindows.of(SECOND)).apply(lambda a, b: (a[0], a[1], b[1])))
    pairs.key_by(lambda r: r[0]).process(StampOf()).collect()
    [batches] = run_in_process(env.get_job_graph(), JobConfig(name="join-stamps"), timeout_s=120)["results"].values()
    assert sorted(collected_records(batches)) == [(("a", 100, 300), 999), (("a", 1_200, 1_900), 1_999)]
