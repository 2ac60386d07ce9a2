"""Heap timers of NaN keys after a restore.

Since 1213b7a a KeyedProcessFunction's timers are keyed by canonical keys (one float object
per NaN), but the heap timer queue restored a snapshot's timers under the unpickled keys, a
new NaN object each: a timer registered again for the same NaN key after the restore did not
find the restored one, and both fired (``on_timer`` twice for one key and time). The queue
now restores timers under canonical keys, in the NaN key group (a ``-nan`` key of an older
snapshot moves there when this subtask owns it, else the restore fails naming the key).
"""

from __future__ import annotations

import pickle
import struct

import pytest

import raystream as rs
from raystream.checkpoint import HeapStateBackend, RocksDBStateBackend
from raystream.engine.errors import CheckpointError
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.partitioners import KeySelector
from raystream.operators.keyed import KeyedProcessOperator
from raystream.operators.testing import OperatorHarness
from raystream.operators.timers import _TimerQueue

MAXP = 128


def nan() -> float:
    """A new NaN object, as a record unpickled from a channel carries one."""
    return pickle.loads(pickle.dumps(float("nan")))


def neg_nan() -> float:
    return struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000000))[0]


class OneTimer(rs.KeyedProcessFunction):
    def process_element(self, value, ctx):
        ctx.timer_service().register_event_time_timer(100)
        return None

    def on_timer(self, timestamp, ctx):
        yield ("fired", repr(ctx.get_current_key()), timestamp)


@pytest.mark.parametrize("backend", [HeapStateBackend, RocksDBStateBackend], ids=["heap", "rocksdb"])
def test_a_nan_key_timer_registered_again_after_a_restore_fires_once(backend):
    recs = [(nan(), 1), ((1, nan()), 1), ("a", 1)]
    h = OperatorHarness(KeyedProcessOperator(KeySelector(0), OneTimer()), state_backend=backend())
    h.process(recs)
    snap = h.snapshot()
    h2 = OperatorHarness(KeyedProcessOperator(KeySelector(0), OneTimer()), restore=[snap], state_backend=backend())
    h2.process([(nan(), 1), ((1, nan()), 1), ("a", 1)])
    h2.advance_watermark(1000)
    assert sorted(h2.records()) == sorted([("fired", "nan", 100), ("fired", "(1, nan)", 100), ("fired", "'a'", 100)])


def test_a_minus_nan_timer_of_an_old_snapshot_moves_to_the_nan_key_group():
    full = KeyGroupRange(0, MAXP - 1)
    old_group = 5  # (the key group of -nan's bits before 2026-12-07: any group but NaN's)
    assert old_group != key_group_for(float("nan"), MAXP)
    q: _TimerQueue = _TimerQueue(MAXP)
    q.restore({old_group: [(100, neg_nan(), None)]}, full)
    canonical = KeySelector(0).key_of((nan(),))  # the key the operator registers its timers under
    assert not q.add(canonical, None, 100)  # the same timer: not a second one
    assert q.timers_of(canonical) == [(100, None)]
    only_old = KeyGroupRange(old_group, old_group)
    with pytest.raises(CheckpointError, match="NaN key"):
        _TimerQueue(MAXP).restore({old_group: [(100, neg_nan(), None)]}, only_old)
