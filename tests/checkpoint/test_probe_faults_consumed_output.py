"""Stop (or savepoint), consume, resume: a downstream consumer takes the committed part files
away before the job is resumed from its savepoint.

A job resumed from a savepoint commits again what the savepoint records (idempotent: a part
file already in place is left alone). A part file that was committed and then removed has
neither its pending nor its final file any more: the re-commit at the restore must skip it
(with a warning), as Flink's file sink's ``commitAfterRecovery`` does, not fail the job. Before
the fix the resumed job failed at every attempt with "cannot commit ...: the pending file ... is
gone", from an intermediate savepoint (and, once a stop-with-savepoint recorded its
committables, from a stop's too), so the workflow could not be resumed at all. A first commit of
a part file whose pending file is gone still fails the job (``tests/unit/test_file_sinks_names.py``).
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import os

import pytest

import raystream as rs
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import FileCommittable, JsonLinesSink
from tests.integration.gated import generate, wait_until_paused

N = 400


def job(tmp_path, gate: str | None, parallelism: int) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    env.enable_checkpointing(3_600_000, checkpoint_dir=str(tmp_path / "chk"), timeout_ms=60_000)
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(1, 0))
    generate(env, lambda i: {"i": i}, count=N, rate=None, batch_size=20, gate=gate).uid("src") \
        .map(lambda r: r).uid("id").write_jsonl(str(tmp_path / "out"))
    return env


def consume(tmp_path) -> list[int]:
    """What a downstream consumer does: read the committed part files, then delete them."""
    got = []
    for name in glob.glob(str(tmp_path / "out" / "part-*")):
        with open(name) as f:
            got.extend(json.loads(line)["i"] for line in f)
        os.remove(name)
    return got


@pytest.mark.parametrize("how", ["stop", "savepoint"])
@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_job_resumed_after_its_output_was_consumed_runs_on(tmp_path, how, parallelism):
    gate, sp = str(tmp_path / "gate"), str(tmp_path / "sp")

    def drill(master, runtime) -> None:
        wait_until_paused(gate, parallelism)
        call = master.stop_with_savepoint(sp) if how == "stop" else master.trigger_savepoint(sp)
        asyncio.run_coroutine_threadsafe(call, runtime.loop).result(60)
        open(gate, "w").close()  # (an intermediate savepoint: the job runs on to its end)

    env = job(tmp_path, gate, parallelism)
    run_in_process(env.get_job_graph(), env._job_config("first"), on_start=drill, timeout_s=120)
    first = consume(tmp_path)
    assert sorted(first) == list(range(N // 2 if how == "stop" else N))

    env = job(tmp_path, None, parallelism)
    run_in_process(env.get_job_graph(), env._job_config("resumed", from_savepoint=sp), timeout_s=120)
    resumed = consume(tmp_path)
    # the resumed job writes what comes after the savepoint (and, resumed from an intermediate
    # savepoint while the first job ran on, that is output of the first job once more)
    assert sorted(resumed) == list(range(N // 2, N))


def test_the_recommit_of_a_restore_skips_a_part_file_committed_and_removed_since(tmp_path, caplog):
    sink = JsonLinesSink(str(tmp_path))
    (tmp_path / ".inprogress-b").write_bytes(b"{}\n")
    removed = FileCommittable(str(tmp_path / ".inprogress-a"), str(tmp_path / "part-a.jsonl"), 3)
    pending = FileCommittable(str(tmp_path / ".inprogress-b"), str(tmp_path / "part-b.jsonl"), 3)
    committer = sink.create_committer()
    with caplog.at_level(logging.WARNING, logger="raystream.operators.sinks"):
        committer.commit_restored([removed, pending])
    assert sorted(f.name for f in tmp_path.iterdir()) == ["part-b.jsonl"]
    assert committer.result() == [pending.final]
    assert "1 part files" in caplog.text and "part-a.jsonl" in caplog.text
