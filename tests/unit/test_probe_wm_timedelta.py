"""``datetime.timedelta`` wherever raystream takes a span of milliseconds, as a Bytewax port
(``TumblingWindower(length=timedelta(seconds=5), ...)``) or plain Python code writes it. Before,
every such setting refused it (``window size must be a positive int (ms), got
datetime.timedelta(seconds=5)``); now a timedelta gives the same result as its int of ms
(PyFlink's ``Duration``/``Time`` still do), and one with a part below a millisecond, or a
negative one where a span must be positive, is refused with a ConfigError naming the setting
and the value.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import ConfigError
from raystream.engine.local_runtime import run_in_process
from raystream.operators import Duration, Time
from raystream.operators.sinks import collected_records
from raystream.operators.windows import (
    EventTimeSessionWindows,
    ProcessingTimeSessionWindows,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)

STAMPS = [-7_001, -1, 0, 1, 4_999, 5_000, 7_250, 12_345, 86_400_000 + 3]


@pytest.mark.parametrize(
    "given, same",
    [
        (lambda: TumblingEventTimeWindows.of(timedelta(seconds=5)), lambda: TumblingEventTimeWindows.of(5000)),
        (lambda: TumblingEventTimeWindows.of(timedelta(hours=1), timedelta(minutes=-15)),
         lambda: TumblingEventTimeWindows.of(3_600_000, -900_000)),
        (lambda: TumblingProcessingTimeWindows.of(timedelta(milliseconds=250)), lambda: TumblingProcessingTimeWindows.of(250)),
        (lambda: SlidingEventTimeWindows.of(timedelta(seconds=10), timedelta(seconds=5), timedelta(seconds=1)),
         lambda: SlidingEventTimeWindows.of(10_000, 5_000, 1_000)),
        (lambda: SlidingProcessingTimeWindows.of(timedelta(seconds=3), timedelta(seconds=1)),
         lambda: SlidingProcessingTimeWindows.of(3_000, 1_000)),
        (lambda: EventTimeSessionWindows.with_gap(timedelta(minutes=1)), lambda: EventTimeSessionWindows.with_gap(60_000)),
        (lambda: ProcessingTimeSessionWindows.with_gap(timedelta(seconds=2)), lambda: ProcessingTimeSessionWindows.with_gap(2_000)),
        (lambda: TumblingEventTimeWindows.of(Time.seconds(5)), lambda: TumblingEventTimeWindows.of(5000)),
    ],
)
def test_a_timedelta_assigns_the_windows_its_milliseconds_do(given, same):
    a, b = given(), same()
    assert repr(a) == repr(b)
    for t in STAMPS:
        assert a.assign_windows(None, t, t + 17) == b.assign_windows(None, t, t + 17)


def test_dynamic_session_gaps_may_be_timedeltas():
    w = EventTimeSessionWindows.with_dynamic_gap(lambda r: r["gap"])
    assert w.assign_windows({"gap": timedelta(seconds=3)}, 100, 0) == w.assign_windows({"gap": 3000}, 100, 0)
    with pytest.raises(ConfigError, match=r"session gap of record \{'gap': datetime.timedelta\(microseconds=500\)\}"):
        w.assign_windows({"gap": timedelta(microseconds=500)}, 100, 0)


def test_watermark_strategy_takes_timedeltas():
    s = rs.WatermarkStrategy.for_bounded_out_of_orderness(timedelta(seconds=2)).with_idleness(timedelta(minutes=1))
    assert (s.bound_ms, s.idleness_ms) == (2000, 60_000)
    assert type(s.bound_ms) is int and type(s.idleness_ms) is int
    assert rs.WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(2)).bound_ms == 2000
    g = s.create_generator()
    g.on_timestamps_max(10_000)
    assert g.current_watermark() == 7_999


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TumblingEventTimeWindows.of(timedelta(microseconds=1500)),
         r"window size must be whole milliseconds, got datetime.timedelta\(microseconds=1500\) \(a part of 500 microseconds"),
        (lambda: TumblingEventTimeWindows.of(timedelta(seconds=-5)),
         r"window size must be a positive int \(ms\) or timedelta, got .*\(-5000 ms\)"),
        (lambda: TumblingEventTimeWindows.of(timedelta(0)), r"window size must be a positive .* \(0 ms\)"),
        (lambda: SlidingEventTimeWindows.of(timedelta(seconds=10), timedelta(microseconds=1)),
         r"window slide must be whole milliseconds"),
        (lambda: TumblingEventTimeWindows.of(timedelta(seconds=5), timedelta(seconds=5)),
         r"window offset must be an int \(ms\) or timedelta with abs\(offset\) < size \(5000\), got .*\(5000 ms\)"),
        (lambda: TumblingEventTimeWindows.of(5000, timedelta(microseconds=10)), r"window offset must be whole milliseconds"),
        (lambda: EventTimeSessionWindows.with_gap(timedelta(minutes=-1)), r"window gap must be a positive .*\(-60000 ms\)"),
        (lambda: rs.WatermarkStrategy.for_bounded_out_of_orderness(timedelta(seconds=-1)),
         r"out-of-orderness bound must be a non-negative int \(ms\) or timedelta, got .*\(-1000 ms\)"),
        (lambda: rs.WatermarkStrategy.for_bounded_out_of_orderness(timedelta(microseconds=2)),
         r"the out-of-orderness bound must be whole milliseconds"),
        (lambda: rs.WatermarkStrategy.for_monotonous_timestamps().with_idleness(timedelta(0)),
         r"idleness must be a positive int \(ms\) or timedelta, got datetime.timedelta\(0\) \(0 ms\)"),
        (lambda: rs.WatermarkStrategy.for_monotonous_timestamps().with_idleness(timedelta(seconds=1, microseconds=1)),
         r"the idleness must be whole milliseconds"),
    ],
)
def test_a_bad_timedelta_is_refused_naming_the_setting_and_value(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_duration_ms_leaves_other_types_to_the_caller():
    from raystream.operators.time import duration_ms

    assert duration_ms(timedelta(days=1), "x") == 86_400_000
    assert duration_ms(5.0, "x") is None and duration_ms("5", "x") is None and duration_ms(True, "x") is None


def test_a_job_with_timedelta_windows_gives_the_results_of_int_windows():
    def job(size, bound):
        env = rs.StreamEnvironment(parallelism=1)
        events = [("a", t) for t in (1_000, 4_000, 3_000, 6_000, 11_000, 9_500)]
        (env.from_collection(events)
            .assign_timestamps_and_watermarks(
                rs.WatermarkStrategy.for_bounded_out_of_orderness(bound).with_timestamp_assigner(lambda r: r[1]))
            .key_by(lambda r: r[0])
            .window(TumblingEventTimeWindows.of(size))
            .reduce(lambda a, b: (a[0], a[1] + b[1]))
            .collect())
        [batches] = run_in_process(env.get_job_graph(), JobConfig(name="timedelta-windows"), timeout_s=120)["results"].values()
        return sorted(collected_records(batches))

    expected = job(5000, 2000)
    assert expected == [("a", 8_000), ("a", 11_000), ("a", 15_500)]
    assert job(timedelta(seconds=5), timedelta(seconds=2)) == expected
