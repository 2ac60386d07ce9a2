"""Periodic watermark emission as Flink does it: a user's ``WatermarkGenerator`` gets
``on_periodic_emit`` every auto-watermark interval (``ExecutionConfig.setAutoWatermarkInterval``,
200 ms by default) whether records came or not. Before, it ran only after a batch of
records, so Flink's documented ``TimeLagWatermarkGenerator`` (watermark = now - max lag) and
Bytewax-style clocks that follow system time emitted nothing while no records arrived, and
windows stayed open. Now both ``assign_timestamps_and_watermarks`` after an operator
(``TimestampsAndWatermarksOperator``) and on a source (``WatermarkedSource``, per split)
call it from a processing-time timer. Watermarks never go back, a stream idle by
``with_idleness`` is not asked, and the timer stops at the end of the input.

The generators read an injected ``ManualClock`` (the task's processing time), so no test
sleeps or times anything.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.connectors import END_OF_INPUT, NOTHING_AVAILABLE
from raystream.engine.events import MAX_WATERMARK, Watermark
from raystream.engine.local_runtime import run_in_process
from raystream.engine.operator import ManualClock
from raystream.engine.timer_queue import TimerQueue
from raystream.operators.sinks import collected_records
from raystream.operators.sources import CollectionSource
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import (
    TimestampsAndWatermarksOperator,
    WatermarkedSource,
    WatermarkGenerator,
    WatermarkOutput,
    WatermarkStrategy,
)
from raystream.operators.windows import TumblingEventTimeWindows
from tests.waiting import wait_for


class TimeLag(WatermarkGenerator):
    """Flink's ``TimeLagWatermarkGenerator`` (docs, "Writing a Periodic WatermarkGenerator"):
    the watermark lags the processing-time clock by ``max_lag``, whatever the records say."""

    def __init__(self, clock: ManualClock, max_lag: int = 5_000) -> None:
        self.clock, self.max_lag = clock, max_lag
        self.periodic_calls = 0

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        pass

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        self.periodic_calls += 1
        output.emit_watermark(Watermark(self.clock.now_ms() - self.max_lag))


def operator_harness(factory, idleness: int | None = None, start_ms: int = 10_000) -> tuple[OperatorHarness, ManualClock]:
    clock = ManualClock(start_ms)
    strategy = WatermarkStrategy.for_generator(lambda: factory(clock)).with_timestamp_column("ts")
    if idleness is not None:
        strategy = strategy.with_idleness(idleness)
    return OperatorHarness(TimestampsAndWatermarksOperator(strategy), clock=clock), clock


def test_a_time_lag_generator_emits_every_interval_without_any_record():
    h, _ = operator_harness(TimeLag)
    assert h.pending_processing_timers == [10_200]  # (Flink's default auto-watermark interval)
    h.advance_processing_time(10_199)
    assert h.watermarks == []
    h.advance_processing_time(10_200)
    assert h.watermarks == [5_200]
    h.advance_processing_time(10_400)
    h.advance_processing_time(10_600)
    assert h.watermarks == [5_200, 5_400, 5_600]
    assert h.pending_processing_timers == [10_800]


def test_the_periodic_timer_stops_at_the_end_of_the_input():
    h, _ = operator_harness(TimeLag)
    h.process([{"ts": 1}])
    h.advance_processing_time(10_200)
    h.end_input()
    assert h.watermarks[-1] == MAX_WATERMARK
    assert h.pending_processing_timers == []


class Scripted(WatermarkGenerator):
    """Emits the next of ``marks`` (an int, or "idle") at each periodic call."""

    marks: list[Any] = []

    def __init__(self, clock: ManualClock) -> None:
        self.marks = list(type(self).marks)

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        if self.marks:
            mark = self.marks.pop(0)
            if mark == "idle":
                output.mark_idle()
            else:
                output.emit_watermark(mark)


class GoesBack(Scripted):
    marks = [100, 50, 100, 200]


def test_periodic_watermarks_never_go_back():
    h, _ = operator_harness(GoesBack)
    for t in (10_200, 10_400, 10_600, 10_800):
        h.advance_processing_time(t)
    assert h.watermarks == [100, 200]


class IdleThenOn(Scripted):
    marks = [100, "idle", "idle", 300]


def test_a_generator_that_marks_itself_idle_is_active_again_with_its_next_watermark():
    h, _ = operator_harness(IdleThenOn)
    for t in (10_200, 10_400, 10_600):
        h.advance_processing_time(t)
    assert h.watermarks == [100] and h.output.statuses == [True]
    h.advance_processing_time(10_800)
    assert h.output.statuses == [True, False] and h.watermarks == [100, 300]


def test_with_idleness_an_idle_stream_is_not_asked_until_records_come_again():
    h, clock = operator_harness(TimeLag, idleness=1_000)
    generator = h.operator.generator.generator
    h.process([{"ts": 1}])
    h.advance_processing_time(10_800)
    calls, marks = generator.periodic_calls, list(h.watermarks)
    assert calls == 5 and marks[-1] == 5_800  # (one after the batch, four periodic)
    h.advance_processing_time(11_000)
    assert h.output.statuses == [True]  # idle by with_idleness: no record for 1 s
    for t in range(11_200, 13_000, 200):
        h.advance_processing_time(t)
    assert generator.periodic_calls == calls and h.watermarks == marks and h.output.statuses == [True]
    h.process([{"ts": 2}])  # active again; asked again
    h.advance_processing_time(13_200)
    assert h.output.statuses == [True, False] and h.watermarks[-1] == 8_200


def test_built_in_generators_need_no_timer():
    clock = ManualClock(0)
    h = OperatorHarness(TimestampsAndWatermarksOperator(
        WatermarkStrategy.for_bounded_out_of_orderness(10).with_timestamp_column("ts")), clock=clock)
    assert h.pending_processing_timers == []


def test_interval_zero_turns_periodic_emission_off():
    clock = ManualClock(0)
    strategy = WatermarkStrategy.for_generator(lambda: TimeLag(clock)).with_timestamp_column("ts")
    h = OperatorHarness(TimestampsAndWatermarksOperator(strategy, auto_watermark_interval_ms=0), clock=clock)
    assert h.pending_processing_timers == []


class _ReaderContext:
    """What a source reader gets from its task: the clock and processing-time timers."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.timers = TimerQueue()
        self.register_processing_timer = self.timers.push

    def advance(self, to_ms: int) -> None:
        self.clock.set(to_ms)
        while (due := self.timers.pop_due(to_ms)) is not None:
            due[1](due[0])


