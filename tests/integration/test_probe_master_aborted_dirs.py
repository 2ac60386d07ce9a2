"""Aborted checkpoints leave no directory behind: the job master deletes ``chk-<id>`` when it
aborts a checkpoint (off its event loop), and again when a task's snapshot for it arrives late.

Before, an aborted checkpoint kept its directory until a later checkpoint completed: with
failing metadata writes (and ``tolerable_failures=None``: the job goes on) one directory per
attempt piled up, 85 after 12 s.
"""

from __future__ import annotations

import json
import os
import re

import pytest

import raystream as rs
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from tests.waiting import wait_for


def _job(tmp_path, rules: list[FaultRule], parallelism: int, timeout_ms: int = 60_000) -> tuple[rs.JobClient, str]:
    base = str(tmp_path / "chk")
    fs = faulty_filesystem(rules=rules, log_path=str(tmp_path / "faults.jsonl"))
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.enable_checkpointing(50, checkpoint_dir=(fs, base), timeout_ms=timeout_ms)
    env.generate(lambda i: (i % 50, i), rate=2000).key_by(0).sum(1).filter(lambda r: False).collect()
    return env.execute_async("aborted-dirs"), base


def _dirs(base: str) -> list[int]:
    """The ids of the chk-<id> directories of the job."""
    jobs = os.listdir(base) if os.path.isdir(base) else []
    found = []
    for job in jobs:
        for name in os.listdir(os.path.join(base, job)):
            m = re.fullmatch(r"chk-(\d+)", name)
            if m:
                found.append(int(m.group(1)))
    return sorted(found)


def _metadata_attempts(tmp_path) -> list[int]:
    """The checkpoints whose metadata write was attempted (and failed by the fault rule)."""
    path = tmp_path / "faults.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        m = re.search(r"/chk-(\d+)/", str(entry["path"]))
        if entry["op"] == "write_metadata" and m:
            out.append(int(m.group(1)))
    return out


def _cancel(client: rs.JobClient) -> None:
    client.cancel()
    with pytest.raises(rs.JobCancelled):
        client.wait(timeout=120)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_checkpoints_whose_metadata_write_fails_leave_no_directory(tmp_path, parallelism):
    client, base = _job(tmp_path, [FaultRule("write_metadata", fail=True)], parallelism)
    try:
        wait_for(lambda: (client.metrics().get("checkpoints") or {}).get("aborted", 0) >= 6, "six aborted checkpoints")
        # the first five are gone (the newest may still be in progress)
        wait_for(lambda: not [i for i in _dirs(base) if i <= 5], "the directories of checkpoints 1-5 deleted",
                 timeout_s=30)
        assert (client.metrics().get("checkpoints") or {}).get("completed") == 0
    finally:
        _cancel(client)


def test_a_snapshot_written_after_its_checkpoint_was_aborted_is_deleted(tmp_path):
    # checkpoint 1's state files are written 2 s late: it times out (pending) and is aborted,
    # its directory deleted; then the late writes create it again, and their acks reach the
    # master, which deletes it once more. (No checkpoint completes: metadata writes fail, so
    # no later checkpoint's retention cleans up instead.)
    rules = [FaultRule("write_state", path_glob="*/chk-1", delay_s=2.0), FaultRule("write_metadata", fail=True)]
    client, base = _job(tmp_path, rules, 2, timeout_ms=600)
    try:
        # a later checkpoint was fully acknowledged: every task wrote (and acked) checkpoint 1
        # before (one snapshot writer per task, in order)
        wait_for(lambda: [i for i in _metadata_attempts(tmp_path) if i >= 2], "a later checkpoint fully acknowledged")
        wait_for(lambda: 1 not in _dirs(base), "the late snapshot of checkpoint 1 deleted", timeout_s=30)
    finally:
        _cancel(client)


def test_storage_slower_to_delete_than_checkpoints_abort_keeps_one_deletion_pass(tmp_path):
    """Deletes of 0.3 s each while a checkpoint aborts every ~50 ms: the ids to delete wait in
    one set drained by one pass (``deletions_pending``, ``deletion_passes`` in the metrics).
    Before, every abort queued a coroutine of its own waiting for the deletion lock: the
    backlog grew by one waiting task per aborted checkpoint, without bound."""
    rules = [FaultRule("write_metadata", fail=True), FaultRule("delete", path_glob="*/chk-*", delay_s=0.3)]
    client, base = _job(tmp_path, rules, 1)
    try:
        wait_for(lambda: (client.metrics().get("checkpoints") or {}).get("aborted", 0) >= 15, "15 aborted checkpoints")
        stats = client.metrics()["checkpoints"]
        assert stats["deletion_passes"] <= 2, stats  # (the pass deleting aborted ones, a retention pass)
        assert stats["deletions_pending"] >= 1, stats  # (the backlog is there: deletes are slower)
    finally:
        _cancel(client)
    # the job's end waits for its deletions (bounded): none of the first ten is left
    wait_for(lambda: not [i for i in _dirs(base) if i <= 10], "the directories of checkpoints 1-10 deleted",
             timeout_s=60)
