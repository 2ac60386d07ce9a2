"""A task that has nothing to do sends what its output buffers hold at once instead of
holding it until the buffer timeout (issue 13: on every hop of a low-rate pipeline the
buffer timeout was added to the latency). Batches still form while a task is busy.

The job below has a buffer timeout of ten minutes, an unbounded rate-limited source and
two hops (source -> map -> sink, three tasks): the first record reaches the sink only if
the idle source and the idle map task flush. The sink then fails the job on purpose."""

from __future__ import annotations

from typing import Any

import pytest

import raystream as rs
from raystream.engine.config import JobConfig, TaskConfig
from raystream.engine.connectors import Sink, SinkWriter
from raystream.engine.errors import JobFailed
from raystream.engine.local_runtime import run_in_process
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch

ARRIVED = "a record reached the sink before any buffer timeout"


class _FailOnFirstRecord(SinkWriter[Any]):
    def write(self, batch: Batch) -> None:
        if len(batch):
            raise RuntimeError(ARRIVED)


class _FailOnFirstRecordSink(Sink[Any]):
    def create_writer(self, ctx: OperatorContext) -> SinkWriter[Any]:
        return _FailOnFirstRecord()


def test_idle_tasks_flush_their_output_before_the_buffer_timeout() -> None:
    env = rs.StreamEnvironment(parallelism=1)
    (env.generate(lambda i: i, rate=50, batch_size=10)  # unbounded: never ends on its own
     .set_parallelism(1)
     .map(lambda i: i + 1).set_parallelism(2)  # its own task (another parallelism)
     .sink_to(_FailOnFirstRecordSink()).set_parallelism(1))
    config = JobConfig(name="idle-flush", task=TaskConfig(flush_ms=600_000))
    with pytest.raises(JobFailed) as info:
        run_in_process(env.get_job_graph(), config, timeout_s=60)
    assert ARRIVED in str(info.value)
