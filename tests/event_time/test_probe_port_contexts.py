"""Where a Flink user reads a record's timestamp after windows, timers, side outputs and
repartitioning, ported jobs checked against Flink's documented stamping at parallelism 1
and 2 (in process):

* after a window (``WindowOperator.emitWindowContents``: ``window.maxTimestamp()``), a
  process function sees the window's last millisecond as ``ctx.timestamp``, and so does one
  after the window function's side output (``context.output``);
* the late side output (``sideOutput(element)``) keeps each late record's own timestamp;
* a ``KeyedProcessFunction`` emitting from ``on_timer`` (event time): each emission carries
  the timer's time, and an event-time window over the emissions groups them by it;
* ``rebalance``, ``broadcast``, ``key_by`` at parallelism 2 keep the timestamps: a map that
  rewrites the time field does not change them, and event-time timers set from
  ``ctx.timestamp`` fire at the record's time.
"""

from __future__ import annotations

from typing import Any

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.windows import TumblingEventTimeWindows

SIDE = rs.OutputTag("side")
LATE = rs.OutputTag("late")
#: 3 keys, a record each 100 ms over 4 s, in order
EVENTS = [{"k": f"k{i % 3}", "ts": i * 100, "v": i} for i in range(40)]
IN_ORDER = rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")


def run(env: rs.StreamEnvironment, sinks: dict[str, rs.DataStream], name: str) -> dict[str, list]:
    """Collect each stream of ``sinks``, run the job in process, and return each one's records."""
    for label, stream in sinks.items():
        stream.collect().uid(f"out-{label}")
    results = run_in_process(env.get_job_graph(), JobConfig(name=name), timeout_s=120)["results"]
    return {label: collected_records(results[f"out-{label}"]) for label in sinks}


class Stamp(rs.ProcessFunction):
    """Each record with the ``ctx.timestamp`` it reaches a process function with."""

    def process_element(self, value: Any, ctx: Any) -> Any:
        yield (value, ctx.timestamp)


class CountWithSide(rs.ProcessWindowFunction):
    """A window's count, and a side output of its bounds."""

    def process(self, key: Any, context: Any, elements: Any) -> Any:
        w = context.window()
        context.output(SIDE, (key, w.start, w.end))
        yield (key, w.start, len(list(elements)))


def windows_of(events: list[dict], size: int) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = {}
    for e in events:
        start = e["ts"] - e["ts"] % size
        counts[(e["k"], start)] = counts.get((e["k"], start), 0) + 1
    return counts


@pytest.mark.parametrize("parallelism", [1, 2])
def test_after_a_window_and_its_side_output_ctx_timestamp_is_the_windows_last_millisecond(parallelism: int) -> None:
    env = rs.StreamEnvironment(parallelism=parallelism)
    events = env.from_collection(EVENTS).assign_timestamps_and_watermarks(IN_ORDER)
    counted = events.key_by("k").window(TumblingEventTimeWindows.of(1_000)).process(CountWithSide())
    got = run(env, {"main": counted.process(Stamp()), "side": counted.get_side_output(SIDE).process(Stamp())},
              "window-contexts")
    counts = windows_of(EVENTS, 1_000)
    assert sorted(got["main"]) == sorted(((k, s, n), s + 999) for (k, s), n in counts.items())
    assert sorted(got["side"]) == sorted(((k, s, s + 1_000), s + 999) for k, s in counts)


