"""The driver's worker pool: job masters and task executors of a finished job serve the next.

Reuse must never leak one job into another: an executor goes back only when no task it
hosted and no raystream thread of the job is left (a finished job's at once; a cancelled or
failed job's once they cancelled and forgot their tasks: tests/integration/test_probe_recycle_pool.py);
killed executors and ``reuse_workers=False`` jobs are never reused; calls meant for an earlier
job find nothing; a job cancelled before its master picked it up is still cancelled.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import pytest
import ray

import raystream as rs
from raystream.engine.pool import WorkerPool
from tests.conftest import alive_actors
from tests.integration.test_keyed_final_recovery import wait_for


def _wordcount(env: rs.StreamEnvironment, n: int = 2000) -> None:
    words = [f"w{i % 37}" for i in range(n)]
    (env.from_collection(words, batch_size=256).map(lambda w: (w, 1)).disable_chaining()
     .key_by(0).reduce(lambda a, b: (a[0], a[1] + b[1])).collect())


def _final(records) -> dict:
    out: dict = {}
    for w, c in records:
        out[w] = max(out.get(w, 0), c)
    return out


def _want(n: int = 2000) -> dict:
    return dict(Counter(f"w{i % 37}" for i in range(n)))


def _pids(client: rs.JobClient) -> set[int]:
    names = ray.get(client._master.task_actor_names.remote())
    return {ray.get(ray.get_actor(n, namespace="raystream").pid.remote()) for n in set(names.values())}


def _unbounded(env: rs.StreamEnvironment) -> None:
    (env.generate(lambda i: (i % 7, i), rate=2000).key_by(0)
     .reduce(lambda a, b: (a[0], a[1] + b[1])).collect())


def _running(client: rs.JobClient, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.status() == "RUNNING" and client.metrics().get("operators", {}).get("reduce", {}).get("records_in", 0):
            return
        time.sleep(0.05)
    raise AssertionError(f"job did not start running: {client.status()}")


def _wait_dead(actor) -> None:
    """Until the killed ``actor`` is dead (``ray.kill`` is asynchronous: a call sent right
    after it may still be answered)."""
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            ray.get(actor.pid.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("a killed executor still answers after 30 s")


def _warm_pool() -> list:
    """Run a small job so the pool holds idle executors; returns them."""
    env = rs.StreamEnvironment(parallelism=2)
    _wordcount(env)
    env.execute("warm")
    return WorkerPool.current().idle_actors()[1]


def test_the_next_job_runs_on_the_same_master_and_executors():
    pool = WorkerPool.current()
    env = rs.StreamEnvironment(parallelism=2)
    _wordcount(env)
    first = env.execute_async("pool-1")
    assert _final(rs_collected(first.wait())) == _want()
    masters, executors = pool.idle_actors()
    before = {ray.get(e.actor.pid.remote()) for e in executors}
    assert len(before) >= 2

    env2 = rs.StreamEnvironment(parallelism=2)
    _unbounded(env2)
    second = env2.execute_async("pool-2")
    try:
        _running(second)
        assert _pids(second) <= before, "the second job did not reuse the first job's executors"
        assert second._master in masters
        # a reused executor hosts only this job's tasks, keyed with this job's attempt tag
        for e in {ray.get_actor(n, namespace="raystream") for n in set(ray.get(second._master.task_actor_names.remote()).values())}:
            keys = ray.get(e.hosted.remote())
            assert keys and all(k[2].startswith(second.job_id + "#") for k in keys), keys
    finally:
        second.cancel()
        with pytest.raises(rs.JobCancelled):
            second.wait()


def rs_collected(result: rs.JobResult) -> list:
    from raystream.operators.sinks import collected_records

    return collected_records(next(iter(result.sink_results.values())))


def test_reuse_workers_false_gives_a_job_actors_of_its_own():
    pool = WorkerPool.current()
    warm = {ray.get(e.actor.pid.remote()) for e in _warm_pool()}
    env = rs.StreamEnvironment(parallelism=2, reuse_workers=False)
    _unbounded(env)
    client = env.execute_async("own")
    try:
        _running(client)
        own = _pids(client)
        assert not own & warm
        assert client._master not in pool.idle_actors()[0]
    finally:
        client.cancel()
        with pytest.raises(rs.JobCancelled):
            client.wait()
    assert {e.name for e in client._executors.values()}.isdisjoint(pool.idle_actor_names()["executors"])

    def master_ended() -> bool:  # the job's own master ends after it answered wait()
        try:
            ray.get(client._master.job_info.remote(), timeout=30)
            return False
        except ray.exceptions.RayActorError:
            return True

    wait_for(master_ended, "the job's own master to end")


def test_a_restart_recycles_the_live_executors_and_takes_a_spare_for_the_dead_one(tmp_path):
    """Issue 15: a failed attempt's executors that are alive cancel their tasks and serve the
    restart (no process start, as Flink restarts tasks on its TaskManagers); the killed one is
    replaced by the warm spare the driver lent with the job (JobConfig.standby_executors)."""
    pool = WorkerPool.current()
    _warm_pool()
    env = rs.StreamEnvironment(parallelism=2)
    env.enable_checkpointing(100, checkpoint_dir=str(tmp_path))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(3, 50))
    (env.generate(lambda i: (i % 13, i), count=20000, rate=8000).key_by(0)
     .reduce(lambda a, b: (a[0], a[1] + b[1])).collect())
    client = env.execute_async("drill")
    _running(client)
    lent = dict(client._executors)
    assert sorted(lent) == ["s0", "s1", "standby-0"]
    victim = client.task_actor(1, 0)
    victim_name = ray.get(client._master.task_actor_names.remote())[(1, 0)]
    ray.kill(victim, no_restart=True)
    result = client.wait()
    assert result.metrics["restarts"] >= 1
    got = _final(rs_collected(result))
    assert got == {k: sum(i for i in range(20000) if i % 13 == k) for k in range(13)}
    idle = set(pool.idle_actor_names()["executors"])
    assert victim_name not in idle, "the killed executor went back to the pool"
    # the survivor of the failed attempt and the spare ran the restart and went back clean
    assert {e.name for slot, e in lent.items() if e.name != victim_name} <= idle
    # and the pool still serves correct jobs
    env = rs.StreamEnvironment(parallelism=2)
    _wordcount(env)
    assert _final(env.execute_and_collect("after-drill")) == _want()


def test_a_pooled_executor_is_asked_for_its_node_once(monkeypatch):
    """Lending an idle executor whose node is known costs no call to it: the health check
    round trip is paid once per executor, not once per job."""
    import raystream.engine.pool as pool_module

    _warm_pool()
    _warm_pool()  # every idle executor has been lent (and asked) at least once
    asked: list = []
    check = pool_module._healthy

    def recording(executors, timeout_s=10.0):
        asked.extend(e.name for e in executors)
        return check(executors, timeout_s)

    monkeypatch.setattr(pool_module, "_healthy", recording)
    lent_before = set(WorkerPool.current().idle_actor_names()["executors"])
    env = rs.StreamEnvironment(parallelism=2)
    _wordcount(env)
    client = env.execute_async("no-health-check")
    assert _final(rs_collected(client.wait())) == _want()
    lent = {e.name for e in client._executors.values()}
    assert lent & lent_before, "the job did not run on pooled executors"
    assert not set(asked) & lent_before, f"pooled executors with a known node were asked again: {asked}"


def test_an_idle_executor_that_died_is_replaced():
    pool = WorkerPool.current()
    idle = _warm_pool()
    for e in idle:
        ray.kill(e.actor, no_restart=True)
    for e in idle:  # dead for sure: the pool drops them (tests/integration/test_probe_pool_dead_idle.py)
        _wait_dead(e.actor)
    env = rs.StreamEnvironment(parallelism=2)
    _wordcount(env)
    assert _final(env.execute_and_collect("after-kill")) == _want()
    assert set(pool.idle_actor_names()["executors"]).isdisjoint({e.name for e in idle})


def test_an_executor_dying_after_the_health_check_is_replaced_at_deployment(monkeypatch):
    """The race CI once hit: the pool's health check answered, then the executor died
    before the job deployed onto it. The master deploys again (no failure, no restart
    counted): the live executors forget the tasks set up on them and serve the job, a fresh
    executor replaces the dead one; the live ones go back to the pool afterwards."""
    _warm_pool()
    pool = WorkerPool.current()
    lend = WorkerPool.executors
    lent: dict = {}

    def lend_then_kill(self, slots, num_cpus):
        out = lend(self, slots, num_cpus)
        lent.update(out)
        victim = next(iter(out.values()))
        ray.kill(victim.actor, no_restart=True)
        _wait_dead(victim.actor)
        return out

    monkeypatch.setattr(WorkerPool, "executors", lend_then_kill)
    env = rs.StreamEnvironment(parallelism=2)
    _wordcount(env)
    result = env.execute_async("killed-after-check").wait()
    assert _final(rs_collected(result)) == _want()
    assert result.metrics["restarts"] == 0
    monkeypatch.undo()
    assert pool.idle_actors()[0], "the master went back to the pool"
    victim, *alive = [e.name for e in lent.values()]
    idle = set(pool.idle_actor_names()["executors"])
    assert victim not in idle
    assert alive and set(alive) <= idle, "a live executor of the failed deployment was not reused"


def test_an_executor_with_a_leftover_thread_ends_itself_and_takes_no_more_tasks():
    """The job's master hands its executors back without waiting for their release; one that
    a thread of the job outlives (beyond the 2 s grace) ends itself, and the next job
    deploys on a fresh executor in its place."""
    pool = WorkerPool.current()

    def leak(w):
        if w == "w0" and not any(t.name == "raystream-leak" for t in threading.enumerate()):
            threading.Thread(target=time.sleep, args=(30,), name="raystream-leak", daemon=True).start()
        return (w, 1)

    env = rs.StreamEnvironment(parallelism=1)
    words = [f"w{i % 37}" for i in range(500)]
    env.from_collection(words).map(leak).key_by(0).reduce(lambda a, b: (a[0], a[1] + b[1])).collect()
    client = env.execute_async("leaky")
    leaky = list(client._executors.values())
    result = client.wait()
    assert _final(rs_collected(result)) == dict(Counter(words))
    for e in leaky:
        _wait_dead(e.actor)
    env = rs.StreamEnvironment(parallelism=1)
    _wordcount(env)
    client = env.execute_async("after-leaky")
    assert _final(rs_collected(client.wait())) == _want()
    assert {e.name for e in leaky}.isdisjoint(ray.get(client._master.task_actor_names.remote()).values())
    assert {e.name for e in leaky}.isdisjoint(pool.idle_actor_names()["executors"])


def test_a_failed_job_gives_its_master_back_and_the_next_job_is_correct():
    pool = WorkerPool.current()

    def boom(x):
        if x == 77:
            raise ValueError("bad record 77")
        return x

    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection(list(range(200))).map(boom).collect()
    client = env.execute_async("fails")
    with pytest.raises(rs.JobFailed, match="bad record 77"):
        client.wait()
    assert client._master in pool.idle_actors()[0]
    env = rs.StreamEnvironment(parallelism=2)
    _wordcount(env)
    assert _final(env.execute_and_collect("after-failure")) == _want()


def test_a_job_cancelled_right_after_submission_is_cancelled():
    for i in range(3):
        env = rs.StreamEnvironment(parallelism=2)
        _unbounded(env)
        client = env.execute_async(f"early-cancel-{i}")
        client.cancel()  # may reach the master before its run() call starts
        with pytest.raises(rs.JobCancelled):
            client.wait(timeout=60)


def test_a_cancelled_job_nobody_waits_for_gives_its_master_and_executors_back():
    """A notebook cell that only cancels, with the client kept (a variable of the session):
    the master goes back to the pool and the executors are released or killed as the
    cancellation arrives, not when the client is garbage (before, both stayed alive and
    lent out for as long as the client lived)."""
    from tests.conftest import leftover_actors

    pool = WorkerPool.current()
    env = rs.StreamEnvironment(parallelism=2)
    _unbounded(env)
    client = env.execute_async("cancel-and-walk-away")
    _running(client)
    lent = {e.name for e in client._executors.values()}
    client.cancel()
    kept = [client]  # (referenced until the end of the test)
    wait_for(lambda: client._master in pool.idle_actors()[0], "the master back in the pool")
    wait_for(lambda: not leftover_actors(), "no actor but the pool's idle ones")
    idle = set(pool.idle_actor_names()["executors"])
    alive = {a.get("Name") for a in alive_actors()}
    assert all(name in idle or name not in alive for name in lent), (lent, idle)
    with pytest.raises(rs.JobCancelled):
        kept[0].wait(timeout=60)


def _boom(w):
    raise ValueError(f"bad word {w}")


@pytest.mark.parametrize("ending", ["failed", "finished"])
def test_a_job_that_ends_with_nobody_waiting_gives_its_workers_back(ending):
    """As after a cancel: a failed or finished job is settled when its run returns, and
    ``wait()`` later gives what it would have given then."""
    from tests.conftest import leftover_actors

    pool = WorkerPool.current()
    env = rs.StreamEnvironment(parallelism=2)
    if ending == "failed":
        env.from_collection([f"w{i}" for i in range(100)]).map(_boom).collect()
    else:
        _wordcount(env)
    client = env.execute_async(f"{ending}-nobody-waits")
    kept = [client]
    wait_for(lambda: client._master in pool.idle_actors()[0], "the master back in the pool")
    wait_for(lambda: not leftover_actors(), "no actor but the pool's idle ones")
    assert client.status() == ending.upper()
    if ending == "failed":
        with pytest.raises(rs.JobFailed, match="bad word"):
            kept[0].wait(timeout=60)
    else:
        assert _final(rs_collected(kept[0].wait(timeout=60))) == _want()


class _FailWhenFlagged:
    """A map that raises once the file ``flag`` exists (the test decides when, by a condition)."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __call__(self, x):
        if os.path.exists(self.flag):
            raise ValueError(f"flagged at record {x}")
        return x


