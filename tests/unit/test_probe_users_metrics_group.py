"""PyFlink's ``runtime_context.get_metrics_group().counter("n")`` in ``open`` fails the job
saying raystream has no user metrics and what there is instead. Before: ``AttributeError:
'RuntimeContext' object has no attribute 'get_metrics_group'``."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobFailed
from raystream.engine.local_runtime import run_in_process


class Counted(rs.MapFunction):
    def open(self, runtime_context):
        self.counter = runtime_context.get_metrics_group().counter("my_counter")

    def map(self, value):
        self.counter.inc()
        return value


class CountedKeyed(rs.KeyedProcessFunction):
    def open(self, runtime_context):
        self.counter = runtime_context.get_metrics_group().add_group("g").counter("n")

    def process_element(self, value, ctx):
        yield value


@pytest.mark.parametrize("build", [
    lambda s: s.map(Counted()),
    lambda s: s.key_by(lambda v: v).process(CountedKeyed()),
], ids=["map", "keyed_process"])
def test_get_metrics_group_says_there_are_no_user_metrics_and_what_there_is(build):
    env = rs.StreamEnvironment()
    build(env.from_collection([1, 2])).collect()
    with pytest.raises(JobFailed) as err:
        run_in_process(env.get_job_graph(), JobConfig(name="metrics-group"), timeout_s=120)
    message = str(err.value)
    assert "failed in open(): ConfigError: get_metrics_group() (PyFlink's user metrics): raystream has no " \
           "user-defined metrics" in message
    assert "JobClient.metrics()" in message and "side output" in message
