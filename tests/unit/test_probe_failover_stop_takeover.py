"""A job master that dies after a stop-with-savepoint's savepoint was written (no Ray).

The stop's savepoint is written before its commit; a master that died after that (before or
during the commit, or before the stopped tasks finished) was replaced by one that restored the
newest *checkpoint*, from before the savepoint, and ran the stopped job on: the savepoint's
output was committed again by the replay, and the job never stopped. Now the stop is recorded
in checkpoint storage (the job's stop marker, after the savepoint's ``_metadata``, before the
commit) and the master that takes over ends the job as the dead one would have: FINISHED with
the savepoint, after committing what it covers, or FAILED naming it when that commit fails.

The first master runs in a thread of its own with the fake executors of ``test_job_master``;
it "dies" at a gate: its event loop is frozen there (nothing of it runs any more) while a
second master takes the job over from the same checkpoint storage. Each output is compared
with what a failure-free run that stops at the same savepoint commits: every checkpoint's
output up to the savepoint's barrier, nothing after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import cloudpickle
import pytest

from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.checkpoint.storage import CheckpointStorage
from raystream.engine.errors import CheckpointError, JobFailed
from raystream.engine.master import JobMaster
from raystream.engine.observability import NullMetricsBackend
from tests.unit.test_job_master import (
    FakeExecutor,
    FakeRuntime,
    FakeTask,
    Script,
    close_loop,
    graph_and_config,
    master_on,
    master_until_stopped,
    run_job,
    tags,
)
from tests.waiting import wait_for


class _Died(Exception):
    """Raised in the first master once the test lets its frozen loop go (it is dead by then)."""


class _Death:
    """Freezes the first master's event loop at a gate: ``die()`` (from its loop thread or a
    worker thread of it) stops everything of that master until ``release()``."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.dead = threading.Event()
        self.released = threading.Event()
        self.where: str | None = None

    def die(self, where: str) -> None:
        if self.where is not None:
            return
        self.where = where
        assert self.loop is not None
        if threading.current_thread() is not threading.main_thread() and _in_loop(self.loop):
            self.dead.set()
            self.released.wait()
            raise _Died(where)
        frozen = threading.Event()

        def freeze() -> None:
            frozen.set()
            self.released.wait()

        self.loop.call_soon_threadsafe(freeze)
        frozen.wait()
        self.dead.set()
        self.released.wait()
        raise _Died(where)

    def release(self) -> None:
        self.released.set()


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _install_death(monkeypatch: pytest.MonkeyPatch, death: _Death, point: str) -> None:
    """Kill the first master (``death.loop``'s) at ``point`` of its stop:
    ``commit``: the savepoint and the stop marker are written, nothing is committed yet;
    ``committing``: the commit log of in-memory committers is written, the sink not committed;
    ``finishing``: the commit is done, the tasks have not taken the notification (nor finished)."""
    real_commit, real_commit_to = JobMaster._commit, JobMaster._commit_to
    real_notify = FakeTask.notify_checkpoint_complete

    def mine(master: JobMaster) -> bool:
        return death.loop is not None and master._stop_completed is not None and getattr(master, "_stop_marker", None) is None \
            and getattr(master, "_first", False)

    def commit(self: JobMaster, committables: dict, log_name: Any = None) -> None:
        if point == "commit" and mine(self) and log_name is not None and log_name[1] == "chk":
            death.die(point)
        real_commit(self, committables, log_name)

    def commit_to(self: JobMaster, uid: str, comms: list, restored: bool = False) -> None:
        if point == "committing" and mine(self) and not restored:
            death.die(point)
        real_commit_to(self, uid, comms, restored)

    async def notify(self: FakeTask, cid: int) -> None:
        master = self.master
        if point == "finishing" and mine(master) and master._stop_committed:
            death.die(point)
        await real_notify(self, cid)

    monkeypatch.setattr(JobMaster, "_commit", commit)
    monkeypatch.setattr(JobMaster, "_commit_to", commit_to)
    monkeypatch.setattr(FakeTask, "notify_checkpoint_complete", notify)


