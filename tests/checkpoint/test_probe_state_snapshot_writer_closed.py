"""A task cancelled with its job (or its attempt) ends quietly: the snapshot writer its
executor closed has nothing left to drain. Before, every cancelled task's end logged a
warning with a traceback ("flushing checkpoint acks of task ... failed: RuntimeError: cannot
schedule new futures after shutdown"), once per task at every cancel and every restart."""

from __future__ import annotations

import asyncio
import logging

import pytest

import raystream as rs
from raystream.checkpoint import CheckpointStorage
from raystream.engine.errors import JobCancelled
from raystream.engine.local_runtime import run_in_process
from raystream.engine.snapshots import AsyncSnapshotWriter
from tests.integration.gated import generate, wait_until_paused


def test_a_closed_writer_drains_at_once(tmp_path):
    writer = AsyncSnapshotWriter(CheckpointStorage(str(tmp_path)), "job")
    writer.drain()
    writer.close()
    writer.drain()  # (raised RuntimeError)
    assert writer.in_flight() == 0


def test_cancelling_a_checkpointed_job_logs_no_failed_flush(tmp_path, caplog):
    env = rs.StreamEnvironment(parallelism=2, flush_ms=0)
    env.enable_checkpointing(50, checkpoint_dir=str(tmp_path / "chk"))
    gate = str(tmp_path / "gate")
    generate(env, lambda i: i, count=1000, rate=None, batch_size=10, gate=gate).key_by(lambda x: x % 7) \
        .reduce(lambda a, b: a + b).collect()

    def cancel(master, runtime) -> None:
        wait_until_paused(gate, 2)
        asyncio.run_coroutine_threadsafe(master.cancel(), runtime.loop).result(60)

    with caplog.at_level(logging.WARNING, logger="raystream"), pytest.raises(JobCancelled):
        run_in_process(env.get_job_graph(), env._job_config("cancelled"), on_start=cancel, timeout_s=120)
    failed = [r.getMessage() for r in caplog.records if "flushing checkpoint acks" in r.getMessage()]
    assert not failed, failed
