"""Exactly once across failures: outputs of runs with killed tasks equal a failure-free run."""

from __future__ import annotations

import random
import time

import pyarrow as pa
import pytest
import ray

import raystream as rs
from raystream.checkpoint import CheckpointStorage
from raystream.engine.client import ENDED_STATUSES
from raystream.engine.errors import RaystreamError
from raystream.operators.sinks import collected_records
from tests.waiting import wait_for

N = 24_000
RATE = 8_000  # records/s over all source subtasks: the job runs ~3 s


def record(i: int) -> dict:
    return {"key": f"k{(i * 7919) % 37:02d}", "value": i % 101, "i": i}


def build(env: rs.StreamEnvironment, fail_marker: str | None = None, rate: float | None = RATE) -> None:
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
        env.generate(record, count=N, rate=rate, batch_size=200)
        .set_parallelism(1)
        .map(maybe_fail)
        .set_parallelism(1)
        .key_by("key")
        .reduce(lambda a, b: {"key": a["key"], "value": a["value"] + b["value"], "i": b["i"]})
        .uid("running-sum")
        .map(lambda r: (r["key"], r["value"], r["i"]))
        .collect()
    )


def make_env(parallelism: int, tmp_path, interval_ms: int = 150, buffer_bytes: int = 8 << 20) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=20, buffer_bytes=buffer_bytes)
    env.enable_checkpointing(interval_ms, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(5, 100))
    return env


@pytest.fixture(scope="module")
def reference():
    env = rs.StreamEnvironment(parallelism=1)
    build(env, rate=None)  # (the output does not depend on the rate: the failure-free run at full speed)
    return {p: sorted(env.execute_and_collect()) for p in (1,)}[1]


def _processing(client: rs.JobClient) -> bool:
    """The job runs and its tasks have processed records (deployment is over)."""
    if client.info()["status"] != "RUNNING":
        return False
    return any(m.get("records_in", 0) > 0 for m in client.metrics().get("operators", {}).values())


def _checkpoints(client: rs.JobClient) -> int:
    """Checkpoints the job completed."""
    return (client.info().get("checkpoints") or {}).get("completed", 0)


def kill_tasks(client: rs.JobClient, parallelisms: list[int], kills: int, seed: int) -> list:
    """Kill ``kills`` random task actors at random moments while the job runs."""
    rng = random.Random(seed)
    done = []
    deadline = time.time() + 60
    while not _processing(client) and time.time() < deadline:
        time.sleep(0.02)  # not deployed yet (slow under load): a kill now hits no running task
    for _ in range(kills):
        time.sleep(rng.uniform(0.6, 1.2))
        while not _processing(client) and time.time() < deadline:
            if client.info()["status"] in ENDED_STATUSES:
                break
            time.sleep(0.02)  # a restart is still deploying: a kill now would hit no task
        info = client.info()
        if info["status"] != "RUNNING":
            break
        v = rng.randrange(len(parallelisms))
        s = rng.randrange(parallelisms[v])
        try:
            actor = client.task_actor(v, s)
        except (ValueError, RaystreamError):  # gone, or the attempt changed meanwhile
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
    from raystream.operators.sinks import collected_records

    got = sorted(collected_records(next(iter(out.values()))))
    assert killed, "the job ended before any task could be killed"
    assert result.metrics["restarts"] >= 1
    assert result.checkpoints["completed"] >= 1
    assert got == reference


def test_killed_tasks_with_sends_and_calls_sliced_by_bytes_give_the_failure_free_output(reference, tmp_path):
    """With ``buffer_bytes`` of 2 KB every send carries ~20 of these records and every task
    calls its chain on slices of its input batches (the path of records of megabytes):
    barriers between the slices' sends, kills and restarts still give exactly the
    failure-free output."""
    env = make_env(2, tmp_path, buffer_bytes=2048)
    build(env)
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    client = env.execute_async("exactly-once-sliced")
    killed = kill_tasks(client, parallelisms, 2, 11)
    result = client.wait()
    got = sorted(collected_records(next(iter(result.sink_results.values()))))
    assert killed and result.metrics["restarts"] >= 1, killed
    assert max(c["rows"] / max(1, c["sends"]) for c in result.metrics["channels"] if c["sends"]) <= 64, \
        result.metrics["channels"]
    assert got == reference


class RunningSum(rs.KeyedProcessFunction):
    """The same running sum as build()'s reduce, kept in keyed ValueState (heap backend)."""

    def open(self, ctx):
        from raystream.checkpoint import ValueStateDescriptor

        self.total = ctx.get_state(ValueStateDescriptor("total", default=0))

    def process_element(self, r, ctx):
        self.total.update(self.total.value() + r["value"])
        yield (r["key"], self.total.value(), r["i"])


