"""The job master's end of a cancelled or failed job, and where a restart places executors,
driven in one process with the fake executors of ``tests/unit/test_job_master.py``.

* A cancelled job's executors (and those a failed job leaves alive) are released clean and go
  back to the driver's worker pool, as a finished job's do: the next job of a notebook then
  starts on warm executors instead of new processes (~0.8 s idle, seconds under load).
* A restart places no new executor on a node where the failed attempt's executors were lost
  (Flink schedules no task onto a lost TaskManager), though the runtime may still report it
  alive, and spreads them over the live nodes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import cloudpickle
import pytest

import raystream as rs
from raystream.checkpoint import HeapStateBackend
from raystream.checkpoint.coordinator import CheckpointConfig
from raystream.engine import ray_runtime
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobCancelled, JobFailed
from raystream.engine.executors import TaskCallFailed
from raystream.engine.master import JobMaster
from raystream.engine.observability import NullMetricsBackend
from tests.unit.test_job_master import FakeRuntime, FakeTask, Script, tags


def _job(tmp_path, restart: Any) -> tuple[bytes, bytes]:
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(4).collect()
    config = JobConfig(name="fake", checkpoint=CheckpointConfig(20, checkpoint_dir=str(tmp_path)), restart=restart,
                       state_backend=HeapStateBackend(), reuse_workers=True, standby_executors=1)
    return cloudpickle.dumps(env.get_job_graph()), cloudpickle.dumps(config)


def _master(script: Script, nodes: tuple[str, ...]) -> tuple[FakeRuntime, JobMaster]:
    runtime = FakeRuntime(script, nodes)
    script.runtime = runtime
    master = JobMaster(runtime, metrics_backend=NullMetricsBackend())
    runtime.master = master
    return runtime, master


async def _until(condition: Any, what: str, timeout_s: float = 30.0) -> None:
    """Until ``condition()`` holds (the master's loop runs meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened within {timeout_s:.0f} s: {what}")
        await asyncio.sleep(0.005)


def test_a_cancelled_job_hands_its_executors_back_clean(tmp_path):
    script = Script(finish_after=10**9)  # runs until cancelled
    runtime, master = _master(script, ("n1", "n2"))
    lent = runtime.lend({"s0": "n1", "s1": "n2", "standby-0": "n1"})
    graph, config = _job(tmp_path, rs.RestartStrategy.fixed_delay(2, 0))

    async def main() -> dict:
        job = asyncio.ensure_future(master.run(graph, config, "job-1", lent))
        await _until(lambda: master.status == "RUNNING" and runtime.acked, "the job runs and checkpoints")
        await master.cancel("job-1")
        with pytest.raises(JobCancelled):
            await job
        assert runtime.killed == [], "a cancelled job's executors were killed, not recycled"
        return await master.released_executors("job-1")

    released = asyncio.run(main())
    # every executor the driver lent goes back, released already (no release tag to wait for)
    assert released == {"s0": None, "s1": None, "standby-0": None}
    for e in lent.values():
        assert e.actor.hosted == {}, "a pooled executor keeps a task of the cancelled job"
    # the job's executors cancelled and forgot their tasks (the spare hosted none)
    assert [r[1] for r in lent["s0"].actor.releases] == [True] and [r[1] for r in lent["s1"].actor.releases] == [True]
    assert runtime.started == []


def test_a_failed_job_hands_back_its_live_executors_and_not_the_dead_one(tmp_path):
    # no restart: the executor of subtask 1 dies at checkpoint 2 and the job fails; the live
    # one and the unused spare go back to the pool, the dead one does not
    script = Script(finish_after=10**9, kill=(1, 2))
    runtime, master = _master(script, ("n1", "n2"))
    lent = runtime.lend({"s0": "n1", "s1": "n2", "standby-0": "n1"})
    graph, config = _job(tmp_path, rs.RestartStrategy.none())

    async def main() -> dict:
        with pytest.raises(JobFailed, match="died"):
            await asyncio.wait_for(master.run(graph, config, "job-1", lent), 60)
        return await master.released_executors("job-1")

    assert asyncio.run(main()) == {"s0": None, "standby-0": None}
    assert set(runtime.killed) == {"pool-s1"}  # (by the drill, then by the master)


class _NodeDies(Script):
    """Node ``node`` dies (with every executor on it) at checkpoint ``at`` of the first attempt."""

    def __init__(self, node: str, at: int, finish_after: int) -> None:
        super().__init__(finish_after=finish_after)
        self.node, self.at = node, at

    def on_checkpoint(self, task: FakeTask, cid: int) -> None:
        rt = self.runtime
        assert rt is not None
        if task.epoch == 1 and cid == self.at and self.node not in rt.dead_nodes:
            rt.kill_node(self.node)


def test_a_restart_places_no_executor_on_the_node_that_died(tmp_path):
    # n1 dies with the executor of subtask 0 and the warm spare; the runtime still lists n1
    # (as Ray does until its health checks fail): the restart starts subtask 0's new executor
    # on n2, the live node, beside the survivor, never on n1 (where it would never start)
    script = _NodeDies("n1", at=2, finish_after=4)
    runtime, master = _master(script, ("n1", "n2"))
    lent = runtime.lend({"s0": "n1", "s1": "n2", "standby-0": "n1"})
    graph, config = _job(tmp_path, rs.RestartStrategy.fixed_delay(2, 0))
    result = asyncio.run(asyncio.wait_for(master.run(graph, config, "job-1", lent), 60))
    assert result["metrics"]["restarts"] == 1, "the restart did not deploy at once"
    assert "final-0" in tags(result) and "final-1" in tags(result)
    (names, placed, avoid), = [p for p in runtime.placements if p[0]]
    assert avoid == {"n1"} and placed == ["n2"], runtime.placements
    new = [t.executor for t in runtime.tasks if t.executor.name in names]
    assert new and {e.node_id for e in new} == {"n2"}


def test_a_killed_executor_on_a_live_node_is_replaced_by_the_spare_there(tmp_path):
    # one process dies but its node lives (the survivor and the spare on it answer): the node
    # is not avoided, and the warm spare takes the dead executor's place (no process start)
    script = Script(finish_after=4, kill=(1, 2))
    runtime, master = _master(script, ("n1",))
    lent = runtime.lend({"s0": "n1", "s1": "n1", "standby-0": "n1"})
    graph, config = _job(tmp_path, rs.RestartStrategy.fixed_delay(2, 0))
    result = asyncio.run(asyncio.wait_for(master.run(graph, config, "job-1", lent), 60))
    assert result["metrics"]["restarts"] == 1
    # the only start: a new spare in place of the one used, on the live node
    assert [(placed, avoid) for names, placed, avoid in runtime.placements if names] == [(["n1", "n1"], set())]
    assert master._lost_nodes == set()


class _FakeActorClass:
    def __init__(self) -> None:
        self.created: list[dict] = []

    def options(self, **options: Any) -> Any:
        created = self.created

        class _Remote:
            def remote(self) -> str:
                created.append(options)
                return options["name"]

        return _Remote()


#: node ids as Ray spells them (hex), sorted as start_executors sorts them
A, B, C = ("a" * 56, "b" * 56, "c" * 56)


def _nodes(monkeypatch, *alive: str) -> _FakeActorClass:
    monkeypatch.setattr(ray_runtime.ray, "nodes", lambda: [{"NodeID": n, "Alive": True} for n in alive])
    actor_class = _FakeActorClass()
    monkeypatch.setattr(ray_runtime, "TaskActor", actor_class)
    return actor_class


def test_start_executors_avoids_the_lost_node_and_spreads_over_the_live_ones(monkeypatch):
    created = _nodes(monkeypatch, A, B, C)
    out = ray_runtime.start_executors({"s0": "x0", "s1": "x1", "s2": "x2"}, 0.0, placed=[B], avoid={A})
    assert [e.node for e in out.values()] == [C, B, C]
    assert [o["scheduling_strategy"].node_id for o in created.created] == [C, B, C]
    assert all(o["scheduling_strategy"].soft is False for o in created.created)


def test_start_executors_uses_the_avoided_nodes_when_no_other_is_alive(monkeypatch):
    _nodes(monkeypatch, A)
    out = ray_runtime.start_executors({"s0": "x0"}, 0.0, avoid={A})
    assert out["s0"].node == A  # (a process that died on the only node: it is live)


def test_start_executors_reserving_cpus_keep_off_the_lost_node(monkeypatch):
    created = _nodes(monkeypatch, A, B)
    ray_runtime.start_executors({"s0": "x0"}, 1.0, avoid={A})
    strategy = created.created[0]["scheduling_strategy"]
    assert strategy.node_id == B and strategy.soft is True  # (SPREAD could pick the lost node)
    ray_runtime.start_executors({"s0": "x1"}, 1.0)
    assert created.created[1]["scheduling_strategy"] == "SPREAD"  # nothing to avoid: as before


def test_a_job_whose_setup_fails_hands_its_executors_back(tmp_path):
    # the tasks cannot be set up (operators that do not unpickle in the executors: a module
    # Ray's workers cannot import): the job fails, and the executors, which forget the tasks
    # set up on them, go back to the pool instead of being killed (the notebook's next try)
    script = Script(finish_after=10**9)
    script.setup_error = TaskCallFailed("ModuleNotFoundError: No module named 'mymodule'")
    runtime, master = _master(script, ("n1",))
    lent = runtime.lend({"s0": "n1", "s1": "n1", "standby-0": "n1"})
    graph, config = _job(tmp_path, rs.RestartStrategy.none())

    async def main() -> dict:
        with pytest.raises(JobFailed, match="mymodule"):
            await asyncio.wait_for(master.run(graph, config, "job-1", lent), 60)
        return await master.released_executors("job-1")

    assert asyncio.run(main()) == {"s0": None, "s1": None, "standby-0": None}
    assert runtime.killed == []
