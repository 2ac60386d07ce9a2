"""A vectorized window aggregate over dict records of which some lack the field it reads:
at parallelism 1 the records of other shapes in one batch were counted as nulls, silently
(key "b" got n=0), at parallelism 2 the job failed with only "column 'v' is not in the
batch". Both now fail naming the record and the remedy, as the keyed ``aggregate`` does."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.operators.time import WatermarkStrategy
from raystream.operators.windows import TumblingEventTimeWindows

RECORDS = [{"k": "a", "ts": 1, "v": 1}, {"k": "a", "ts": 2, "w": 2}, {"k": "b", "ts": 3, "w": 3}]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_record_without_the_field_fails_naming_it(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    stream = env.from_collection(RECORDS).map(lambda r: r).assign_timestamps_and_watermarks(
        WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts"))
    stream.key_by("k").window(TumblingEventTimeWindows.of(10)).aggregate(n=("v", "count")).collect()
    with pytest.raises(rs.JobFailed) as info:
        env.execute_and_collect("window-missing-field")
    text = str(info.value)
    assert "reads field 'v', and record" in text and "'w': 2" in text, text
    assert "give every record the field (None for no value), or filter first" in text


@pytest.mark.parametrize("parallelism", [1, 2])
def test_records_with_the_field_none_are_counted_as_nulls(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    records = [{**r, "v": r.get("v")} for r in RECORDS]
    stream = env.from_collection(records).map(lambda r: r).assign_timestamps_and_watermarks(
        WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts"))
    stream.key_by("k").window(TumblingEventTimeWindows.of(10)).aggregate(n=("v", "count")).collect()
    out = env.execute_and_collect("window-none-field")
    assert sorted((r["k"], r["n"]) for r in out) == [("a", 1), ("b", 0)]
