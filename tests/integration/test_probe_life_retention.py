"""Externalized checkpoint retention on Ray, as a Flink user runs a job through its life: a
job that finished deletes its checkpoints (``<checkpoint_dir>/<job id>/``) in every mode; a
cancelled one keeps them unless ``DELETE_ON_CANCELLATION`` or ``NO_EXTERNALIZED_CHECKPOINTS``;
a failed one keeps them unless ``NO_EXTERNALIZED_CHECKPOINTS``. Before 2026-12-07 every run of
a checkpointed job left its directory, checkpoints, shared files and commit log for good.
What a job restored from another job's retained checkpoint deletes at its end is its own
directory only: the retained checkpoint still restores afterwards (RocksDB: its shared files
too)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

import raystream as rs
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

N = 1_200
KEYS = 5


def count(a: dict, b: dict) -> dict:  # a key's running count
    return {"k": a["k"], "n": a.get("n", 1) + 1}


def job(tmp_path: Path, run: str, parallelism: int, gate: str | None = None, mode: str | None = None,
        backend: str = "heap", fail_flag: str | None = None) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.enable_checkpointing(30, checkpoint_dir=str(tmp_path / f"chk-{run}"), retained=2)
    if mode is not None:
        env.checkpoint_config.set_externalized_checkpoint_retention(mode)
    env.set_restart_strategy(rs.RestartStrategy.none())
    env.set_state_backend(backend)
    stream = (generate(env, lambda i: {"k": i % KEYS}, count=N, rate=None, batch_size=50, gate=gate, tag=run)
              .set_parallelism(1).uid("src").key_by("k").reduce(count).uid("count")
              .map(lambda r: {"k": r["k"], "n": r.get("n", 1)}).uid("fmt"))
    if fail_flag is not None:
        stream = stream.map(lambda r, f=fail_flag: _raise_if(f, r)).uid("fail")
    stream.write_jsonl(str(tmp_path / f"out-{run}")).uid("files")
    return env


def _raise_if(flag: str, r: dict) -> dict:
    if os.path.exists(flag):
        raise RuntimeError("injected: the job fails")
    return r


def rows(tmp_path: Path, *runs: str) -> list[tuple[int, int]]:
    got = [json.loads(line) for run in runs for f in sorted((tmp_path / f"out-{run}").glob("part-*.jsonl"))
           for line in f.read_text().splitlines()]
    return sorted((r["k"], r["n"]) for r in got)


def want() -> list[tuple[int, int]]:
    per_key = Counter(i % KEYS for i in range(N))
    return sorted((k, n) for k, c in per_key.items() for n in range(1, c + 1))


def complete(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/chk-*/_metadata"), key=lambda p: int(p.parent.name.split("-")[1]))


def run_until_checkpointed(tmp_path: Path, env: rs.StreamEnvironment, run: str) -> rs.JobClient:
    gate = str(tmp_path / f"gate-{run}")
    client = env.execute_async(f"life-{run}")
    wait_until_paused(gate, 1)
    seen = len(complete(tmp_path / f"chk-{run}"))
    wait_for(lambda: len(complete(tmp_path / f"chk-{run}")) >= seen + 1, "a checkpoint after the pause", 120)
    return client


@pytest.mark.parametrize("parallelism, mode", [(1, None), (2, None), (2, "NO_EXTERNALIZED_CHECKPOINTS")])
def test_a_finished_job_deletes_its_checkpoints(tmp_path, parallelism, mode):
    result = job(tmp_path, "1", parallelism, mode=mode).execute("life-finished")
    assert result.checkpoints["completed"] >= 1
    assert rows(tmp_path, "1") == want()
    assert os.listdir(tmp_path / "chk-1") == []  # no job directory: no chk-<n>, shared/ or commits/ left


def test_a_job_stopped_with_a_savepoint_deletes_its_checkpoints_and_the_savepoint_resumes(tmp_path):
    env = job(tmp_path, "1", 2, gate=str(tmp_path / "gate-1"))
    client = run_until_checkpointed(tmp_path, env, "1")
    savepoint = client.stop_with_savepoint(str(tmp_path / "sp"))
    client.wait()
    assert os.listdir(tmp_path / "chk-1") == []
    (tmp_path / "gate-2").touch()
    job(tmp_path, "2", 1, gate=str(tmp_path / "gate-2")).execute("life-resumed", from_savepoint=savepoint)
    assert rows(tmp_path, "1", "2") == want()
    assert os.listdir(tmp_path / "chk-2") == [] and (tmp_path / "sp" / "_metadata").exists()


@pytest.mark.parametrize("mode, kept", [(None, True), ("RETAIN_ON_CANCELLATION", True),
                                        ("DELETE_ON_CANCELLATION", False), ("NO_EXTERNALIZED_CHECKPOINTS", False)])
def test_a_cancelled_job_keeps_its_checkpoints_as_its_mode_says(tmp_path, mode, kept):
    client = run_until_checkpointed(tmp_path, job(tmp_path, "1", 2, gate=str(tmp_path / "gate-1"), mode=mode), "1")
    client.cancel()
    with pytest.raises(rs.RaystreamError):
        client.wait()
    assert bool(complete(tmp_path / "chk-1")) == kept
    assert client.info()["checkpoint_cleanup"].startswith("kept" if kept else "deleted")
    if not kept:
        assert os.listdir(tmp_path / "chk-1") == []


@pytest.mark.parametrize("mode, kept", [(None, True), ("DELETE_ON_CANCELLATION", True),
                                        ("NO_EXTERNALIZED_CHECKPOINTS", False)])
def test_a_failed_job_keeps_its_checkpoints_unless_none_are_externalized(tmp_path, mode, kept):
    flag = str(tmp_path / "fail")
    env = job(tmp_path, "1", 2, gate=str(tmp_path / "gate-1"), mode=mode, fail_flag=flag)
    client = run_until_checkpointed(tmp_path, env, "1")
    Path(flag).touch()
    (tmp_path / "gate-1").touch()  # the records after the pause reach the failing map
    with pytest.raises(rs.JobFailed, match="injected: the job fails"):
        client.wait()
    assert bool(complete(tmp_path / "chk-1")) == kept
    if not kept:
        assert os.listdir(tmp_path / "chk-1") == []


def test_a_job_restored_from_a_retained_checkpoint_deletes_only_its_own(tmp_path):
    pytest.importorskip("rocksdict")
    flag = str(tmp_path / "fail")
    client = run_until_checkpointed(
        tmp_path, job(tmp_path, "1", 2, gate=str(tmp_path / "gate-1"), backend="rocksdb", fail_flag=flag), "1")
    Path(flag).touch()
    (tmp_path / "gate-1").touch()
    with pytest.raises(rs.JobFailed):
        client.wait()
    os.remove(flag)
    retained = complete(tmp_path / "chk-1")[-1].parent
    before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "chk-1").rglob("*") if p.is_file())
    assert any("/shared/" in p for p in before)  # RocksDB's incremental files beside the checkpoint
    # two jobs restore from it in turn and finish: each deletes its own directory only
    for run in ("2", "3"):
        (tmp_path / f"gate-{run}").touch()
        job(tmp_path, run, 2, gate=str(tmp_path / f"gate-{run}"), backend="rocksdb").execute(
            f"life-{run}", from_savepoint=str(retained))
        assert os.listdir(tmp_path / f"chk-{run}") == []
        after = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "chk-1").rglob("*") if p.is_file())
        assert after == before
        assert rows(tmp_path, "1", run) == want()