def test_keyed_state_backend_survives_kills(reference, tmp_path):
    env = make_env(2, tmp_path)
    (
        env.generate(record, count=N, rate=RATE, batch_size=200)
        .set_parallelism(1)
        .key_by("key")
        .process(RunningSum())
        .uid("keyed-state-sum")
        .collect()
    )
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    client = env.execute_async("keyed-state")
    killed = kill_tasks(client, parallelisms, 2, seed=5)
    result = client.wait()
    assert killed and result.metrics["restarts"] >= 1
    assert sorted(collected(result)) == reference


def test_user_exception_once_is_recovered_exactly_once(reference, tmp_path):
    env = make_env(2, tmp_path)
    build(env, fail_marker=str(tmp_path / "failed-once"))
    result = env.execute("fail-once")
    from raystream.operators.sinks import collected_records

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


def collected(result: rs.JobResult) -> list:
    from raystream.operators.sinks import collected_records

    return collected_records(next(iter(result.sink_results.values())))


def test_stop_with_savepoint_then_rescale_2_to_3_to_1(reference, tmp_path):
    outputs = []
    savepoint = None
    for step, parallelism in enumerate((2, 3, 1)):
        env = make_env(parallelism, tmp_path / f"run{step}")
        build(env, rate=RATE if step < 2 else None)  # (the last run reads the rest at full speed)
        client = env.execute_async(f"rescale-{parallelism}", from_savepoint=savepoint)
        if step < 2:  # mid-run: records processed and a checkpoint taken (a condition, not a time)
            wait_for(lambda c=client: _processing(c) and _checkpoints(c) >= 1, "records and a checkpoint", 120)
            savepoint = client.stop_with_savepoint(str(tmp_path / f"sp-{step}"))
        result = client.wait()
        if step < 2:
            assert result.savepoint == savepoint
        outputs.extend(collected(result))
    # the three runs together saw every record exactly once, with state carried across
    assert sorted(outputs) == reference


def test_savepoint_of_unknown_operator_needs_allow_non_restored_state(tmp_path):
    env = make_env(1, tmp_path)
    env.generate(lambda i: i, count=100_000, rate=20_000).uid("old-source").key_by(lambda x: x % 3).reduce(lambda a, b: a + b).uid("old-sum").collect()
    client = env.execute_async("sp-source")
    wait_for(lambda: _processing(client) and _checkpoints(client) >= 1, "records and a checkpoint", 120)
    sp = client.stop_with_savepoint(str(tmp_path / "sp"))
    client.wait()
    def new_job():
        env = make_env(1, tmp_path)
        env.generate(lambda i: i, count=10).uid("new-source").key_by(lambda x: x % 3).reduce(lambda a, b: a + b).uid("new-sum").collect()
        return env

    with pytest.raises(rs.CheckpointError, match="old-sum"):
        new_job().execute("sp-target", from_savepoint=sp)
    result = new_job().execute("sp-target-allowed", from_savepoint=sp, allow_non_restored_state=True)
    assert sorted(collected(result)) == sorted([0, 1, 2, 3, 5, 7, 9, 12, 15, 18])


class SlowSink(rs.Sink):
    def create_writer(self, ctx):
        class W(rs.SinkWriter):
            def write(self, batch):
                time.sleep(0.05)

        return W()


def test_checkpoint_timeout_aborts_without_failing_the_job(tmp_path):
    env = rs.StreamEnvironment(parallelism=1, batch_size=50, credits=1)
    env.enable_checkpointing(50, checkpoint_dir=str(tmp_path / "chk"), timeout_ms=20)
    env.generate(3000, batch_size=50).disable_chaining().sink_to(SlowSink()).disable_chaining()
    result = env.execute("timeouts")
    assert result.checkpoints["aborted"] >= 1
    assert result.metrics["restarts"] == 0
    assert result.metrics["operators"]["SlowSink"]["records_in"] == 3000


