"""The job master's logic in one process, without Ray: a plain JobMaster drives fake task
executors (scripted acks, declines, deaths) through a fake ExecutorRuntime."""

from __future__ import annotations

import asyncio
from typing import Any

import cloudpickle
import pyarrow as pa

import raystream as rs
from raystream.checkpoint import HeapStateBackend
from raystream.checkpoint.coordinator import CheckpointConfig
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobFailed
from raystream.engine.executors import Executor, ExecutorLost
from raystream.engine.master import JobMaster
from raystream.engine.observability import NullMetricsBackend
from raystream.engine.task import TaskResult, TaskSpec


class FakeTask:
    """One hosted task: acks checkpoints with a collect committable per barrier and
    finishes once the script says so."""

    def __init__(self, executor: FakeExecutor, key: tuple) -> None:
        self.executor = executor
        self.key = key
        self.spec: TaskSpec | None = None
        self.master: Any = None
        self.epoch = 0
        self.done = asyncio.Event()
        self.restored: dict | None = None

    # the messages the master sends (handle.<name>.remote(*args))
    async def setup_tasks(self, tasks: list, master: Any, storage: Any, epoch: int, after: str | None = None) -> None:
        for key, spec_blob, downstream, payload in tasks:
            await self.executor.hosted[key].setup(spec_blob, downstream, master, storage, epoch, payload, after)

    async def setup(self, spec_blob: bytes, downstream: list, master: Any, storage: Any, epoch: int,
                    payload: tuple[Any, Any] | None = None, after: str | None = None) -> None:
        self.spec = cloudpickle.loads(spec_blob)
        if payload is not None:  # (the operators, payload[1], are of no use to a fake task)
            self.spec.chain, self.spec.source = cloudpickle.loads(payload[0])
        self.master, self.epoch = master, epoch
        self.restored = self.spec.restore
        if self.executor.runtime.script.setup_error is not None:
            raise self.executor.runtime.script.setup_error
        self.executor.runtime.tasks.append(self)
        self.executor.runtime.statuses.append(("setup", epoch, master.status))
        gate = self.executor.runtime.script.setup_gate
        if gate is not None:
            self.executor.runtime.script.in_setup.set()
            await gate.wait()

    async def run(self, wait_s: float = 0.0) -> TaskResult | None:
        script = self.executor.runtime.script
        self.executor.runtime.statuses.append(("run", self.epoch, self.master.status))
        await self.done.wait()
        if self.executor.dead:
            raise ExecutorLost(f"{self.executor.name} was killed")
        if script.cancelled:
            return None
        v, s = self.key[0], self.key[1]
        final = {self.sink_uid(): [(s, ("final", self.spec.attempt), [batch(f"final-{s}")])]} if self.sink_uid() else {}
        return TaskResult(v, s, {"task": f"t{v}-{s}", "operators": {}, "channels": []}, final, {})

    async def trigger_checkpoint(self, cid: int, ts: int, savepoint: bool, stop: bool = False) -> None:
        script = self.executor.runtime.script
        s = self.key[1]
        comms = [(s, ("chk", cid), [batch(f"chk{cid}-{s}")])]
        if (cid, s) in script.decline:
            await self.master.decline_checkpoint(self.epoch, cid, self.key[0], s, "state write failed",
                                                 {self.sink_uid(): comms})
        else:
            await self.master.acknowledge_checkpoint(self.epoch, cid, self.key[0], s,
                                                     {self.sink_uid(): {"committables": comms}})
        self.executor.runtime.acked.append((self.epoch, cid, s))
        script.on_checkpoint(self, cid)

    def sink_uid(self) -> str:
        assert self.spec is not None
        return next(op["uid"] for op in self.spec.chain if op.get("sink") is not None)

    async def notify_checkpoint_complete(self, cid: int) -> None:
        self.executor.runtime.completed.add(cid)
        if cid >= self.executor.runtime.script.finish_after:
            self.done.set()  # finish once a checkpoint this late has completed

    async def notify_checkpoint_aborted(self, cid: int) -> None:
        pass

    async def cancel(self) -> None:
        self.done.set()

    async def metrics(self) -> dict:
        return {}

    async def release(self) -> bool:
        return True

    async def pid(self) -> int:
        return 0


