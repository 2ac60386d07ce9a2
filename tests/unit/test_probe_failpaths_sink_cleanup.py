"""A job that fails for good or is cancelled leaves no uncommitted part files (no Ray).

Subtask 0 of each attempt deletes what earlier attempts of its job left; the last attempt of a
job that fails for good (its restart strategy gave up) or is cancelled had no attempt after it,
and its files stayed in ``<dir>/.raystream/`` for good: the files open when its tasks ended,
the pending files of checkpoints that never completed. Now the job master has the sinks delete
them at the job's end (``clean_up_after_job``), except what a complete checkpoint in storage
records (a job started from that retained checkpoint commits it) and what a savepoint records.
A clean-up that fails never changes how the job ended; ``info()["sink_cleanup"]`` says so.

The fake tasks of ``test_job_master`` write real part files here: each has a real file sink
writer of the job's ``write_jsonl`` sink; at each barrier it writes a record, hands its file
over and writes one more record into a new file (open when the task ends).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import cloudpickle
import pytest

import raystream as rs
from raystream.checkpoint import HeapStateBackend
from raystream.checkpoint.coordinator import CheckpointConfig
from raystream.checkpoint.storage import CheckpointStorage
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobCancelled, JobFailed
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.sinks import FileCommittable, JsonLinesSink, _FileCommitter
from tests.unit.test_job_master import FakeTask, Script, master_on
from tests.waiting import wait_for


def _graph_and_config(tmp_path: Any) -> tuple[bytes, bytes]:
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(4).write_jsonl(str(tmp_path / "out"))
    config = JobConfig(name="files", checkpoint=CheckpointConfig(20, checkpoint_dir=str(tmp_path / "chk")),
                       restart=rs.RestartStrategy.none(), state_backend=HeapStateBackend(), reuse_workers=False)
    return cloudpickle.dumps(env.get_job_graph()), cloudpickle.dumps(config)


def _writing_tasks(monkeypatch: pytest.MonkeyPatch, out: Any) -> None:
    """Each fake task acks a barrier with the part file its real writer hands over (the records
    ``cid * 10 + subtask``), then opens the next file (``cid * 10 + subtask + 100``)."""
    writers: dict[tuple, Any] = {}
    sink = JsonLinesSink(str(out))

    async def trigger_checkpoint(self: FakeTask, cid: int, ts: int, savepoint: bool, stop: bool = False) -> None:
        assert self.spec is not None
        if self.done.is_set():  # (a real task takes no barrier once cancelled or released: before, a
            return              # trigger sent before the job failed wrote files after its clean-up)
        s, uid = self.key[1], self.sink_uid()
        w = writers.get((self.epoch, s))
        if w is None:
            ctx = OperatorContext("sink", uid, f"sink ({s + 1}/2)", s, 2, 128, KeyGroupRange.for_subtask(s, 2, 128),
                                  attempt=self.spec.attempt, restored=False, checkpointing=True)
            ctx.job_id = "job-1"  # type: ignore[attr-defined]  # (as the task sets it)
            w = writers[(self.epoch, s)] = sink.create_writer(ctx)
        w.write(Batch.of_records([{"i": cid * 10 + s}]))
        comms = w.prepare_commit(cid)
        w.write(Batch.of_records([{"i": cid * 10 + s + 100}]))
        await self.master.acknowledge_checkpoint(self.epoch, cid, self.key[0], s, {uid: {"committables": comms}})
        self.executor.runtime.acked.append((self.epoch, cid, s))

    monkeypatch.setattr(FakeTask, "trigger_checkpoint", trigger_checkpoint)


def failing_commits(monkeypatch: pytest.MonkeyPatch) -> Any:
    """An ``end(master)`` for :func:`_run`: from then on the sink's third commit fails."""
    real_commit = _FileCommitter.commit
    calls: list[int] = []

    def commit(self: _FileCommitter, committables: list[FileCommittable]) -> None:
        calls.append(len(committables))
        if len(calls) >= 3:
            raise OSError("rename refused (injected)")
        real_commit(self, committables)

    async def fail(master: Any) -> None:
        monkeypatch.setattr(_FileCommitter, "commit", commit)

    return fail


