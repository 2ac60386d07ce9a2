"""NaN keys of windows keyed by a column name or index.

The key selector gives keyed operators canonical keys (one float object per NaN, also inside
tuples), but the window operator's batch paths (tumbling fast path, panes) read the keys with
a raw ``itemgetter`` of the column, and the window combiner took an Arrow key column's
values as they came: every NaN was a new float object and a key of its own, so
``key_by("k").window(TumblingEventTimeWindows.of(1000)).reduce(...)`` over three records of
``k = nan`` gave three windows of 1 (``.aggregate(n=("v", "sum"))`` too), at parallelism 1
and 2; a lambda key gave one window of 3. The batch paths now make their keys canonical.
"""

from __future__ import annotations

import pickle
from collections import Counter

import pyarrow as pa
import pytest

import raystream as rs
from raystream.checkpoint.descriptors import AggregateFunction
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner, WatermarkStrategy
from raystream.operators.window_combiner import WindowAggregateCombiner
from raystream.operators.window_operator import REDUCE, WindowOperator
from raystream.operators.windows import TumblingEventTimeWindows


def nan() -> float:
    """A new NaN object, as a record unpickled from a channel carries one."""
    return pickle.loads(pickle.dumps(float("nan")))


def records() -> list:
    return ([{"k": nan(), "v": 1, "ts": i} for i in range(3)]
            + [{"k": ("a", nan()), "v": 1, "ts": i} for i in range(3)]
            + [{"k": "b", "v": 1, "ts": 5}])


def reference(recs: list) -> Counter:
    """Window sums per key name (one NaN per key: repr names them)."""
    return Counter(Counter(repr(r["k"]) for r in recs).items())


def stream(env: rs.StreamEnvironment, recs: list):
    return env.from_collection(recs).assign_timestamps_and_watermarks(
        WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r["ts"]))


def add(a: dict, b: dict) -> dict:
    return {**a, "v": a["v"] + b["v"]}


def test_window_operator_on_a_column_key_folds_nan_keys_into_one_window():
    op = WindowOperator(KeySelector("k").key_of, TumblingEventTimeWindows.of(1000), REDUCE, add,
                        timestamp_assigner=TimestampAssigner(column="ts"))
    h = OperatorHarness(op)
    recs = records()
    h.process(recs[:2])
    h.process(recs[2:])
    h.advance_watermark(5000)
    assert Counter((repr(r["k"]), r["v"]) for r in h.records()) == reference(recs)


class Count(AggregateFunction):
    def create_accumulator(self):
        return 0

    def add(self, value, acc):
        return acc + 1

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return a + b


def test_window_combiner_on_an_arrow_key_column_sends_one_partial_per_nan_key():
    comb = WindowAggregateCombiner(KeySelector("k"), TumblingEventTimeWindows.of(1000), Count(),
                                   TimestampAssigner(column="ts"))
    h = OperatorHarness(comb)
    table = pa.table({"k": [nan(), nan(), nan(), 1.5], "v": [1, 1, 1, 1], "ts": [0, 1, 2, 3]})
    h.process(Batch.of_arrow(table))
    h.advance_watermark(5000)
    partials = [r for r in h.records()]
    assert len(partials) == 2, partials


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("parallelism", [1, 2])
def test_column_keyed_window_reduce_and_aggregate_of_nan_keys(parallelism):
    recs = records()
    env = rs.StreamEnvironment(parallelism=parallelism)
    out = stream(env, recs).key_by("k").window(TumblingEventTimeWindows.of(1000)).reduce(add).execute_and_collect()
    assert Counter((repr(r["k"]), r["v"]) for r in out) == reference(recs)
    env = rs.StreamEnvironment(parallelism=parallelism)
    out = stream(env, recs).key_by("k").window(TumblingEventTimeWindows.of(1000)).aggregate(
        n=("v", "sum")).execute_and_collect()
    assert Counter((repr(r["k"]), r["n"]) for r in out) == reference(recs)
