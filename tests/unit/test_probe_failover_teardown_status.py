"""The job master's status while it tears a failed attempt (or a cancelled job) down (no Ray).

The teardown of a failed attempt cancels its tasks and recycles or kills its executors, which
takes up to ~2 s on Ray (each executor's release waits for its task threads). Before, the
master said ``RUNNING`` all that time with no task deployed: a client that waited for
``RUNNING`` and then looked a task up (a drill's kill, a metric) failed with "no running task".
Now, as Flink's ``JobStatus``, the job is ``FAILING`` while a failed attempt's tasks are
cancelled (then ``RESTARTING``, or ``FAILED`` when the restart strategy gives up) and
``CANCELLING`` while a cancelled job's are; neither is an ended status, and a savepoint asked
for while ``FAILING`` is taken by the next attempt.

With the fake executors of ``test_job_master``: the teardown waits on a gate while the test
looks at the master.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import cloudpickle
import pytest

import raystream as rs
from raystream.engine.client import ENDED_STATUSES
from raystream.engine.errors import JobCancelled, JobFailed
from raystream.engine.master import JobMaster
from tests.unit.test_job_master import (
    Script,
    graph_and_config,
    master_on,
    master_until_stopped,
    tags,
)


class _GatedTeardown:
    """Holds every teardown of an attempt that did not finish (``release`` false) at a gate,
    recording the master's status there."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.statuses: list[str] = []
        real = JobMaster._teardown
        gated = self

        async def teardown(self: JobMaster, release: bool = False, recycle: bool = False) -> None:
            if not release:
                gated.statuses.append(self.status)
                gated.entered.set()
                await gated.gate.wait()
            await real(self, release, recycle)

        monkeypatch.setattr(JobMaster, "_teardown", teardown)




def test_a_failed_attempt_is_failing_while_torn_down_and_a_savepoint_then_is_taken_by_the_restart(
        tmp_path, monkeypatch):
    gated = _GatedTeardown(monkeypatch)
    master, runtime = master_on(Script(finish_after=4, kill=(1, 2)))  # subtask 1's executor dies at checkpoint 2
    graph, config = graph_and_config(tmp_path)

    async def main() -> tuple[dict, dict, Any, str]:
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        await asyncio.wait_for(gated.entered.wait(), 30)
        info = await master.job_info("job-1")
        savepoint = asyncio.ensure_future(master.trigger_savepoint(str(tmp_path / "sp"), False, "job-1"))
        await asyncio.sleep(0)  # (the request reaches the master: queued, not refused)
        refused = savepoint.exception() if savepoint.done() else None
        gated.gate.set()
        result = await asyncio.wait_for(job, 60)
        return info, result, refused, await asyncio.wait_for(savepoint, 60)

    info, result, refused, written = asyncio.run(main())
    assert gated.statuses[0] == "FAILING", f"the master said {gated.statuses[0]} while it tore the failed attempt down"
    assert info["status"] == "FAILING" and "FAILING" not in ENDED_STATUSES
    assert refused is None and written == str(tmp_path / "sp")
    assert result["metrics"]["restarts"] == 1 and master.status == "FINISHED"
    assert {"final-0", "final-1"} <= set(tags(result))
    # the restarted attempt's tasks were set up RESTARTING (FAILING ended with the teardown)
    second = max(e for _, e, _ in runtime.statuses)
    assert {s for call, e, s in runtime.statuses if call == "setup" and e == second} == {"RESTARTING"}


def test_a_job_that_fails_for_good_is_failing_while_torn_down_then_failed(tmp_path, monkeypatch):
    gated = _GatedTeardown(monkeypatch)
    master, _runtime = master_on(Script(finish_after=4, kill=(1, 2)))
    graph, config_blob = graph_and_config(tmp_path)
    config = cloudpickle.loads(config_blob)
    config_blob = cloudpickle.dumps(dataclasses.replace(config, restart=rs.RestartStrategy.none()))

    async def main() -> tuple[str, BaseException]:
        job = asyncio.ensure_future(master.run(graph, config_blob, "job-1", None, False))
        await asyncio.wait_for(gated.entered.wait(), 30)
        status = (await master.job_info("job-1"))["status"]
        gated.gate.set()
        outcome = (await asyncio.gather(asyncio.wait_for(job, 60), return_exceptions=True))[0]
        assert isinstance(outcome, BaseException)
        return status, outcome

    status, outcome = asyncio.run(main())
    assert status == "FAILING"
    assert isinstance(outcome, JobFailed) and master.status == "FAILED"


def test_a_cancelled_job_is_cancelling_while_torn_down_then_cancelled(tmp_path, monkeypatch):
    gated = _GatedTeardown(monkeypatch)
    master, _runtime, graph, config = master_until_stopped(tmp_path)

    async def main() -> tuple[str, BaseException | None, BaseException]:
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        while master.status != "RUNNING":
            await asyncio.sleep(0.01)
        await master.cancel("job-1")
        await asyncio.wait_for(gated.entered.wait(), 30)
        status = (await master.job_info("job-1"))["status"]
        savepoint = asyncio.ensure_future(master.trigger_savepoint(str(tmp_path / "sp"), False, "job-1"))
        await asyncio.sleep(0)  # (the request reaches the master: a cancelling job refuses it at once)
        at_once = savepoint.done()
        gated.gate.set()
        outcome, refused = await asyncio.gather(asyncio.wait_for(job, 60), asyncio.wait_for(savepoint, 60),
                                                return_exceptions=True)
        assert at_once and isinstance(outcome, BaseException) and isinstance(refused, BaseException), refused
        return status, refused, outcome

    status, refused, outcome = asyncio.run(main())
    assert status == "CANCELLING" and "CANCELLING" not in ENDED_STATUSES
    assert refused is not None and "cancelling" in str(refused)
    assert isinstance(outcome, JobCancelled) and master.status == "CANCELLED"
