"""Operators' own state on RocksDB on Ray (issue 16): the record-API ``reduce`` (a
ReducingState of the keyed backend) and process functions' event-time timers (RocksDB timer
queues) survive killed tasks exactly once; a heap job's savepoint (reduce values and timers
in operator state) restores into RocksDB at another parallelism; a stateful-functions job
runs on RocksDB through kills and a rescaled restore from a savepoint."""

from __future__ import annotations

import time
from collections import Counter

import pytest

import raystream as rs
from raystream.operators.sinks import collected_records
from tests.integration import gated
from tests.integration import test_event_time_recovery as event_time
from tests.integration import test_fault_tolerance as reduce_job
from tests.integration import test_statefun_recovery as statefun
from tests.integration.test_fault_tolerance import kill_tasks, make_env

pytest.importorskip("rocksdict")
pytestmark = pytest.mark.usefixtures("ray_session")


def reduce_reference() -> list:
    totals: dict[str, int] = {}
    out = []
    for i in range(reduce_job.N):
        r = reduce_job.record(i)
        totals[r["key"]] = totals.get(r["key"], 0) + r["value"]
        out.append((r["key"], totals[r["key"]], i))
    return sorted(out)


def outputs(result: rs.JobResult) -> list:
    return sorted(tuple(r) for batches in result.sink_results.values() for r in collected_records(batches))


def diff(got: list, want: list) -> str:
    missing = sorted((Counter(want) - Counter(got)).elements())
    extra = sorted((Counter(got) - Counter(want)).elements())
    return f"{len(missing)} missing {missing[:10]}, {len(extra)} extra {extra[:10]}"


def test_reduce_on_rocksdb_is_exactly_once_across_kills(tmp_path):
    env = make_env(2, tmp_path)
    env.set_state_backend("rocksdb")
    reduce_job.build(env)
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    client = env.execute_async("rocksdb-reduce-kills")
    killed = kill_tasks(client, parallelisms, 2, seed=7)
    result = client.wait()
    assert killed and result.metrics["restarts"] >= 1 and result.checkpoints["completed"] >= 1
    got, want = outputs(result), reduce_reference()
    assert got == want, f"killed {killed}: {diff(got, want)}"


def test_event_time_timers_on_rocksdb_are_exactly_once_across_kills(tmp_path):
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(150, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(5, 100))
    env.set_state_backend("rocksdb")
    event_time.build(env)
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    client = env.execute_async("rocksdb-timers-kills")
    killed = kill_tasks(client, parallelisms, 2, seed=4)
    result = client.wait()
    assert killed and result.metrics["restarts"] >= 1 and result.checkpoints["completed"] >= 1
    got, want = outputs(result), sorted(event_time.expected())
    assert got == want, f"killed {killed}: {diff(got, want)}"


def _stop_with_savepoint(client: rs.JobClient, path: str) -> str:
    deadline = time.monotonic() + 60
    while (client.info().get("checkpoints") or {}).get("completed", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # a condition: the job is running and checkpointing
    try:
        return client.stop_with_savepoint(path)
    except Exception:
        client.cancel()  # (no job left running into the next test)
        raise


@pytest.mark.parametrize("job", ["reduce", "timers"])
def test_heap_savepoint_restores_into_rocksdb_rescaled_2_to_3(tmp_path, job):
    outputs_: list = []
    savepoint = None
    for step, (parallelism, backend) in enumerate(((2, "heap"), (3, "rocksdb"))):
        env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=20)
        env.enable_checkpointing(150, checkpoint_dir=str(tmp_path / f"chk{step}"))
        env.set_state_backend(backend)
        # the rate keeps the first run going until its savepoint; the restored run reads the
        # rest at full speed (the same restore and output; the rate is no state)
        if job == "reduce":
            reduce_job.build(env, rate=reduce_job.RATE if step == 0 else None)
        else:
            event_time.build(env, rate=event_time.RATE if step == 0 else None)
        client = env.execute_async(f"switch-{job}-{step}", from_savepoint=savepoint)
        if step == 0:
            savepoint = _stop_with_savepoint(client, str(tmp_path / "sp"))
        result = client.wait()
        outputs_.extend(outputs(result))
    want = reduce_reference() if job == "reduce" else sorted(event_time.expected())
    got = sorted(outputs_)
    assert got == want, diff(got, want)


@pytest.fixture(scope="module")
def statefun_reference() -> list[str]:
    return statefun.python_reference()


def test_statefun_on_rocksdb_killed_tasks_give_the_failure_free_egress(statefun_reference, tmp_path):
    env = make_env(2, tmp_path)
    env.set_state_backend("rocksdb")
    sink, _ = statefun.build(env)
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    client = env.execute_async("statefun-rocksdb-exactly-once")
    killed = kill_tasks(client, parallelisms, 2, seed=5)
    result = client.wait()
    assert killed and result.metrics["restarts"] >= 1 and result.checkpoints["completed"] >= 1
    got = sorted(statefun.egress_of(result, env, sink))
    assert got == statefun_reference, diff(got, statefun_reference)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_statefun_on_rocksdb_rescales_from_a_savepoint_2_to_3(statefun_reference, tmp_path, asynchronous):
    # (async: the savepoint holds the batches of the invocations in flight, which run again at p=3)
    env = make_env(2, tmp_path / "run0")
    env.set_state_backend("rocksdb")
    sink, _ = statefun.build(env, gate=str(tmp_path / "gate"), asynchronous=asynchronous)
    client = env.execute_async("statefun-rocksdb-2")
    gated.wait_until_paused(str(tmp_path / "gate"), 1)  # the ingress paused halfway: the savepoint is mid-run
    statefun.wait_for_messages(client, 1_000)
    savepoint = client.stop_with_savepoint(str(tmp_path / "sp"))
    first = client.wait()
    out = statefun.egress_of(first, env, sink)
    assert 0 < len(out) < len(statefun_reference), "the savepoint should be taken mid-run"
    assert (tmp_path / "sp" / "shared").is_dir()  # RocksDB files copied into the savepoint

    env = make_env(3, tmp_path / "run1")
    env.set_state_backend("rocksdb")
    sink, _ = statefun.build(env, asynchronous=asynchronous, rate=None)  # (the rest at full speed)
    second = env.execute("statefun-rocksdb-3", from_savepoint=savepoint)
    out += statefun.egress_of(second, env, sink)
    assert sorted(out) == statefun_reference, diff(sorted(out), statefun_reference)
