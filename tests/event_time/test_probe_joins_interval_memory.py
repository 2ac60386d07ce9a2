"""An interval join keeps no state for a record that no future partner can reach.

With a negative upper bound (``between(-30, -5)``: a left record joins only right records
at least 5 ms older) or a positive lower bound, a record just ahead of the watermark is
joined with what is buffered and not kept. Before, its key still got an empty buffer entry
that no timer ever removed: memory (and every snapshot) grew with the number of distinct
keys for as long as the job ran, e.g. one entry per order id.
"""

from __future__ import annotations

import pytest

from raystream.engine.partitioners import KeySelector
from raystream.operators.joins import IntervalJoinOperator
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner

TS1 = TimestampAssigner(column=1)
KEYS = (KeySelector(0), KeySelector(0))


@pytest.mark.parametrize("lower,upper", [(-30, -5), (5, 40)])
def test_unbufferable_records_of_many_keys_leave_no_state(lower, upper, state_backend) -> None:
    op = IntervalJoinOperator(KEYS, (TS1, TS1), lower, upper, lambda a, b: (a, b))
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("k", 960)], 0)  # buffered: joins the right record below
    h.process([("k", 990)], 1)
    h.advance_watermark(1000, 0)
    h.advance_watermark(1000, 1)
    buffered, keys = op.num_buffered(), len(op.buffers)
    side = 0 if upper < 0 else 1  # the side whose records just ahead of the watermark no partner can reach
    for i in range(500):  # distinct keys
        h.process([(f"id{i}", 1001 + i % 3)], side)
    assert op.num_buffered() == buffered
    assert len(op.buffers) == keys <= 1  # the heap backend's dict holds at most key "k" (RocksDB: nothing)
    h.advance_watermark(5000, 0)
    h.advance_watermark(5000, 1)
    assert op.num_buffered() == 0 and op.buffers == {} and op.timers.num_event_timers() == 0
    want = [(("k", 960), ("k", 990))] if lower <= 30 <= upper else []
    assert h.records() == want


def test_a_restored_snapshot_with_empty_entries_drops_them() -> None:
    op = IntervalJoinOperator(KEYS, (TS1, TS1), -30, -5, lambda a, b: (a, b))
    h = OperatorHarness(op)
    h.process([("k", 10)], 0)
    op.buffers["stale"] = ([], [])  # what a snapshot taken before the fix held for such keys
    restored = IntervalJoinOperator(KEYS, (TS1, TS1), -30, -5, lambda a, b: (a, b))
    OperatorHarness(restored, restore=[h.snapshot()])
    assert list(restored.buffers) == ["k"]
