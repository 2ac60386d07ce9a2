"""On Ray: the job master killed while it commits a stop-with-savepoint's output.

The stop's savepoint is written, then its part files are renamed (slowly: a fault delays the
first rename) when the master is killed. The driver's client takes the job over with a new
master and asks it the stop again: the new master finds the stop recorded in checkpoint
storage, finishes its commit and ends the job FINISHED with that savepoint (before, it
restored the newest checkpoint, from before the savepoint, ran the stopped job on, and the
stop asked again failed: a savepoint already exists at its path). A job resumed from the
savepoint into the same directory then writes the rest: together every record once, as a
failure-free run.
"""

from __future__ import annotations

import json
import os
import threading

import pyarrow.fs as pafs
import ray

import raystream as rs
from benchmarks.drill import FaultyJsonLinesSink
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from tests.integration.test_master_failover import build, expected_running_sums
from tests.waiting import wait_for


def _moves(log_path) -> list[dict]:
    try:
        lines = open(log_path).read().splitlines()
    except FileNotFoundError:
        return []
    return [e for e in map(json.loads, lines) if e["op"] == "move"]


def test_a_master_killed_while_it_commits_a_stop_ends_the_job_at_the_savepoint(tmp_path):
    out, log_path, sp = tmp_path / "out", tmp_path / "faults.jsonl", str(tmp_path / "sp")
    # no periodic checkpoint: the first part-file rename (in each master's process) is the
    # stop's commit, which waits 2 s first
    slow_commit = FaultRule("move", path_glob="*/part-*", delay_s=2.0, times=1)
    sink = FaultyJsonLinesSink(str(out), faulty_filesystem(rules=[slow_commit], log_path=str(log_path)))
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(600_000, checkpoint_dir=str(tmp_path / "chk"))
    build(env, rate=2_000).sink_to(sink).uid("out")
    client = env.execute_async("stop-master-kill")
    wait_for(lambda: client.status() == "RUNNING" and client.metrics()["operators"], "the job running")
    stopped: dict = {}

    def stop() -> None:
        try:
            stopped["path"] = client.stop_with_savepoint(sp)
        except Exception as exc:  # noqa: BLE001 - asserted below
            stopped["error"] = exc

    stopper = threading.Thread(target=stop)
    stopper.start()
    wait_for(lambda: _moves(log_path), "the stop's commit renaming its first part file")
    ray.kill(client.job_master(), no_restart=True)
    stopper.join(120)
    result = client.wait(timeout=120)
    assert stopped.get("path") == sp, stopped
    assert result.failovers == 1 and result.savepoint == sp

    env2 = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env2.enable_checkpointing(600_000, checkpoint_dir=str(tmp_path / "chk"))
    build(env2, rate=20_000).sink_to(FaultyJsonLinesSink(str(out), pafs.LocalFileSystem())).uid("out")
    env2.execute("stop-master-kill-resumed", from_savepoint=sp)
    rows = [tuple(json.loads(line)) for f in sorted(os.listdir(out)) if f.startswith("part-")
            for line in (out / f).read_text().splitlines()]
    want = expected_running_sums()
    assert len(rows) == len(want), f"{len(set(want) - set(rows))} lost, {len(rows) - len(set(rows))} duplicated"
    assert sorted(rows) == want
