"""The deletion of a finished job's checkpoints on slow and failing storage, in process: it runs
on a worker thread (the job master answers meanwhile), a delete that fails is logged and the job
still finishes with its output, and a deletion slower than ``CLEANUP_WAIT_S`` goes on after the
job's result. Before 2026-12-07 nothing deleted a job's checkpoints."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from pathlib import Path

import raystream as rs
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.engine import master as master_module
from raystream.engine.local_runtime import run_in_process
from tests.waiting import wait_for

N = 600
KEYS = 3


def run(tmp_path: Path, rules: list[FaultRule], on_start=None) -> dict:
    env = rs.StreamEnvironment(parallelism=2, flush_ms=0)
    env.enable_checkpointing(30, checkpoint_dir=(faulty_filesystem(rules=rules, seed=3), str(tmp_path / "chk")))
    (env.from_collection([{"k": i % KEYS, "v": i} for i in range(N)]).key_by("k")
        .reduce(lambda a, b: {"k": a["k"], "v": a["v"] + b["v"]}).uid("sum")
        .write_jsonl(str(tmp_path / "out")).uid("files"))
    return run_in_process(env.get_job_graph(), env._job_config("life-cleanup", None), timeout_s=120, on_start=on_start)


def totals(tmp_path: Path) -> dict[int, int]:
    last: dict[int, int] = {}
    for f in sorted((tmp_path / "out").glob("part-*.jsonl")):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            last[r["k"]] = max(last.get(r["k"], 0), r["v"])
    return last


def want() -> dict[int, int]:
    sums: Counter[int] = Counter()
    for i in range(N):
        sums[i % KEYS] += i
    return dict(sums)


def test_a_delete_that_fails_is_logged_and_the_job_finishes_with_its_output(tmp_path, caplog):
    masters = []
    with caplog.at_level(logging.WARNING):
        result = run(tmp_path, [FaultRule("delete", path_glob="*/chk-*", fail=True)],
                     on_start=lambda master, runtime: masters.append(master))
    assert result["checkpoints"]["completed"] >= 1
    assert totals(tmp_path) == want()
    assert masters[0].checkpoint_cleanup.startswith("failed: cannot ")
    assert "could not delete its checkpoints" in caplog.text and "delete what is left by hand" in caplog.text
    assert list((tmp_path / "chk").glob("*/chk-*"))  # still there: nothing claims it was deleted


def test_slow_deletes_run_off_the_masters_loop(tmp_path):
    seen: list[dict] = []

    def ask_while_deleting(master, runtime) -> None:
        wait_for(lambda: master.checkpoint_cleanup == "deleting", "the deletion of the checkpoints started", 120)
        seen.append(asyncio.run_coroutine_threadsafe(master.job_info(), runtime.loop).result(60))
        seen.append(master)

    run(tmp_path, [FaultRule("delete", delay_s=0.5)], on_start=ask_while_deleting)
    info, master = seen
    assert info["status"] == "FINISHED" and info["checkpoint_cleanup"] == "deleting"  # answered meanwhile
    assert master.checkpoint_cleanup.startswith("deleted ")
    assert os.listdir(tmp_path / "chk") == []


def test_a_deletion_slower_than_the_wait_goes_on_after_the_result(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(master_module, "CLEANUP_WAIT_S", 0.01)
    with caplog.at_level(logging.WARNING):
        run(tmp_path, [FaultRule("delete", delay_s=0.3)])
    assert "it goes on in the background" in caplog.text
    assert totals(tmp_path) == want()
    wait_for(lambda: os.listdir(tmp_path / "chk") == [], "the checkpoints deleted in the background")
