"""A RocksDB job started from another job's retained checkpoint (``from_savepoint=<checkpoint
dir>/<job id>/chk-<n>``) writes checkpoints of its own that need nothing of that directory.

The restored SST files used to count as already uploaded, so the new job's checkpoints
referenced them by paths relative to *its* checkpoint storage: with another
``checkpoint_dir`` they were never there (every checkpoint of the new job unrestorable: its
first task failure ended it with "checkpoints completed ... but none can be read back"), and
with the same one they were gone once the old job's directory was deleted, which the docs
allow after the new job checkpointed. As Flink's default (NO_CLAIM) restore mode, the new job's
first checkpoint is now self-contained. Three jobs in process: the second restores from the
first's retained checkpoint, the first's directory is deleted, the third restores from the
second's; the output holds every record exactly once."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

import raystream as rs
from raystream.engine.errors import JobCancelled
from raystream.engine.local_runtime import run_in_process
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

pytest.importorskip("rocksdict")

N = 1_500
KEYS = 7


def count(a: dict, b: dict) -> dict:  # a key's running count
    return {"k": a["k"], "n": a.get("n", 1) + 1}


def job(tmp_path: Path, run: int, gate: str | None, pause_at: int) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=2, flush_ms=0)
    env.enable_checkpointing(30, checkpoint_dir=str(tmp_path / f"chk-{run}"), retained=2)
    env.set_restart_strategy(rs.RestartStrategy.none())
    env.set_state_backend("rocksdb")
    (generate(env, lambda i: {"k": i % KEYS}, count=N, rate=None, batch_size=50, gate=gate, pause_at=pause_at)
        .set_parallelism(1).uid("src")
        .key_by("k").reduce(count).uid("count").map(lambda r: {"k": r["k"], "n": r.get("n", 1)}).uid("fmt")
        .write_jsonl(str(tmp_path / "out")).uid("files"))
    return env


def newest_checkpoint(directory: Path) -> Path:
    done = sorted(directory.glob("*/chk-*/_metadata"), key=lambda p: int(p.parent.name.split("-")[1]))
    return done[-1].parent


def run_until_checkpointed_then_cancel(tmp_path: Path, run: int, pause_at: int, from_checkpoint: Path | None) -> Path:
    """Run ``run`` until its source paused at ``pause_at`` and two checkpoints completed after
    that, cancel it (its retained checkpoints stay) and return its newest one."""
    gate = str(tmp_path / f"gate-{run}")

    def cancel_when_checkpointed(master, runtime) -> None:
        wait_until_paused(gate, 1)
        seen = master.coordinator.completed_count
        wait_for(lambda: master.coordinator.completed_count >= seen + 2, "two checkpoints after the pause")
        asyncio.run_coroutine_threadsafe(master.cancel(), runtime.loop).result(60)

    env = job(tmp_path, run, gate, pause_at)
    config = env._job_config(f"run-{run}", None if from_checkpoint is None else str(from_checkpoint))
    with pytest.raises(JobCancelled):
        run_in_process(env.get_job_graph(), config, on_start=cancel_when_checkpointed, timeout_s=120)
    return newest_checkpoint(tmp_path / f"chk-{run}")


def test_checkpoints_of_a_job_restored_from_a_retained_checkpoint_need_nothing_of_it(tmp_path):
    first = run_until_checkpointed_then_cancel(tmp_path, 1, N // 3, None)
    second = run_until_checkpointed_then_cancel(tmp_path, 2, 2 * N // 3, first)
    shutil.rmtree(tmp_path / "chk-1")  # the first job's directory is cleaned up

    env = job(tmp_path, 3, None, N)
    run_in_process(env.get_job_graph(), env._job_config("run-3", str(second)), timeout_s=120)

    rows = [json.loads(line) for f in (tmp_path / "out").glob("part-*.jsonl") for line in f.read_text().splitlines()]
    want = sorted((k, n) for k in range(KEYS) for n in range(1, len(range(k, N, KEYS)) + 1))
    assert sorted((r["k"], r["n"]) for r in rows) == want