def test_a_source_reader_emits_the_periodic_watermark_while_its_split_has_nothing_new():
    clock = ManualClock(10_000)
    strategy = WatermarkStrategy.for_generator(lambda: TimeLag(clock)).with_timestamp_column("ts")
    ctx = _ReaderContext(clock)
    reader = WatermarkedSource(CollectionSource([{"ts": 1}, {"ts": 2}]), strategy).create_reader(ctx)  # type: ignore[arg-type]
    reader.add_splits(CollectionSource([{"ts": 1}, {"ts": 2}]).create_splits(1))
    assert len(reader.poll_next()) == 2
    first = reader.poll_watermark()  # (after the batch: on_periodic_emit at 10_000)
    assert first == 5_000
    ctx.advance(10_199)
    assert reader.poll_watermark() is None
    ctx.advance(10_200)
    assert reader.poll_watermark() == 5_200
    ctx.advance(10_400)
    assert reader.poll_watermark() == 5_400
    reader.close()
    assert ctx.timers.peek_time() is None  # (the reader's timer is gone with it)


def test_a_source_split_idle_by_idleness_is_not_asked():
    clock = ManualClock(10_000)
    made: list[TimeLag] = []

    def factory() -> TimeLag:
        made.append(TimeLag(clock))
        return made[-1]

    strategy = WatermarkStrategy.for_generator(factory).with_timestamp_column("ts").with_idleness(1_000)
    ctx = _ReaderContext(clock)
    source = CollectionSource([{"ts": 1}])
    reader = WatermarkedSource(source, strategy).create_reader(ctx)  # type: ignore[arg-type]
    reader.add_splits(source.create_splits(1))
    reader.poll_next()
    ctx.advance(10_800)
    calls = made[0].periodic_calls
    for t in range(11_000, 12_000, 200):
        ctx.advance(t)
    assert made[0].periodic_calls == calls
    reader.close()


def test_a_bounded_job_with_a_periodic_generator_ends_and_fires_its_windows():
    clock = ManualClock(0)  # (stays at 0: only the final watermark closes the windows)
    env = rs.StreamEnvironment(parallelism=1)
    env.clock = clock
    strategy = WatermarkStrategy.for_generator(lambda: TimeLag(clock, 0)).with_timestamp_assigner(lambda r: r[1])
    events = [("a", 1_000), ("a", 2_000), ("a", 6_000)]
    on_source = env.from_collection(events).assign_timestamps_and_watermarks(strategy)
    after_map = env.from_collection(events).map(lambda r: r).assign_timestamps_and_watermarks(strategy)
    for stream in (on_source, after_map):
        (stream.key_by(lambda r: r[0]).window(TumblingEventTimeWindows.of(5_000))
            .reduce(lambda a, b: (a[0], a[1] + b[1])).collect())
    results = run_in_process(env.get_job_graph(), JobConfig(name="periodic-bounded", clock=clock), timeout_s=120)["results"]
    assert [sorted(collected_records(b)) for b in results.values()] == [[("a", 3_000), ("a", 6_000)]] * 2



