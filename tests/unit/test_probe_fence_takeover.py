"""A taken-over job master's late ``_metadata`` is never restored (no Ray).

An old job master that still runs (cut off from the cluster, or with a ``_metadata`` write of
its in flight while the new master lists storage) may complete checkpoint K after the new master
restored N < K. Before, a later restart of the new master restored K (the newest complete one),
whose output nobody committed (or the old master did), while the file sinks' restore clean-up of
the first attempt had deleted the part files of earlier attempts that N does not cover: (N, K]
lost or duplicated. Now the takeover fences every checkpoint directory without ``_metadata``
(``_abandoned``, written atomically) before it restores, and every restore path skips fenced ones.

The masters run with the fake executors of ``test_job_master``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.checkpoint.storage import (
    FENCE_FILE,
    CheckpointStorageUnavailable,
    check_savepoint,
    resolve_storage,
)
from raystream.engine.errors import CheckpointError, JobFailed
from tests.unit.test_job_master import (
    FakeExecutor,
    Script,
    graph_and_config,
    master_on,
    run_job,
    tags,
)


def _old_master_died_writing_metadata(tmp_path: Path) -> tuple[list[str], bytes, Path]:
    """Storage as a master leaves it that completed checkpoints 1 and 2 and died (or was cut off)
    while writing checkpoint 3's ``_metadata``: chk-3 has no ``_metadata``, nothing of checkpoint 3
    is committed. Returns the tags a failure-free run commits up to checkpoint 2, the ``_metadata``
    bytes of checkpoint 3 (the old master's late write) and the job's directory."""
    first, _runtime, _master = run_job(tmp_path, Script(finish_after=3))
    job = tmp_path / "job-1"
    assert sorted(p.name for p in job.glob("chk-*")) == ["chk-2", "chk-3", "chk-4"]
    late = (job / "chk-3" / "_metadata").read_bytes()
    (job / "chk-3" / "_metadata").unlink()
    shutil.rmtree(job / "chk-4")
    for entry in (job / "commits").iterdir():
        if int(entry.name.split("-")[0]) > 2:
            entry.unlink()
    return [t for t in tags(first) if t in {"chk1-0", "chk1-1", "chk2-0", "chk2-1"}], late, job


class _LateWriteThenFail(Script):
    """The new master's first deployment: the old master's late ``_metadata`` of checkpoint 3
    lands (after the takeover listed and restored), then the deployment fails, forcing a restart
    of the new master (which plans its restore from storage again)."""

    def __init__(self, late: bytes, chk3: Path, **kw: Any) -> None:
        self._error: BaseException | None = None
        super().__init__(**kw)
        self._late, self._chk3 = late, chk3
        self.late_written = False
        self._looks = 0

    @property  # type: ignore[override]
    def setup_error(self) -> BaseException | None:
        self._looks += 1
        if not self.late_written:
            self.late_written = True
            (self._chk3 / "_metadata").write_bytes(self._late)
        if self._looks <= 2:  # (a setup looks twice: whether there is one, then raises it)
            return JobFailed("executor lost while deploying (forced restart)")
        return self._error

    @setup_error.setter
    def setup_error(self, value: BaseException | None) -> None:
        self._error = value


def test_a_late_metadata_of_the_old_master_is_not_restored_by_a_restart_of_the_new_one(tmp_path):
    committed, late, job = _old_master_died_writing_metadata(tmp_path)
    script = _LateWriteThenFail(late, job / "chk-3", finish_after=5)
    second, runtime, master = run_job(tmp_path, script, recover=True, leftovers=2)
    assert script.late_written
    assert master.restarts == 1
    assert master.restored_from == 2, f"the restart restored {master.restored_from} (the old master's late checkpoint)"
    assert all(t.restored is not None for t in runtime.tasks)
    # a failure-free run: checkpoints 1 and 2 of the old master, then every checkpoint of the new
    # master's last attempt (numbered above 3) and the final output; nothing of checkpoint 3
    last = max(e for e, _, _ in runtime.acked)
    mine = sorted(f"chk{c}-{s}" for e, c, s in runtime.acked if e == last)
    assert mine and all(int(t[3:].split("-")[0]) > 3 for t in mine)
    assert tags(second) == sorted(committed + mine + ["final-0", "final-1"])


def test_a_takeover_fences_incomplete_checkpoints_and_numbers_its_own_above_them(tmp_path):
    _committed, late, job = _old_master_died_writing_metadata(tmp_path)
    (job / "chk-7").mkdir()  # (an old master's checkpoint whose state files were being written)
    second, runtime, master = run_job(tmp_path, Script(finish_after=9), recover=True, leftovers=2)
    assert master.restored_from == 2
    assert min(c for _, c, _ in runtime.acked) == 8
    # retention discarded the fenced directories below the new master's newest checkpoint
    storage = resolve_storage(str(tmp_path))
    assert not (job / "chk-3").exists() and not (job / "chk-7").exists()
    assert second["checkpoints"]["latest_completed"] == storage.latest_complete("job-1")
    (job / "chk-3").mkdir()
    (job / "chk-3" / "_metadata").write_bytes(late)  # (written late again, after the discard)
    assert storage.latest_complete("job-1") == second["checkpoints"]["latest_completed"]


def test_a_fence_write_that_fails_fails_the_takeover_which_is_done_again(tmp_path):
    _committed, late, job = _old_master_died_writing_metadata(tmp_path)
    storage = resolve_storage((faulty_filesystem(rules=[FaultRule("write_state", path_glob=f"*{FENCE_FILE}*", fail=True)]),
                               str(tmp_path)))
    with pytest.raises(CheckpointStorageUnavailable, match="cannot fence the incomplete checkpoint 3"):
        storage.fence_incomplete("job-1")
    assert not (job / "chk-3" / FENCE_FILE).exists()  # (nothing left half written)
    once = resolve_storage((faulty_filesystem(
        rules=[FaultRule("write_state", path_glob=f"*{FENCE_FILE}*", fail=True, times=1)]), str(tmp_path)))
    with pytest.raises(CheckpointStorageUnavailable):
        once.fence_incomplete("job-1")
    assert once.fence_incomplete("job-1") == [2, 3]  # (retried: fenced now)
    (job / "chk-3" / "_metadata").write_bytes(late)
    assert once.list_complete("job-1") == [2]


def test_fenced_checkpoints_are_skipped_by_every_restore_path_and_discarded_by_retention(tmp_path):
    storage = resolve_storage(str(tmp_path))
    for cid in (1, 2, 3):
        storage.write_state("job", cid, "op-0", b"state")
    storage.write_metadata("job", 1, {})
    assert storage.fence_incomplete("job") == [1, 2, 3]
    storage.write_metadata("job", 2, {})  # the old master's late writes
    storage.write_metadata("job", 3, {})
    assert storage.list_complete("job") == [1] and storage.latest_complete("job") == 1
    assert storage.fence_incomplete("job") == [1, 2, 3]  # (idempotent: a complete one is never fenced)
    assert not (tmp_path / "job" / "chk-1" / FENCE_FILE).exists()
    chk3 = str(tmp_path / "job" / "chk-3")
    with pytest.raises(CheckpointError, match="fenced off") as refused:
        check_savepoint(chk3)
    assert "chk-1" in str(refused.value)  # (names the newest restorable one)
    with pytest.raises(CheckpointError, match="fenced off"):
        storage.read_savepoint(chk3)
    with pytest.raises(CheckpointError, match="holds the complete checkpoint .*chk-1"):
        check_savepoint(str(tmp_path / "job"))
    storage.read_savepoint(str(tmp_path / "job" / "chk-1"))  # (an unfenced one still opens)
    storage.write_state("job", 4, "op-0", b"state")
    storage.write_metadata("job", 4, {})
    assert storage.retain("job", 1) == [1, 2, 3]
    assert storage.list_checkpoints("job") == [4]


def test_a_storage_error_while_fencing_is_never_taken_for_fenced(tmp_path):
    storage = resolve_storage(str(tmp_path))
    storage.write_state("job", 1, "op-0", b"state")
    broken = resolve_storage((faulty_filesystem(rules=[FaultRule("info", fail=True)]), str(tmp_path)))
    with pytest.raises(CheckpointStorageUnavailable):
        broken.fence_incomplete("job")
    assert not (tmp_path / "job" / "chk-1" / FENCE_FILE).exists()


def test_a_takeover_whose_fence_write_fails_restarts_and_fences_before_it_restores(tmp_path, caplog):
    """The fence of checkpoint 3 cannot be written at the first try: the takeover fails (never
    restoring with checkpoint 3 unfenced), the job restarts under its strategy, the takeover is
    done again and fences it, and the old master's late ``_metadata`` is never restored."""
    _committed, late, job = _old_master_died_writing_metadata(tmp_path)
    fs = faulty_filesystem(rules=[FaultRule("write_state", path_glob=f"*{FENCE_FILE}*", fail=True, times=1)])
    script = _LateWriteThenFail(late, job / "chk-3", finish_after=5)
    master, runtime = master_on(script)
    runtime.leftovers = [FakeExecutor(runtime, "old-0")]
    graph, config_blob = graph_and_config(tmp_path)
    config = cloudpickle.loads(config_blob)
    checkpoint = dataclasses.replace(config.checkpoint, checkpoint_dir=(fs, str(tmp_path)))
    config_blob = cloudpickle.dumps(dataclasses.replace(config, checkpoint=checkpoint))
    asyncio.run(asyncio.wait_for(master.run(graph, config_blob, "job-1", None, True), 60))
    assert any("cannot fence the incomplete checkpoint 3" in r.getMessage() for r in caplog.records)
    assert master.restarts == 2  # (the failed takeover, then the late write's forced restart)
    assert master.restored_from == 2
