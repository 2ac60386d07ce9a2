"""A job master from the driver's pool takes the next job while the last one's commit still
runs (the job was cancelled, or failed for good, while a completed checkpoint's commit was slow).

The commit of a completed checkpoint goes on after its job ended (it is committed output), and
the code completing that checkpoint acts on the master's state of the job. Before the fix the
next job's start replaced that state under it: the old commit's end counted down the new job's
checkpoint completions, so the new job waited for them forever at its end and never finished
(on Ray: a job started right after cancelling one with a slow sink commit hung, its records all
processed); and a commit reaching its committers after the new job started committed the old
job's output into the new job's sinks (a ``collect()`` result holding the other job's records).
Now the master starts the next job once the last one's checkpoint completions have ended.

Runs two jobs on one in-process master (what the pool does with a Ray actor).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import cloudpickle
import pytest

import raystream as rs
from raystream.engine.connectors import Committer, Sink, SinkWriter
from raystream.engine.errors import JobCancelled
from raystream.engine.graph import ship
from raystream.engine.local_runtime import LocalExecutorRuntime, _end_other_tasks
from raystream.engine.master import JobMaster
from raystream.engine.observability import NullMetricsBackend
from raystream.engine.state_backend import default_state_backend
from raystream.operators.sinks import collected_records
from tests.integration.gated import generate


class _Writer(SinkWriter):
    def __init__(self) -> None:
        self.records: list = []

    def write(self, batch: Any) -> None:
        self.records.extend(batch.records())

    def prepare_commit(self, checkpoint_id: int | None) -> list:
        out, self.records = self.records, []
        return [out] if out else []


class _HeldCommitter(Committer):
    """Commits once ``release`` exists; says when a commit started (``<release>.started``)."""

    def __init__(self, release: str) -> None:
        self.release = release

    def commit(self, committables: list) -> None:
        open(self.release + ".started", "w").close()
        while not os.path.exists(self.release):
            time.sleep(0.01)

    def result(self) -> None:
        return None


class HeldSink(Sink):
    """A sink whose commits wait until the test releases them."""

    def __init__(self, release: str) -> None:
        self.release = release

    def create_writer(self, ctx: Any) -> SinkWriter:
        return _Writer()

    def create_committer(self) -> Committer:
        return _HeldCommitter(self.release)


async def _until(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _submit(master: JobMaster, env: rs.StreamEnvironment, name: str) -> asyncio.Future:
    config = env._job_config(name)
    config.state_backend = config.state_backend or default_state_backend()
    config.reuse_workers = False
    return asyncio.ensure_future(master.run(ship(env.get_job_graph(), config), cloudpickle.dumps(config), name, None))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_the_next_job_on_a_master_waits_for_the_last_ones_commit(tmp_path, parallelism):
    release, gate = str(tmp_path / "release"), str(tmp_path / "gate")
    first = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    first.enable_checkpointing(20, checkpoint_dir=str(tmp_path / "chk"))
    generate(first, lambda i: i, count=1000, rate=None, batch_size=10, gate=str(tmp_path / "never")).uid("src") \
        .sink_to(HeldSink(release)).uid("held")
    second = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    second.enable_checkpointing(20, checkpoint_dir=str(tmp_path / "chk"))
    generate(second, lambda i: -i, count=100, rate=None, batch_size=10, gate=gate, pause_at=50).uid("src") \
        .collect()

    async def main() -> dict:
        runtime = LocalExecutorRuntime()
        master = JobMaster(runtime, metrics_backend=NullMetricsBackend())
        runtime.master, runtime.loop = master, asyncio.get_running_loop()
        try:
            job = _submit(master, first, "first")
            await _until(lambda: os.path.exists(release + ".started"), "a commit of the first job")
            await master.cancel("first")  # while that commit is held
            with pytest.raises(JobCancelled):
                await job
            job = _submit(master, second, "second")  # the pool lends the master again
            await asyncio.sleep(0)  # (the run starts up to its first wait)
            open(release, "w").close()  # the first job's commit ends...
            open(gate, "w").close()  # ...and the second job runs to its end
            return await asyncio.wait_for(job, 60)
        finally:
            await runtime.join_tasks()
            await _end_other_tasks()

    loop = asyncio.new_event_loop()
    try:
        result = loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    got = sorted(r for batches in result["results"].values() for r in collected_records(batches))
    assert got == sorted(-i for i in range(100))  # the second job's records, and only them
