"""NaN keys of windows restored from a snapshot.

On the heap backend the window operator keeps its contents and trigger state in dicts of
its own, restored by unpickling: a NaN key came back as a new float object, which a record
of that NaN key after the restore (made canonical by the key selector) did not find, so a
tumbling window of one NaN key fired twice (1 and 1 instead of 2), also for a tuple key such
as ``(1, nan)`` and for sliding and session windows. The restored keys are now made
canonical (as a reduce's are), also when a RocksDB snapshot is restored into the heap.
"""

from __future__ import annotations

import pickle
from collections import Counter

import pytest

from raystream.checkpoint import HeapStateBackend, RocksDBStateBackend
from raystream.engine.partitioners import KeySelector
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_operator import REDUCE, WindowOperator
from raystream.operators.windows import (
    EventTimeSessionWindows,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)


def nan() -> float:
    """A new NaN object, as a record unpickled from a channel carries one."""
    return pickle.loads(pickle.dumps(float("nan")))


def add(a: dict, b: dict) -> dict:
    return {**a, "v": a["v"] + b["v"]}


def batch(ts: int) -> list:
    return [{"k": nan(), "v": 1, "ts": ts}, {"k": (1, nan()), "v": 1, "ts": ts}, {"k": "a", "v": 1, "ts": ts}]


ASSIGNERS = [(TumblingEventTimeWindows.of(1000), 1), (SlidingEventTimeWindows.of(1000, 500), 2),
             (EventTimeSessionWindows.with_gap(100), 1)]
BACKENDS = [(HeapStateBackend, HeapStateBackend), (RocksDBStateBackend, RocksDBStateBackend),
            (RocksDBStateBackend, HeapStateBackend)]


@pytest.mark.parametrize("assigner,windows", ASSIGNERS, ids=["tumbling", "sliding", "session"])
@pytest.mark.parametrize("before,after", BACKENDS, ids=["heap", "rocksdb", "rocksdb-to-heap"])
def test_a_restored_window_of_a_nan_key_gets_the_records_after_the_restore(assigner, windows, before, after):
    def make() -> WindowOperator:
        return WindowOperator(KeySelector("k").key_of, assigner, REDUCE, add, timestamp_assigner=TimestampAssigner(column="ts"))

    h = OperatorHarness(make(), state_backend=before())
    h.process(batch(0))
    snap = h.snapshot()
    h2 = OperatorHarness(make(), restore=[snap], state_backend=after())
    h2.process(batch(1))
    h2.advance_watermark(5000)
    got = Counter((repr(r["k"]), r["v"]) for r in h2.records())
    assert got == Counter({("nan", 2): windows, ("(1, nan)", 2): windows, ("'a'", 2): windows})
