"""A timestamp assigner written as Flink writes its lambdas, ``(event, record_timestamp) ->
timestamp`` (Java's ``SerializableTimestampAssigner``, PyFlink's ``extract_timestamp``
signature), is taken by ``with_timestamp_assigner``. Before, it was called with the record
alone and every record failed the job: ``cannot extract an event timestamp ... missing 1
required positional argument``."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobFailed
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.time import WatermarkStrategy

EVENTS = [{"ts": 1, "k": "a"}, {"ts": 5, "k": "a"}, {"ts": 12, "k": "a"}, {"ts": 3, "k": "b"}]


class Stamped(rs.ProcessFunction):
    def process_element(self, value, ctx):
        yield value["ts"], ctx.timestamp


def _run(env: rs.StreamEnvironment) -> list:
    result = run_in_process(env.get_job_graph(), JobConfig(name="two-arg-assigner"), timeout_s=120)
    return sorted(r for batches in result["results"].values() for r in collected_records(batches))


def test_a_two_argument_lambda_assigns_the_timestamps_windows_use():
    env = rs.StreamEnvironment(parallelism=1)
    ws = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda event, ts: event["ts"])
    (env.from_collection(EVENTS).assign_timestamps_and_watermarks(ws).key_by("k")
        .window(rs.TumblingEventTimeWindows.of(10)).reduce(lambda a, b: {"ts": a["ts"] + b["ts"], "k": a["k"]})
        .map(lambda r: (r["k"], r["ts"])).collect())
    assert _run(env) == [("a", 6), ("a", 12), ("b", 3)]


def test_record_timestamp_is_the_timestamp_the_record_has_so_far():
    env = rs.StreamEnvironment(parallelism=2)
    first = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e: e["ts"])
    later = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda event, record_timestamp: record_timestamp + 1000)
    (env.from_collection(EVENTS).assign_timestamps_and_watermarks(first).map(lambda e: e)
        .assign_timestamps_and_watermarks(later).process(Stamped()).collect())
    assert _run(env) == [(1, 1001), (3, 1003), (5, 1005), (12, 1012)]


def test_a_failing_two_argument_assigner_is_named_with_the_record():
    def by_time(event, record_timestamp):
        return event["time"]

    env = rs.StreamEnvironment()
    ws = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(by_time)
    env.from_collection(EVENTS[:1]).assign_timestamps_and_watermarks(ws).collect()
    with pytest.raises(JobFailed, match=r"TimestampAssigner\(fn='by_time'\)\) from record \{'ts': 1, 'k': 'a'\}: KeyError"):
        _run(env)


def test_one_argument_and_defaulted_functions_get_the_record_alone():
    ws = WatermarkStrategy.for_monotonous_timestamps()
    assert ws.with_timestamp_assigner(lambda e, unit=1: e["ts"] * unit).assigner.extract({"ts": 4}) == 4
    assert ws.with_timestamp_assigner(lambda *a: a[0]["ts"]).assigner.extract({"ts": 6}) == 6