def _stop_and_die(tmp_path, monkeypatch, point: str) -> tuple[int, str, threading.Thread, _Death, dict]:
    """Run the first master until it stops its job with a savepoint and dies at ``point``;
    returns the savepoint's checkpoint id, the savepoint, its thread, its death and what its
    thread saw."""
    death = _Death()
    _install_death(monkeypatch, death, point)
    master, runtime, graph, config = master_until_stopped(tmp_path)
    master._first = True  # type: ignore[attr-defined]  # (the one to kill)
    seen: dict = {}

    def first() -> None:
        loop = asyncio.new_event_loop()
        death.loop = loop

        async def main() -> None:
            job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
            seen["job"] = job
            while master.status != "RUNNING" or len(master.coordinator.completed) < 2:
                await asyncio.sleep(0.01)
            seen["stop"] = asyncio.ensure_future(master.stop_with_savepoint(str(tmp_path / "sp"), "job-1"))
            await asyncio.gather(job, seen["stop"], return_exceptions=True)

        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # noqa: BLE001 - cancelled once dead
            seen["error"] = exc
        finally:  # (what the dead master left running ends with it)
            close_loop(loop)
            failure = master._failure  # (set by its stop's commit failing once let go: nobody waits for it)
            if failure.done() and not failure.cancelled():
                failure.exception()

    thread = threading.Thread(target=first, name="first-master", daemon=True)
    thread.start()
    wait_for(death.dead.is_set, f"the first master dying at {point}", 60)
    # (the dead master's loop is frozen: its coordinator stays as it was when it died)
    sp_checkpoint = next(h["id"] for h in master.coordinator.history if h.get("savepoint") and h["status"] == "COMPLETED")
    return sp_checkpoint, str(tmp_path / "sp"), thread, death, seen


def _bury(thread: threading.Thread, death: _Death, seen: dict) -> None:
    """End the dead master's thread (its loop goes on only to be cancelled)."""
    death.release()
    assert death.loop is not None
    job = seen.get("job")
    if job is not None:
        death.loop.call_soon_threadsafe(job.cancel)
    thread.join(60)
    assert not thread.is_alive()


def _take_over(tmp_path, config: bytes | None = None) -> tuple[Any, JobMaster, FakeRuntime]:
    """A second master takes job-1 over (recover=True) from the same checkpoint storage."""
    script = Script(finish_after=1)  # (tasks it deploys, which it must not, end after a checkpoint)
    master, runtime = master_on(script)
    runtime.leftovers = [FakeExecutor(runtime, "old-0")]
    graph, default_config = graph_and_config(tmp_path)

    async def main() -> Any:
        run = asyncio.ensure_future(master.run(graph, config or default_config, "job-1", None, True))
        # the driver's client asks the stop again of the new master (JobClient._call_master)
        stop = asyncio.ensure_future(master.stop_with_savepoint(str(tmp_path / "sp"), "job-1"))
        outcome = await asyncio.gather(asyncio.wait_for(run, 60), asyncio.wait_for(stop, 60), return_exceptions=True)
        return outcome

    return asyncio.run(main()), master, runtime


def _expected(sp_checkpoint: int) -> list[str]:
    """What a failure-free run that stops at the savepoint commits: every checkpoint's output
    up to the savepoint's barrier (each fake sink subtask prepares one tag per barrier, and
    acks every checkpoint it is asked for; the first test checks this against such a run)."""
    return sorted(f"chk{c}-{s}" for c in range(1, sp_checkpoint + 1) for s in (0, 1))


def test_a_failure_free_stop_commits_every_checkpoint_up_to_its_savepoint(tmp_path):
    """The reference the takeovers are compared with, as a failure-free run gives it."""
    master, runtime, graph, config = master_until_stopped(tmp_path)

    async def main() -> tuple[dict, str]:
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        while master.status != "RUNNING" or len(master.coordinator.completed) < 2:
            await asyncio.sleep(0.01)
        stopped = await asyncio.wait_for(master.stop_with_savepoint(str(tmp_path / "sp"), "job-1"), 60)
        return await asyncio.wait_for(job, 60), stopped

    result, stopped = asyncio.run(main())
    marker = CheckpointStorage(str(tmp_path)).read_stop_marker("job-1")
    assert marker is not None and marker["savepoint"] == stopped == result["savepoint"]
    assert tags(result) == _expected(marker["checkpoint_id"])


@pytest.mark.parametrize("point", ["commit", "committing", "finishing"])
def test_a_master_dying_after_a_stops_savepoint_is_replaced_by_one_that_ends_the_job_there(
        tmp_path, monkeypatch, point):
    sp_checkpoint, sp, thread, death, seen = _stop_and_die(tmp_path, monkeypatch, point)
    try:
        expected = _expected(sp_checkpoint)
        (result, stopped), master2, runtime2 = _take_over(tmp_path)
    finally:
        _bury(thread, death, seen)
    assert isinstance(result, dict), result
    assert runtime2.tasks == [] and master2.restored_from is None, (
        f"the new master ran the stopped job on from checkpoint {master2.restored_from}")
    assert tags(result) == expected, "the output differs from a failure-free run stopped at the same savepoint"
    assert result["savepoint"] == sp == stopped and master2.status == "FINISHED"


