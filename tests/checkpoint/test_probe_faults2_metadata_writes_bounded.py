"""Checkpoint storage slower than ``timeout_ms``: the ``_metadata`` writes in flight stay bounded.

A checkpoint that times out while its metadata is written no longer counts as in progress, and
before the fix every timeout let the next checkpoint start and begin a write of its own: with
writes slower than the timeout, writes in flight (and the memory and worker threads they hold,
which the job master's commits wait for) grew without bound, 38 after 8 s with 3 s writes and a
200 ms timeout. Now at most ``max_concurrent + 1`` metadata writes are in flight (as a task's
snapshots handed to its writer); a checkpoint that cannot start within ``timeout_ms`` for them
is recorded as failed (counted toward ``tolerable_failures``) with the reason. Here every write
is held until the test lets them go, so the outcome does not depend on the machine's speed.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from tests.checkpoint.test_probe_state_intermediate_savepoint import written
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

N = 400


class HoldWrites:
    """A fault handler's ``sleep``: each call leaves a file ``held-<uuid>`` in ``folder`` (the
    writes started), then waits until the file ``release`` exists."""

    def __init__(self, folder: str, release: str) -> None:
        self.folder, self.release = folder, release

    def __call__(self, _seconds: float) -> None:
        open(os.path.join(self.folder, f"held-{uuid.uuid4().hex}"), "w").close()
        while not os.path.exists(self.release):
            time.sleep(0.01)


def started(folder: str) -> int:
    return sum(name.startswith("held-") for name in os.listdir(folder))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_metadata_writes_slower_than_the_timeout_stay_bounded(tmp_path, parallelism):
    gate, release, held = str(tmp_path / "gate"), str(tmp_path / "release"), str(tmp_path / "held")
    os.mkdir(held)
    fs = faulty_filesystem(rules=[FaultRule("write_metadata", delay_s=1.0)], sleep=HoldWrites(held, release))
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    env.enable_checkpointing(20, checkpoint_dir=(fs, str(tmp_path / "chk")), timeout_ms=100)
    generate(env, lambda i: {"i": i}, count=N, rate=None, batch_size=20, gate=gate).uid("src") \
        .key_by(lambda r: r["i"] % 5).map(lambda r: r).uid("id").write_jsonl(str(tmp_path / "out"))
    seen: dict[str, Any] = {}

    def drill(master, runtime) -> None:
        try:
            wait_until_paused(gate, parallelism)
            c = master.coordinator
            wait_for(lambda: c.aborted_count >= 8, "8 checkpoints failed", 60)
            seen["writes started"] = started(held)
            seen["stats"] = c.stats()
        finally:
            open(release, "w").close()
            open(gate, "w").close()

    result = run_in_process(env.get_job_graph(), JobConfig(name="bounded-writes", checkpoint=env.checkpoint_config),
                            on_start=drill, timeout_s=120)
    assert seen["writes started"] <= 2, seen  # (before: one per aborted checkpoint, without bound)
    stats = seen["stats"]
    assert stats["metadata_writes"] == 2, stats
    reasons = [h.get("reason") or "" for h in stats["history"] if h["status"] == "ABORTED"]
    assert any(r.startswith("could not start within timeout_ms=100: the _metadata writes of checkpoints [")
               and "are still in flight" in r for r in reasons), reasons
    assert written(tmp_path) == list(range(N))  # exactly once once storage keeps up again
    assert result["checkpoints"]["completed"] >= 1
