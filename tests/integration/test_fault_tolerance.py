"""Exactly once across failures: outputs of runs with killed tasks equal a failure-free run."""

from __future__ import annotations

import random
import threading
import time

import pytest
import ray

import raystream as rs
from engine.master import task_actor_name

N = 24_000
RATE = 8_000  # records/s over all source subtasks: the job runs ~3 s


def record(i: int) -> dict:
    return {"key": f"k{(i * 7919) % 37:02d}", "value": i % 101, "i": i}


def build(env: rs.StreamEnvironment, fail_marker: str | None = None) -> None:
    def maybe_fail(r: dict) -> dict:
        if fail_marker is not None and r["i"] == N // 2:
            import os

            if not os.path.exists(fail_marker):
                open(fail_marker, "w").close()
                raise RuntimeError("injected failure, once")
        return r

    # One source subtask keeps every key's records in order, so the running sums (and so
    # the whole output) are deterministic whatever the parallelism of the keyed part.
    (
        env.generate(record, count=N, rate=RATE, batch_size=200)
        .set_parallelism(1)
        .map(maybe_fail)
        .set_parallelism(1)
        .key_by("key")
        .reduce(lambda a, b: {"key": a["key"], "value": a["value"] + b["value"], "i": b["i"]})
        .uid("running-sum")
        .map(lambda r: (r["key"], r["value"], r["i"]))
        .collect()
    )


def make_env(parallelism: int, tmp_path, interval_ms: int = 150) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=20)
    env.enable_checkpointing(interval_ms, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(5, 100))
    return env


@pytest.fixture(scope="module")
def reference():
    env = rs.StreamEnvironment(parallelism=1)
    build(env)
    return {p: sorted(env.execute_and_collect()) for p in (1,)}[1]


def kill_tasks(client: rs.JobClient, parallelisms: list[int], kills: int, seed: int) -> list:
    """Kill ``kills`` random task actors at random moments while the job runs."""
    rng = random.Random(seed)
    done = []
    job_id = client.job_id
    for _ in range(kills):
        time.sleep(rng.uniform(0.6, 1.2))
        info = client.info()
        if info["status"] not in ("RUNNING",):
            break
        v = rng.randrange(len(parallelisms))
        s = rng.randrange(parallelisms[v])
        try:
            actor = ray.get_actor(task_actor_name(job_id, v, s, info["attempt"]), namespace="raystream")
        except ValueError:
            continue
        ray.kill(actor, no_restart=True)
        done.append((v, s, info["attempt"]))
        deadline = time.time() + 20
        while client.info()["attempt"] == info["attempt"] and time.time() < deadline:
            time.sleep(0.05)
    return done


@pytest.mark.parametrize("parallelism,kills,seed", [(2, 1, 1), (2, 3, 7), (3, 2, 3)])
def test_killed_tasks_give_exactly_the_failure_free_output(reference, tmp_path, parallelism, kills, seed):
    env = make_env(parallelism, tmp_path)
    build(env)
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    client = env.execute_async("exactly-once")
    killed = kill_tasks(client, parallelisms, kills, seed)
    result = client.wait()
    out = result.sink_results
    from operators.sinks import collected_records

    got = sorted(collected_records(next(iter(out.values()))))
    assert killed, "the job ended before any task could be killed"
    assert result.metrics["restarts"] >= 1
    assert result.checkpoints["completed"] >= 1
    assert got == reference


def test_user_exception_once_is_recovered_exactly_once(reference, tmp_path):
    env = make_env(2, tmp_path)
    build(env, fail_marker=str(tmp_path / "failed-once"))
    result = env.execute("fail-once")
    from operators.sinks import collected_records

    got = sorted(collected_records(next(iter(result.sink_results.values()))))
    assert (tmp_path / "failed-once").exists()
    assert result.metrics["restarts"] == 1
    assert got == reference


def test_restart_strategy_gives_up_with_job_failed(tmp_path):
    env = rs.StreamEnvironment(parallelism=1)
    env.enable_checkpointing(100, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(2, 10))

    def always(x):
        raise ValueError("permanent")

    env.generate(100).map(always).collect()
    with pytest.raises(rs.JobFailed, match="gave up after 2 restarts"):
        env.execute()
