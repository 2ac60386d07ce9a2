"""An event-time window that reads another window's results (the Flink training's "hourly
tips": the tips per driver and hour, then the best driver of each hour with ``window_all``).

Raystream reads a record's event time again from the record with the nearest upstream
assigner; a window's results are its function's output, so that assigner read one of their
fields (here the driver id, a few milliseconds: every hour's results fell into the first
hour's window, and the job printed one "best driver" instead of one per hour, silently).
Flink stamps a window's results with the window's ``max_timestamp()``; so does raystream
now (every record carries its timestamp), and the job gives Flink's output as written. Only
where an operator that gives its records no timestamp (``map_batches``) lies between the
windows is the graph refused, naming both and the remedy (``.with_timestamp(fn)`` on the
second window, or ``assign_timestamps_and_watermarks`` between them); the remedied job gives
Flink's output too.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import GraphError
from raystream.engine.local_runtime import run_in_process
from raystream.operators import Time
from raystream.operators.sinks import collected_records

HOUR = 3_600_000
#: (ride id, event time, tip, driver id)
FARES = [(i, (i * 7_919_000) % (5 * HOUR), float(i % 17) + 0.5, 1 + i % 19) for i in range(1, 201)]


class AddTips(rs.ProcessWindowFunction):
    def process(self, key, context, fares):
        yield (context.window().end, key, sum(f[2] for f in fares))


class MaxTips(rs.ProcessAllWindowFunction):
    def process(self, context, elements):
        yield max(elements, key=lambda e: (e[2], -e[1]))


def hourly(env):
    fares = env.from_collection(FARES).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_bounded_out_of_orderness(60_000).with_timestamp_assigner(lambda f: f[1]))
    return fares.key_by(lambda f: f[3]).window(rs.TumblingEventTimeWindows.of(Time.hours(1))).process(AddTips())


def reference():
    sums = {}
    for _, t, tip, driver in FARES:
        end = (t // HOUR + 1) * HOUR
        sums[(end, driver)] = sums.get((end, driver), 0.0) + tip
    return sorted(max(((e, d, s) for (e, d), s in sums.items() if e == end), key=lambda r: (r[2], -r[1]))
                  for end in {e for e, _ in sums})


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_window_after_a_window_reads_the_results_max_timestamp_as_flink(parallelism):
    """The results carry their window's ``max_timestamp()`` (through a map, and over the
    channel at p=2), so the second window needs no remedy: one best driver per hour."""
    env = rs.StreamEnvironment(parallelism=parallelism)
    by_hour = hourly(env).map(lambda r: r)  # (also through an operator in between)
    by_hour.window_all(rs.TumblingEventTimeWindows.of(Time.hours(1))).process(MaxTips()).collect()
    result = run_in_process(env.get_job_graph(), JobConfig(name="hourly-tips-cascaded"), timeout_s=120)
    [batches] = result["results"].values()
    assert sorted(collected_records(batches)) == reference()


def test_a_window_after_a_window_whose_timestamps_are_lost_is_refused_naming_the_remedy():
    env = rs.StreamEnvironment(parallelism=2)
    # map_batches returns a new table (no row is the image of one input row): no timestamps
    by_hour = hourly(env).map_batches(lambda b: b)
    with pytest.raises(GraphError, match=r"reads the results of window 'window_process' through 'map_batches'.*"
                                         r"\.with_timestamp\(fn"):
        by_hour.window_all(rs.TumblingEventTimeWindows.of(Time.hours(1))).process(MaxTips())
    with pytest.raises(GraphError, match="reads the results of window"):
        by_hour.key_by(lambda r: r[1]).window(rs.TumblingEventTimeWindows.of(HOUR)).reduce(max)
    # processing time and count windows read no event time: not refused
    by_hour.window_all(rs.TumblingProcessingTimeWindows.of(HOUR))
    by_hour.key_by(lambda r: r[1]).count_window(2)


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("remedy", ["with_timestamp", "assign_between"])
def test_hourly_tips_with_the_remedy_gives_flinks_output(parallelism, remedy):
    env = rs.StreamEnvironment(parallelism=parallelism)
    results = hourly(env)
    if remedy == "with_timestamp":
        best = results.window_all(rs.TumblingEventTimeWindows.of(Time.hours(1))).with_timestamp(lambda r: r[0] - 1)
    else:
        best = results.assign_timestamps_and_watermarks(
            rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[0] - 1)
        ).window_all(rs.TumblingEventTimeWindows.of(Time.hours(1)))
    best.process(MaxTips()).collect()
    result = run_in_process(env.get_job_graph(), JobConfig(name="hourly-tips"), timeout_s=120)
    [batches] = result["results"].values()
    assert sorted(collected_records(batches)) == reference()
    assert len(reference()) == 5


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_window_after_a_window_reduce_reads_the_reduced_records_time(parallelism):
    """A reduce's results are records of its input (their timestamps lie in their window), so
    an event-time window after it reads them with the upstream assigner, as before the refusal
    above: each hour's most generous fare per driver, then each hour's most generous of all."""
    env = rs.StreamEnvironment(parallelism=parallelism)
    fares = env.from_collection(FARES).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_bounded_out_of_orderness(60_000).with_timestamp_assigner(lambda f: f[1]))
    best = lambda a, b: a if (a[2], -a[0]) >= (b[2], -b[0]) else b  # noqa: E731
    (fares.key_by(lambda f: f[3]).window(rs.TumblingEventTimeWindows.of(Time.hours(1))).reduce(best)
        .window_all(rs.TumblingEventTimeWindows.of(Time.hours(1))).reduce(best)
        .collect())
    result = run_in_process(env.get_job_graph(), JobConfig(name="best-fares"), timeout_s=120)
    [batches] = result["results"].values()
    hours: dict = {}
    for f in FARES:
        hours[f[1] // HOUR] = best(hours[f[1] // HOUR], f) if f[1] // HOUR in hours else f
    assert sorted(collected_records(batches)) == sorted(hours.values())
    assert len(hours) == 5
