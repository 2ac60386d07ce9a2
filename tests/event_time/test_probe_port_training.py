"""The Flink training's event-time exercises, ported as a Flink DataStream user writes them,
each checked against a plain-Python reference at parallelism 1 and 2 (in process).

Records carry their event timestamps (Flink's ``StreamRecord`` timestamp) across operators
and channels (000aba6), so these jobs need no time field re-read downstream:

* hourly tips: tips per driver and hour (a ``ProcessWindowFunction``), then ``window_all``
  over those results for each hour's best driver: the second window reads the first one's
  ``max_timestamp()`` (before 000aba6 it was refused, or read a field of a result);
* long ride alerts: a ``KeyedProcessFunction`` with event-time timers; an alert from
  ``on_timer`` carries the timer's time, one from ``process_element`` the END event's, and a
  process function and an hourly window downstream see that time;
* rides and fares: ``connect`` + ``KeyedCoProcessFunction`` with keyed state and event-time
  timers; a pair carries the timestamp of the element that completed it, an unmatched
  ride or fare (side output of ``on_timer``) the timer's time.
"""

from __future__ import annotations

from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.operators.windows import TumblingEventTimeWindows
from tests.event_time.test_probe_port_contexts import Stamp, run

HOUR = 3_600_000
TWO_HOURS = 2 * HOUR


# -- hourly tips -----------------------------------------------------------------------------

#: (ride_id, driver_id, start_time, tip): 10 hours of fares, 5 drivers, no two equal sums
FARES = [(i, 1 + (i * 7) % 5, i * 600_000 + (i * 13) % 500, float((i * 37) % 11) + i / 1000) for i in range(60)]


class AddTips(rs.ProcessWindowFunction):
    """(window end, driver, sum of tips), as the training's solution emits it."""

    def process(self, key: Any, context: Any, elements: Any) -> Any:
        yield (context.window().end, key, sum(f[3] for f in elements))


def hourly_tips_reference() -> list[tuple]:
    sums: dict[tuple[int, int], float] = {}
    for _ride, driver, start, tip in FARES:
        end = start - start % HOUR + HOUR
        sums[(end, driver)] = sums.get((end, driver), 0.0) + tip
    best: dict[int, tuple] = {}
    for (end, driver), total in sums.items():
        if end not in best or total > best[end][2]:
            best[end] = (end, driver, total)
    return sorted(best.values())


@pytest.mark.parametrize("parallelism", [1, 2])
def test_hourly_tips_window_then_window_all_gives_each_hours_best_driver(parallelism: int) -> None:
    env = rs.StreamEnvironment(parallelism=parallelism)
    fares = env.from_collection(FARES).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda f: f[2]))
    hourly = fares.key_by(lambda f: f[1]).window(TumblingEventTimeWindows.of(HOUR)).process(AddTips())
    best = hourly.window_all(TumblingEventTimeWindows.of(HOUR)).reduce(lambda a, b: a if a[2] >= b[2] else b)
    got = run(env, {"best": best, "stamped": best.process(Stamp())}, "hourly-tips")
    want = hourly_tips_reference()
    assert len(want) == 10
    assert sorted(got["best"]) == want
    # each hour's best carries its hour's last millisecond (both windows' max_timestamp())
    assert sorted(got["stamped"]) == [(r, r[0] - 1) for r in want]


# -- long ride alerts ------------------------------------------------------------------------

def rides() -> list[tuple]:
    """(ride_id, is_start, event_time): rides of 30 min, 3 h, exactly 2 h, 2 h + 1 ms and
    90 min; every 7th ride has no END event. In event-time order."""
    out = []
    for i in range(40):
        start = i * 300_000
        out.append((i, True, start))
        if i % 7 != 3:
            out.append((i, False, start + [30 * 60_000, 3 * HOUR, TWO_HOURS, TWO_HOURS + 1, 90 * 60_000][i % 5]))
    return sorted(out, key=lambda r: r[2])


class AlertFunction(rs.KeyedProcessFunction):
    """The training's solution: a ride's first event is kept; a START registers a timer two
    hours later; the second event deletes it and alerts if the ride took more than two hours.
    Each alert says where it came from and the time Flink stamps it with."""

    def open(self, runtime_context: Any) -> None:
        self.ride = runtime_context.get_state(ValueStateDescriptor("ride"))

    def process_element(self, ride: tuple, ctx: Any) -> Any:
        first = self.ride.value()
        if first is None:
            self.ride.update(ride)
            if ride[1]:
                ctx.timer_service().register_event_time_timer(ride[2] + TWO_HOURS)
            return
        start, end = (ride, first) if ride[1] else (first, ride)
        if start[1]:
            ctx.timer_service().delete_event_time_timer(start[2] + TWO_HOURS)
        if end[2] - start[2] > TWO_HOURS:
            yield (ride[0], "end", ride[2])
        self.ride.clear()

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        yield (self.ride.value()[0], "timer", timestamp)
        self.ride.clear()


