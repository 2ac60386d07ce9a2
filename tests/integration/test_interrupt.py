"""Interrupting a blocking ``env.execute()`` (Ctrl-C in a script, the stop button of a
notebook: ``KeyboardInterrupt`` in the main thread) cancels its job: an unbounded job is
never left running unseen, holding the worker pool and CPU while the next job starts."""

from __future__ import annotations

import _thread
import threading

import pytest

import raystream as rs
from raystream.engine.client import JobClient
from tests.waiting import wait_for


def _running(name: str) -> list[JobClient]:
    return [c for job_id, c in JobClient.list_running().items() if job_id.startswith(f"{name}-")]


def test_ended_jobs_are_not_listed_as_running():
    """A pooled job master keeps its last job's info until its next job: ``list_running``
    (and ``raystream list``) show only the jobs not ended."""
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(10).collect()
    env.execute_and_collect("ended")
    assert not _running("ended")


def test_an_interrupted_execute_cancels_its_job_and_the_next_job_runs():
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(lambda i: i, rate=2000).filter(lambda x: x < 0).collect()  # unbounded, emits nothing

    def interrupt_once_running() -> None:
        wait_for(lambda: any(c.status() == "RUNNING" for c in _running("unbounded")), "the job runs")
        _thread.interrupt_main()  # what Ctrl-C or a notebook's stop button does

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        env.execute("unbounded")
    wait_for(lambda: not _running("unbounded"), "the interrupted job is gone")

    env2 = rs.StreamEnvironment(parallelism=2)
    env2.generate(100).map(lambda x: x * 2).collect()
    assert sorted(env2.execute_and_collect("next")) == [2 * i for i in range(100)]


def test_an_interrupted_wait_of_execute_async_leaves_the_job_to_its_client():
    """``execute_async`` hands the job to the caller: interrupting its ``wait()`` does not
    cancel it (the caller decides, e.g. ``client.cancel()``)."""
    env = rs.StreamEnvironment(parallelism=1)
    env.generate(lambda i: i, rate=2000).filter(lambda x: x < 0).collect()
    client = env.execute_async("kept")
    try:
        threading.Thread(target=lambda: (wait_for(lambda: client.status() == "RUNNING", "the job runs"),
                                         _thread.interrupt_main()), daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            client.wait()
        assert client.status() == "RUNNING"
    finally:
        client.cancel()
        with pytest.raises(rs.JobCancelled):
            client.wait(timeout=30)
