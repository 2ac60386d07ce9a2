"""``tolerable_failures`` (Flink's ``setTolerableCheckpointFailureNumber``): more consecutive
checkpoint failures than it allows fail the job *over*, under its restart strategy, as in Flink
(whose checkpoint failure manager calls ``failGlobal``); savepoints a user asked for are not
checkpoint failures.

Before the fix the job failed for good at once, whatever its restart strategy (here
``fixed_delay(2, 0)``): a transient storage fault ended a job Flink would have restarted. And a
savepoint that failed (a path that already holds one) counted as a checkpoint failure, so with
``tolerable_failures=1`` a single failed checkpoint after it failed the job.
"""

from __future__ import annotations

from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint import CheckpointStorage
from raystream.checkpoint.coordinator import CheckpointConfig, CheckpointCoordinator
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.engine.errors import CheckpointError
from raystream.engine.local_runtime import run_in_process
from tests.checkpoint.test_probe_state_intermediate_savepoint import written
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

N = 400


def test_failed_savepoints_are_not_checkpoint_failures(tmp_path):
    config = CheckpointConfig(100, checkpoint_dir=str(tmp_path), tolerable_failures=1)
    coord = CheckpointCoordinator(config, "job", [(0, 0)], CheckpointStorage(str(tmp_path)))
    coord.abort(coord.trigger(savepoint=str(tmp_path / "taken")), "a savepoint already exists")
    coord.abort(coord.trigger(), "timed out")  # one checkpoint failure: tolerated
    with pytest.raises(CheckpointError, match="2 consecutive checkpoint failures exceed tolerable_failures=1"):
        coord.abort(coord.trigger(), "timed out")
    coord.reset_for_restart()  # the restarted job counts anew
    coord.abort(coord.trigger(), "timed out")


@pytest.mark.parametrize("parallelism", [1, 2])
def test_more_checkpoint_failures_than_tolerable_restart_the_job(tmp_path, parallelism):
    gate = str(tmp_path / "gate")
    # the first _metadata write fails: one checkpoint fails, more than tolerable_failures=0
    fs = faulty_filesystem(rules=[FaultRule("write_metadata", fail=True, times=1)])
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    env.enable_checkpointing(50, checkpoint_dir=(fs, str(tmp_path / "chk")), timeout_ms=60_000, tolerable_failures=0)
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(2, 0))
    generate(env, lambda i: {"i": i}, count=N, rate=None, batch_size=20, gate=gate).uid("src") \
        .key_by(lambda r: r["i"] % 5).map(lambda r: r).uid("id").write_jsonl(str(tmp_path / "out"))
    seen: dict[str, Any] = {}

    def drill(master, runtime) -> None:
        wait_until_paused(gate, parallelism)
        # (before the fix the job failed instead: the status ends FAILED)
        wait_for(lambda: master.restarts >= 1 or master.status == "FAILED", "a restart (or the job's end)", 60)
        seen["restarts"], seen["status"] = master.restarts, master.status
        open(gate, "w").close()

    result = run_in_process(env.get_job_graph(), env._job_config("tolerable"), on_start=drill, timeout_s=120)
    assert seen == {"restarts": 1, "status": seen["status"]} and seen["status"] != "FAILED", seen
    assert result["metrics"]["restarts"] == 1
    assert written(tmp_path) == list(range(N))
