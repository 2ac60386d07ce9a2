"""Idle actors of the driver's worker pool that die while idle (killed, crashed, ended by
themselves) are never lent again nor reported as held by the pool.

Before: the pool checked only executors whose node it did not know yet, so a dead idle
executor that the next job did not need stayed in the pool; ``idle_actors()`` reported it
and the first call to it (the leftover-actor check of the test suite, a user inspecting the
pool) raised ``ActorDiedError``; one that a job needed was lent, and its master had to
deploy a second time on a fresh executor. A dead idle job master was lent as is.
"""

from __future__ import annotations

import time

import ray

import raystream as rs
from raystream.engine.pool import WorkerPool
from tests.integration.test_worker_pool import _final, _wait_dead, _want, _wordcount, rs_collected


def _warm(parallelism: int) -> None:
    env = rs.StreamEnvironment(parallelism=parallelism)
    _wordcount(env)
    env.execute("warm")


def _kill_idle_executors() -> set[str]:
    _, executors = WorkerPool.current().idle_actors()
    for e in executors:
        ray.kill(e.actor, no_restart=True)
    for e in executors:
        _wait_dead(e.actor)
    return {e.name for e in executors}


def test_dead_idle_executors_a_job_does_not_need_are_not_reported_as_held():
    pool = WorkerPool.current()
    _warm(2)
    _warm(1)  # leaves at least two idle executors, one more than the job below needs
    killed = _kill_idle_executors()
    assert len(killed) >= 2
    env = rs.StreamEnvironment(parallelism=1)
    _wordcount(env)
    assert _final(env.execute_and_collect("after-kill-p1")) == _want()
    names = set(pool.idle_actor_names()["executors"])
    assert names and names.isdisjoint(killed)
    _, idle = pool.idle_actors()
    assert {e.name for e in idle}.isdisjoint(killed)
    # every executor the pool reports answers (no ActorDiedError)
    assert ray.get([e.actor.hosted.remote(e.releasing) for e in idle], timeout=60) == [[] for _ in idle]


def test_dead_idle_executors_are_not_lent():
    pool = WorkerPool.current()
    _warm(2)
    killed = _kill_idle_executors()
    env = rs.StreamEnvironment(parallelism=2)
    _wordcount(env)
    client = env.execute_async("after-kill-p2")
    lent = {e.name for e in client._executors.values()}
    assert _final(rs_collected(client.wait())) == _want()
    assert lent.isdisjoint(killed), "a dead idle executor was lent to a job"
    assert set(pool.idle_actor_names()["executors"]).isdisjoint(killed)


def test_a_dead_idle_job_master_is_not_lent():
    pool = WorkerPool.current()
    _warm(1)
    masters, _ = pool.idle_actors()
    assert masters
    for m in masters:
        ray.kill(m, no_restart=True)
    for m in masters:
        _wait_master_dead(m)
    env = rs.StreamEnvironment(parallelism=1)
    _wordcount(env)
    assert _final(env.execute_and_collect("after-master-kill")) == _want()
    assert pool.idle_actors()[0] and not set(pool.idle_actors()[0]) & set(masters)



def _wait_master_dead(master) -> None:
    """Until the killed job ``master`` is dead (``ray.kill`` is asynchronous)."""
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            ray.get(master.job_info.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("a killed job master still answers after 30 s")
