"""A job started again from a retained checkpoint directory (``from_savepoint=<checkpoint
dir>/<job id>/chk-<n>``, as Flink's ``flink run -s``): what docs/fault_tolerance.md tells a
user whose driver died. It failed with ``checkpoint file ... holds 'metadata' data, expected
'savepoint'``. The two runs' files together hold every record exactly once, keyed state
carried over (heap and RocksDB, whose shared files live beside the checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import raystream as rs
from raystream.checkpoint import CheckpointStorage
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

N = 4_000
KEYS = 7


def record(i: int) -> dict:
    return {"k": i % KEYS, "i": i}


def count(a: dict, b: dict) -> dict:  # the running count of a key, and the last index
    return {"k": a["k"], "n": a.get("n", 1) + 1, "i": b["i"]}


def job(tmp_path: Path, backend: str, run: str, gate: str) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=2)
    env.enable_checkpointing(50, checkpoint_dir=str(tmp_path / f"chk-{run}"), retained=2)
    env.set_restart_strategy(rs.RestartStrategy.none())
    env.set_state_backend(backend)
    (generate(env, record, count=N, rate=None, batch_size=100, gate=gate).set_parallelism(1).uid("src")
        .key_by("k").reduce(count).uid("count").map(lambda r: {"k": r["k"], "n": r.get("n", 1)}).uid("fmt")
        .write_jsonl(str(tmp_path / "out")).uid("files"))
    return env


def complete(storage_dir: Path) -> list[Path]:
    return sorted(storage_dir.glob("*/chk-*/_metadata"), key=lambda p: int(p.parent.name.split("-")[1]))


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
def test_a_job_restarted_from_a_retained_checkpoint_directory_is_exactly_once(tmp_path, backend):
    if backend == "rocksdb":
        pytest.importorskip("rocksdict")
    gate = str(tmp_path / "gate")
    client = job(tmp_path, backend, "1", gate).execute_async("retained-1")
    wait_until_paused(gate, 1)  # the first half is read; checkpoints go on
    seen = len(complete(tmp_path / "chk-1"))
    wait_for(lambda: len(complete(tmp_path / "chk-1")) >= seen + 2 or None, "two checkpoints after the pause", 120)
    client.cancel()  # the driver's job ends: its checkpoints stay
    with pytest.raises(rs.RaystreamError):
        client.wait()
    newest = complete(tmp_path / "chk-1")[-1].parent
    Path(gate).touch()
    job(tmp_path, backend, "2", gate).execute("retained-2", from_savepoint=str(newest))
    rows = [json.loads(line) for f in sorted((tmp_path / "out").glob("part-*.jsonl")) for line in f.read_text().splitlines()]
    want = sorted((k, n) for k in range(KEYS) for n in range(1, len(range(k, N, KEYS)) + 1))
    assert sorted((r["k"], r["n"]) for r in rows) == want


def test_a_checkpoint_directory_opens_like_a_savepoint(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    handle = storage.write_state("j", 3, "op-0", b"state")
    storage.write_metadata("j", 3, {"operators": {"u": {"subtasks": {0: {"op": handle}}}}})
    metadata, reader = storage.read_savepoint(str(tmp_path / "j" / "chk-3"))
    assert reader.read(metadata["operators"]["u"]["subtasks"][0]["op"]) == b"state"
    with pytest.raises(rs.CheckpointError, match="no savepoint at"):
        storage.read_savepoint(str(tmp_path / "j" / "chk-4"))
