"""The end of an in-process job never hangs its caller: a task of the job's event loop that
does not end when cancelled (seen once at the end of a benchmark job: ``asyncio.run``
waited for one without a bound) is logged with its stack and left behind."""

from __future__ import annotations

import asyncio
import logging
import threading

import raystream as rs
from raystream.engine import local_runtime
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process

SCHEDULED = threading.Event()  # the job's records wait for it: the job ends after the task was created


def _double(x: int) -> int:
    assert SCHEDULED.wait(60)
    return x * 2


async def _stubborn() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue  # (ignores its cancellation)


def test_a_task_that_ignores_cancellation_is_left_behind_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(local_runtime, "END_GRACE_S", 0.2)
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection([1, 2, 3]).map(_double).collect()
    SCHEDULED.clear()

    def start(master, runtime) -> None:
        asyncio.run_coroutine_threadsafe(_stubborn(), runtime.loop)
        SCHEDULED.set()

    with caplog.at_level(logging.WARNING, logger="raystream.engine.local_runtime"):
        result = run_in_process(env.get_job_graph(), JobConfig(name="stubborn"), on_start=start)
    assert sorted(r for b in next(iter(result["results"].values())) for r in b.column(0).to_pylist()) == [2, 4, 6]
    assert "did not end" in caplog.text and "_stubborn" in caplog.text
