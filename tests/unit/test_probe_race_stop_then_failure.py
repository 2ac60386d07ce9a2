"""A failure after a stop-with-savepoint completed, while its output is committed (no Ray).

A stop-with-savepoint commits its output (what its sinks prepared at its barrier) when it
completes, but it is no checkpoint a restart restores: a failure from then on (an executor
dying while the master commits, or while the stopped tasks are cancelled) restarted the job
from the newest checkpoint, before the savepoint. Its sources replayed what the savepoint had
committed (duplicated output), the caller of ``stop_with_savepoint`` was told it failed
although the savepoint was written and committed, and the job ran on although stopped. As
Flink (FLINK-26783): the job is not restarted; it ends FINISHED with the savepoint once the
commit finished, and FAILED naming the savepoint (to start from, which commits what it
covers) when the commit failed.

With the fake executors of ``test_job_master``: the commit of the savepoint's output waits
on a gate while an executor is killed, then finishes or fails.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from raystream.engine.errors import CheckpointError, JobFailed
from raystream.engine.master import JobMaster
from tests.unit.test_job_master import master_until_stopped
from tests.waiting import wait_for


def _tags(committables: dict) -> list[str]:
    return sorted(r["tag"] for comms in committables.values() for (_s, _t, batches) in comms
                  for b in batches for r in b.to_pylist())


@pytest.mark.parametrize("commit_fails", [False, True])
def test_a_failure_while_a_completed_stop_with_savepoints_output_is_committed_restarts_nothing(
        tmp_path, monkeypatch, commit_fails):
    master, runtime, graph, config = master_until_stopped(tmp_path)
    committed: list[list[str]] = []
    in_commit, release = threading.Event(), threading.Event()
    real_commit = JobMaster._commit

    def commit(self: JobMaster, committables: dict, log_name=None) -> None:
        if self._stop_completed is not None and log_name is not None and log_name[1] == "chk":
            in_commit.set()  # the stop-with-savepoint's output (the master commits on a worker thread)
            release.wait(30)
            if commit_fails:
                raise OSError("rename failed")
        committed.append(_tags(committables))
        real_commit(self, committables, log_name)

    monkeypatch.setattr(JobMaster, "_commit", commit)

    async def main() -> tuple[object, object]:
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        while master.status != "RUNNING" or not master.coordinator.completed:
            await asyncio.sleep(0.01)
        stop = asyncio.ensure_future(master.stop_with_savepoint(str(tmp_path / "sp"), "job-1"))
        await asyncio.to_thread(wait_for, in_commit.is_set, "the commit of the stop-with-savepoint's output")
        runtime.kill([runtime.tasks[0].executor])  # an executor dies meanwhile
        # (the master saw the failure: the attempt's executors are torn down)
        await asyncio.to_thread(wait_for, lambda: set(runtime.started) <= set(runtime.killed),
                                "the master tearing the failed attempt's executors down")
        release.set()
        outcomes = await asyncio.gather(asyncio.wait_for(stop, 60), asyncio.wait_for(job, 60), return_exceptions=True)
        return outcomes[0], outcomes[1]

    stopped, result = asyncio.run(main())
    assert master.restarts == 0 and master.restored_from is None, (
        f"restarted from checkpoint {master.restored_from} after the stop-with-savepoint committed")
    if commit_fails:
        assert isinstance(result, JobFailed) and "start it from the savepoint" in str(result)
        assert str(tmp_path / "sp") in str(result)
        assert isinstance(stopped, CheckpointError) and master.status == "FAILED"
    else:
        assert stopped == str(tmp_path / "sp"), stopped
        assert isinstance(result, dict) and result["savepoint"] == stopped and master.status == "FINISHED"
        savepoint_output = committed[-1]
        assert savepoint_output and all(t.startswith("chk") for t in savepoint_output)
        assert all(set(later).isdisjoint(savepoint_output) for later in committed[:-1])