#: in event-time order but for three records 1.5 s behind: late for a 500 ms window
WITH_LATE = [{"k": f"k{i % 2}", "ts": i * 100 - (1_500 if i in (25, 31, 37) else 0), "v": i} for i in range(45)]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_late_records_keep_their_own_timestamps_in_the_late_side_output(parallelism: int) -> None:
    env = rs.StreamEnvironment(parallelism=parallelism)
    # one source subtask, batches of 5 cut by size alone and a watermark after each: every run
    # has the same watermarks, so the same late records
    source = env.generate(lambda i: WITH_LATE[i], count=len(WITH_LATE), batch_size=5, linger_ms=3_600_000)
    events = source.set_parallelism(1).assign_timestamps_and_watermarks(IN_ORDER)
    counted = (events.key_by("k").window(TumblingEventTimeWindows.of(500)).side_output_late_data(LATE)
               .apply(lambda k, w, rs_: [(k, w.start, len(list(rs_)))]))
    late = counted.get_side_output(LATE)
    # a window over the late records, by their own timestamps (with the lateness to take them:
    # they are behind the watermark there too; each fires its window as it arrives)
    late_windows = late.key_by("k").window(TumblingEventTimeWindows.of(500)).allowed_lateness(10_000).apply(
        lambda k, w, rs_: [(k, w.start, sorted(r["v"] for r in rs_))])
    got = run(env, {"late": late.process(Stamp()), "late_windows": late_windows, "main": counted}, "late-stamps")
    late_records = [e for e in WITH_LATE if e["v"] in (25, 31, 37)]
    assert sorted((r["v"], t) for r, t in got["late"]) == [(e["v"], e["ts"]) for e in late_records]
    assert sorted(got["main"]) == sorted((k, s, n) for (k, s), n in windows_of(
        [e for e in WITH_LATE if e not in late_records], 500).items())
    assert sorted(got["late_windows"]) == sorted(
        (e["k"], e["ts"] - e["ts"] % 500, [e["v"]]) for e in late_records)


class RemindLater(rs.KeyedProcessFunction):
    """Per record an event-time timer 250 ms after it; the timer emits a reminder."""

    def process_element(self, value: dict, ctx: Any) -> None:
        ctx.timer_service().register_event_time_timer(ctx.timestamp + 250)

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        yield {"k": ctx.get_current_key(), "fired": timestamp}


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_window_over_timer_emissions_groups_them_by_the_timers_time(parallelism: int) -> None:
    env = rs.StreamEnvironment(parallelism=parallelism)
    events = env.from_collection(EVENTS).assign_timestamps_and_watermarks(IN_ORDER)
    reminders = events.key_by("k").process(RemindLater())
    # the reminders hold no "ts": the window reads the time they carry
    per_second = reminders.key_by("k").window(TumblingEventTimeWindows.of(1_000)).apply(
        lambda k, w, rs_: [(k, w.start, sorted(r["fired"] for r in rs_))])
    got = run(env, {"reminders": reminders.process(Stamp()), "per_second": per_second}, "timer-emissions")
    fired = [(e["k"], e["ts"] + 250) for e in EVENTS]
    assert sorted((r["k"], r["fired"], t) for r, t in got["reminders"]) == sorted((k, f, f) for k, f in fired)
    want: dict[tuple[str, int], list[int]] = {}
    for k, f in fired:
        want.setdefault((k, f - f % 1_000), []).append(f)
    assert sorted(got["per_second"]) == sorted((k, s, sorted(v)) for (k, s), v in want.items())


class EchoAndTimer(rs.KeyedProcessFunction):
    """Each record's ``ctx.timestamp``, and an event-time timer 1 ms after it."""

    def process_element(self, value: dict, ctx: Any) -> Any:
        ctx.timer_service().register_event_time_timer(ctx.timestamp + 1)
        yield ("element", value["v"], ctx.timestamp)

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        yield ("timer", ctx.get_current_key(), timestamp)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_rebalance_broadcast_and_key_by_keep_timestamps_for_timers(parallelism: int) -> None:
    env = rs.StreamEnvironment(parallelism=parallelism)
    events = env.from_collection(EVENTS).assign_timestamps_and_watermarks(IN_ORDER)
    # the time field rewritten after the channel: the records keep the time they carry
    scrambled = events.rebalance().map(lambda e: {**e, "ts": -1})
    after_rebalance = scrambled.key_by("k").process(EchoAndTimer())
    after_broadcast = events.broadcast().map(lambda e: {**e, "ts": -1}).process(Stamp())
    got = run(env, {"rebalance": after_rebalance, "broadcast": after_broadcast}, "repartitioned-stamps")
    at = {e["v"]: e["ts"] for e in EVENTS}
    elements = sorted(r for r in got["rebalance"] if r[0] == "element")
    assert elements == sorted(("element", v, t) for v, t in at.items())
    # one timer per key and time (records of a key never share a time here)
    assert sorted(r for r in got["rebalance"] if r[0] == "timer") == sorted(("timer", e["k"], e["ts"] + 1) for e in EVENTS)
    # every broadcast copy (one per subtask) with its record's timestamp
    assert sorted((r["v"], t) for r, t in got["broadcast"]) == sorted((v, t) for v, t in at.items() for _ in range(parallelism))
