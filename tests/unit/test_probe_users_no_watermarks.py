"""PyFlink's ``WatermarkStrategy.no_watermarks()``, as its Kafka and file examples write
``env.from_source(source, WatermarkStrategy.no_watermarks(), "name")``: records without event
timestamps. Before: ``AttributeError: type object 'WatermarkStrategy' has no attribute
'no_watermarks'``."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import ConfigError
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.sources import CollectionSource
from raystream.operators.time import WatermarkStrategy


class Stamped(rs.ProcessFunction):
    def process_element(self, value, ctx):
        yield value, ctx.timestamp


def test_from_source_with_no_watermarks_reads_records_without_timestamps():
    env = rs.StreamEnvironment(parallelism=2)
    stream = env.from_source(CollectionSource([1, 2, 3]), WatermarkStrategy.no_watermarks(), "numbers")
    assert stream.node.name == "numbers"
    stream.process(Stamped()).collect()
    result = run_in_process(env.get_job_graph(), JobConfig(name="no-watermarks"), timeout_s=120)
    assert sorted(r for b in result["results"].values() for r in collected_records(b)) == \
        [(1, None), (2, None), (3, None)]


@pytest.mark.parametrize("call, words", [
    (lambda s: s.with_timestamp_assigner(lambda r: r), "no_watermarks().with_timestamp_assigner(): a strategy without"),
    (lambda s: s.with_timestamp_column("ts"), "no_watermarks().with_timestamp_column()"),
    (lambda s: s.with_idleness(1000), "no_watermarks().with_idleness()"),
    (lambda s: rs.StreamEnvironment().from_collection([1]).assign_timestamps_and_watermarks(s),
     "assign_timestamps_and_watermarks(WatermarkStrategy.no_watermarks()): nothing to assign"),
])
def test_what_cannot_take_no_watermarks_says_so(call, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        call(WatermarkStrategy.no_watermarks())
