"""A takeover fences the old master's checkpoint whose tasks wrote no state file (no Ray).

A checkpoint none of whose tasks writes a state file (no source position, no operator state;
the fake tasks of ``test_job_master`` write none) had no directory until its ``_metadata`` landed.
A takeover listing storage while the old master's ``_metadata`` write of it was in flight found
nothing to fence and numbered its own checkpoints from that id on; the late ``_metadata`` then
made it the newest complete checkpoint, which the new master's next restart restored (output
nobody committed). Now the master makes a checkpoint's directory when it triggers it
(``CheckpointStorage.prepare_checkpoint``), before any task gets its barrier.

The old master runs in a thread of its own; its ``_metadata`` write of checkpoint 3 is held
until the new master has taken the job over, lands then, and the old master writes nothing
more (it is gone).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from raystream.checkpoint.storage import FENCE_FILE, CheckpointStorage
from raystream.engine.errors import JobFailed
from tests.unit.test_job_master import (
    FakeExecutor,
    Script,
    close_loop,
    graph_and_config,
    master_on,
    master_until_stopped,
    tags,
)
from tests.waiting import wait_for

HELD = 3  # the old master's checkpoint whose _metadata write is in flight during the takeover


class _HeldWrite:
    """The old master's ``_metadata`` write of checkpoint ``HELD``: it waits for ``land``, is
    written, and its thread then stays where it is (the old master does nothing more)."""

    def __init__(self) -> None:
        self.in_flight = threading.Event()
        self.land = threading.Event()
        self.landed = threading.Event()
        self.gone = threading.Event()
        self.dir_at_start: bool | None = None

    def install(self, monkeypatch: pytest.MonkeyPatch, job_dir: Any) -> None:
        real = CheckpointStorage.write_metadata
        held = self

        def write_metadata(storage: CheckpointStorage, job_id: str, checkpoint_id: int, metadata: dict) -> None:
            if checkpoint_id != HELD or held.in_flight.is_set():
                real(storage, job_id, checkpoint_id, metadata)
                return
            held.dir_at_start = (job_dir / f"chk-{HELD}").is_dir()
            held.in_flight.set()
            held.land.wait(60)
            try:
                real(storage, job_id, checkpoint_id, metadata)
            finally:
                held.landed.set()
            held.gone.wait(60)

        monkeypatch.setattr(CheckpointStorage, "write_metadata", write_metadata)


class _LandThenFail(Script):
    """The new master's first deployment lets the old master's held write land (after the
    takeover fenced and planned), then fails, so the new master restarts and plans its restore
    from storage again."""

    def __init__(self, held: _HeldWrite, **kw: Any) -> None:
        self._error: BaseException | None = None
        super().__init__(**kw)
        self._held = held
        self._looks = 0

    @property  # type: ignore[override]
    def setup_error(self) -> BaseException | None:
        self._looks += 1
        if not self._held.land.is_set():
            self._held.land.set()
            assert self._held.landed.wait(60)
        if self._looks <= 2:  # (a setup looks twice: whether there is one, then raises it)
            return JobFailed("executor lost while deploying (forced restart)")
        return self._error

    @setup_error.setter
    def setup_error(self, value: BaseException | None) -> None:
        self._error = value


def test_a_late_metadata_of_a_checkpoint_without_state_files_is_fenced(tmp_path, monkeypatch):
    job_dir = tmp_path / "job-1"
    held = _HeldWrite()
    held.install(monkeypatch, job_dir)
    first, _runtime1, graph, config = master_until_stopped(tmp_path)
    box: dict = {}

    def old_master() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        box["job"] = loop.create_task(first.run(graph, config, "job-1", None, False))
        try:
            loop.run_until_complete(box["job"])
        except BaseException:  # noqa: BLE001 - cancelled once gone
            pass
        finally:
            close_loop(loop)

    thread = threading.Thread(target=old_master, name="old-master", daemon=True)
    thread.start()
    try:
        wait_for(held.in_flight.is_set, f"the old master writing checkpoint {HELD}'s _metadata", 60)
        assert not list(job_dir.glob(f"chk-{HELD}/*")), "the fake tasks wrote a state file"
        script = _LandThenFail(held, finish_after=1)
        second, runtime = master_on(script)
        runtime.leftovers = [FakeExecutor(runtime, "old-0")]
        result = asyncio.run(asyncio.wait_for(second.run(graph, config, "job-1", None, True), 60))
    finally:
        held.land.set()
        box["loop"].call_soon_threadsafe(box["job"].cancel)
        held.gone.set()
        thread.join(60)
    assert not thread.is_alive()
    assert held.landed.is_set()  # (the late write landed; retention discards the fenced directory later)
    assert second.restarts == 1
    assert second.restored_from == 2, f"the restart restored {second.restored_from} (the old master's late checkpoint)"
    assert held.dir_at_start, f"chk-{HELD} had no directory when its _metadata write began"
    # the new master's checkpoints are numbered above the old master's; what it commits is the
    # old master's up to checkpoint 2, then its last attempt's, once
    last = max(e for e, _, _ in runtime.acked)
    mine = sorted(f"chk{c}-{s}" for e, c, s in runtime.acked if e == last)
    assert mine and min(c for _, c, _ in runtime.acked) > HELD
    old = ["chk1-0", "chk1-1", "chk2-0", "chk2-1"]
    assert tags(result) == sorted(old + mine + ["final-0", "final-1"])
    assert CheckpointStorage(str(tmp_path)).latest_complete("job-1") == result["checkpoints"]["latest_completed"]
    assert not (job_dir / f"chk-{HELD}").exists() or (job_dir / f"chk-{HELD}" / FENCE_FILE).exists()


def test_a_checkpoint_directory_that_cannot_be_made_fails_the_checkpoint_not_the_job(tmp_path, monkeypatch):
    """No task gets the barrier of a checkpoint whose directory could not be made: it is aborted
    (counted as a failed checkpoint, its reason in the history) and the job goes on."""
    real = CheckpointStorage.prepare_checkpoint
    refused: list[int] = []

    def prepare(storage: CheckpointStorage, job_id: str, checkpoint_id: int) -> None:
        if checkpoint_id == 2:
            refused.append(checkpoint_id)
            raise OSError("mkdir refused (injected)")
        real(storage, job_id, checkpoint_id)

    monkeypatch.setattr(CheckpointStorage, "prepare_checkpoint", prepare)
    script = Script(finish_after=3)
    master, runtime = master_on(script)
    graph, config = graph_and_config(tmp_path)
    result = asyncio.run(asyncio.wait_for(master.run(graph, config, "job-1", None, False), 60))
    assert refused == [2]
    assert 2 not in {c for _, c, _ in runtime.acked}
    failed = [h for h in result["checkpoints"]["history"] if h["id"] == 2]
    assert failed and failed[0]["status"] == "ABORTED" and "creating its directory" in failed[0]["reason"]
    assert master.restarts == 0 and {"final-0", "final-1"} <= set(tags(result))


def test_a_directory_made_after_its_job_was_cancelled_goes_again(tmp_path, monkeypatch):
    """The job is cancelled while checkpoint 3's directory is being made (a slow mkdir): the
    checkpoint is aborted and its directory discarded before the mkdir lands; the directory
    made after that is discarded too, not left behind."""
    real = CheckpointStorage.prepare_checkpoint
    in_mkdir, let_go, made = threading.Event(), threading.Event(), threading.Event()

    def prepare(storage: CheckpointStorage, job_id: str, checkpoint_id: int) -> None:
        if checkpoint_id == HELD:
            in_mkdir.set()
            let_go.wait(60)
            real(storage, job_id, checkpoint_id)
            made.set()
            return
        real(storage, job_id, checkpoint_id)

    real_discard = CheckpointStorage.discard
    discarded: list[int] = []

    def discard(storage: CheckpointStorage, job_id: str, checkpoint_id: int) -> None:
        real_discard(storage, job_id, checkpoint_id)
        discarded.append(checkpoint_id)

    monkeypatch.setattr(CheckpointStorage, "prepare_checkpoint", prepare)
    monkeypatch.setattr(CheckpointStorage, "discard", discard)
    master, _runtime, graph, config = master_until_stopped(tmp_path)
    chk = tmp_path / "job-1" / f"chk-{HELD}"

    async def main() -> Any:
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        while not in_mkdir.is_set():
            await asyncio.sleep(0.01)
        await master.cancel("job-1")
        outcome = (await asyncio.gather(asyncio.wait_for(job, 60), return_exceptions=True))[0]
        while HELD not in discarded:  # (the abort's discard, before the mkdir lands)
            await asyncio.sleep(0.01)
        let_go.set()
        while not made.is_set() or chk.exists():  # (the master's loop goes on: it deletes it again)
            await asyncio.sleep(0.01)
        return outcome

    try:  # (a directory left behind never goes: the timeout turns that into a failure)
        outcome = asyncio.run(asyncio.wait_for(main(), 20))
    finally:
        let_go.set()
    assert master.status == "CANCELLED" and "cancelled" in str(outcome)
    assert not chk.exists() and discarded.count(HELD) >= 2