def test_a_takeover_whose_commit_of_the_stop_fails_ends_the_job_failed_naming_the_savepoint(tmp_path, monkeypatch):
    _sp_checkpoint, sp, thread, death, seen = _stop_and_die(tmp_path, monkeypatch, "commit")
    real_commit = JobMaster._commit

    def failing(self: JobMaster, committables: dict, log_name: Any = None) -> None:
        if getattr(self, "_stop_marker", None) is not None or self.restored_from is not None:
            raise JobFailed("committing the output of sink 'collect' failed: OSError: rename failed")
        real_commit(self, committables, log_name)

    try:
        monkeypatch.setattr(JobMaster, "_commit", failing)
        (result, stopped), master2, runtime2 = _take_over(tmp_path)
    finally:
        _bury(thread, death, seen)
    assert isinstance(result, JobFailed) and sp in str(result) and "start it from the savepoint" in str(result)
    assert isinstance(stopped, CheckpointError) and sp in str(stopped)
    assert runtime2.tasks == [] and master2.restarts == 0 and master2.status == "FAILED"


def test_a_stop_marker_that_cannot_be_written_fails_the_stop_and_the_job_goes_on(tmp_path):
    fs = faulty_filesystem(rules=[FaultRule("write", path_glob="*_stopped*", fail=True)], seed=1)
    master, runtime, graph, config_blob = master_until_stopped(tmp_path)
    config = cloudpickle.loads(config_blob)
    checkpoint = dataclasses.replace(config.checkpoint, checkpoint_dir=(fs, str(tmp_path / "chk")))
    config_blob = cloudpickle.dumps(dataclasses.replace(config, checkpoint=checkpoint))

    async def main() -> tuple[BaseException | None, int, Any]:
        job = asyncio.ensure_future(master.run(graph, config_blob, "job-1", None, False))
        while master.status != "RUNNING" or not master.coordinator.completed:
            await asyncio.sleep(0.01)
        failed = None
        try:
            await asyncio.wait_for(master.stop_with_savepoint(str(tmp_path / "sp"), "job-1"), 60)
        except CheckpointError as exc:
            failed = exc
        before = master.coordinator.stats()["completed"]
        while failed is not None and master.coordinator.stats()["completed"] <= before:  # (the job runs on)
            await asyncio.sleep(0.01)
        status = master.status
        await master.cancel("job-1")
        outcome = (await asyncio.gather(asyncio.wait_for(job, 60), return_exceptions=True))[0]
        return failed, master.coordinator.stats()["completed"] - before, (status, outcome)

    failed, _more, (status, _outcome) = asyncio.run(main())
    assert failed is not None and "recording the stop" in str(failed) and str(tmp_path / "sp") in str(failed)
    assert status == "RUNNING" and master._stop_completed is None and master.restarts == 0
    assert not (tmp_path / "sp").exists(), "the savepoint of the stop that failed is still there"


def test_a_job_started_from_the_savepoint_in_the_same_storage_is_not_ended_by_the_stop_marker(tmp_path):
    master, _runtime, graph, config_blob = master_until_stopped(tmp_path)

    async def stop() -> str:
        job = asyncio.ensure_future(master.run(graph, config_blob, "job-1", None, False))
        while master.status != "RUNNING" or not master.coordinator.completed:
            await asyncio.sleep(0.01)
        stopped = await asyncio.wait_for(master.stop_with_savepoint(str(tmp_path / "sp"), "job-1"), 60)
        await asyncio.wait_for(job, 60)
        return stopped

    sp = asyncio.run(stop())
    assert CheckpointStorage(str(tmp_path)).read_stop_marker("job-1") is not None
    script = Script(finish_after=3)
    runtime = FakeRuntime(script)
    script.runtime = runtime
    resumed = JobMaster(runtime, metrics_backend=NullMetricsBackend())
    runtime.master = resumed
    config = cloudpickle.loads(config_blob)
    config_blob = cloudpickle.dumps(dataclasses.replace(config, from_savepoint=sp))
    result = asyncio.run(asyncio.wait_for(resumed.run(graph, config_blob, "job-2", None, False), 60))
    assert resumed.restored_from == sp and runtime.tasks and result["savepoint"] is None
    assert {"final-0", "final-1"} <= set(tags(result))


def test_a_stop_marker_older_than_a_completed_checkpoint_is_ignored_by_a_takeover(tmp_path):
    """A stop whose marker write failed late (it landed, but the stop failed and the job ran on,
    its checkpoints completing after the savepoint's): a takeover restores the newest checkpoint
    as for any job, it does not end the job at that stale stop."""
    first, _, _ = run_job(tmp_path, Script(finish_after=2))
    latest = first["checkpoints"]["latest_completed"]
    storage = CheckpointStorage(str(tmp_path))
    storage.write_stop_marker("job-1", {"job_id": "job-1", "checkpoint_id": latest - 1, "savepoint": "/nowhere",
                                        "committables": {}})
    second, runtime, master = run_job(tmp_path, Script(finish_after=1), recover=True, leftovers=1)
    assert master.restored_from == latest and second["savepoint"] is None and runtime.tasks
    assert set(tags(first)) <= set(tags(second))
