"""A failing window join / co-group names the user's record.

Before, an error while a window join stored a record (e.g. a list key on the heap backend)
named the pair ``(input_index, record)`` the operator stores internally, and a key function
that failed on some record of a batch named the batch's first record instead.
"""

from __future__ import annotations

import pytest

from raystream.engine.errors import UserCodeError
from raystream.engine.partitioners import KeySelector
from raystream.operators.joins import CoGroupWindowOperator, _CoGroup
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_operator import REDUCE, WindowOperator
from raystream.operators.windows import (
    EventTimeSessionWindows,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)

TS = TimestampAssigner(column="ts")


@pytest.mark.parametrize("input_index", [0, 1])
def test_an_unhashable_key_names_the_record(input_index) -> None:
    op = CoGroupWindowOperator((KeySelector("k"), KeySelector("k")), (TS, TS), TumblingEventTimeWindows.of(10),
                               _CoGroup(None, lambda a, b: (a, b)))
    h = OperatorHarness(op)
    bad = {"k": ["a"], "ts": 3}
    with pytest.raises(UserCodeError, match="unhashable") as err:
        h.process([{"k": "ok", "ts": 1}, bad], input_index)
    assert err.value.record == bad


def test_a_failing_key_function_names_the_record_it_failed_on() -> None:
    op = CoGroupWindowOperator((KeySelector(lambda r: r["user"]["id"]), KeySelector("k")), (TS, TS),
                               TumblingEventTimeWindows.of(10), _CoGroup(None, lambda a, b: (a, b)))
    h = OperatorHarness(op)
    bad = {"user": None, "ts": 2}
    with pytest.raises(UserCodeError) as err:
        h.process([{"user": {"id": 1}, "ts": 1}, bad, {"user": {"id": 2}, "ts": 3}], 0)
    assert err.value.record == bad


@pytest.mark.parametrize("windows, lateness", [
    (SlidingEventTimeWindows.of(10, 5), 0),
    (EventTimeSessionWindows.with_gap(10), 0),
    (TumblingEventTimeWindows.of(10), 5),  # (allowed lateness: the per-record path, not panes)
])
def test_an_unhashable_key_names_the_record_on_the_per_record_window_path(windows, lateness) -> None:
    """Sliding and session windows, and any window with allowed lateness, store records one
    by one: an unhashable key there was a bare TypeError, reported on the batch's first
    record; the window join / co_group (whose stored value is the pair) and a keyed window alike."""
    bad = {"k": ["a"], "ts": 3}
    op = WindowOperator(KeySelector("k").key_of, windows, REDUCE, lambda a, b: a, allowed_lateness=lateness,
                        timestamp_assigner=TS)
    with pytest.raises(UserCodeError, match="unhashable") as err:
        OperatorHarness(op).process([{"k": "ok", "ts": 1}, bad])
    assert err.value.record == bad
    co = CoGroupWindowOperator((KeySelector("k"), KeySelector("k")), (TS, TS), windows,
                               _CoGroup(None, lambda a, b: (a, b)), allowed_lateness=lateness)
    with pytest.raises(UserCodeError, match="unhashable") as err:
        OperatorHarness(co).process([{"k": "ok", "ts": 1}, bad], 1)
    assert err.value.record == bad