class FakeExecutor:
    """A task executor on node ``node``; the messages the master sends the executor itself
    (``actor.release.remote(...)``, ``actor.node.remote()``) as a TaskExecutor answers them."""

    def __init__(self, runtime: FakeRuntime, name: str, node: str | None = None) -> None:
        self.runtime, self.name, self.dead = runtime, name, False
        self.node_id = node
        self.hosted: dict[tuple, FakeTask] = {}
        self.releases: list[tuple] = []  # (grace_s, cancel, hand_back) of each release asked for

    @property
    def release(self) -> _ExecutorCall:
        return _ExecutorCall(self, self._release)

    @property
    def node(self) -> _ExecutorCall:
        return _ExecutorCall(self, self._node)

    async def _release(self, grace_s: float = 2.0, cancel: bool = False, hand_back: str | None = None) -> bool:
        self.releases.append((grace_s, cancel, hand_back))
        hosted, self.hosted = self.hosted, {}
        for t in hosted.values():
            t.done.set()
        return True

    async def _node(self) -> tuple[int, str | None]:
        return 0, self.node_id


class _ExecutorCall:
    def __init__(self, executor: FakeExecutor, fn: Any) -> None:
        self.executor, self.fn = executor, fn

    def remote(self, *args: Any) -> asyncio.Future:
        """Like a Ray actor call: sent now; a dead executor's call fails with ExecutorLost."""
        executor = self.executor

        async def call() -> Any:
            if executor.dead:
                raise ExecutorLost(f"{executor.name} is dead")
            return await self.fn(*args)

        fut = asyncio.ensure_future(call())
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        return fut


class _Method:
    def __init__(self, task: FakeTask, name: str) -> None:
        self.task, self.name = task, name

    def remote(self, *args: Any) -> asyncio.Future:
        """Like a Ray actor call: the message is sent now, whether or not anyone awaits it."""
        if self.task.executor.dead:
            async def lost() -> Any:
                raise ExecutorLost(f"{self.task.executor.name} is dead")
            fut = asyncio.ensure_future(lost())
        else:
            fut = asyncio.ensure_future(getattr(self.task, self.name)(*args))
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # fire-and-forget calls too
        return fut


class FakeHandle:
    def __init__(self, executor: FakeExecutor, key: tuple) -> None:
        self.task = executor.hosted.setdefault(key, FakeTask(executor, key))

    def __getattr__(self, name: str) -> _Method:
        return _Method(self.task, name)


class FakeRuntime:
    """ExecutorRuntime of fake executors in this process, on the nodes ``nodes`` (sorted);
    the nodes in ``dead_nodes`` died, though ``start_executors`` still takes them for alive
    (as Ray does until its health checks fail): an executor started there is dead."""

    def __init__(self, script: Script, nodes: tuple[str, ...] = ("local",)) -> None:
        self.nodes = sorted(nodes)
        self.dead_nodes: set[str] = set()
        self.placements: list[tuple[list[str], list[str | None], set[str]]] = []  # (names, placed, avoid)
        self.script = script
        self.master: JobMaster | None = None
        self.started: list[str] = []
        self.killed: list[str] = []
        self.tasks: list[FakeTask] = []
        self.completed: set[int] = set()
        self.acked: list[tuple[int, int, int]] = []  # (attempt epoch, checkpoint id, subtask)
        self.leftovers: list[FakeExecutor] = []
        self.statuses: list[tuple[str, int, str]] = []  # (call, attempt epoch, the master's status then)
        self.lent: list[FakeExecutor] = []  # executors a test lent to the master (a driver's pool)

    def lend(self, slots: dict[str, str]) -> dict[str, Executor]:
        """Executors as the driver's worker pool lends them (``{slot: node}``), already placed."""
        out = {}
        for slot, node in slots.items():
            executor = FakeExecutor(self, f"pool-{slot}", node)
            self.lent.append(executor)
            out[slot] = Executor(executor, executor.name, 0.0, node)
        return out

    def start_executors(self, names: dict[str, str], num_cpus: float, placed: Any = (),
                        avoid: Any = ()) -> dict[str, Executor]:
        """As engine.ray_runtime.start_executors places them: each on the node with the fewest
        of the job's executors (counting ``placed``), not in ``avoid`` unless all are."""
        placed = list(placed)
        self.started += names.values()
        self.placements.append((list(names.values()), placed, set(avoid)))
        nodes = [n for n in self.nodes if n not in avoid] or self.nodes
        load = {n: sum(1 for p in placed if p == n) for n in nodes}
        out = {}
        for slot, name in names.items():
            node = min(nodes, key=lambda n: load[n])
            load[node] += 1
            executor = FakeExecutor(self, name, node)
            executor.dead = node in self.dead_nodes
            out[slot] = Executor(executor, name, num_cpus, node)
        return out

    def kill_node(self, node: str) -> None:
        """The node dies with every executor on it."""
        self.dead_nodes.add(node)
        self.kill([e for e in self.all_executors() if e.node_id == node and not e.dead])

    def all_executors(self) -> list[FakeExecutor]:
        found = {id(t.executor): t.executor for t in self.tasks}
        found.update({id(e): e for e in self.lent})
        return list(found.values())

    def task_handle(self, executor: FakeExecutor, key: tuple) -> FakeHandle:
        return FakeHandle(executor, key)

    def master_handle(self) -> Any:
        return self.master

    def share(self, data: bytes) -> bytes:
        return data

    async def wait(self, call: Any) -> Any:
        return await call

    def kill(self, executors: Any) -> None:
        for e in executors:
            e.dead = True
            self.killed.append(e.name)
            for t in e.hosted.values():
                t.done.set()

    async def kill_and_wait(self, executors: list[Any]) -> None:
        self.kill(executors)

    def leftover_executors(self, job_id: str) -> list[Any]:
        return list(self.leftovers)


