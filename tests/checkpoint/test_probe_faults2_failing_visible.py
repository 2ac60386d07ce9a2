"""Checkpoints that keep failing say so: how many in a row, why, since when, and what it costs.

A job without ``tolerable_failures`` (the default ``None``) goes on when every checkpoint fails
(here every ``_metadata`` write), and its sinks commit nothing meanwhile. Before, nothing but
one warning per aborted checkpoint said so: ``info()["checkpoints"]`` had the counts and the
newest outcome (a completed savepoint or an in-flight abort hid the failures), no
``consecutive_failures`` to compare with ``tolerable_failures``, nothing said that the output
is not committed. Now ``info()["checkpoints"]`` has ``consecutive_failures``, ``last_failure``
and ``since_last_completed_s``, the metrics ``consecutive_failures`` (exported as the gauge
``raystream_checkpoint_consecutive_failures``), and the job master logs an error at 10, 100,
1000... failures in a row naming the cause, the uncommitted output and the remedy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobCancelled
from raystream.engine.local_runtime import run_in_process
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for


@pytest.mark.parametrize("parallelism", [1, 2])
def test_checkpoints_that_keep_failing_say_how_many_why_and_what_it_costs(tmp_path, parallelism, caplog):
    gate = str(tmp_path / "gate")
    fs = faulty_filesystem(rules=[FaultRule("write_metadata", fail=True)])
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    env.enable_checkpointing(20, checkpoint_dir=(fs, str(tmp_path / "chk")))
    generate(env, lambda i: {"i": i}, count=200, rate=None, batch_size=20, gate=gate).uid("src") \
        .key_by(lambda r: r["i"] % 5).map(lambda r: r).uid("id").write_jsonl(str(tmp_path / "out"))
    seen: dict[str, Any] = {}

    def drill(master, runtime) -> None:
        def call(coro):
            return asyncio.run_coroutine_threadsafe(coro, runtime.loop).result(30)

        try:
            wait_until_paused(gate, parallelism)
            c = master.coordinator
            wait_for(lambda: c.aborted_count >= 11, "11 checkpoints failed", 60)
            seen["info"] = call(master.job_info())["checkpoints"]
            seen["metrics"] = call(master.metrics())["checkpoints"]
        finally:
            call(master.cancel())

    with caplog.at_level(logging.ERROR, logger="raystream.checkpoint.coordinator"):
        with pytest.raises(JobCancelled):
            run_in_process(env.get_job_graph(), JobConfig(name="failing", checkpoint=env.checkpoint_config),
                           on_start=drill, timeout_s=120)
    info = seen["info"]
    assert info["consecutive_failures"] >= 11 and info["completed"] == 0, info
    assert info["last_failure"].startswith("writing metadata failed: ") and "_metadata" in info["last_failure"], info
    assert info["since_last_completed_s"] is None  # (none completed)
    assert seen["metrics"]["consecutive_failures"] >= 11, seen["metrics"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len([m for m in errors if "checkpoints in a row failed" in m]) == 1, errors  # (at 10, not at each)
    [loud] = [m for m in errors if "checkpoints in a row failed" in m]
    assert "10 checkpoints in a row failed (none completed yet; the last: writing metadata failed" in loud
    assert "its sinks commit nothing until one completes" in loud and "tolerable_failures=n" in loud
