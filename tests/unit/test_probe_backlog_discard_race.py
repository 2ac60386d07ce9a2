"""Deleting an aborted checkpoint while a task's late snapshot lands in its directory: the
delete succeeds, nothing is left on disk, and the job master logs no "could not delete aborted
checkpoint".

A local (or NFS) ``delete_dir`` walks the directory, then removes it: a file created behind
the walk fails the last ``rmdir`` with "Directory not empty" (errno 39; reproduced with
pyarrow's LocalFileSystem and a writer thread: 79 of 200 deletions failed). Before the fix,
``CheckpointStorage.discard`` raised on the first such failure and the master logged the
warning with a traceback. The filesystem below does the walk as a local one does and has the
late snapshot land between the walk and the ``rmdir``, every time (no timing involved)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest

import raystream as rs
from raystream.checkpoint import CheckpointStorage
from raystream.checkpoint.faults import FaultInjectingHandler, FaultRule
from raystream.checkpoint.storage import DISCARD_ATTEMPTS
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobCancelled
from raystream.engine.local_runtime import run_in_process
from tests.waiting import wait_for


class LateWriteDuringDelete(FaultInjectingHandler):
    """``delete_dir`` as a local filesystem does it (the entries it lists, then the directory
    with ``rmdir``); the first delete of each ``chk-<n>`` directory in a process has a late
    snapshot file land in it after the listing."""

    raced: set[str] = set()

    def delete_dir(self, path: str) -> None:
        inner = self.inner
        for info in inner.get_file_info(pafs.FileSelector(path)):
            if info.type == pafs.FileType.Directory:
                inner.delete_dir(info.path)
            else:
                inner.delete_file(info.path)
        if os.path.basename(path).startswith("chk-") and path not in self.raced:
            self.raced.add(path)
            with inner.open_output_stream(f"{path}/late-snapshot-0") as out:
                out.write(b"written after the abort")
        os.rmdir(path)  # (what a local delete ends with: fails when not empty)


def _storage(tmp_path: Path) -> CheckpointStorage:
    LateWriteDuringDelete.raced = set()
    return CheckpointStorage((pafs.PyFileSystem(LateWriteDuringDelete()), str(tmp_path / "chk")))


def test_discard_deletes_a_directory_a_late_snapshot_lands_in(tmp_path):
    storage = _storage(tmp_path)
    storage.write_state("job", 3, "op-0", b"snapshot")
    storage.discard("job", 3)
    assert LateWriteDuringDelete.raced  # (the late write happened, in the middle of the delete)
    assert not list((tmp_path / "chk").glob("*/chk-3")), list((tmp_path / "chk").rglob("*"))
    storage.discard("job", 3)  # (gone: no error)


def test_discard_names_the_directory_when_it_keeps_filling(tmp_path):
    class AlwaysLate(LateWriteDuringDelete):
        raced: set[str] = set()

        def delete_dir(self, path: str) -> None:
            self.raced.clear()
            super().delete_dir(path)

    storage = CheckpointStorage((pafs.PyFileSystem(AlwaysLate()), str(tmp_path / "chk")))
    storage.write_state("job", 4, "op-0", b"snapshot")
    with pytest.raises(rs.CheckpointError, match=rf"cannot discard checkpoint .*chk-4.* \({DISCARD_ATTEMPTS} attempts\)"):
        storage.discard("job", 4)


def _checkpoint_dirs(storage: Path) -> list[Path]:
    return sorted(storage.glob("*/chk-*"))


def test_the_master_deletes_an_aborted_checkpoint_a_late_snapshot_lands_in_without_a_warning(tmp_path, caplog):
    LateWriteDuringDelete.raced = set()
    storage = tmp_path / "chk"
    # checkpoint 1 fails its state write (aborted, its directory deleted by the master), and
    # every checkpoint directory's first deletion meets a late snapshot
    fs = pafs.PyFileSystem(LateWriteDuringDelete(rules=[FaultRule("write_state", path_glob="*/chk-1", fail=True)]))
    env = rs.StreamEnvironment(parallelism=1)
    env.enable_checkpointing(50, checkpoint_dir=(fs, str(storage)), retained=1)
    env.generate(lambda i: i, rate=500).key_by(lambda x: x % 3).reduce(lambda a, b: a + b).collect()

    def ready() -> bool:
        # (the master deleted checkpoint 1, the late snapshot landing mid-delete; one later completed)
        deleted = any(p.endswith("/chk-1") for p in LateWriteDuringDelete.raced)
        return deleted and any((d / "_metadata").exists() for d in _checkpoint_dirs(storage))

    def drill(master, runtime) -> None:
        wait_for(ready, "checkpoint 1 deleted and a later one complete", 60)
        asyncio.run_coroutine_threadsafe(master.cancel(), runtime.loop).result(60)

    with caplog.at_level(logging.WARNING, logger="raystream.engine.master"):
        with pytest.raises(JobCancelled):
            run_in_process(env.get_job_graph(), JobConfig(name="late-write", checkpoint=env.checkpoint_config),
                           on_start=drill, timeout_s=120)
    assert "could not delete" not in caplog.text and "could not discard" not in caplog.text, caplog.text
    left = [d.name for d in _checkpoint_dirs(storage) if not (d / "_metadata").exists()]
    assert not left, f"aborted checkpoints left behind: {left}"
