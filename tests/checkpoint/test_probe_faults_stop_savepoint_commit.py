"""A stop-with-savepoint is written before its commit; when that commit then fails (the job
restarts and goes on) the savepoint stays on disk. A job resumed from it must neither lose nor
repeat a record.

Before the fix a stop-with-savepoint recorded no committables (its output was to be committed
right after it was written): the output its sinks had prepared since the last completed
checkpoint was in no committed file and in no savepoint, and the sources of a job resumed from
it started after that output. Here no checkpoint completes, so the first half of the records
was lost. The same savepoint is left by a stop whose master dies between the write and the
commit. Runs in process (``run_in_process``), the source paused halfway by a gate.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pyarrow.fs as pafs
import pytest

import raystream as rs
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.engine.config import JobConfig
from raystream.engine.errors import CheckpointError, JobCancelled
from raystream.engine.local_runtime import run_in_process
from tests.checkpoint.test_probe_state_intermediate_savepoint import written
from tests.checkpoint.test_probe_state_stop_savepoint_failures import N, _JsonLinesOn, stop
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for


def job(tmp_path, gate: str | None, parallelism: int, sink_fs: pafs.FileSystem | None = None) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    env.enable_checkpointing(3_600_000, checkpoint_dir=str(tmp_path / "chk"), timeout_ms=60_000)
    stream = generate(env, lambda i: {"i": i}, count=N, rate=None, batch_size=20, gate=gate).uid("src")
    stream.sink_to(_JsonLinesOn(str(tmp_path / "out"), sink_fs or pafs.LocalFileSystem())).uid("sink")
    return env


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_job_resumed_from_the_savepoint_of_a_stop_whose_commit_failed_loses_nothing(tmp_path, parallelism):
    # the first rename of a part file (the stop-with-savepoint's commit) fails
    sink_fs = faulty_filesystem(rules=[FaultRule("move", path_glob="*part-*", fail=True, times=1)], seed=1)
    gate, sp = str(tmp_path / "gate"), str(tmp_path / "sp")
    outcome: dict[str, Any] = {}

    def drill(master, runtime) -> None:
        wait_until_paused(gate, parallelism)
        first_attempt = master.attempt
        try:
            outcome["savepoint"] = stop(master, runtime, sp)
        except CheckpointError as exc:
            outcome["error"] = str(exc)
        # the job restarted (from scratch: no checkpoint completed) and runs on; cancel it
        # before it commits anything (its checkpoint interval is an hour)
        wait_for(lambda: master.attempt > first_attempt and master.status == "RUNNING", "the restarted attempt", 60)
        asyncio.run_coroutine_threadsafe(master.cancel(), runtime.loop).result(60)

    env = job(tmp_path, gate, parallelism, sink_fs)
    with pytest.raises(JobCancelled):
        run_in_process(env.get_job_graph(), JobConfig(name="stop-commit-fails", checkpoint=env.checkpoint_config),
                       on_start=drill, timeout_s=120)
    assert "failed and restarts" in outcome.get("error", ""), outcome
    assert written(tmp_path) == []  # nothing was committed
    assert os.path.exists(os.path.join(sp, "_metadata"))  # the stop's savepoint was written

    env = job(tmp_path, None, parallelism)
    run_in_process(env.get_job_graph(), JobConfig(name="resumed", checkpoint=env.checkpoint_config, from_savepoint=sp),
                   timeout_s=120)
    got = written(tmp_path)
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} records written twice"
    assert got == list(range(N)), f"{N - len(set(got))} records lost"
