"""Exactly once through the stateful-functions feedback loop when checkpoint storage is slow
or failing: checkpoints that are declined (a state write fails), that time out while their
metadata is written (and land afterwards), that fail at random, with task actors and the
job master killed meanwhile. The in-flight feedback records a checkpoint logs are what such
paths could lose or replay twice; the egress must equal the failure-free run's.

The job and its reference are those of ``test_statefun_recovery.py`` (counters that forward,
the egress multiset encodes the final state exactly).
"""

from __future__ import annotations

from typing import Any

import pytest
import ray

import raystream as rs
from raystream.checkpoint.faults import FaultRule, faulty_filesystem, read_fault_log
from tests.integration.test_statefun_recovery import (
    build,
    egress_of,
    python_reference,
    wait_for_messages,
)
from tests.waiting import wait_for

SCENARIOS: dict[str, dict[str, Any]] = {
    # the state writes of checkpoints 2 and 4 fail: the tasks decline, the job goes on
    "declined": {"rules": [FaultRule("write_state", path_glob="*/chk-2", fail=True),
                           FaultRule("write_state", path_glob="*/chk-4", fail=True)], "kill_tasks": 1},
    # every _metadata write takes longer than the checkpoint timeout: checkpoints time out
    # while completing, and their metadata lands afterwards (restorable, commits nothing)
    "timed-out": {"rules": [FaultRule("write_metadata", delay_s=0.4)], "timeout_ms": 250, "kill_tasks": 1},
    # a fifth of the state writes fail at random (the final checkpoint's too: the job then
    # restarts from its latest checkpoint, ~0.3 times per end reached), the others are slow
    "flaky": {"rules": [FaultRule("write_state", fail_probability=0.2),
                        FaultRule("write_state", delay_s=0.02, delay_jitter_s=0.08)], "kill_tasks": 2},
    # slow acks and the job master killed mid-run
    "slow-master-killed": {"rules": [FaultRule("write_state", delay_s=0.03, delay_jitter_s=0.1)],
                           "kill_master": True},
}


@pytest.fixture(scope="module")
def reference() -> list[str]:
    return python_reference()


def kill_function_task(client: rs.JobClient, fwd: int, subtask: int, after_messages: int) -> tuple:
    """Kill subtask ``subtask`` of the functions' vertex ``fwd`` once the functions invoked
    ``after_messages`` in the current attempt, and wait until the master noticed (a new attempt)."""
    wait_for_messages(client, after_messages)
    attempt = client.info()["attempt"]
    ray.kill(client.task_actor(fwd, subtask), no_restart=True)
    wait_for(lambda: client.info()["attempt"] != attempt, "the job restarting after the kill")
    return (fwd, subtask, attempt)


CASES = [(name, "heap") for name in sorted(SCENARIOS)] + [("flaky", "rocksdb"), ("timed-out", "rocksdb")]


@pytest.mark.parametrize(("scenario", "backend"), CASES)
def test_feedback_loop_is_exactly_once_with_faulty_storage(reference, tmp_path, scenario, backend):
    if backend == "rocksdb":
        pytest.importorskip("rocksdict")
    plan = SCENARIOS[scenario]
    log_path = str(tmp_path / "faults.jsonl")
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    fs = faulty_filesystem(rules=plan["rules"], seed=11, log_path=log_path)
    # (a (filesystem, path) location: storage accepts it, enable_checkpointing's annotation names str)
    location: Any = (fs, str(tmp_path / "chk"))
    env.enable_checkpointing(150, checkpoint_dir=location, timeout_ms=plan.get("timeout_ms", 10_000))
    # (a budget the random failures of the final checkpoint cannot plausibly exhaust: P < 1e-12)
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(30, 50))
    env.set_state_backend(backend)  # (rocksdb: the functions' state in incremental delta chains)
    sink, _ = build(env)
    fwd = next(v.id for v in env.get_job_graph().vertices if v.name == "fwd")
    client = env.execute_async(f"statefun-storage-{scenario}")
    killed: list = []
    for k in range(plan.get("kill_tasks", 0)):  # a function task, once it invoked some messages
        killed.append(kill_function_task(client, fwd, subtask=k % 2, after_messages=2_000 * (k + 1)))
    if plan.get("kill_master"):
        wait_for_messages(client, 4_000)
        ray.kill(client.job_master(), no_restart=True)
    result = client.wait(timeout=240)
    got = sorted(egress_of(result, env, sink))
    injected = read_fault_log(log_path)
    lost = len(set(reference) - set(got))
    duplicated = len(got) - len(set(got))
    what = (f"{scenario}: restarts {result.metrics['restarts']}, failovers {result.failovers}, "
            f"checkpoints {result.checkpoints}, killed {killed}, injected {injected}")
    print(what)
    assert got == reference, f"{lost} lost, {duplicated} duplicated; {what}"
    assert any(injected.values()), f"{scenario}: no fault was injected"
    if plan.get("kill_master"):
        assert result.failovers == 1


def test_scenarios_hit_every_failure_path():
    """The scenarios above decline, time out, fail at random and kill the master (a guard
    against one being edited away)."""
    ops = {(r.op, r.fail or r.fail_probability > 0, r.delay_s > 0) for p in SCENARIOS.values() for r in p["rules"]}
    assert ("write_state", True, False) in ops and ("write_metadata", False, True) in ops
    assert any(p.get("kill_master") for p in SCENARIOS.values())
