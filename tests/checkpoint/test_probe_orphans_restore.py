"""A file-sink job that fails and restores leaves no uncommitted part files behind, and keeps
every file a savepoint records.

Found with /tmp/faults/explore_orphans2.py: checkpoints whose ``_metadata`` cannot be written,
then a task kill: the job restored from the last complete checkpoint and its output was
exact, but the hidden ``.inprogress-*`` files of the failed attempt stayed (the pending files
of the checkpoints that never completed, whose data the restore replays): the output
directory grew with every failure. Now subtask 0 of the restored attempt deletes them, and
only them: the files an intermediate savepoint recorded survive the restore (a job resumed
from that savepoint commits them).
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
from typing import Any, Callable

import pytest

import raystream as rs
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.engine.connectors import NOTHING_AVAILABLE, PollResult
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sources import GeneratorSource, _GeneratorReader
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

N = 600


class TwoGates(GeneratorSource):
    """``GeneratorSource`` whose subtasks emit no index at or beyond each ``pause_at`` until its
    ``gate`` file exists, creating ``<gate>.source.<split>.paused`` while they wait
    (:func:`wait_until_paused`)."""

    def __init__(self, fn: Callable[[int], Any], count: int, gates: list[tuple[int, str]]) -> None:
        super().__init__(fn, count=count, rate=None, batch_size=10)
        self.gates = gates

    def create_reader(self, ctx: Any) -> _TwoGatesReader:
        return _TwoGatesReader(self)


class _TwoGatesReader(_GeneratorReader):
    def poll_next(self) -> PollResult:
        src = self.source
        assert isinstance(src, TwoGates)
        for pause_at, gate in src.gates:
            if self.splits and self.splits[0].position >= pause_at and not os.path.exists(gate):
                marker = f"{gate}.source.{self.splits[0].split_id}.paused"
                if not os.path.exists(marker):
                    open(marker, "w").close()
                return NOTHING_AVAILABLE
        return super().poll_next()


def failing_while(flag: str) -> Callable[[float], None]:
    """The fault injector's sleep for a delay rule: the operation fails while ``flag`` exists
    (a switch the test turns, so the failing checkpoints are the ones it means, not those of
    some ids)."""

    def sleep(_seconds: float) -> None:
        if os.path.exists(flag):
            raise OSError(f"injected: {flag} exists")

    return sleep


def job(tmp_path, source_or_gate: Any, parallelism: int, interval_ms: int, checkpoint_dir: Any) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    env.enable_checkpointing(interval_ms, checkpoint_dir=checkpoint_dir, timeout_ms=60_000)
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(3, 0))
    if isinstance(source_or_gate, TwoGates):
        stream = env.from_source(source_or_gate, name="generate")
    else:
        stream = generate(env, lambda i: {"i": i}, count=N, rate=None, batch_size=10, gate=source_or_gate)
    stream.uid("src").map(lambda r: r).uid("id").write_jsonl(str(tmp_path / "out"))
    return env


def records(tmp_path) -> list[int]:
    got = []
    for name in glob.glob(str(tmp_path / "out" / "part-*")):
        with open(name) as f:
            got.extend(json.loads(line)["i"] for line in f)
    return sorted(got)


def hidden(tmp_path, prefix: str = ".inprogress-") -> list[str]:
    """The hidden files named ``prefix*`` below the output directory (its ``.raystream/``)."""
    return sorted(p.name for p in (tmp_path / "out").rglob(prefix + "*"))


def kill_one_and_wait_for_the_restart(master, runtime) -> None:
    restarts = master.restarts
    runtime.kill_executor(next(iter(runtime.executors.values())))
    wait_for(lambda: master.restarts > restarts and master.status == "RUNNING", "the restart", 60)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_restore_after_failed_checkpoints_and_a_kill_leaves_no_part_file_behind(tmp_path, parallelism):
    """A third of the records, then a checkpoint completes; the metadata writes fail from then
    on; the next third, then a checkpoint that fails (its part files pending); a task is
    killed. The job restores from the complete checkpoint, replays the rest, and ends with
    every record once and no hidden file (before: the failed checkpoint's pending files)."""
    gate1, gate2, flag = str(tmp_path / "gate1"), str(tmp_path / "gate2"), str(tmp_path / "failing")
    source = TwoGates(lambda i: {"i": i}, N, [(N // 3, gate1), (2 * N // 3, gate2)])
    fs = faulty_filesystem(rules=[FaultRule("write_metadata", delay_s=0.001)], sleep=failing_while(flag))
    seen: dict[str, int] = {}

    def checkpoint_after_now(master, ok: bool) -> None:
        c = master.coordinator
        after = c.next_id
        status = "COMPLETED" if ok else "ABORTED"
        wait_for(lambda: any(h["id"] >= after and h["status"] == status for h in list(c.history)),
                 f"a checkpoint {status.lower()} after {after}", 60)

    def drill(master, runtime) -> None:
        wait_until_paused(gate1, parallelism)
        checkpoint_after_now(master, ok=True)  # (covers the first third)
        open(flag, "w").close()
        open(gate1, "w").close()
        wait_until_paused(gate2, parallelism)
        checkpoint_after_now(master, ok=False)  # (hands the second third over, never completes)
        seen["before"] = len(hidden(tmp_path))
        kill_one_and_wait_for_the_restart(master, runtime)
        os.remove(flag)
        open(gate2, "w").close()

    env = job(tmp_path, source, parallelism, 50, (fs, str(tmp_path / "chk")))
    result = run_in_process(env.get_job_graph(), env._job_config("orphans"), on_start=drill, timeout_s=120)
    assert result["metrics"]["restarts"] == 1
    assert seen["before"] >= parallelism  # (each subtask's pending file of the failed checkpoint)
    assert records(tmp_path) == list(range(N))  # as a failure-free run: every record once
    assert hidden(tmp_path) == []  # before: the failed attempt's files stayed
    assert hidden(tmp_path, ".savepoint-") == []


@pytest.mark.parametrize("parallelism", [1, 2])
def test_the_files_of_a_savepoint_survive_a_restore_from_before_it(tmp_path, parallelism, caplog):
    """An intermediate savepoint, then a kill before any checkpoint completed: the job starts
    over, and the restarted attempt deletes the killed task's open file but none of the pending
    files the savepoint names; a job resumed from the savepoint commits every one of them (no
    'neither pending nor in place' warning), then writes what comes after it."""
    gate, sp = str(tmp_path / "gate"), str(tmp_path / "sp")

    def drill(master, runtime) -> None:
        wait_until_paused(gate, parallelism)
        asyncio.run_coroutine_threadsafe(master.trigger_savepoint(sp), runtime.loop).result(60)
        kill_one_and_wait_for_the_restart(master, runtime)
        open(gate, "w").close()

    env = job(tmp_path, gate, parallelism, 3_600_000, str(tmp_path / "chk"))  # (no periodic checkpoint)
    run_in_process(env.get_job_graph(), env._job_config("first"), on_start=drill, timeout_s=120)
    assert records(tmp_path) == list(range(N))
    kept = hidden(tmp_path)
    assert kept and hidden(tmp_path, ".savepoint-")  # (the savepoint's pending files, and their markers)

    env = job(tmp_path, None, parallelism, 3_600_000, str(tmp_path / "chk"))
    run_in_process(env.get_job_graph(), env._job_config("resumed", from_savepoint=sp), timeout_s=120)
    assert "neither pending nor in place" not in caplog.text
    # the savepoint's files committed by the resumed job ([0, N/2) again: resumed from an
    # intermediate savepoint while the first job ran on), then what comes after it
    assert records(tmp_path) == sorted(list(range(N)) + list(range(N)))
    assert hidden(tmp_path) == [] and hidden(tmp_path, ".savepoint-") == []
