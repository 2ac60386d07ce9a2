"""The file sinks leave no uncommitted part files behind after failures: subtask 0 of each
attempt deletes the in-progress and pending files that earlier attempts of the same job and
sink left (a dead task's open file; the pending files of checkpoints that never completed,
whose data the restore replays), and never a file that a committable can still commit (the
restored checkpoint's, a savepoint's), nor another job's.

The writers here stand for the tasks of a job master's attempts (what the task tells them:
job id, attempt); the job master's side (commit at completed checkpoints, re-commit of the
restored checkpoint, the savepoint's marker before a savepoint is written) is the committer,
called as the master calls it.
Before, every failed attempt left its files: the disk filled with the number of failures.
"""

from __future__ import annotations

import json
from typing import Any

from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.sinks import FileCommittable, JsonLinesSink


def writer(sink: JsonLinesSink, job: str, attempt: int, subtask: int = 0, parallelism: int = 1,
           restore: list | None = None) -> Any:
    """The sink writer of one subtask of one attempt, as the task makes it."""
    ctx = OperatorContext("sink", "sink-uid", f"sink ({subtask + 1}/{parallelism})", subtask, parallelism, 128,
                          KeyGroupRange.for_subtask(subtask, parallelism, 128), attempt=attempt,
                          restored=restore is not None, checkpointing=True)
    ctx.job_id = job  # type: ignore[attr-defined]  # (a field of OperatorContext with the engine change)
    w = sink.create_writer(ctx)
    if restore:
        w.restore_state(restore)
    return w


def write(w: Any, *records: int) -> None:
    w.write(Batch.of_records([{"i": i} for i in records]))


def barrier(w: Any, checkpoint_id: int) -> tuple[list[FileCommittable], Any]:
    """What the task does at a barrier: pre-commit, then snapshot."""
    return w.prepare_commit(checkpoint_id), w.snapshot_state(checkpoint_id)


def hidden(directory) -> list[str]:
    """The in-progress and pending part files below ``directory``."""
    return sorted(p.name for p in directory.rglob(".inprogress-*"))


def markers(directory) -> list[str]:
    return sorted(p.name for p in directory.rglob(".savepoint-*"))


def output(directory) -> list[int]:
    return sorted(json.loads(line)["i"] for f in directory.glob("part-*.jsonl") for line in f.read_text().splitlines())


def test_a_restore_deletes_what_the_failed_attempt_left_and_the_output_is_exact(tmp_path):
    """p=1, as /tmp/faults/explore_orphans2.py: checkpoint 1 completes, checkpoints 2 and 3
    fail to write their metadata, the task dies with a file open; the restore from 1 replays
    the rest. Before: 3 hidden files stayed (the pending files of 2 and 3, the open one)."""
    sink = JsonLinesSink(str(tmp_path))
    committer = sink.create_committer()
    w = writer(sink, "job-a", attempt=1)
    write(w, 0, 1)
    done, state = barrier(w, 1)
    committer.commit(done)
    w.notify_checkpoint_complete(1)
    write(w, 2, 3)
    barrier(w, 2)  # (its metadata write fails: never committed, dropped by the restore)
    write(w, 4)
    barrier(w, 3)
    write(w, 5)  # (open when the process dies: no close())
    assert len(hidden(tmp_path)) == 3

    committer.commit_restored(done)  # the master's re-commit of checkpoint 1, before the tasks start
    again = writer(sink, "job-a", attempt=2, restore=[state])
    write(again, 2, 3, 4, 5)
    assert len(hidden(tmp_path)) == 1  # (the new attempt's own open file only)
    committer.commit(again.prepare_commit(None))
    again.close()
    assert hidden(tmp_path) == []
    assert output(tmp_path) == list(range(6))  # as a failure-free run: each record once


def test_a_rescaled_restore_deletes_the_files_of_every_old_subtask(tmp_path):
    """2 -> 1: the one new subtask was handed both old subtasks' writer states; the files
    either old subtask left after the restored checkpoint go, whatever their subtask index."""
    sink = JsonLinesSink(str(tmp_path))
    committer = sink.create_committer()
    olds = [writer(sink, "job-a", attempt=1, subtask=s, parallelism=2) for s in range(2)]
    states = []
    for s, w in enumerate(olds):
        write(w, 10 * s)
        done, state = barrier(w, 1)
        committer.commit(done)
        states.append(state)
        write(w, 10 * s + 1)
        barrier(w, 2)  # (never completes)
        write(w, 10 * s + 2)  # (open when the task dies)
    assert len(hidden(tmp_path)) == 4

    new = writer(sink, "job-a", attempt=2, subtask=0, parallelism=1, restore=states)
    write(new, 1, 2, 11, 12)
    committer.commit(new.prepare_commit(None))
    new.close()
    assert hidden(tmp_path) == []
    assert output(tmp_path) == [0, 1, 2, 10, 11, 12]


