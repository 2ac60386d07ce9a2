"""The stop asked again after a master died between its savepoint and its stop marker (no Ray).

A job master that dies after a stop-with-savepoint's ``_metadata`` but before the job's stop
marker has committed nothing of the stop: the master that takes the job over restores the
newest checkpoint and the job runs on. The driver's client then asks the stop again of the new
master (``JobClient._call_master``), to the same path, and before it failed "a savepoint
already exists" (the job ran on, the caller got an error). Now the savepoint of a stop of this
job that never completed is replaced by a fresh one, and the output equals a failure-free stop's
at that savepoint. A savepoint that was given to a caller (an intermediate one, another job's)
is never replaced.

The first master runs in a thread of its own with the fake executors of ``test_job_master``;
its stop marker write is held (it is gone) while a second master takes the job over.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from raystream.checkpoint.storage import CheckpointStorage
from raystream.engine.errors import CheckpointError
from tests.unit.test_job_master import FakeExecutor, close_loop, master_until_stopped, tags
from tests.waiting import wait_for


class _Gone(BaseException):
    """Ends the dead master's thread once the test lets it go."""


def _run_in_thread(master: Any, graph: bytes, config: bytes, box: dict,
                   until: Any = None) -> threading.Thread:
    """Run ``master``'s job in a thread with a loop of its own (``box``: its loop and job)."""

    def main() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop

        async def go() -> None:
            box["job"] = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
            if until is not None:
                await until(master)
            await asyncio.gather(box["job"], return_exceptions=True)

        try:
            loop.run_until_complete(go())
        except BaseException:  # noqa: BLE001 - cancelled once gone
            pass
        finally:
            close_loop(loop)

    thread = threading.Thread(target=main, name="first-master", daemon=True)
    thread.start()
    return thread


async def _running_with_two_checkpoints(master: Any) -> None:
    while master.status != "RUNNING" or len(master.coordinator.completed) < 2:
        await asyncio.sleep(0.01)


def test_a_stop_asked_again_after_the_master_died_before_its_marker_gets_a_fresh_savepoint(tmp_path, monkeypatch):
    sp = str(tmp_path / "sp")
    held, gone = threading.Event(), threading.Event()
    real_marker = CheckpointStorage.write_stop_marker

    def write_stop_marker(storage: CheckpointStorage, job_id: str, marker: dict) -> None:
        if not held.is_set():  # the first master: it dies here (its savepoint is written)
            held.set()
            gone.wait(60)
            raise _Gone  # (past every handler of the master: it does nothing more)
        real_marker(storage, job_id, marker)

    monkeypatch.setattr(CheckpointStorage, "write_stop_marker", write_stop_marker)
    first, _runtime1, graph, config = master_until_stopped(tmp_path)
    box: dict = {}

    async def stop_first(master: Any) -> None:
        await _running_with_two_checkpoints(master)
        box["stop"] = asyncio.ensure_future(master.stop_with_savepoint(sp, "job-1"))

    thread = _run_in_thread(first, graph, config, box, stop_first)
    try:
        wait_for(held.is_set, "the first master writing its stop marker", 60)
        storage = CheckpointStorage(str(tmp_path))
        old_meta, _reader = storage.read_savepoint(sp)
        old_checkpoint = old_meta["checkpoint_id"]
        assert storage.read_stop_marker("job-1") is None
        # the master that takes the job over, and the client's stop asked again of it
        second, runtime = master_until_stopped(tmp_path)[:2]
        runtime.leftovers = [FakeExecutor(runtime, "old-0")]

        async def take_over() -> tuple[Any, Any]:
            run = asyncio.ensure_future(second.run(graph, config, "job-1", None, True))
            stop = asyncio.ensure_future(second.stop_with_savepoint(sp, "job-1"))
            stopped = (await asyncio.gather(asyncio.wait_for(stop, 60), return_exceptions=True))[0]
            if isinstance(stopped, BaseException):  # (the job runs on: end it)
                await second.cancel("job-1")
            result = (await asyncio.gather(asyncio.wait_for(run, 60), return_exceptions=True))[0]
            return stopped, result

        stopped, result = asyncio.run(take_over())
    finally:
        gone.set()
        if "loop" in box and "job" in box:
            box["loop"].call_soon_threadsafe(box["job"].cancel)
        thread.join(60)
    assert not thread.is_alive()
    assert stopped == sp, f"the stop asked again failed: {stopped!r}"
    assert isinstance(result, dict) and result["savepoint"] == sp and second.status == "FINISHED"
    restored = second.restored_from
    assert restored is not None and restored < old_checkpoint
    new_meta, _reader = storage.read_savepoint(sp)
    new_checkpoint = new_meta["checkpoint_id"]
    assert new_checkpoint > old_checkpoint and new_meta["stop"] is True
    marker = storage.read_stop_marker("job-1")
    assert marker is not None and marker["checkpoint_id"] == new_checkpoint
    # a failure-free stop at the new savepoint: each barrier's output up to it, once (the old
    # master's up to the restored checkpoint, the new master's after it)
    expected = [f"chk{c}-{s}" for c in range(1, restored + 1) for s in (0, 1)]
    expected += [f"chk{c}-{s}" for _e, c, s in runtime.acked if c <= new_checkpoint]
    assert tags(result) == sorted(expected)


def _stopped_job(tmp_path: Any, stop: bool) -> tuple[str, bytes, bytes]:
    """A job that took a savepoint into ``sp`` (a stop-with-savepoint, or an intermediate one
    and then ran on), and the graph and config of its job."""
    sp = str(tmp_path / "sp")
    master, _runtime, graph, config = master_until_stopped(tmp_path)

    async def main() -> None:
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        await _running_with_two_checkpoints(master)
        if stop:
            await asyncio.wait_for(master.stop_with_savepoint(sp, "job-1"), 60)
        else:
            await asyncio.wait_for(master.trigger_savepoint(sp, False, "job-1"), 60)
            await master.cancel("job-1")
        await asyncio.gather(asyncio.wait_for(job, 60), return_exceptions=True)

    asyncio.run(main())
    return sp, graph, config


@pytest.mark.parametrize("what", ["intermediate savepoint", "another job's stop", "the job's recorded stop"])
def test_a_savepoint_given_to_a_caller_is_never_replaced(tmp_path, what):
    sp, _graph, _config = _stopped_job(tmp_path, stop=what != "intermediate savepoint")
    storage = CheckpointStorage(str(tmp_path))
    job = "job-2" if what == "another job's stop" else "job-1"
    assert storage.discard_unrecorded_stop(sp, job) is None
    assert storage.read_savepoint(sp)[0]["job_id"] == "job-1"
    with pytest.raises(CheckpointError, match="a savepoint already exists"):
        storage.write_savepoint(sp, {}, {})