class Script:
    """What the fake tasks do: finish after checkpoint ``finish_after`` completed; the
    executor of subtask ``kill[0]`` dies at checkpoint ``kill[1]`` of the first attempt."""

    def __init__(self, finish_after: int = 2, kill: tuple[int, int] | None = None,
                 decline: set | None = None) -> None:
        self.finish_after, self.kill, self.decline = finish_after, kill, decline or set()
        self.cancelled = False
        self.runtime: FakeRuntime | None = None
        self.setup_gate: asyncio.Event | None = None  # set: every setup waits for it (a slow deployment)
        self.setup_error: BaseException | None = None  # set: every setup raises it
        self.in_setup = asyncio.Event()

    def on_checkpoint(self, task: FakeTask, cid: int) -> None:
        rt = self.runtime
        assert rt is not None
        if self.kill is not None and task.epoch == 1 and (task.key[1], cid) == self.kill:
            rt.kill([task.executor])


def batch(tag: str) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{"tag": tag}])


def graph_and_config(tmp_path, **checkpoint: Any) -> tuple[bytes, bytes]:
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(4).collect()  # one chained vertex: every task is a source the master triggers
    config = JobConfig(name="fake", checkpoint=CheckpointConfig(20, checkpoint_dir=str(tmp_path), **checkpoint),
                       restart=rs.RestartStrategy.fixed_delay(2, 0), state_backend=HeapStateBackend(),
                       reuse_workers=False)
    return cloudpickle.dumps(env.get_job_graph()), cloudpickle.dumps(config)


def master_on(script: Script) -> tuple[JobMaster, FakeRuntime]:
    """A job master on a fake runtime whose tasks do what ``script`` says."""
    runtime = FakeRuntime(script)
    script.runtime = runtime
    master = JobMaster(runtime, metrics_backend=NullMetricsBackend())
    runtime.master = master
    return master, runtime


def master_until_stopped(tmp_path) -> tuple[JobMaster, FakeRuntime, bytes, bytes]:
    """A master on fake tasks that run until stopped (a stopped task returns no result), and
    the graph and config of its job."""
    script = Script(finish_after=10 ** 9)
    script.cancelled = True
    master, runtime = master_on(script)
    graph, config = graph_and_config(tmp_path)
    return master, runtime, graph, config


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """End what a master left running on ``loop`` (a master run on a thread of its own, that
    died or was let go): cancel every task, wait for them, close the loop."""
    left = asyncio.all_tasks(loop)
    for task in left:
        task.cancel()

    async def ended() -> None:
        await asyncio.gather(*left, return_exceptions=True)

    loop.run_until_complete(ended())
    loop.close()


