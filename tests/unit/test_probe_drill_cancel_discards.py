"""An in-process job (``run_in_process``) cancelled while the master deletes checkpoints
leaves no ``chk-<n>`` directory behind but the retained complete ones, and logs no failed
deletion.

Before the fix, the end of ``run_in_process`` cancelled the master's deletions still running
(``_end_other_tasks``) and shut the loop's thread pool down: on storage slow to delete, the
aborted checkpoints queued behind the one being deleted (and those subsumed by newer complete
ones) stayed on disk, each logged as "could not delete aborted checkpoint ... Executor shutdown
has been called"; and a snapshot a task was still writing when the job ended was written into
its aborted checkpoint's directory after its deletion, its ack (which has the master delete it
again) arriving at a closed loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

import raystream as rs
from raystream.checkpoint.faults import FaultRule, faulty_filesystem, read_fault_log
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobCancelled
from raystream.engine.local_runtime import run_in_process
from tests.waiting import wait_for

RETAINED = 1


def _job(storage: Path, rules: list[FaultRule], log_path: Path) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=1)
    fs = faulty_filesystem(rules=rules, log_path=str(log_path))
    env.enable_checkpointing(50, checkpoint_dir=(fs, str(storage)), retained=RETAINED)
    env.generate(lambda i: i, rate=500).key_by(lambda x: x % 3).reduce(lambda a, b: a + b).collect()
    return env


def _checkpoint_dirs(storage: Path) -> list[Path]:
    return sorted(storage.glob("*/chk-*"))


def _complete(storage: Path) -> list[Path]:
    return [d for d in _checkpoint_dirs(storage) if (d / "_metadata").exists()]


def _snapshot_writers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("raystream-snapshot") and t.is_alive()}


def _run_and_cancel(env: rs.StreamEnvironment, ready) -> None:
    def drill(master, runtime) -> None:
        wait_for(ready, "the moment to cancel", 60)
        asyncio.run_coroutine_threadsafe(master.cancel(), runtime.loop).result(60)

    with pytest.raises(JobCancelled):
        run_in_process(env.get_job_graph(), JobConfig(name="cancelled", checkpoint=env.checkpoint_config),
                       on_start=drill, timeout_s=120)


def _assert_only_retained_complete_checkpoints_left(storage: Path, caplog: pytest.LogCaptureFixture) -> None:
    left = _checkpoint_dirs(storage)
    incomplete = [d.name for d in left if not (d / "_metadata").exists()]
    assert not incomplete, f"aborted checkpoints left behind: {incomplete} (of {[d.name for d in left]})"
    assert len(left) <= RETAINED, f"more complete checkpoints left than retained={RETAINED}: {[d.name for d in left]}"
    # (the deletions ran on the job's loop, not after its thread pool was shut down)
    assert "Executor shutdown" not in caplog.text, caplog.text


def test_a_cancel_while_slow_storage_deletes_an_aborted_checkpoint_leaves_no_checkpoint_behind(tmp_path, caplog):
    storage, log_path = tmp_path / "chk", tmp_path / "faults.jsonl"
    rules = [
        FaultRule("write_state", path_glob="*/chk-1", fail=True),  # checkpoint 1 is aborted...
        FaultRule("delete", path_glob="*/chk-1", delay_s=2.0),  # ...and its deletion is slow
    ]
    env = _job(storage, rules, log_path)

    def ready() -> bool:
        # checkpoint 1 was aborted and two later ones completed: the deletion of the subsumed
        # one waits behind the slow deletion of checkpoint 1, and the cancellation aborts the
        # checkpoint in progress
        return read_fault_log(log_path).get("write_state:fail", 0) > 0 and len(_complete(storage)) >= 2

    with caplog.at_level(logging.WARNING, logger="raystream.engine.master"):
        _run_and_cancel(env, ready)
    assert read_fault_log(log_path).get("delete:delay", 0) > 0  # (the slow deletion happened)
    _assert_only_retained_complete_checkpoints_left(storage, caplog)


def test_a_snapshot_written_after_the_cancel_is_deleted_with_its_aborted_checkpoint(tmp_path, caplog):
    storage, log_path = tmp_path / "chk", tmp_path / "faults.jsonl"
    # the state files of checkpoint 1 take a second to write: the job is cancelled meanwhile,
    # checkpoint 1 is aborted and deleted, then its snapshots are written into it
    rules = [FaultRule("write_state", path_glob="*/chk-1", delay_s=1.0)]
    env = _job(storage, rules, log_path)

    writers_before = _snapshot_writers()
    with caplog.at_level(logging.WARNING, logger="raystream.engine.master"):
        _run_and_cancel(env, lambda: (storage.exists() and any(storage.glob("*/chk-1"))))
    assert read_fault_log(log_path).get("write_state:delay", 0) > 0
    # (the job's snapshot writers have ended: what they wrote late is on disk, or was deleted)
    wait_for(lambda: not (_snapshot_writers() - writers_before), "the job's snapshot writers ended", 60)
    _assert_only_retained_complete_checkpoints_left(storage, caplog)
