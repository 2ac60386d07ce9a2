"""An error while restoring timers names the operator and its uid: a restored timer that
cannot be restored (a ``-nan`` key of an older snapshot in another subtask's key group, a
malformed timer snapshot) fails with a ``CheckpointError`` saying whose timers, then why.
Before 2026-12-07 the ``CheckpointError`` named neither the operator nor the uid (only the
task's ``JobFailed`` around it said "failed in open()"), and a malformed snapshot was a bare
``ValueError``/``TypeError`` from inside the timer queue. A KeyedProcessFunction names
itself; other operators (a window) are named through their timer callbacks. No Ray."""

from __future__ import annotations

import struct

import pytest

import raystream as rs
from raystream.engine.errors import CheckpointError
from raystream.engine.keygroups import key_group_for
from raystream.engine.operator import KeyGroupedState
from raystream.engine.partitioners import KeySelector
from raystream.operators.keyed import KeyedProcessOperator
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_operator import LIST, WindowOperator
from raystream.operators.windows import EventTimeSessionWindows

MAXP = 128
MIN = -(2**63)


class Timer(rs.KeyedProcessFunction):
    def process_element(self, value, ctx):
        ctx.timer_service().register_event_time_timer(100)
        return None


def process_op():
    return KeyedProcessOperator(KeySelector(0), Timer())


def timers(event: dict) -> dict:
    return {"operator": {"timers": {"event": KeyGroupedState(event), "processing": KeyGroupedState(),
                                    "watermark": MIN}}, "keyed": None}


def test_a_nan_timer_of_another_subtask_names_the_operator_and_uid():
    neg_nan = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000000))[0]
    nan_group = key_group_for(float("nan"), MAXP)
    old_group = 0 if nan_group >= MAXP // 2 else MAXP - 1  # (the group of -nan's bits, before 2026-12-07)
    sub = 0 if old_group < MAXP // 2 else 1
    with pytest.raises(CheckpointError) as err:
        OperatorHarness(process_op(), subtask_index=sub, parallelism=2, max_parallelism=MAXP,
                        restore=[timers({old_group: [(5, neg_nan, None)]})])
    message = str(err.value)
    assert message.startswith("restoring the timers of operator 'operator' (uid 'harness') from a checkpoint")
    assert "restored timer of NaN key nan at 5" in message and "restore at parallelism 1" in message


def test_a_malformed_timer_snapshot_names_the_operator_and_the_cause():
    kg = key_group_for("a", MAXP)
    with pytest.raises(CheckpointError) as err:
        OperatorHarness(process_op(), max_parallelism=MAXP, restore=[timers({kg: [(5, "a")]})])
    message = str(err.value)
    assert "restoring the timers of operator 'operator' (uid 'harness')" in message
    assert "ValueError: not enough values to unpack" in message


def test_a_window_operators_timers_are_named_through_its_callbacks():
    def window_op():
        return WindowOperator(KeySelector("key").key_of, EventTimeSessionWindows.with_gap(100), LIST, None,
                              timestamp_assigner=TimestampAssigner(column="ts"))

    h = OperatorHarness(window_op(), max_parallelism=MAXP)
    h.process([{"key": "a", "ts": 10}])
    snap = h.snapshot()
    event = snap["operator"]["timers"]["event"]
    assert event  # the session's timer
    broken = {**snap, "operator": {**snap["operator"], "timers": {**snap["operator"]["timers"], "event": KeyGroupedState(
        {kg: [entry[:2] for entry in entries] for kg, entries in event.items()})}}}
    with pytest.raises(CheckpointError, match=r"restoring the timers of operator 'operator' \(uid 'harness'\)"):
        OperatorHarness(window_op(), max_parallelism=MAXP, restore=[broken])
