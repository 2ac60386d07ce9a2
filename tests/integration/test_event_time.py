"""Event time on a real local Ray: windows (vectorized and record API) vs a group-by
reference at parallelism 1 and 2, late data side output, keyed timers."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import raystream as rs
from raystream.operators.functions import KeyedProcessFunction, OutputTag
from raystream.operators.time import WatermarkStrategy
from raystream.operators.windows import TumblingEventTimeWindows


def _data(tmp_path, n=20_000):
    keys = [f"k{(i * 7919) % 37:02d}" for i in range(n)]
    t = pa.table({"key": keys, "value": pa.array([i % 1000 for i in range(n)], pa.int64()),
                  "ts": pa.array([1000 + i // 10 for i in range(n)], pa.int64())})
    pq.write_table(t, tmp_path / "ev.parquet", row_group_size=4096)
    ref = t.append_column("window_start", pa.array([(1000 + i // 10) // 100 * 100 for i in range(n)], pa.int64()))
    g = ref.group_by(["key", "window_start"]).aggregate([("value", "count"), ("value", "sum")])
    return str(tmp_path / "ev.parquet"), sorted(zip(*(g.column(c).to_pylist() for c in ["key", "window_start", "value_count", "value_sum"])))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_vectorized_and_record_windows_equal_reference(tmp_path, parallelism):
    path, expected = _data(tmp_path)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    for record_api in (False, True):
        env = rs.StreamEnvironment(parallelism=parallelism)
        stream = env.read_parquet(path, batch_size=2048).assign_timestamps_and_watermarks(strategy).key_by("key")
        win = stream.window(TumblingEventTimeWindows.of(100))
        if record_api:
            win = win.trigger(TumblingEventTimeWindows.of(100).default_trigger())  # forces the record path
        out = win.aggregate(n=("value", "count"), total=("value", "sum")).execute_and_collect()
        got = sorted((r["key"], r["window_start"], r["n"], r["total"]) for r in out)
        assert got == expected, f"record_api={record_api}"


class Quiet(KeyedProcessFunction):
    def process_element(self, value, ctx):
        ctx.timer_service().register_event_time_timer(ctx.timestamp + 50)

    def on_timer(self, timestamp, ctx):
        yield (ctx.get_current_key(), timestamp)


def test_late_side_output_and_timers_on_ray():
    rows = [{"key": "a", "ts": t} for t in (10, 20, 300, 30, 400)]  # 30 arrives after wm 299
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    env = rs.StreamEnvironment(parallelism=2)
    src = env.from_collection(rows, batch_size=1).set_parallelism(1).assign_timestamps_and_watermarks(strategy)
    late = OutputTag("late")
    windows = (src.key_by("key").window(TumblingEventTimeWindows.of(100)).side_output_late_data(late)
               .reduce(lambda a, b: {"key": a["key"], "ts": max(a["ts"], b["ts"])}))
    windows.get_side_output(late).map(lambda r: ("late", r["ts"])).collect()
    src.key_by("key").process(Quiet()).map(lambda r: ("timer", r[1])).collect()
    result = env.execute()
    got = sorted(r for batches in result.sink_results.values() for r in _records(batches))
    assert ("late", 30) in got
    assert [r for r in got if r[0] == "timer"] == [("timer", t + 50) for t in (10, 20, 30, 300, 400)]


def _records(batches):
    from raystream.operators.sinks import collected_records

    return collected_records(batches)


@pytest.mark.parametrize("path_kind", ["columnar", "records"])
def test_windows_over_a_parquet_timestamp_column_in_nanoseconds(tmp_path, path_kind):
    """pandas writes event times as timestamp[ns]: the vectorized window failed on the first
    value off the millisecond (Arrow: 'would lose data'), and once a map had made the batch
    Python records, the window failed on the datetimes ('cannot extract an event timestamp')."""
    n = 6_000
    ns = [1_700_000_000_000_000_000 + i * 333_333 for i in range(n)]  # 0.33 ms apart: sub-ms parts
    t = pa.table({"key": [f"k{i % 5}" for i in range(n)], "ts": pa.array(ns, pa.timestamp("ns", tz="UTC"))})
    pq.write_table(t, tmp_path / "ev.parquet", row_group_size=1000)
    expected = sorted(
        (k, s, c)
        for (k, s), c in __import__("collections").Counter((f"k{i % 5}", v // 1_000_000 // 100 * 100) for i, v in enumerate(ns)).items()
    )
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    env = rs.StreamEnvironment(parallelism=2)
    stream = env.read_parquet(str(tmp_path / "ev.parquet"), batch_size=1000).assign_timestamps_and_watermarks(strategy)
    if path_kind == "records":
        stream = stream.map(lambda r: {"key": r["key"], "ts": r["ts"]})
    out = stream.key_by("key").window(TumblingEventTimeWindows.of(100)).aggregate(n=("key", "count")).execute_and_collect()
    assert sorted((r["key"], r["window_start"], r["n"]) for r in out) == expected
