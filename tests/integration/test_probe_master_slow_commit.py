"""A slow committer: the checkpoints that complete while one commit runs are committed by ONE
further commit, not by a commit each (as Flink's committer commits every pending committable
up to the newest completed checkpoint).

Before, each completed checkpoint queued a commit of its own behind the slow one: with a 2 s
commit and a 50 ms interval a source that finished after 1 s made the job end after 13
commits in a row (26 s), and in an unbounded job the queue, the committables held in the job
master and the output latency grew without bound.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

import raystream as rs
from raystream.engine.connectors import Committer, Sink, SinkWriter
from tests.integration.gated import generate
from tests.waiting import wait_for

#: a committable: (checkpoint id or None at the end, subtask, records)
_Comm = tuple[Any, int, list]


class _GatedCommitter(Committer[_Comm]):
    """Logs every commit call (the checkpoint ids it holds, one JSON line); the first call
    blocks until the file ``gate`` exists."""

    def __init__(self, log: str, gate: str) -> None:
        self.log, self.gate = log, gate
        self.rows: dict[tuple[Any, int], list] = {}  # idempotent: by (checkpoint, subtask)
        self.calls = 0

    def commit(self, committables: list[_Comm]) -> None:
        self.calls += 1
        with open(self.log, "a") as f:
            f.write(json.dumps(sorted({cid for cid, _s, _r in committables if cid is not None})) + "\n")
        while self.calls == 1 and not os.path.exists(self.gate):  # (the test opens it)
            time.sleep(0.01)
        for cid, subtask, rows in committables:
            self.rows[(cid, subtask)] = rows

    def result(self) -> list:
        return [r for rows in self.rows.values() for r in rows]


class _Writer(SinkWriter[_Comm]):
    def __init__(self, subtask: int) -> None:
        self.subtask = subtask
        self.rows: list = []

    def write(self, batch: rs.Batch) -> None:
        self.rows.extend(batch.records())

    def prepare_commit(self, checkpoint_id: int | None) -> list[_Comm]:
        rows, self.rows = self.rows, []
        return [(checkpoint_id, self.subtask, rows)]  # (one at every barrier, rows or none)


class GatedSink(Sink[_Comm]):
    def __init__(self, log: str, gate: str) -> None:
        self.log, self.gate = log, gate

    def create_writer(self, ctx: Any) -> SinkWriter[_Comm]:
        return _Writer(ctx.subtask_index)

    def create_committer(self) -> Committer[_Comm]:
        return _GatedCommitter(self.log, self.gate)


def _calls(log: str) -> list[list[int]]:
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_checkpoints_completed_during_a_slow_commit_are_committed_by_one_commit(tmp_path, parallelism):
    log, gate = str(tmp_path / "commits.log"), str(tmp_path / "gate")
    count = 400
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=10)
    env.enable_checkpointing(50, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.none())
    # the source pauses half way until the commit gate opens: the job runs (and checkpoints)
    # while the first commit blocks
    generate(env, lambda i: i, count=count, rate=None, batch_size=10, gate=gate).sink_to(
        GatedSink(log, gate), name="gated").uid("gated")
    client = env.execute_async("slow-commit")
    try:
        first = wait_for(lambda: _calls(log), "the first commit started")[0]
        blocked = max(first, default=0)
        # while that commit blocks, three more checkpoints complete
        latest = wait_for(lambda: (n := client.info()["checkpoints"]["latest_completed"]) and n >= blocked + 3 and n,
                          "three checkpoints completed while the first commit blocks")
        assert len(_calls(log)) == 1  # (the first commit still blocks)
    finally:
        open(gate, "w").close()
    result = client.wait(timeout=120)
    calls = _calls(log)
    during = set(range(blocked + 1, latest + 1))  # completed while the first commit blocked
    assert during <= set(calls[1]), f"commit calls: {calls}"  # all of them in ONE further commit
    assert [c for c in calls[2:] if during & set(c)] == [], f"commit calls: {calls}"
    assert sorted(result.sink_results["gated"]) == list(range(count))  # as a failure-free run
