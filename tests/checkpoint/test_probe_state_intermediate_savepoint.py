"""A savepoint taken while the job runs on (``client.savepoint()``, not a stop), then the job
cancelled and a new job started from that savepoint (Flink's cancel-with-savepoint workflow):
the two jobs' committed files together hold every record exactly once.

The intermediate savepoint commits nothing (as in Flink since 1.15); what its sinks prepared at
its barrier must then be committed by a job restored from it, as Flink's committer commits the
committables in its restored state. Before the fix the savepoint recorded none of them: the
data between the last completed checkpoint and the savepoint barrier was lost (half of the
records here, no checkpoint having completed)."""

from __future__ import annotations

import asyncio
import glob
import json

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobCancelled
from raystream.engine.local_runtime import run_in_process
from tests.integration.gated import generate, wait_until_paused

N = 600


def job(tmp_path, gate: str | None, parallelism: int) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    # no checkpoint completes during the test: the savepoint alone covers the first half
    env.enable_checkpointing(3_600_000, checkpoint_dir=str(tmp_path / "chk"), timeout_ms=60_000)
    generate(env, lambda i: {"i": i}, count=N, rate=None, batch_size=25, gate=gate).uid("src") \
        .map(lambda r: r).uid("id").write_jsonl(str(tmp_path / "out"))
    return env


def written(tmp_path) -> list[int]:
    out = []
    for name in glob.glob(str(tmp_path / "out" / "part-*")):
        with open(name) as f:
            out.extend(json.loads(line)["i"] for line in f)
    return sorted(out)


@pytest.mark.parametrize("before, after", [(1, 1), (2, 1), (1, 2)])
def test_cancel_after_an_intermediate_savepoint_then_resume_loses_nothing(tmp_path, before, after):
    gate = str(tmp_path / "gate")
    taken: dict = {}

    def savepoint_then_cancel(master, runtime) -> None:
        wait_until_paused(gate, before)
        call = master.trigger_savepoint(str(tmp_path / "sp"))
        taken["sp"] = asyncio.run_coroutine_threadsafe(call, runtime.loop).result(60)
        asyncio.run_coroutine_threadsafe(master.cancel(), runtime.loop).result(60)

    env = job(tmp_path, gate, before)
    with pytest.raises(JobCancelled):
        run_in_process(env.get_job_graph(), JobConfig(name="first", checkpoint=env.checkpoint_config),
                       on_start=savepoint_then_cancel, timeout_s=120)
    assert written(tmp_path) == [], "an intermediate savepoint commits nothing"

    env = job(tmp_path, None, after)
    run_in_process(env.get_job_graph(), JobConfig(name="second", checkpoint=env.checkpoint_config,
                                                  from_savepoint=taken["sp"]), timeout_s=120)
    got = written(tmp_path)
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} records written twice"
    assert got == list(range(N)), f"{N - len(got)} records lost"
