"""Checkpoint metadata writes that always outlast ``timeout_ms``: the job must still commit.

Every ``_metadata`` write here waits until its checkpoint has timed out (aborted while
finalizing), then lands: each checkpoint is complete in storage, the one a restore would start
from. Before the fix such a checkpoint committed nothing and handed its committables to the
next one, which timed out the same way: an unbounded job never committed its sinks' output
while it ran (``completed`` stayed 0 while ``latest_completed`` grew, the part files stayed
``.inprogress``). Now a checkpoint whose metadata lands after its timeout is completed late:
what it covers is committed. Waiting for the abort (a fault rule's ``sleep``), not for a time,
keeps the order the same on any machine.
"""

from __future__ import annotations

import asyncio
import os
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
MASTERS: list[Any] = []  # the job master of the running test (in this process)


class OutlastTheTimeout:
    """A fault handler's ``sleep``: while the file ``slow`` exists, a ``_metadata`` write
    waits until the checkpoint being finalized has been aborted by its timeout."""

    def __init__(self, slow: str) -> None:
        self.slow = slow

    def __call__(self, _seconds: float) -> None:
        if not os.path.exists(self.slow) or not MASTERS:
            return
        c = MASTERS[-1].coordinator
        finalizing = [cid for cid, p in list(c.checkpoints.items()) if p.status == "FINALIZING"]
        wait_for(lambda: not any(cid in c.checkpoints for cid in finalizing),
                 f"checkpoints {finalizing} aborted by their timeout", 60)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_checkpoints_whose_metadata_outlasts_the_timeout_still_commit(tmp_path, parallelism):
    gate, slow = str(tmp_path / "gate"), str(tmp_path / "slow")
    open(slow, "w").close()
    fs = faulty_filesystem(rules=[FaultRule("write_metadata", delay_s=1.0)], sleep=OutlastTheTimeout(slow))
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    env.enable_checkpointing(50, checkpoint_dir=(fs, str(tmp_path / "chk")), timeout_ms=200)
    generate(env, lambda i: {"i": i}, count=N, rate=None, batch_size=20, gate=gate).uid("src") \
        .key_by(lambda r: r["i"] % 5).map(lambda r: r).uid("id").write_jsonl(str(tmp_path / "out"))
    seen: dict[str, Any] = {}

    def drill(master, runtime) -> None:
        MASTERS.append(master)
        try:
            wait_until_paused(gate, parallelism)
            c = master.coordinator
            wait_for(lambda: c.aborted_count + c.completed_count >= 3, "3 checkpoints timed out", 60)
            try:  # (a condition that never came true before the fix: nothing was committed)
                wait_for(lambda: written(tmp_path), "output committed while the job runs", 30)
            except AssertionError as exc:
                seen["error"] = str(exc)
            seen["running"] = {"completed": c.completed_count, "history": list(c.history)}
            seen["metrics"] = asyncio.run_coroutine_threadsafe(master.metrics(), runtime.loop).result(30)["checkpoints"]
        finally:
            os.remove(slow)
            open(gate, "w").close()

    try:
        result = run_in_process(env.get_job_graph(), JobConfig(name="late-metadata", checkpoint=env.checkpoint_config),
                                on_start=drill, timeout_s=120)
    finally:
        MASTERS.clear()
    assert "error" not in seen, (seen.get("error"), seen.get("running"))
    running = seen["running"]
    assert running["completed"] >= 1
    late = [h for h in running["history"] if h["status"] == "COMPLETED"]
    assert late and all("timed out" in h["late"] for h in late), running["history"]
    assert written(tmp_path) == list(range(N))  # exactly once
    assert result["checkpoints"]["completed"] >= 1
    assert seen["metrics"]["completed"] >= 1 and seen["metrics"]["last_duration_s"] > 0, seen["metrics"]
    assert all(isinstance(h["bytes"], int) and h["duration_s"] >= 0 for h in late)  # (the metrics read them)
