"""NaN keys of the vectorized window aggregate over Arrow batches (e.g. ``read_parquet``).

Arrow's group-by tells NaNs apart by their bits, so a float key column holding ``nan`` and
``-nan`` (or another payload: what ``inf - inf`` gives on x86, what other writers store)
gave two windows for the one NaN key that routing, keyed state and every other operator
know since 540d53f: ``key_by("k").window(TumblingEventTimeWindows.of(1000)).aggregate(
n=("v", "sum"))`` over a parquet file of ``nan, -nan, nan`` gave two rows (2 and 1) at
parallelism 1 and 2. The window aggregate and its combiner now make every NaN of the key
column the canonical one before grouping: one row of 3.
"""

from __future__ import annotations

import struct

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import raystream as rs
from raystream.engine.records import Batch
from raystream.operators.testing import OperatorHarness
from raystream.operators.window_combiner import VectorWindowCombiner
from raystream.operators.window_fast import VectorWindowAggregateOperator
from raystream.operators.windows import SlidingEventTimeWindows, TumblingEventTimeWindows

SPECS = {"n": ("v", "sum")}


def neg_nan() -> float:
    return struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000000))[0]


def other_nan() -> float:
    return struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]


def table(keys: list) -> pa.Table:
    return pa.table({"k": pa.array(keys, pa.float64()), "v": [1] * len(keys), "ts": list(range(len(keys)))})


def sums(rows: list) -> list:
    return sorted((repr(r["k"]), r["window_start"], r["n"]) for r in rows)


@pytest.mark.parametrize("assigner,starts", [(TumblingEventTimeWindows.of(1000), [0]),
                                             (SlidingEventTimeWindows.of(1000, 500), [-500, 0])], ids=["tumbling", "sliding"])
def test_nan_bit_patterns_are_one_key_of_the_window_aggregate(assigner, starts):
    h = OperatorHarness(VectorWindowAggregateOperator("k", "ts", assigner, SPECS))
    h.process(Batch.of_arrow(table([float("nan"), neg_nan(), 1.0])))
    h.process(Batch.of_arrow(table([other_nan(), None])))
    h.advance_watermark(5000)
    ref = [(k, s, n) for k, n in (("nan", 3), ("1.0", 1), ("None", 1)) for s in starts]
    assert sums(h.records()) == sorted(ref)


def test_the_combiner_sends_one_partial_per_nan_key():
    h = OperatorHarness(VectorWindowCombiner("k", "ts", TumblingEventTimeWindows.of(1000), SPECS))
    h.process(Batch.of_arrow(table([float("nan"), neg_nan(), other_nan(), 2.5])))
    rows = h.records()
    assert sorted(repr(r["k"]) for r in rows) == ["2.5", "nan"], rows


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("parallelism", [1, 2])
def test_window_aggregate_of_a_parquet_file_with_nan_keys_of_two_signs(parallelism, tmp_path):
    pq.write_table(table([float("nan"), neg_nan(), float("nan"), 1.0]), str(tmp_path / "events.parquet"))
    env = rs.StreamEnvironment(parallelism=parallelism)
    s = env.read_parquet(str(tmp_path / "events.parquet")).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r["ts"]))
    out = s.key_by("k").window(TumblingEventTimeWindows.of(1000)).aggregate(**SPECS).execute_and_collect()
    assert sums(out) == [("1.0", 0, 1), ("nan", 0, 3)]
