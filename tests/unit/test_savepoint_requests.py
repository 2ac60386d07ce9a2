"""Savepoint requests the job cannot serve fail; they never leave their caller waiting.

In process (no Ray), driven step by step: a savepoint asked for while a checkpoint is in
progress waits for it; when the job ends meanwhile (here: cancelled; also when every task
finishes), the request fails with CheckpointError naming why (before: the caller waited
forever). And a savepoint does not wait for ``min_pause_ms`` (as in Flink).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint import CheckpointStorage
from raystream.checkpoint.coordinator import CheckpointConfig, CheckpointCoordinator
from raystream.engine.config import JobConfig
from raystream.engine.errors import CheckpointError, JobCancelled
from raystream.engine.local_runtime import run_in_process
from tests.waiting import wait_for

RELEASE = threading.Event()  # the map waits for it at record 50 (checkpoint 1 cannot complete before)
BLOCKED = threading.Event()


def _slow_map(i: int) -> int:
    if i == 50:
        BLOCKED.set()
        assert RELEASE.wait(60), "the test never released the map"
    return i + 1


def _graph(tmp_path) -> Any:
    env = rs.StreamEnvironment(parallelism=1, flush_ms=0)
    env.enable_checkpointing(20, checkpoint_dir=str(tmp_path / "chk"))
    env.generate(lambda i: i, count=100, batch_size=10, rate=2_000).map(_slow_map).collect()
    return env.get_job_graph(), env


def test_a_savepoint_queued_behind_a_checkpoint_fails_when_the_job_is_cancelled(tmp_path):
    RELEASE.clear(), BLOCKED.clear()
    graph, env = _graph(tmp_path)
    outcome: dict[str, Any] = {}

    def drill(master, runtime) -> None:
        assert BLOCKED.wait(60)
        [task] = [h.task for e in runtime.executors.values() for h in e._hosted.values() if h.task is not None]

        def stuck() -> bool:  # a checkpoint the blocked task has not snapshotted: it cannot complete
            c = master.coordinator
            return c is not None and any(cid > task.last_checkpoint_id for cid in list(c.checkpoints))

        wait_for(stuck, "a checkpoint in progress that waits for the blocked map")
        fut = asyncio.run_coroutine_threadsafe(master.trigger_savepoint(str(tmp_path / "sp")), runtime.loop)
        outcome["future"] = fut
        wait_for(lambda: master._savepoint_requests, "the savepoint request is queued")
        asyncio.run_coroutine_threadsafe(master.cancel(), runtime.loop).result(60)
        RELEASE.set()

    with pytest.raises(JobCancelled):
        run_in_process(graph, JobConfig(name="sp-queued", checkpoint=env.checkpoint_config), on_start=drill)
    fut = outcome["future"]
    assert fut.done(), "the savepoint request was left waiting after the job ended"
    with pytest.raises(CheckpointError, match="the job was cancelled before it could be taken"):
        fut.result()


def test_a_savepoint_does_not_wait_for_the_minimum_pause(tmp_path):
    now = [100.0]
    config = CheckpointConfig(100, checkpoint_dir=str(tmp_path), min_pause_ms=3_600_000)
    coord = CheckpointCoordinator(config, "job", [(0, 0)], CheckpointStorage(str(tmp_path)), clock=lambda: now[0])
    p = coord.trigger()
    assert coord.acknowledge(p.checkpoint_id, (0, 0), {}) is p
    coord.begin_finalize(p)
    coord.complete(p, {"parallelism": {0: 1}, "max_parallelism": 128})
    assert coord.end_finalize(p)
    now[0] += 60
    assert not coord.can_trigger(), "a periodic checkpoint waits for min_pause_ms"
    assert coord.can_trigger(savepoint=True), "a savepoint does not"
    coord.trigger(savepoint=str(tmp_path / "sp"))
    assert not coord.can_trigger(savepoint=True), "one at a time, savepoints too"