@pytest.mark.parametrize("ending", ["failed", "cancelled"])
def test_a_job_that_failed_or_was_cancelled_keeps_its_metrics_and_info(ending, tmp_path):
    """A Flink user reads a failed job's metrics after the fact: ``metrics()`` and ``info()``
    of a job that failed or was cancelled answer with the job as it ended, after its master
    went back to the pool (before, the metrics were empty and ``info()`` had no job id)."""
    flag = str(tmp_path / "fail-now")
    env = rs.StreamEnvironment(parallelism=1)
    env.generate(lambda i: i).map(_FailWhenFlagged(flag)).collect()
    client = env.execute_async(f"{ending}-keeps-metrics")
    seen = wait_for(lambda: client.metrics()["operators"].get("map", {}).get("records_in"), "records through the map")
    if ending == "failed":
        open(flag, "w").close()
    else:
        client.cancel()
    wait_for(lambda: client.status() == ending.upper(), f"the job {ending}")
    metrics = client.metrics()
    assert metrics["operators"]["map"]["records_in"] >= seen, metrics
    info = client.info()
    assert info["status"] == ending.upper() and info["name"] == f"{ending}-keeps-metrics", info
    assert info["job_id"] and info["operators"] == ["generate", "map", "collect"], info
    if ending == "failed":
        assert "flagged at record" in info["error"], info
        with pytest.raises(rs.JobFailed, match="flagged at record"):
            client.wait(timeout=60)
    else:
        with pytest.raises(rs.JobCancelled):
            client.wait(timeout=60)