def run_job(tmp_path, script: Script, recover: bool = False, leftovers: int = 0) -> tuple[dict, FakeRuntime, JobMaster]:
    master, runtime = master_on(script)
    runtime.leftovers = [FakeExecutor(runtime, f"old-{i}") for i in range(leftovers)]
    graph, config = graph_and_config(tmp_path)
    result = asyncio.run(asyncio.wait_for(master.run(graph, config, "job-1", None, recover), 60))
    return result, runtime, master


def tags(result: dict) -> list[str]:
    batches = next(iter(result["results"].values()))
    return sorted(r["tag"] for b in batches for r in b.to_pylist())


def committed_checkpoint_tags(runtime: FakeRuntime, upto_attempt_1: int | None = None) -> list[str]:
    """What must be committed: every ack of the last attempt, and the acks of attempt 1 up
    to the checkpoint the restart restored (``upto_attempt_1``)."""
    last = max(e for e, _, _ in runtime.acked)
    return sorted(f"chk{c}-{s}" for e, c, s in runtime.acked
                  if e == last or (upto_attempt_1 is not None and c <= upto_attempt_1))


def test_checkpoints_commit_and_the_final_checkpoint_commits_the_rest(tmp_path):
    result, runtime, _ = run_job(tmp_path, Script(finish_after=2))
    got = tags(result)
    assert got == sorted(committed_checkpoint_tags(runtime) + ["final-0", "final-1"])
    assert {"chk1-0", "chk1-1", "chk2-0", "chk2-1"} <= set(got)
    assert result["checkpoints"]["completed"] >= 3  # two taken while running, one final
    assert {1, 2} <= runtime.completed


def test_a_dead_executor_restarts_from_the_latest_checkpoint_exactly_once(tmp_path):
    # subtask 1's executor dies right after acking checkpoint 2: the restart restores the
    # latest checkpoint that completed; what the failed attempt prepared after it is never
    # committed (its data is replayed), and nothing is committed twice
    result, runtime, master = run_job(tmp_path, Script(finish_after=4, kill=(1, 2)))
    got = tags(result)
    restored = master.restored_from
    # (the master answers an ack once its checkpoint completed, and may trigger the next one
    # before that: under load checkpoint 3 can complete before the kill that follows ack 2)
    acked_by = [{c for e, c, s in runtime.acked if e == 1 and s == sub} for sub in (0, 1)]
    assert restored is not None and restored in acked_by[0] & acked_by[1], (restored, runtime.acked)
    assert got == sorted(committed_checkpoint_tags(runtime, restored) + ["final-0", "final-1"])
    assert result["metrics"]["restarts"] == 1
    assert len(runtime.started) == 4  # two executors per attempt
    assert len(runtime.killed) >= 2  # the failed attempt's executors


def test_the_job_is_running_only_once_its_tasks_are_deployed(tmp_path):
    # RUNNING means the current attempt's tasks are deployed: while the first attempt deploys
    # the job is CREATED, while a restart deploys it is RESTARTING (a caller who waits for
    # RUNNING after a restart and then kills a task fails the new attempt, not its deployment)
    _, runtime, _ = run_job(tmp_path, Script(finish_after=4, kill=(1, 2)))
    first, second = sorted({e for _, e, _ in runtime.statuses})
    assert {s for call, e, s in runtime.statuses if call == "setup" and e == first} == {"CREATED"}
    assert {s for call, e, s in runtime.statuses if call == "setup" and e == second} == {"RESTARTING"}
    # each executor's runs follow its setup (they wait there for it): sent while the attempt deploys
    assert {s for call, e, s in runtime.statuses if call == "run" and e == first} == {"CREATED"}
    assert {s for call, e, s in runtime.statuses if call == "run" and e == second} == {"RESTARTING"}