# --------------------------------------------------------------------------- a running job
# run_in_process runs the tasks in this process, but the job's functions reach them pickled by
# value (module globals copied): what they share with the test is looked up at run time
_SHARED = "raystream_test_probe_wm_periodic_emit"


def shared() -> Any:
    """``FIRED``, ``SEEN`` (lists), ``RELEASE`` (an Event) and ``NOW`` (the clock's ms)."""
    import sys
    import types

    state = sys.modules.get(_SHARED)
    if state is None:
        state = sys.modules[_SHARED] = types.ModuleType(_SHARED)
        state.FIRED, state.SEEN, state.RELEASE, state.NOW = [], [], threading.Event(), 0
    return state


class SharedClock:
    """The tasks' processing time: ``shared().NOW``, moved by the test."""

    def now_ms(self) -> int:
        return shared().NOW


class SharedTimeLag(TimeLag):
    def __init__(self) -> None:
        super().__init__(SharedClock(), 1_000)  # type: ignore[arg-type]


def seen(r: Any) -> Any:
    shared().SEEN.append(r)
    return r


def fired(r: Any) -> Any:
    shared().FIRED.append(r)
    return r


class _HeldOpen(CollectionSource):
    """Its items, then nothing until the test releases it (a quiet unbounded input)."""

    bounded = False

    def create_reader(self, ctx: Any) -> Any:
        return _HeldOpenReader(super().create_reader(ctx))


class _HeldOpenReader:
    """Its split stays live (unread to its end, as an unbounded split) while held open."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.splits: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def add_splits(self, splits: list[Any]) -> None:
        self.splits.extend(splits)
        self.inner.add_splits(splits)

    def poll_next(self) -> Any:
        result = self.inner.poll_next()
        if result is END_OF_INPUT:
            if not shared().RELEASE.is_set():
                return NOTHING_AVAILABLE
            self.splits.clear()
        return result

    def is_idle(self) -> bool:
        return False


@pytest.mark.parametrize("where", ["source", "operator"])
def test_a_quiet_input_closes_its_window_when_the_clock_moves(where):
    """In a running job, a window closes while its input has nothing new: only the time-lag
    generator's periodic watermark (the tasks' clock moved) can close it; before, it stayed
    open until the input ended."""
    state = shared()
    state.FIRED.clear()
    state.SEEN.clear()
    state.RELEASE.clear()
    state.NOW = 0
    env = rs.StreamEnvironment(parallelism=1)
    env.clock = SharedClock()
    strategy = WatermarkStrategy.for_generator(SharedTimeLag).with_timestamp_assigner(lambda r: r[1])
    stream = env.from_source(_HeldOpen([("a", 1_000), ("a", 2_000)]))
    stream = stream.assign_timestamps_and_watermarks(strategy) if where == "source" else (
        stream.map(lambda r: r).assign_timestamps_and_watermarks(strategy))
    (stream.map(seen).key_by(lambda r: r[0]).window(TumblingEventTimeWindows.of(5_000))
        .reduce(lambda a, b: (a[0], a[1] + b[1])).map(fired).collect())
    done: list[Any] = []
    runner = threading.Thread(target=lambda: done.append(run_in_process(
        env.get_job_graph(), JobConfig(name="periodic-quiet", clock=env.clock), timeout_s=120)), daemon=True)
    runner.start()
    try:
        # the records are stamped at processing time 0 (watermark -1000 after their batch); from
        # then on the clock moves 100 ms per look, and only a periodic emission can bring the
        # watermark past the window's end
        wait_for(lambda: len(state.SEEN) == 2, "the records to be stamped", 60)

        def window_fired() -> bool:
            state.NOW += 100
            return state.FIRED == [("a", 3_000)]

        wait_for(window_fired, "the window [0, 5000) to fire while the input is quiet", 60)
    finally:
        state.RELEASE.set()
        runner.join(120)
    assert not runner.is_alive() and done
    assert [sorted(collected_records(b)) for b in done[0]["results"].values()] == [[("a", 3_000)]]