class FailFirstSnapshot(rs.StreamOperator):
    """Passes records through; its first snapshot in the first attempt raises."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def process_batch(self, batch, input_index=0):
        self.output.emit(batch)

    def snapshot_state(self, checkpoint_id):
        import os

        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise OSError("disk full while snapshotting")
        return None


def test_failure_during_a_checkpoint_recovers_exactly_once(reference, tmp_path):
    env = make_env(2, tmp_path)
    marker = str(tmp_path / "snap-failed")
    (
        env.generate(record, count=N, rate=RATE, batch_size=200)
        .set_parallelism(1)
        .transform("fail-snapshot", lambda: FailFirstSnapshot(marker))
        .set_parallelism(1)
        .key_by("key")
        .reduce(lambda a, b: {"key": a["key"], "value": a["value"] + b["value"], "i": b["i"]})
        .map(lambda r: (r["key"], r["value"], r["i"]))
        .collect()
    )
    result = env.execute("fail-in-checkpoint")
    assert result.metrics["restarts"] == 1
    assert sorted(collected(result)) == reference


def test_jsonl_file_sink_is_exactly_once_across_kills(tmp_path):
    import json

    out_dir = tmp_path / "out"
    env = make_env(2, tmp_path)
    env.generate(record, count=N, rate=RATE, batch_size=200).set_parallelism(1).rebalance().map(lambda r: r).write_jsonl(str(out_dir))
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    client = env.execute_async("files")
    killed = kill_tasks(client, parallelisms, 2, seed=11)
    client.wait()
    assert killed
    rows = [json.loads(line) for f in sorted(out_dir.glob("part-*.jsonl")) for line in f.read_text().splitlines()]
    assert sorted(r["i"] for r in rows) == list(range(N))


class SlowStorage(CheckpointStorage):
    """Checkpoint storage whose state writes take a while: the ack of a task's last
    checkpoint reaches the job master well after the task could have finished."""

    def write_state(self, job_id, checkpoint_id, name, data):
        time.sleep(1.0)
        return super().write_state(job_id, checkpoint_id, name, data)


def test_acks_of_a_finishing_task_are_not_lost(tmp_path):
    """Race: a sink hands data over at a barrier (it goes with the checkpoint's ack, which
    takes a second to be written here), then its input ends. The task must not report
    itself finished before that ack has reached the master, or the master could take the
    final checkpoint without that data. With FLIP-147 the checkpoints taken while tasks
    finish complete (finished tasks stand in with their final state) and the final
    checkpoint commits the rest."""
    n = 6_000
    env = rs.StreamEnvironment(parallelism=2, flush_ms=10)
    env.enable_checkpointing(100, checkpoint_dir=SlowStorage(str(tmp_path / "chk")))
    (env.generate(lambda i: {"key": i % 13, "i": i}, count=n, rate=6_000, batch_size=100)
     .key_by("key").reduce(lambda last, r: r)  # keyed state in the sink's task: its ack is slow
     .map(lambda r: r["i"]).collect())
    result = env.execute("finishing-task-acks")
    got = sorted(r for batches in result.sink_results.values() for r in collected_records(batches))
    assert result.checkpoints["completed"] >= 2, result.checkpoints  # at least one besides the final one
    assert got == list(range(n)), f"{n - len(set(got))} records lost, {len(got) - len(set(got))} duplicated"


def test_two_phase_aggregate_is_exactly_once_across_kills(tmp_path):
    """aggregate(emit="final") runs local partial aggregation chained before the shuffle;
    with tasks killed (local and global halves alike) the final rows equal a pyarrow
    group-by over the whole input."""
    n = 30_000
    env = make_env(2, tmp_path)
    (env.generate(record, count=n, rate=RATE, batch_size=200)
     .key_by("key")
     .aggregate(total=("value", "sum"), n=("value", "count"), hi=("i", "max"), emit="final")
     .collect())
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    assert any("aggregate (local)" in v.name for v in env.get_job_graph().vertices)
    client = env.execute_async("two-phase")
    killed = kill_tasks(client, parallelisms, 2, seed=13)
    result = client.wait()
    got = sorted((r["key"], r["total"], r["n"], r["hi"]) for r in collected_records(next(iter(result.sink_results.values()))))
    table = pa.Table.from_pylist([record(i) for i in range(n)])
    ref = table.group_by("key").aggregate([("value", "sum"), ("value", "count"), ("i", "max")])
    want = sorted(zip(ref["key"].to_pylist(), ref["value_sum"].to_pylist(), ref["value_count"].to_pylist(),
                      [float(x) for x in ref["i_max"].to_pylist()]))
    assert killed and result.metrics["restarts"] >= 1
    assert got == want


def test_field_sum_of_arrow_batches_is_exactly_once_across_kills(tmp_path):
    """sum(column, emit="final") on Arrow batches: the vectorized combiner holds the partials
    of consecutive batches and sends them before every barrier; with tasks killed (combiner
    and keyed half alike) the sums equal a pyarrow group-by over the whole input."""
    n = 30_000
    env = make_env(2, tmp_path)
    (env.generate(record, count=n, rate=RATE, batch_size=200)
     .map_batches(lambda b: b)  # Arrow batches of dict rows: the combiner's vectorized path
     .key_by("key").sum("value", emit="final")
     .collect())
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    client = env.execute_async("field-sum-arrow")
    killed = kill_tasks(client, parallelisms, 2, seed=17)
    result = client.wait()
    got = sorted((r["key"], r["value"]) for r in collected_records(next(iter(result.sink_results.values()))))
    ref = pa.Table.from_pylist([record(i) for i in range(n)]).group_by("key").aggregate([("value", "sum")])
    assert killed and result.metrics["restarts"] >= 1
    assert got == sorted(zip(ref["key"].to_pylist(), ref["value_sum"].to_pylist()))
