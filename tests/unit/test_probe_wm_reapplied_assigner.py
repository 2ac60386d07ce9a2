"""An event-time window after an operator that moved or dropped the timestamp field.

Records keep their timestamps through a ``map`` (as in Flink). After ``map_batches`` (a new
table: its records carry no timestamps) the window applies the upstream
``assign_timestamps_and_watermarks``'s assigner again to the records it gets, and failed with
only ``cannot extract an event timestamp ...``, no word of where that assigner came from nor
what to do. Now the error names the assigner's ``assign_timestamps_and_watermarks`` (by its strategy)
and the remedies: ``window(...).with_timestamp(fn)``,
assigning timestamps after the map, or keeping the field. A record that the
``assign_timestamps_and_watermarks`` itself cannot read keeps its plain error.
"""

from __future__ import annotations

import re

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobFailed
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.windows import TumblingEventTimeWindows

EVENTS = [{"ts": 1_000, "k": "a", "v": 1}, {"ts": 7_000, "k": "a", "v": 2}, {"ts": 8_000, "k": "a", "v": 4}]
STAMPED = rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
REMEDIES = (r"window\(\.\.\.\)\.with_timestamp\(fn or 'column'\)\), call assign_timestamps_and_watermarks\(\.\.\.\) after "
            r"the operator that changed the records, or keep the field in that operator's output")


def run(build, parallelism: int = 1) -> list:
    env = rs.StreamEnvironment(parallelism=parallelism)
    build(env).collect()
    [batches] = run_in_process(env.get_job_graph(), JobConfig(name="reapplied-assigner"), timeout_s=120)["results"].values()
    return sorted(collected_records(batches))


def summed(stream, with_timestamp=None):
    windowed = stream.key_by(lambda r: r[0]).window(TumblingEventTimeWindows.of(5000))
    if with_timestamp is not None:
        windowed = windowed.with_timestamp(with_timestamp)
    return windowed.reduce(lambda a, b: (a[0], a[1] + b[1]))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_map_that_drops_the_field_keeps_the_records_timestamps(parallelism):
    """As in Flink, a record keeps the timestamp it was given through a map that drops the
    field it came from (and over the channel to the window at p=2): nothing to remedy."""
    def build(env):
        return summed(env.from_collection(EVENTS).assign_timestamps_and_watermarks(STAMPED).map(lambda r: (r["k"], r["v"])))

    assert run(build, parallelism) == [("a", 1), ("a", 6)]


def test_after_an_assign_operator_the_message_names_its_strategy():
    """map_batches gives its records no timestamps (a new table): the window applies the
    assigner again, and the message names that assign_timestamps_and_watermarks."""
    def build(env):
        stamped = env.from_collection(EVENTS).map(lambda r: r).assign_timestamps_and_watermarks(strategy)
        moved = stamped.map_batches(lambda rb: rb.drop_columns(["ts"]))
        return moved.key_by("k").window(TumblingEventTimeWindows.of(5000)).reduce(lambda x, y: {**x, "v": x["v"] + y["v"]})

    strategy = rs.WatermarkStrategy.for_bounded_out_of_orderness(250).with_timestamp_column("ts")
    with pytest.raises(JobFailed, match=r"timestamp assigner of assign_timestamps_and_watermarks\(WatermarkStrategy\(bound_ms=250, "
                       r"assigner=TimestampAssigner\(column='ts'\), idleness_ms=None\)\) upstream to them again") as info:
        run(build)
    message = str(info.value)
    assert "operator 'window_reduce'" in message
    assert re.search(REMEDIES, message), message


def test_an_arrow_batch_without_the_column_gets_the_remedies_too():
    def build(env):
        stamped = env.from_collection(EVENTS).assign_timestamps_and_watermarks(STAMPED)
        moved = stamped.map_batches(lambda rb: rb.drop_columns(["ts"]))
        return moved.key_by("k").window(TumblingEventTimeWindows.of(5000)).reduce(lambda a, b: {**a, "v": a["v"] + b["v"]})

    with pytest.raises(JobFailed, match=r"timestamp column 'ts' is not in the batch .*upstream to them again") as info:
        run(build)
    assert re.search(REMEDIES, str(info.value))


def test_the_remedy_with_timestamp_works_and_keeps_the_plain_error_of_the_first_application():
    def build(env):
        moved = env.from_collection(EVENTS).assign_timestamps_and_watermarks(STAMPED).map(lambda r: (r["k"], r["v"], r["ts"]))
        return summed(moved, with_timestamp=lambda r: r[2]).map(lambda r: (r[0], r[1]))

    assert run(build) == [("a", 1), ("a", 6)]

    def bad(env):  # the assign itself cannot read it: not an assigner applied again
        return summed(env.from_collection([("a", 1)]).assign_timestamps_and_watermarks(STAMPED))

    with pytest.raises(JobFailed, match=r"cannot extract an event timestamp") as info:
        run(bad)
    assert "again" not in str(info.value)