def test_files_a_committable_can_still_commit_are_never_deleted(tmp_path):
    """The restored checkpoint's pending files (the re-commit has not run yet) and the files an
    intermediate savepoint names (its own and the ones of an aborted checkpoint it carries)
    stay through the restore from an older checkpoint; a job resumed from that savepoint
    commits them. Only the dead task's open file, which nothing names, goes."""
    sink = JsonLinesSink(str(tmp_path))
    committer = sink.create_committer()
    w = writer(sink, "job-a", attempt=1)
    write(w, 0)
    restored, state = barrier(w, 1)  # checkpoint 1 completes; its commit has not run yet
    write(w, 1)
    aborted, _ = barrier(w, 2)  # (its metadata write fails: retained, carried by the savepoint)
    write(w, 2)
    savepoint, _ = barrier(w, 3)  # an intermediate savepoint: commits nothing
    committer.protect_savepoint(3, aborted + savepoint)  # (the master, before it writes the savepoint)
    write(w, 3)  # (open when the task dies)

    again = writer(sink, "job-a", attempt=2, restore=[state])
    assert again.clean_up() == 1
    left = {str(p) for p in tmp_path.rglob(".inprogress-*")}
    assert left == {c.pending for c in restored + aborted + savepoint}

    # a new job resumed from the savepoint commits what it names: every file is there
    resumed = JsonLinesSink(str(tmp_path)).create_committer()
    resumed.commit_restored(restored + aborted + savepoint)
    assert output(tmp_path) == [0, 1, 2]


def test_another_jobs_files_and_the_running_attempts_are_never_deleted(tmp_path):
    """Two jobs write into one directory: job b's attempt 2 deletes only what job b's attempt 1
    left, never job a's files (its open one, its pending ones), nor those of a sibling subtask
    of its own attempt, nor files named the way older releases named them."""
    sink = JsonLinesSink(str(tmp_path))
    a = writer(sink, "job-a", attempt=1)
    write(a, 0)
    barrier(a, 1)
    write(a, 1)
    (tmp_path / ".inprogress-0-0-0123456789abcdef").write_text("{}\n")  # (an older release's)
    dead = writer(sink, "job-b", attempt=1)
    write(dead, 2)
    sibling = writer(sink, "job-b", attempt=2, subtask=1, parallelism=2)
    write(sibling, 3)
    before = set(hidden(tmp_path))

    b = writer(sink, "job-b", attempt=2, subtask=0, parallelism=2)
    assert b.clean_up() == 1
    assert before - set(hidden(tmp_path)) == {dead.current.rsplit("/", 1)[-1]}


def test_a_savepoints_marker_goes_once_its_files_are_committed(tmp_path):
    """The marker that protects a savepoint's files is deleted by the commit of its last file
    (the next checkpoint's), so markers follow live savepoints, not the job's history; one whose
    files are all gone (its committer's master died) is deleted by the next clean-up."""
    sink = JsonLinesSink(str(tmp_path))
    committer = sink.create_committer()
    w = writer(sink, "job-a", attempt=1)
    write(w, 0)
    first, _ = barrier(w, 1)
    committer.protect_savepoint(1, first)
    write(w, 1)
    second, _ = barrier(w, 2)
    committer.protect_savepoint(2, first + second)
    assert len(markers(tmp_path)) == 2
    committer.commit(first)  # (the first marker's files are all in place)
    assert len(markers(tmp_path)) == 1
    sink.create_committer().commit(second)  # (another master's committer: it knows no marker)
    assert len(markers(tmp_path)) == 1
    writer(sink, "job-c", attempt=1).clean_up()
    assert markers(tmp_path) == []
    assert hidden(tmp_path) == []
    assert output(tmp_path) == [0, 1]


def test_a_clean_up_that_fails_is_logged_and_the_writer_goes_on(tmp_path, caplog):
    """Best effort: a directory of in-progress files that cannot be listed (here a file where
    it should be) or a savepoint marker that cannot be read (being written?) stops the clean-up,
    with a warning, and never fails the job; nothing is deleted then."""
    from raystream.operators.sinks import WORK_DIR

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / WORK_DIR).write_text("a file, not a directory")
    assert writer(JsonLinesSink(str(blocked)), "job-a", attempt=2).clean_up() == 0
    assert "could not delete the in-progress files" in caplog.text

    sink = JsonLinesSink(str(tmp_path / "out"))
    dead = writer(sink, "job-a", attempt=1)
    write(dead, 0)
    (tmp_path / "out" / WORK_DIR / ".savepoint-7-0123456789abcdef").write_text('{"files": [')  # (half written)
    again = writer(sink, "job-a", attempt=2)
    assert again.clean_up() == 0
    assert "cannot be read" in caplog.text
    write(again, 0)
    assert len(hidden(tmp_path / "out")) == 2