@pytest.mark.parametrize("parallelism", [1, 2])
def test_long_ride_alerts_carry_the_time_of_what_raised_them(parallelism: int) -> None:
    events = rides()
    env = rs.StreamEnvironment(parallelism=parallelism)
    stream = env.from_collection(events).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_bounded_out_of_orderness(60_000).with_timestamp_assigner(lambda r: r[2]))
    alerts = stream.key_by(lambda r: r[0]).process(AlertFunction())
    per_hour = alerts.window_all(TumblingEventTimeWindows.of(HOUR)).apply(lambda w, rs_: [(w.start, len(list(rs_)))])
    got = run(env, {"alerts": alerts, "stamped": alerts.process(Stamp()), "per_hour": per_hour}, "long-rides")
    starts = {r[0]: r[2] for r in events if r[1]}
    ends = {r[0]: r[2] for r in events if not r[1]}
    long_rides = sorted(i for i, s in starts.items() if i not in ends or ends[i] - s > TWO_HOURS)
    assert len(long_rides) == 19
    assert sorted(a[0] for a in got["alerts"]) == long_rides
    for ride, how, at in got["alerts"]:
        # from on_timer: the timer's time; from the ride's second event: that event's time (at
        # p=2 a ride's START and END come from two source subtasks, so either may be second)
        assert at == starts[ride] + TWO_HOURS if how == "timer" else at in (starts[ride], ends[ride]), (ride, how, at)
    assert all(a[0] in ends for a in got["alerts"] if a[1] == "end")
    assert {a for a in got["alerts"] if a[0] not in ends} == {(i, "timer", starts[i] + TWO_HOURS)
                                                               for i in long_rides if i not in ends}
    # a process function after it sees each alert's time as ctx.timestamp ...
    assert sorted(got["stamped"]) == sorted((a, a[2]) for a in got["alerts"])
    # ... and an event-time window counts each alert in the hour of that time
    hours: dict[int, int] = {}
    for _ride, _how, at in got["alerts"]:
        hours[at - at % HOUR] = hours.get(at - at % HOUR, 0) + 1
    assert sorted(got["per_hour"]) == sorted(hours.items())


# -- rides and fares -------------------------------------------------------------------------

#: a fare's start time is its ride's START time (as in the training's data)
RIDES = [{"ride": i, "start": i * 200_000 + 7, "driver": i % 3} for i in range(50) if i % 11 != 5]
TAXI_FARES = [{"ride": i, "start": i * 200_000 + 7, "fare": 10 + i} for i in range(50) if i % 13 != 4]
UNMATCHED = rs.OutputTag("unmatched")


class EnrichmentFunction(rs.KeyedCoProcessFunction):
    """The training's solution with its timers: the first of a ride and its fare waits in
    keyed state; the other completes the pair; an event-time timer an hour after the START
    sends what still waits to a side output."""

    def open(self, runtime_context: Any) -> None:
        self.ride = runtime_context.get_state(ValueStateDescriptor("ride"))
        self.fare = runtime_context.get_state(ValueStateDescriptor("fare"))

    def _arrived(self, mine: Any, other: Any, value: dict, ctx: Any, pair: Any) -> Any:
        waiting = other.value()
        if waiting is None:
            mine.update(value)
            ctx.timer_service().register_event_time_timer(value["start"] + HOUR)
            return None
        other.clear()
        ctx.timer_service().delete_event_time_timer(value["start"] + HOUR)
        return [pair(waiting)]

    def process_element1(self, ride: dict, ctx: Any) -> Any:
        return self._arrived(self.ride, self.fare, ride, ctx, lambda fare: (ride["ride"], ride["driver"], fare["fare"]))

    def process_element2(self, fare: dict, ctx: Any) -> Any:
        return self._arrived(self.fare, self.ride, fare, ctx, lambda ride: (ride["ride"], ride["driver"], fare["fare"]))

    def on_timer(self, timestamp: int, ctx: Any) -> None:
        for state in (self.ride, self.fare):
            waiting = state.value()
            if waiting is not None:
                ctx.output(UNMATCHED, waiting["ride"])
                state.clear()


@pytest.mark.parametrize("parallelism", [1, 2])
def test_rides_and_fares_pairs_carry_their_start_and_unmatched_ones_the_timers_time(parallelism: int) -> None:
    strategy = rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("start")
    env = rs.StreamEnvironment(parallelism=parallelism)
    ride_stream = env.from_collection(RIDES).assign_timestamps_and_watermarks(strategy)
    fare_stream = env.from_collection(TAXI_FARES).assign_timestamps_and_watermarks(strategy)
    enriched = ride_stream.key_by("ride").connect(fare_stream.key_by("ride")).process(EnrichmentFunction())
    per_hour = enriched.window_all(TumblingEventTimeWindows.of(HOUR)).apply(lambda w, rs_: [(w.start, len(list(rs_)))])
    got = run(env, {"pairs": enriched.process(Stamp()), "unmatched": enriched.get_side_output(UNMATCHED).process(Stamp()),
                    "per_hour": per_hour}, "rides-and-fares")
    ride_ids, fare_ids = {r["ride"] for r in RIDES}, {f["ride"] for f in TAXI_FARES}
    start = {i: i * 200_000 + 7 for i in ride_ids | fare_ids}
    paired = ride_ids & fare_ids
    assert len(paired) == 41 and len(ride_ids ^ fare_ids) == 9
    # a pair: the time of the element that completed it (a ride's and its fare's are equal)
    assert sorted(got["pairs"]) == sorted(((i, i % 3, 10 + i), start[i]) for i in paired)
    # an unmatched ride or fare: the timer's time (from on_timer, through a side output)
    assert sorted(got["unmatched"]) == sorted((i, start[i] + HOUR) for i in ride_ids ^ fare_ids)
    hours: dict[int, int] = {}
    for i in paired:
        hours[start[i] - start[i] % HOUR] = hours.get(start[i] - start[i] % HOUR, 0) + 1
    assert sorted(got["per_hour"]) == sorted(hours.items())
