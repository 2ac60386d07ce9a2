"""Job master failover and stop-with-savepoint: exactly once when the master process dies,
and nothing processed after a stop-with-savepoint barrier."""

from __future__ import annotations

import json
import os

import ray

import raystream as rs
from raystream.operators.sinks import collected_records
from tests.waiting import wait_for

N = 12_000


def record(i: int) -> dict:
    return {"key": f"k{(i * 7919) % 29:02d}", "value": i % 97, "i": i}


def expected_running_sums() -> list:
    sums: dict = {}
    out = []
    for i in range(N):
        r = record(i)
        sums[r["key"]] = sums.get(r["key"], 0) + r["value"]
        out.append((r["key"], sums[r["key"]], i))
    return sorted(out)


def build(env: rs.StreamEnvironment, rate: int = 4_000) -> rs.DataStream:
    return (
        env.generate(record, count=N, rate=rate, batch_size=200)
        .set_parallelism(1)  # one source subtask keeps each key in order: a deterministic output
        .key_by("key")
        .reduce(lambda a, b: {"key": a["key"], "value": a["value"] + b["value"], "i": b["i"]})
        .uid("running-sum")
        .map(lambda r: (r["key"], r["value"], r["i"]))
    )


def completed_checkpoints(client: rs.JobClient) -> int:
    info = client.info()
    return (info.get("checkpoints") or {}).get("completed", 0) if info.get("status") == "RUNNING" else 0


def test_killed_job_master_fails_over_exactly_once(tmp_path):
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(150, checkpoint_dir=str(tmp_path / "chk"))
    build(env).collect()
    client = env.execute_async("master-failover")
    wait_for(lambda: completed_checkpoints(client) >= 2, "two completed checkpoints")
    ray.kill(client.job_master(), no_restart=True)
    result = client.wait()
    got = sorted(tuple(r) for batches in result.sink_results.values() for r in collected_records(batches))
    want = expected_running_sums()
    assert result.failovers == 1
    assert len(got) == len(want), f"{len(want) - len(set(got))} lost, {len(got) - len(set(got))} duplicated"
    assert got == want


def test_killed_job_master_file_sink_exactly_once(tmp_path):
    out = tmp_path / "out"
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(150, checkpoint_dir=str(tmp_path / "chk"))
    build(env).write_jsonl(str(out))
    client = env.execute_async("master-failover-files")
    wait_for(lambda: completed_checkpoints(client) >= 2, "two completed checkpoints")
    ray.kill(client.job_master(), no_restart=True)
    result = client.wait()
    rows = [tuple(json.loads(line)) for f in sorted(os.listdir(out)) if f.startswith("part-")
            for line in (out / f).read_text().splitlines()]
    assert result.failovers == 1
    assert sorted(rows) == expected_running_sums()


def test_without_checkpointing_a_dead_master_fails_the_job_clearly():
    env = rs.StreamEnvironment(parallelism=1)
    build(env, rate=2_000).collect()
    client = env.execute_async("no-failover")
    wait_for(lambda: client.info()["status"] == "RUNNING", "the job to run")
    ray.kill(client.job_master(), no_restart=True)
    try:
        client.wait()
    except rs.JobFailed as exc:
        assert "job master" in str(exc) and "died" in str(exc)
    else:
        raise AssertionError("the job should fail without checkpointing")


