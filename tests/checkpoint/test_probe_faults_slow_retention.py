"""Checkpoint storage that is slow to delete: the retention of old checkpoints must not hold up
the completion of new ones.

Before the fix the deletes of retention (``retained=1``: every completed checkpoint deletes
the one before it) ran inside the checkpoint's completion, after its ``_metadata`` write: with
deletes slower than ``timeout_ms`` (an object store deleting a directory file by file, a slow
network file system) every checkpoint timed out while "finalizing" although its metadata was
written, none committed its output while the job ran, and ``tolerable_failures`` would have
failed the job. Here the delete of ``chk-1`` waits until the test lets it go (a fault rule whose
delay waits for a file), so the outcome does not depend on the machine's speed.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.checkpoint.storage import job_dir_name
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from tests.checkpoint.test_probe_state_intermediate_savepoint import written
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

N = 400


class WaitForFile:
    """A fault handler's ``sleep``: a delayed operation waits until ``path`` exists."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, _seconds: float) -> None:
        while not os.path.exists(self.path):
            time.sleep(0.01)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_checkpoints_complete_while_the_retention_of_old_ones_is_slow(tmp_path, parallelism):
    release, gate = str(tmp_path / "release"), str(tmp_path / "gate")
    # deleting chk-1 (retention, once checkpoint 2 completed) takes until the test releases it
    fs = faulty_filesystem(rules=[FaultRule("delete", path_glob="*/chk-1", delay_s=1.0, times=1)],
                           sleep=WaitForFile(release))
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    env.enable_checkpointing(50, checkpoint_dir=(fs, str(tmp_path / "chk")), timeout_ms=5_000, retained=1)
    generate(env, lambda i: {"i": i}, count=N, rate=None, batch_size=20, gate=gate).uid("src") \
        .key_by(lambda r: r["i"] % 5).map(lambda r: r).uid("id").write_jsonl(str(tmp_path / "out"))
    seen: dict[str, Any] = {}

    def drill(master, runtime) -> None:
        wait_until_paused(gate, parallelism)
        c = master.coordinator
        wait_for(lambda: c.completed_count >= 4 or c.aborted_count >= 1, "4 checkpoints completed (or one aborted)", 60)
        seen["history"] = [(h["id"], h["status"], h.get("reason")) for h in c.history]
        chk_1 = os.path.join(str(tmp_path / "chk"), job_dir_name(master.job_id), "chk-1")
        seen["chk-1 kept while its delete is held"] = os.path.isdir(chk_1)
        open(release, "w").close()
        wait_for(lambda: not os.path.exists(chk_1), "the retention of chk-1", 60)  # (it still runs)
        open(gate, "w").close()

    result = run_in_process(env.get_job_graph(), JobConfig(name="slow-deletes", checkpoint=env.checkpoint_config),
                            on_start=drill, timeout_s=120)
    assert [h for h in seen["history"] if h[1] != "COMPLETED"] == [], seen["history"]
    assert seen["chk-1 kept while its delete is held"]
    assert result["checkpoints"]["aborted"] == 0, result["checkpoints"]["history"]
    assert written(tmp_path) == list(range(N))