def hidden(out: Any) -> list[str]:
    return sorted(str(p) for p in out.rglob(".inprogress-*"))


def output(out: Any) -> list[int]:
    return sorted(json.loads(line)["i"] for f in out.glob("part-*.jsonl") for line in f.read_text().splitlines())


def _run(tmp_path: Any, end: Any) -> tuple[Any, Any, dict]:
    """Run the job on tasks that run until stopped; ``end(master)`` ends it (after two
    checkpoints completed). Returns the outcome of the run, the master and its job_info()."""
    script = Script(finish_after=10 ** 9)
    script.cancelled = True
    master, _runtime = master_on(script)
    graph, config = _graph_and_config(tmp_path)

    async def main() -> tuple[Any, dict]:
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        while master.status != "RUNNING" or len(master.coordinator.completed) < 2:
            await asyncio.sleep(0.01)
        await end(master)
        outcome = (await asyncio.gather(asyncio.wait_for(job, 60), return_exceptions=True))[0]
        return outcome, await master.job_info("job-1")

    outcome, info = asyncio.run(main())
    return outcome, master, info


async def _cancel(master: Any) -> None:
    await master.cancel("job-1")


def test_a_cancelled_job_leaves_no_uncommitted_part_files(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _writing_tasks(monkeypatch, out)
    outcome, master, info = _run(tmp_path, _cancel)
    assert isinstance(outcome, JobCancelled) and master.status == "CANCELLED"
    assert hidden(out) == [], "the cancelled job's last attempt left its part files"
    assert info["sink_cleanup"].startswith("deleted ") and info["sink_cleanup"] != "deleted 0 uncommitted files"
    # what the completed checkpoints committed is there, once
    done = sorted(master.coordinator.completed)
    assert set(output(out)) >= {c * 10 + s for c in done for s in (0, 1)}


def test_a_failed_job_keeps_what_its_retained_checkpoint_records(tmp_path, monkeypatch):
    """The commit of a completed checkpoint fails: the job fails for good (no restarts). The
    checkpoint is retained (a failed job's are) and records pending files nobody committed: they
    stay, and a job started from it commits them; everything else of the last attempt goes."""
    out = tmp_path / "out"
    _writing_tasks(monkeypatch, out)
    outcome, master, info = _run(tmp_path, failing_commits(monkeypatch))
    assert isinstance(outcome, JobFailed) and "rename refused" in str(outcome) and master.status == "FAILED"
    storage = CheckpointStorage(str(tmp_path / "chk"))
    newest = storage.latest_complete("job-1")
    assert newest is not None
    metadata = storage.read_metadata("job-1", newest)
    recorded = [c for op in metadata["operators"].values() for e in op["subtasks"].values() for c in e["committables"]]
    recorded += [c for comms in metadata["carried_committables"].values() for c in comms]
    left = hidden(out)
    assert left and set(left) <= {c.pending for c in recorded}, "files the retained checkpoint records went, or others stayed"
    # a job started from the retained checkpoint commits them: every record up to its barrier, once
    JsonLinesSink(str(out)).create_committer().commit_restored(recorded)
    # (the file handed over at barrier c holds the record written after barrier c - 1 and c's own)
    expected = [c * 10 + s for c in range(1, newest + 1) for s in (0, 1)]
    expected += [c * 10 + s + 100 for c in range(1, newest) for s in (0, 1)]
    assert output(out) == sorted(expected)
    assert hidden(out) == []
    assert info["sink_cleanup"].startswith("deleted ")


def test_a_clean_up_that_fails_leaves_the_job_cancelled_and_says_so(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _writing_tasks(monkeypatch, out)

    def refuse(self: _FileCommitter, job_id: str, uid: str, recorded: list[Any]) -> int:
        raise PermissionError(f"cannot delete in {self.sink.base!r} (injected)")

    monkeypatch.setattr(_FileCommitter, "clean_up_after_job", refuse)
    outcome, master, info = _run(tmp_path, _cancel)
    assert isinstance(outcome, JobCancelled) and master.status == "CANCELLED"
    assert info["sink_cleanup"].startswith("failed: ") and "PermissionError" in info["sink_cleanup"]
    assert hidden(out)  # (what could not be deleted stays, hidden)


def test_files_a_savepoint_records_stay_when_the_job_is_cancelled(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _writing_tasks(monkeypatch, out)
    taken: dict = {}

    async def savepoint_then_cancel(master: Any) -> None:
        taken["sp"] = await asyncio.wait_for(master.trigger_savepoint(str(tmp_path / "sp"), False, "job-1"), 60)
        await master.cancel("job-1")

    outcome, master, _info = _run(tmp_path, savepoint_then_cancel)
    assert isinstance(outcome, JobCancelled)
    wait_for(lambda: taken.get("sp"), "the savepoint", 1)
    metadata, _reader = CheckpointStorage(str(tmp_path / "chk")).read_savepoint(taken["sp"])
    recorded = [c for op in metadata["operators"].values() for e in op["subtasks"].values() for c in e["committables"]]
    recorded += [c for comms in metadata["carried_committables"].values() for c in comms]
    assert recorded and {c.pending for c in recorded} <= set(hidden(out))
    # a job resumed from the savepoint commits them
    JsonLinesSink(str(out)).create_committer().commit_restored(recorded)
    assert not {c.pending for c in recorded} & set(hidden(out))


def _writer(sink: JsonLinesSink, job: str, attempt: int = 1) -> Any:
    ctx = OperatorContext("sink", "sink-uid", "sink (1/1)", 0, 1, 128, KeyGroupRange.for_subtask(0, 1, 128),
                          attempt=attempt, restored=False, checkpointing=True)
    ctx.job_id = job  # type: ignore[attr-defined]  # (as the task sets it)
    return sink.create_writer(ctx)


def _handed(w: Any, cid: int, *records: int) -> list[FileCommittable]:
    w.write(Batch.of_records([{"i": i} for i in records]))
    return w.prepare_commit(cid)


def test_the_end_clean_up_touches_only_its_own_jobs_sink_and_keeps_what_is_recorded(tmp_path):
    out = tmp_path / "out"
    sink = JsonLinesSink(str(out))
    committer = sink.create_committer()
    mine, other = _writer(sink, "job-1"), _writer(sink, "job-2")
    recorded = _handed(mine, 1, 1)  # (a retained checkpoint records it)
    marked = _handed(mine, 2, 2)
    committer.protect_savepoint(2, marked)  # (a savepoint records it)
    orphan = _handed(mine, 3, 3)  # (a checkpoint that never completed)
    _handed(mine, 4, 4)
    mine.write(Batch.of_records([{"i": 5}]))  # (open when the task ended)
    theirs = _handed(other, 1, 9)
    assert committer.clean_up_after_job("job-1", "sink-uid", recorded) == 3
    assert set(hidden(out)) == {c.pending for c in recorded + marked + theirs}
    assert not any(orphan[0].pending == p for p in hidden(out))
    assert committer.clean_up_after_job("job-1", "another-uid", []) == 0  # (another sink's tag: none of these)


def test_unprotecting_a_replaced_savepoint_deletes_only_its_files_and_marker(tmp_path):
    out = tmp_path / "out"
    sink = JsonLinesSink(str(out))
    committer = sink.create_committer()
    mine, other = _writer(sink, "job-1"), _writer(sink, "job-2")
    gone = _handed(mine, 3, 1)
    committer.protect_savepoint(3, gone)  # the stop's savepoint that never completed
    kept_mine = _handed(mine, 2, 2)
    committer.protect_savepoint(2, kept_mine)  # an intermediate savepoint given to the user
    theirs = _handed(other, 3, 9)
    committer.protect_savepoint(3, theirs)  # another job's savepoint of the same number
    assert committer.unprotect_savepoint(3, "job-1", "sink-uid") == 1
    assert set(hidden(out)) == {c.pending for c in kept_mine + theirs}
    assert len(list(out.rglob(".savepoint-*"))) == 2
