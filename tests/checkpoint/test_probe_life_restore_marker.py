"""A job restoring from another job's retained checkpoint marks it in use (``_restoring-<job
id>`` in its directory) so that the retention of the job that wrote it keeps it, and takes the
marker off once its own first checkpoint completed or it ended; its own end deletes its own
directory only. (In process: the master's calls are the ones it makes on Ray.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import raystream as rs
from raystream.engine.errors import JobCancelled
from raystream.engine.local_runtime import run_in_process
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

N = 600
KEYS = 4


def count(a: dict, b: dict) -> dict:
    return {"k": a["k"], "n": a.get("n", 1) + 1}


def job(tmp_path: Path, run: str, gate: str, interval_ms: int) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=2, flush_ms=0)
    env.enable_checkpointing(interval_ms, checkpoint_dir=str(tmp_path / f"chk-{run}"))
    env.set_restart_strategy(rs.RestartStrategy.none())
    (generate(env, lambda i: {"k": i % KEYS}, count=N, rate=None, batch_size=20, gate=gate, tag=run)
        .set_parallelism(1).uid("src").key_by("k").reduce(count).uid("count")
        .map(lambda r: {"k": r["k"], "n": r.get("n", 1)}).uid("fmt")
        .write_jsonl(str(tmp_path / f"out-{run}")).uid("files"))
    return env


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_a_restore_marks_the_retained_checkpoint_until_it_ends(tmp_path):
    gate_a = str(tmp_path / "gate-a")

    def cancel_when_checkpointed(master, runtime) -> None:
        wait_until_paused(gate_a, 1)
        seen = master.coordinator.completed_count
        wait_for(lambda: master.coordinator.completed_count >= seen + 1, "a checkpoint after the pause")
        asyncio.run_coroutine_threadsafe(master.cancel(), runtime.loop).result(60)

    env = job(tmp_path, "a", gate_a, 30)
    with pytest.raises(JobCancelled):
        run_in_process(env.get_job_graph(), env._job_config("life-a", None), on_start=cancel_when_checkpointed,
                       timeout_s=120)
    retained = sorted((tmp_path / "chk-a").glob("*/chk-*/_metadata"), key=lambda p: int(p.parent.name[4:]))[-1].parent
    before = files(tmp_path / "chk-a")

    gate_b = str(tmp_path / "gate-b")
    markers: list[list[str]] = []

    def look_while_restored(master, runtime) -> None:  # (no checkpoint of its own before the gate opens)
        wait_until_paused(gate_b, 1)
        markers.append(sorted(p.name for p in retained.glob("_restoring-*")))
        Path(gate_b).touch()

    env = job(tmp_path, "b", gate_b, 3_600_000)
    run_in_process(env.get_job_graph(), env._job_config("life-b", str(retained)), on_start=look_while_restored,
                   timeout_s=120)
    assert len(markers[0]) == 1 and markers[0][0].startswith("_restoring-life-b-")
    assert files(tmp_path / "chk-a") == before  # the marker is gone, nothing of job a was touched
    assert list((tmp_path / "chk-b").iterdir()) == []  # job b finished: its own checkpoints are gone

    rows = [json.loads(line) for run in "ab" for f in (tmp_path / f"out-{run}").glob("part-*.jsonl")
            for line in f.read_text().splitlines()]
    want = sorted((k, n) for k in range(KEYS) for n in range(1, len(range(k, N, KEYS)) + 1))
    assert sorted((r["k"], r["n"]) for r in rows) == want