class _SideEffects(rs.SinkWriter):
    """Appends every record to a file as it arrives (a non-transactional side effect)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, batch) -> None:
        with open(self.path, "a") as f:
            for r in batch.records():
                f.write(json.dumps(r) + "\n")


class SideEffectSink(rs.Sink):
    def __init__(self, path: str) -> None:
        self.path = path

    def create_writer(self, ctx) -> rs.SinkWriter:
        return _SideEffects(f"{self.path}-{ctx.subtask_index}")


def side_effects(prefix) -> list:
    rows = []
    for name in os.listdir(prefix.parent):
        if name.startswith(prefix.name + "-"):
            rows += [tuple(json.loads(line)) for line in (prefix.parent / name).read_text().splitlines()]
    return sorted(rows)


def test_stop_with_savepoint_then_resume_neither_loses_nor_repeats(tmp_path):
    """Flink's ``stop``: nothing is processed after the savepoint barrier, so a job resumed
    from the savepoint repeats no side effect (not even a non-transactional one) and loses
    nothing."""
    effects = tmp_path / "effects"
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(10_000, checkpoint_dir=str(tmp_path / "chk"))
    build(env, rate=3_000).sink_to(SideEffectSink(str(effects)))
    client = env.execute_async("stop-1")
    wait_for(lambda: len(side_effects(effects)) > 500, "records to reach the sink")
    sp = client.stop_with_savepoint(str(tmp_path / "sp"))
    first = client.wait()
    assert first.savepoint == sp
    before = side_effects(effects)
    assert 0 < len(before) < N
    assert side_effects(effects) == before  # the job has ended: its tasks are gone

    env2 = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env2.enable_checkpointing(10_000, checkpoint_dir=str(tmp_path / "chk2"))
    build(env2, rate=20_000).sink_to(SideEffectSink(str(effects)))
    env2.execute("stop-2", from_savepoint=sp)
    assert side_effects(effects) == expected_running_sums()


def test_checkpoints_complete_after_a_source_finished_flip147(tmp_path):
    """A source that ends early (a small collection) must not stop checkpointing: later
    checkpoints complete without it, and a failure afterwards restores from one of them,
    exactly once."""
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(100, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(3, 100))
    small = env.from_collection([record(N + i) for i in range(50)]).set_parallelism(1)
    big = env.generate(record, count=N, rate=4_000, batch_size=200).set_parallelism(1)
    (small.union(big)
     .key_by("key")
     .reduce(lambda a, b: {"key": a["key"], "value": a["value"] + b["value"], "i": b["i"]})
     .map(lambda r: r["i"])  # one output per input record: the record's own i
     .collect())
    client = env.execute_async("flip-147")
    wait_for(lambda: completed_checkpoints(client) >= 3, "checkpoints after the small source finished")
    ray.kill(client.task_actor(3, 1), no_restart=True)  # the reduce's second subtask
    result = client.wait()
    assert result.metrics["restarts"] >= 1
    assert result.checkpoints["completed"] >= 3
    got = sorted(r for batches in result.sink_results.values() for r in collected_records(batches))
    assert len(got) == N + 50 and len(set(got)) == N + 50, f"{N + 50 - len(set(got))} lost, {len(got) - len(set(got))} duplicated"


def _fault_lines(log_path) -> list[dict]:
    try:
        return [json.loads(line) for line in open(log_path).read().splitlines()]
    except FileNotFoundError:
        return []


def test_master_dying_while_committing_a_checkpoint_loses_no_later_committed_output(tmp_path):
    """The commit of checkpoint N (renaming its part files) is slow; checkpoint N+1 completes
    meanwhile, then the master dies before N's rename happened. The new master restores
    from N+1, whose metadata must carry N's committables (not yet known committed): else
    N's part file stays pending forever and its records are lost."""
    from benchmarks.drill import FaultyJsonLinesSink
    from raystream.checkpoint.faults import FaultRule, faulty_filesystem

    out, log_path = tmp_path / "out", tmp_path / "faults.jsonl"
    # the master's committer renames part files: the first rename (per process) takes 4 s
    # (the new master's re-commit of that file, too)
    slow_commit = FaultRule("move", path_glob="*/part-*", delay_s=4.0, times=1)
    sink = FaultyJsonLinesSink(str(out), faulty_filesystem(rules=[slow_commit], log_path=str(log_path)))
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(100, checkpoint_dir=str(tmp_path / "chk"))
    build(env, rate=3_000).sink_to(sink)
    client = env.execute_async("master-dies-committing")
    wait_for(lambda: any(e["op"] == "move" for e in _fault_lines(log_path)), "a slow part-file commit")
    during = completed_checkpoints(client)
    wait_for(lambda: completed_checkpoints(client) >= during + 2, "checkpoints completing during the slow commit")
    ray.kill(client.job_master(), no_restart=True)
    result = client.wait()
    rows = [tuple(json.loads(line)) for f in sorted(os.listdir(out)) if f.startswith("part-")
            for line in (out / f).read_text().splitlines()]
    want = expected_running_sums()
    assert result.failovers == 1
    assert len(rows) == len(want), f"{len(set(want) - set(rows))} lost, {len(rows) - len(set(rows))} duplicated"
    assert sorted(rows) == want
