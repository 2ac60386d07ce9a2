"""A notebook's next job after one it stopped early starts on the same warm executors.

``execute_and_collect(limit=N)``, a collect iterator closed early, ``client.cancel()`` and a
job that failed: the job's executors cancel and forget its tasks and go back to the driver's
worker pool (before, they were killed, and the next job waited for new worker processes:
~0.8 s on an idle 2-core machine, 4-6 s under load). What they hosted is gone: the pool's
idle executors host nothing (also checked after every test by ``tests/conftest.py``).
"""

from __future__ import annotations

import _thread
import os
import threading

import pytest
import ray

import raystream as rs
from raystream.engine.client import JobClient
from raystream.engine.pool import WorkerPool
from tests.waiting import wait_for


def _fail_at_50(x: int) -> int:
    if x == 50:
        raise ValueError("bad record 50")
    return x


def _end_early(way: str) -> rs.JobClient | None:
    """Run a job of two subtasks and stop it as ``way`` says; returns its client (None: the
    job's client is execute_and_collect's own)."""
    env = rs.StreamEnvironment(parallelism=2)
    stream = env.generate(lambda i: i, rate=5000).map(lambda x: x + 1)
    if way == "limit":
        assert len(stream.execute_and_collect("early", limit=5)) == 5
        return None
    if way == "close":
        with stream.execute_and_collect("early", stream=True) as records:
            next(records)
            client = records.client
        return client
    if way == "cancel":
        stream.collect()
        client = env.execute_async("early")
        wait_for(lambda: client.status() == "RUNNING", "the job runs")
        client.cancel()
        with pytest.raises(rs.JobCancelled):
            client.wait(timeout=60)
        return client
    # failed
    env2 = rs.StreamEnvironment(parallelism=2)
    env2.from_collection(range(100)).map(_fail_at_50).collect()
    client = env2.execute_async("early")
    with pytest.raises(rs.JobFailed, match="bad record 50"):
        client.wait(timeout=60)
    return client


@pytest.mark.parametrize("way", ["limit", "close", "cancel", "failed"])
def test_the_next_job_reuses_the_executors_of_a_job_stopped_early(ray_session, way):
    pool = WorkerPool.current()
    client = _end_early(way)
    idle = set(pool.idle_actor_names()["executors"])
    if client is not None:
        lent = {e.name for e in client._executors.values()}
        assert lent <= idle, f"executors of a job that ended ({way}) did not go back to the pool: {lent - idle}"
    for e in pool.idle_actors()[1]:
        assert ray.get(e.actor.hosted.remote(e.releasing)) == [], "a pooled executor still hosts a task"
    started = pool.started["executors"]
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection(range(100)).map(lambda x: x * 2).collect()
    assert sorted(env.execute_and_collect("next")) == [2 * i for i in range(100)]
    assert pool.started["executors"] == started, "the next job started new executors"


class _FailWhenFlagged:
    """A map that raises once the file ``flag`` exists (the test decides when)."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __call__(self, x: int) -> int:
        if os.path.exists(self.flag):
            raise ValueError(f"flagged at record {x}")
        return x


def test_an_interrupt_while_the_job_is_settled_still_gives_its_workers_back(ray_session, monkeypatch, tmp_path):
    """Ctrl-C (a notebook's stop button) while ``wait()`` settles the job that just ended
    (its final metrics asked for, its checkpoints deleted): the caller's wait ends with the
    ``KeyboardInterrupt``, the settling does not (before, the job's master and executors
    were never given back nor killed: lent for the rest of the session)."""
    pool = WorkerPool.current()
    flag = str(tmp_path / "fail-now")
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(lambda i: i, rate=2000).map(_FailWhenFlagged(flag)).collect()
    client = env.execute_async("interrupted-settle")
    lent = {e.name for e in client._executors.values()}
    real = JobClient._keep_final

    def interrupted(self: JobClient) -> dict:
        _thread.interrupt_main()  # what Ctrl-C does, right as the job is settled
        return real(self)

    monkeypatch.setattr(JobClient, "_keep_final", interrupted)

    def fail_once_waited_for() -> None:  # (the job fails while wait() waits for it)
        wait_for(lambda: client._waiters == 1, "wait() waits")
        open(flag, "w").close()

    threading.Thread(target=fail_once_waited_for, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        client.wait(timeout=120)
    monkeypatch.undo()
    wait_for(lambda: client._master in pool.idle_actors()[0], "the master back in the pool")
    assert lent <= set(pool.idle_actor_names()["executors"])
    with pytest.raises(rs.JobFailed, match="flagged at record"):
        client.wait(timeout=60)
