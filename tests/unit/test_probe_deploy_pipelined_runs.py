"""The job master's deployment at p=2 (two executors), driven in one process with the fake
executors of ``tests/unit/test_job_master.py``: each executor's runs are sent right after its
setup, not one round trip later once every setup answered; a second deployment of the same
attempt (a lent executor died before deployment) gets a tag of its own, so that a late send
of the first one's tasks (which may have started) finds no task of the second.
"""

from __future__ import annotations

import asyncio

import cloudpickle

import raystream as rs
from raystream.checkpoint import HeapStateBackend
from raystream.checkpoint.coordinator import CheckpointConfig
from raystream.engine.config import JobConfig
from tests.unit.test_job_master import Script, graph_and_config, tags
from tests.unit.test_probe_recycle_master import _master, _until


def test_each_executors_runs_are_sent_before_the_setups_answer(tmp_path):
    script = Script(finish_after=1)
    runtime, master = _master(script, ("local",))
    graph, config = graph_and_config(tmp_path)

    async def main() -> dict:
        script.setup_gate = asyncio.Event()  # every setup waits: none has answered
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        await _until(lambda: sum(1 for call, _e, _s in runtime.statuses if call == "run") == 2,
                     "both tasks' runs reached their executors while the setups were under way", timeout_s=10)
        assert {call for call, _e, _s in runtime.statuses} == {"setup", "run"}
        assert master.status == "CREATED"  # RUNNING still means: every setup answered
        script.setup_gate.set()
        return await asyncio.wait_for(job, 60)

    result = asyncio.run(main())
    assert master.status == "FINISHED" and tags(result)[-2:] == ["final-0", "final-1"]


def test_a_second_deployment_of_the_same_attempt_has_a_tag_of_its_own(tmp_path):
    script = Script(finish_after=1)
    runtime, master = _master(script, ("n1",))
    lent = runtime.lend({"s0": "n1", "s1": "n1"})
    lent["s1"].actor.dead = True  # died after the driver's health check: the deployment fails there
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(4).collect()
    config = JobConfig(name="fake", checkpoint=CheckpointConfig(20, checkpoint_dir=str(tmp_path)),
                       restart=rs.RestartStrategy.fixed_delay(2, 0), state_backend=HeapStateBackend(),
                       reuse_workers=True)
    graph_blob, config_blob = cloudpickle.dumps(env.get_job_graph()), cloudpickle.dumps(config)
    result = asyncio.run(asyncio.wait_for(master.run(graph_blob, config_blob, "job-1", lent, False), 60))
    assert master.status == "FINISHED" and tags(result)[-2:] == ["final-0", "final-1"]
    assert asyncio.run(master.job_info("job-1"))["restarts"] == 0  # (no restart counted for it)
    survivor = [t.key[2] for t in runtime.tasks if t.executor is lent["s0"].actor]
    assert len(survivor) == 2, survivor  # set up by both deployments
    first, second = survivor
    assert first != second and second.startswith(first + "/")
    # every task of the second deployment carries its tag
    assert {t.key[2] for t in runtime.tasks[-2:]} == {second}
