"""``with_idleness`` on an ``assign_timestamps_and_watermarks`` that is not fused into its
source (Flink's ``WatermarksWithIdleness`` in ``TimestampsAndWatermarksOperator``): the
operator's output goes IDLE when no record has reached it for the idleness, in processing
time, and ACTIVE again before its next record; while idle it sends no watermark, and the
final watermark still leaves it. Before, the idleness was ignored there, so a subtask that got
no records held back every window downstream (see also ``tests/integration/test_idle_inputs.py``,
variant ``stamped_after_a_map``)."""

from __future__ import annotations

from raystream.engine.events import MAX_WATERMARK
from raystream.engine.operator import ManualClock
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampsAndWatermarksOperator, WatermarkStrategy

STAMPED = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")


def harness(strategy: WatermarkStrategy = STAMPED.with_idleness(200), start_ms: int = 0) -> OperatorHarness:
    return OperatorHarness(TimestampsAndWatermarksOperator(strategy), clock=ManualClock(start_ms))


def test_idle_after_the_idleness_without_records_and_active_before_the_next_record() -> None:
    h = harness()
    h.process([{"ts": 5}])
    h.advance_processing_time(199)
    assert h.output.statuses == []
    h.advance_processing_time(200)
    assert h.output.statuses == [True]
    wms = list(h.watermarks)
    h.process([{"ts": 50}])
    assert h.output.statuses == [True, False]
    assert h.records() == [{"ts": 5}, {"ts": 50}] and h.watermarks == wms + [49]
    # the idleness counts from the last record (at 200)
    h.advance_processing_time(399)
    assert h.output.statuses == [True, False]
    h.advance_processing_time(400)
    assert h.output.statuses == [True, False, True]


def test_a_subtask_that_never_gets_a_record_goes_idle_from_its_start() -> None:
    h = harness(start_ms=1_000)
    h.advance_processing_time(1_199)
    assert h.output.statuses == []
    h.advance_processing_time(1_200)
    assert h.output.statuses == [True]
    assert h.pending_processing_timers == []  # nothing checks again until a record arrives


def test_the_final_watermark_leaves_an_idle_output() -> None:
    h = harness()
    h.process([{"ts": 5}])
    h.advance_processing_time(500)
    assert h.output.statuses == [True]
    h.end_input()
    assert h.output.statuses == [True, False]
    assert h.watermarks[-1] == MAX_WATERMARK


def test_records_arriving_within_the_idleness_keep_the_output_active() -> None:
    h = harness()
    for t in range(0, 2_000, 150):
        h.advance_processing_time(t)
        h.process([{"ts": t}])
    assert h.output.statuses == []


def test_without_idleness_the_output_never_goes_idle() -> None:
    h = harness(STAMPED)
    h.process([{"ts": 5}])
    h.advance_processing_time(10**9)
    assert h.output.statuses == [] and h.pending_processing_timers == []