def test_a_savepoint_asked_for_while_the_job_deploys_is_taken_once_it_runs(tmp_path):
    script = Script(finish_after=3)
    master, runtime = master_on(script)
    graph, config = graph_and_config(tmp_path)

    async def main() -> tuple[dict, str]:
        script.setup_gate = asyncio.Event()
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        await asyncio.wait_for(script.in_setup.wait(), 30)
        assert master.status == "CREATED"  # deploying
        savepoint = asyncio.ensure_future(master.trigger_savepoint(str(tmp_path / "sp")))
        await asyncio.sleep(0)  # (the request is queued, not refused)
        assert not savepoint.done()
        script.setup_gate.set()
        return await asyncio.wait_for(job, 60), await asyncio.wait_for(savepoint, 60)

    result, written = asyncio.run(main())
    assert written.endswith("sp") and result["checkpoints"]["completed"] >= 1
    assert [s for call, _, s in runtime.statuses if call == "run"] == ["CREATED", "CREATED"]  # (sent with the setups)


def test_declined_checkpoint_commits_its_data_with_the_next(tmp_path):
    # subtask 0's state write for checkpoint 1 fails: it declines with the committables its
    # sink had already handed over; they are committed with checkpoint 2, not lost
    result, runtime, _ = run_job(tmp_path, Script(finish_after=2, decline={(1, 0)}))
    got = tags(result)
    assert "chk1-0" in got
    assert got == sorted(committed_checkpoint_tags(runtime) + ["final-0", "final-1"])  # (declines included)
    assert result["checkpoints"]["aborted"] == 1


def test_takeover_kills_leftover_executors_and_resumes_from_storage(tmp_path):
    first, _, _ = run_job(tmp_path, Script(finish_after=2))
    # a new master takes the (finished) job over: it kills what an old master left, restores
    # from the final checkpoint in storage, re-commits from the commit log and reports the
    # same output (the restored tasks are at their end: they add only their final output)
    second, runtime, master = run_job(tmp_path, Script(finish_after=1), recover=True, leftovers=2)
    assert runtime.killed[:2] == ["old-0", "old-1"]
    assert master.restored_from == first["checkpoints"]["latest_completed"]
    assert set(tags(first)) <= set(tags(second))


def test_a_commit_that_fails_while_a_takeover_restores_restarts_the_job(tmp_path, monkeypatch):
    """A new master re-commits what the restored checkpoint covers; when that commit fails
    (a rename on flaky storage), the job restarts and the takeover is done again: it does not
    end the job (seen in the drill: fail-rename + kill-master lost a whole jsonl output)."""
    first, _, _ = run_job(tmp_path, Script(finish_after=2))
    real_commit = JobMaster._commit
    failed: list[str] = []

    def flaky_commit(self, committables, log_name=None):
        if log_name is not None and log_name[1].startswith("restore") and not failed:
            failed.append(log_name[1])
            raise JobFailed("committing the output of sink 'collect' failed: InjectedFault: move")
        return real_commit(self, committables, log_name)

    monkeypatch.setattr(JobMaster, "_commit", flaky_commit)
    second, runtime, master = run_job(tmp_path, Script(finish_after=1), recover=True, leftovers=2)
    assert failed == ["restore1"] and master.restarts == 1
    assert runtime.killed[:2] == ["old-0", "old-1"]
    assert set(tags(first)) <= set(tags(second))


def test_job_master_has_no_ray_in_it():
    import raystream.engine.master as master

    source = open(master.__file__).read()
    assert "import ray" not in source and "ray." not in source.replace("ray_runtime", "")


def test_a_cancel_that_arrives_after_its_job_ended_is_not_kept(tmp_path):
    """A driver's cancel can reach a pooled master after the job ended (the job finished while
    the cancel was on its way): it cancels nothing and is kept by nobody. Before, it was kept
    as an "early" cancel of a job whose run had not started, forever (one entry per such
    cancel in a master that serves job after job)."""
    result, runtime, master = run_job(tmp_path, Script(finish_after=2))
    assert tags(result)
    runtime.script = Script(finish_after=2)  # the same master serves a second job
    runtime.script.runtime = runtime
    graph, config = graph_and_config(tmp_path / "2")
    assert tags(asyncio.run(asyncio.wait_for(master.run(graph, config, "job-2", None, False), 60)))
    asyncio.run(master.cancel("job-1"))  # the first job's cancel, late
    assert master._early_cancels == set()
    asyncio.run(master.cancel("job-3"))  # a job not run yet: its cancel waits for its run
    assert master._early_cancels == {"job-3"}
