"""A checkpointed job whose name is no path segment (``"team/etl"``, ``"a\\b"``; its id is the
name plus ``-<8 hex>``) failed with ``ConfigError: job_id must be a non-empty str without '/',
got 'team/etl-1a2b3c4d'`` from inside the job master, naming neither the name nor a remedy.
Its checkpoints now live under ``storage.job_dir_name(job_id)``, and it checkpoints, restarts
from its checkpoint and finishes as any other job."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import raystream as rs
from raystream.checkpoint.storage import CheckpointStorage, job_dir_name
from raystream.engine.local_runtime import run_in_process
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

N = 400
KEYS = 3


def fail_once(flag: str, r: dict) -> dict:
    if os.path.exists(flag):
        os.remove(flag)
        raise RuntimeError("injected: fails once")
    return r


@pytest.mark.parametrize("name", ["team/etl", "a\\b"])
def test_a_job_named_with_a_slash_checkpoints_restarts_and_finishes(tmp_path, name):
    gate, flag = str(tmp_path / "gate"), str(tmp_path / "fail")
    env = rs.StreamEnvironment(parallelism=2, flush_ms=0)
    env.enable_checkpointing(30, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(1, 0))
    (generate(env, lambda i: {"k": i % KEYS}, count=N, rate=None, batch_size=20, gate=gate)
        .set_parallelism(1).uid("src").key_by("k").reduce(lambda a, b: {"k": a["k"], "n": a.get("n", 1) + 1}).uid("c")
        .map(lambda r: {"k": r["k"], "n": r.get("n", 1)}).map(lambda r, f=flag: fail_once(f, r))
        .write_jsonl(str(tmp_path / "out")))
    seen: list = []

    def fail_after_a_checkpoint(master, runtime) -> None:
        wait_until_paused(gate, 1)
        wait_for(lambda: master.coordinator.completed_count >= 1, "a checkpoint")
        seen.append(sorted(p.name for p in (tmp_path / "chk").iterdir()))
        Path(flag).touch()
        Path(gate).touch()
        seen.append(master)

    result = run_in_process(env.get_job_graph(), env._job_config(name, None), on_start=fail_after_a_checkpoint,
                            timeout_s=120)
    directories, master = seen
    assert directories == [job_dir_name(master.job_id)] and master.job_id.startswith(name + "-")
    assert result["metrics"]["restarts"] == 1 and isinstance(master.restored_from, int)
    rows = [json.loads(line) for f in (tmp_path / "out").glob("part-*.jsonl") for line in f.read_text().splitlines()]
    assert sorted((r["k"], r["n"]) for r in rows) == sorted(
        (k, n) for k in range(KEYS) for n in range(1, len(range(k, N, KEYS)) + 1))
    assert os.listdir(tmp_path / "chk") == []  # finished: deleted


def test_job_ids_that_differ_only_in_replaced_characters_never_share_a_directory(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    for job in ("a/b-1", "a\\b-1", "a_b-1"):
        storage.write_metadata(job, 1, {"job": job})
    assert sorted(os.listdir(tmp_path)) == sorted({job_dir_name(j) for j in ("a/b-1", "a\\b-1", "a_b-1")})
    assert [storage.read_metadata(j, 1)["job"] for j in ("a/b-1", "a\\b-1", "a_b-1")] == ["a/b-1", "a\\b-1", "a_b-1"]