def test_concurrent_jobs_get_distinct_actors():
    envs = []
    for i in range(2):
        env = rs.StreamEnvironment(parallelism=2)
        _wordcount(env, 3000 + i)
        envs.append(env)
    clients = [env.execute_async(f"concurrent-{i}") for i, env in enumerate(envs)]
    masters = {c._master_name for c in clients}
    executors = [{e.name for e in c._executors.values()} for c in clients]
    assert len(masters) == 2 and executors[0].isdisjoint(executors[1])
    results = [c.wait() for c in clients]
    for i, r in enumerate(results):
        assert _final(rs_collected(r)) == _want(3000 + i)


def test_executors_are_back_in_the_pool_with_the_result_and_the_next_job_waits_for_their_release():
    """The job's result does not wait for the executors' release: they are idle in the pool
    when it arrives, and the next job's tasks start on them only once that release ended (a
    thread of the last job that ends within the grace period is gone by then)."""
    pool = WorkerPool.current()
    _warm_pool()

    def linger(w):
        if w == "w0" and not any(t.name == "raystream-linger" for t in threading.enumerate()):
            threading.Thread(target=time.sleep, args=(0.5,), name="raystream-linger", daemon=True).start()
        return (w, 1)

    env = rs.StreamEnvironment(parallelism=2)
    words = [f"w{i % 37}" for i in range(500)]
    env.from_collection(words).map(linger).key_by(0).reduce(lambda a, b: (a[0], a[1] + b[1])).collect()
    client = env.execute_async("lingering")
    lent = {e.name for e in client._executors.values()}
    assert _final(rs_collected(client.wait())) == dict(Counter(words))
    assert lent <= set(pool.idle_actor_names()["executors"])  # back at once

    def seen(w):  # (runs in the next job's tasks)
        return (w, any(t.name == "raystream-linger" for t in threading.enumerate()))

    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection(words).map(seen).collect()
    client = env.execute_async("after-lingering")
    assert set(client._executors[s].name for s in client._executors) == lent  # the same executors
    out = rs_collected(client.wait())
    assert len(out) == len(words) and not any(lingering for _w, lingering in out)
