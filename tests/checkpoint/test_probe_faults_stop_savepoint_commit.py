"""A stop-with-savepoint is written before its commit; when that commit then fails (the job
fails, naming the savepoint: as Flink's FLINK-26783 it is not restarted from the checkpoint
before the savepoint, which would replay what the commit may have written) the savepoint stays
on disk. A job resumed from it must neither lose nor repeat a record.

Before the fix a stop-with-savepoint recorded no committables (its output was to be committed
right after it was written): the output its sinks had prepared since the last completed
checkpoint was in no committed file and in no savepoint, and the sources of a job resumed from
it started after that output. Here no checkpoint completes, so the first half of the records
was lost. The same savepoint is left by a stop whose master dies between the write and the
commit. Runs in process (``run_in_process``), the source paused halfway by a gate.
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow.fs as pafs
import pytest

import raystream as rs
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.engine.config import JobConfig
from raystream.engine.errors import CheckpointError, JobFailed
from raystream.engine.local_runtime import run_in_process
from tests.checkpoint.test_probe_state_intermediate_savepoint import written
from tests.checkpoint.test_probe_state_stop_savepoint_failures import N, _JsonLinesOn, stop
from tests.integration.gated import generate, wait_until_paused


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
        try:
            outcome["savepoint"] = stop(master, runtime, sp)
        except CheckpointError as exc:
            outcome["error"] = str(exc)

    env = job(tmp_path, gate, parallelism, sink_fs)
    # the job is not restarted (a restart would replay what the commit may have written) and
    # fails naming the savepoint to resume from
    with pytest.raises(JobFailed, match="start it from the savepoint"):
        run_in_process(env.get_job_graph(), JobConfig(name="stop-commit-fails", checkpoint=env.checkpoint_config),
                       on_start=drill, timeout_s=120)
    assert "committing its output did not finish" in outcome.get("error", ""), outcome
    assert len(written(tmp_path)) < N // 2  # one sink's commit failed (at p=2 the other's may be done)
    assert os.path.exists(os.path.join(sp, "_metadata"))  # the stop's savepoint was written

    env = job(tmp_path, None, parallelism)
    run_in_process(env.get_job_graph(), JobConfig(name="resumed", checkpoint=env.checkpoint_config, from_savepoint=sp),
                   timeout_s=120)
    got = written(tmp_path)
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} records written twice"
    assert got == list(range(N)), f"{N - len(set(got))} records lost"
