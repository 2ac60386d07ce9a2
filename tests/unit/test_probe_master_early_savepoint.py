"""A savepoint asked for right after ``env.execute_async(...)`` is taken, not refused.

The job master is an async Ray actor: a call to it may start before the ``run`` call
submitted ahead of it (whose large arguments are still being fetched). The client passes its
job id with savepoint requests; a request for a job whose run has not started on the master
yet waits for it (before: ``CheckpointError: savepoints need checkpointing`` although
checkpointing was on, or, on a pooled master, an error about the previous job). In process,
with the fake executors of ``test_job_master``: the request is issued before ``run``.
"""

from __future__ import annotations

import asyncio

import cloudpickle
import pytest

from raystream.engine.errors import CheckpointError, JobCancelled, RaystreamError
from raystream.engine.master import JobMaster
from tests.unit.test_job_master import Script, graph_and_config, master_on


async def _until_waiting(master: JobMaster, job_id: str) -> None:
    while job_id not in master._arrivals:  # (the request is parked; no time passes in between)
        await asyncio.sleep(0)


def test_a_savepoint_asked_for_before_the_run_started_is_taken_once_the_job_runs(tmp_path):
    master, runtime = master_on(Script(finish_after=3))
    graph, config = graph_and_config(tmp_path)

    async def main() -> tuple[dict, str]:
        savepoint = asyncio.ensure_future(master.trigger_savepoint(str(tmp_path / "sp"), False, "job-1"))
        await _until_waiting(master, "job-1")
        assert not savepoint.done()
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        return await asyncio.wait_for(job, 60), await asyncio.wait_for(savepoint, 60)

    result, written = asyncio.run(main())
    assert written.endswith("sp") and (tmp_path / "sp").is_dir()
    assert result["checkpoints"]["completed"] >= 1


def test_on_a_pooled_master_an_early_savepoint_waits_for_its_job_not_the_previous_one(tmp_path):
    # the master ran job-0 to its end (its coordinator is still there, status FINISHED): a
    # request for job-1 arriving before run(job-1) is for job-1
    master, runtime = master_on(Script(finish_after=2))
    graph, config = graph_and_config(tmp_path)

    async def main() -> tuple[dict, str]:
        await asyncio.wait_for(master.run(graph, config, "job-0", None, False), 60)
        assert master.status == "FINISHED"
        runtime.script.finish_after = 10 ** 9  # job-1 runs until stopped with the savepoint
        savepoint = asyncio.ensure_future(master.stop_with_savepoint(str(tmp_path / "sp1"), "job-1"))
        await _until_waiting(master, "job-1")
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        return await asyncio.wait_for(job, 60), await asyncio.wait_for(savepoint, 60)

    result, written = asyncio.run(main())
    assert written.endswith("sp1") and result["job_id"] == "job-1"
    assert master.stopped_with_savepoint == written and master.status == "FINISHED"


def test_an_early_savepoint_fails_clearly_when_its_run_ends_without_starting_the_job(tmp_path):
    master, _ = master_on(Script())
    graph, _config = graph_and_config(tmp_path)
    bad_config = cloudpickle.dumps(None)[:-1]  # (cannot be unpickled: the run fails at once)

    async def main() -> None:
        savepoint = asyncio.ensure_future(master.trigger_savepoint(str(tmp_path / "sp"), False, "job-1"))
        await _until_waiting(master, "job-1")
        with pytest.raises(RaystreamError, match="configuration"):
            await master.run(graph, bad_config, "job-1", None, False)
        with pytest.raises(CheckpointError, match="job 'job-1' ended before its job master could start it"):
            await asyncio.wait_for(savepoint, 60)

    asyncio.run(main())


def test_a_savepoint_for_a_job_that_ended_fails_at_once_on_the_masters_next_job(tmp_path):
    master, runtime = master_on(Script(finish_after=2))
    graph, config = graph_and_config(tmp_path)

    async def main() -> None:
        await asyncio.wait_for(master.run(graph, config, "job-0", None, False), 60)
        runtime.script.finish_after = 10 ** 9
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        while master.status != "RUNNING":
            await asyncio.sleep(0.01)
        with pytest.raises(CheckpointError, match="job 'job-0' has ended"):
            await asyncio.wait_for(master.trigger_savepoint(str(tmp_path / "sp"), False, "job-0"), 60)
        await master.cancel("job-1")
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(job, 60)

    asyncio.run(main())
