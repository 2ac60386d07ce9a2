"""A restore from a user's savepoint that a task refuses fails the job at once, not retried.

A savepoint restored into a job whose ``key_by`` gives keys of another type, whose state is
declared with another kind, or whose uid now names another kind of operator is refused by the
task (``StateError`` / ``CheckpointError``). Each restart restores the same savepoint into the
same job and meets the same refusal, so, as in Flink (a failed restore of a user-given
savepoint is not recovered by restarts), the job fails at once with that error. Before, the
restart strategy restored it again until it gave up: ``fixed_delay(3, ...)`` four attempts,
then "... (gave up after 3 restarts)"; ``exponential_backoff(attempts=10)`` minutes later.
A failure of another kind in the restored job still restarts it (here a map that raises once).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint import ListStateDescriptor, ValueStateDescriptor
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobFailed
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from tests.integration.gated import generate, wait_until_paused

N = 60


class Count(rs.KeyedProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        yield ctx.get_current_key(), self.count.value()


class CountInAList(rs.KeyedProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(ListStateDescriptor("count"))  # (was a ValueState)

    def process_element(self, value, ctx):
        self.count.add(1)
        yield ctx.get_current_key(), 1


def savepoint(tmp_path) -> str:
    """A savepoint of a job counting per str key under uid 'cnt'."""
    gate, path = str(tmp_path / "gate"), str(tmp_path / "sp")
    env = rs.StreamEnvironment(parallelism=1, flush_ms=0)
    env.enable_checkpointing(50, checkpoint_dir=str(tmp_path / "chk"))
    generate(env, lambda i: {"k": str(i % 3)}, count=N, rate=None, batch_size=10, gate=gate).uid("src") \
        .key_by("k").process(Count()).uid("cnt").collect()

    def stop(master, runtime) -> None:
        wait_until_paused(gate, 1)
        asyncio.run_coroutine_threadsafe(master.stop_with_savepoint(path), runtime.loop).result(60)

    result = run_in_process(env.get_job_graph(), JobConfig(name="before", checkpoint=env.checkpoint_config),
                            on_start=stop, timeout_s=120)
    assert result["savepoint"] == path
    return path


def fails_once(tmp_path):
    marker = str(tmp_path / "failed-once")

    def fn(r):
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("a failure a restart recovers from")
        return r

    return fn


CHANGES = {
    "key type": (lambda s: s.map(lambda r: {"k": int(r["k"])}).key_by("k").process(Count()).uid("cnt"),
                 "StateError: keyed state restored from a checkpoint or savepoint is kept under keys of type"),
    "state kind": (lambda s: s.key_by("k").process(CountInAList()).uid("cnt"),
                   "StateError: state 'count' was restored as 'value' state but is now declared as 'list' state"),
    "operator kind": (lambda s: s.key_by("k").reduce(lambda a, b: a).uid("cnt"),
                      "CheckpointError: operator 'reduce' (uid 'cnt') is a reduce, but the state restored under its "
                      "uid was written by a KeyedProcessFunction"),
}


def restored(tmp_path, path: str, change, parallelism: int) -> tuple[Any, list]:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    env.enable_checkpointing(50, checkpoint_dir=str(tmp_path / "chk2"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(3, 0))
    change(env.generate(lambda i: {"k": str(i % 3)}, count=N).uid("src")).collect()
    masters: list = []
    config = JobConfig(name="after", checkpoint=env.checkpoint_config, from_savepoint=path,
                       restart=env.restart_strategy)
    try:
        result = run_in_process(env.get_job_graph(), config, on_start=lambda m, _r: masters.append(m), timeout_s=120)
    except JobFailed as exc:
        return exc, masters
    return result, masters


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("what", sorted(CHANGES))
def test_a_savepoint_the_restored_job_refuses_fails_it_at_once(tmp_path, what, parallelism):
    path = savepoint(tmp_path)
    change, message = CHANGES[what]
    err, masters = restored(tmp_path, path, change, parallelism)
    assert isinstance(err, JobFailed), err
    assert message in str(err), str(err)
    assert f"the job restored savepoint {path!r}, which it cannot take: not restarted" in str(err)
    assert "gave up after" not in str(err)
    assert err.state_refused
    assert masters[0].restarts == 0  # (before: 3, each restoring the same savepoint again)


def test_another_failure_of_a_restored_job_still_restarts_it(tmp_path):
    path = savepoint(tmp_path)
    fn = fails_once(tmp_path)
    result, masters = restored(tmp_path, path, lambda s: s.map(fn).key_by("k").process(Count()).uid("cnt"), 1)
    assert not isinstance(result, Exception), result
    assert masters[0].restarts == 1
    counts: dict = {}
    for k, n in (r for batches in result["results"].values() for r in collected_records(batches)):
        counts[k] = max(n, counts.get(k, 0))
    # the source resumes at the savepoint's position and the counts go on from its state: each
    # of the N records counted once
    assert counts == {str(k): N // 3 for k in range(3)}


class ReadsStateWithoutAKeyOnce(rs.KeyedProcessFunction):
    """User code that misuses keyed state once (a StateError of its own, not a refusal of the
    restored state): the job restarts, as after any failure of user code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            self.count.value()  # no current key in open(): StateError

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        yield ctx.get_current_key(), self.count.value()


def test_a_state_error_of_user_code_in_a_restored_job_still_restarts_it(tmp_path):
    path = savepoint(tmp_path)
    marker = str(tmp_path / "misused-once")
    result, masters = restored(tmp_path, path, lambda s: s.key_by("k").process(ReadsStateWithoutAKeyOnce(marker)).uid("cnt"), 1)
    assert not isinstance(result, Exception), result  # (before: failed at once, "not restarted")
    assert masters[0].restarts == 1
    counts: dict = {}
    for k, n in (r for batches in result["results"].values() for r in collected_records(batches)):
        counts[k] = max(n, counts.get(k, 0))
    assert counts == {str(k): N // 3 for k in range(3)}
