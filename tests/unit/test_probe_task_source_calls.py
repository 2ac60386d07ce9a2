"""A source that fails in one of its calls fails the task naming the source and the call (no Ray).

Before, only ``poll_next`` was named after a fashion (``operator 'my-src' (subtask 1/2)
failed: RuntimeError: ...``); a source whose ``create_reader``, ``add_splits`` or
``snapshot_state`` raised failed the job with ``task 'my-src -> my-sink (1/2)' failed:
RuntimeError: ...`` (which call? the source or the sink?), a ``snapshot_state`` that returned
None with ``TypeError: 'NoneType' object is not iterable``, splits that do not pickle with a
``CheckpointError`` naming no call, and a failing ``notify_checkpoint_complete`` was blamed on
the first operator chained after the source.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from raystream.engine.config import TaskConfig
from raystream.engine.connectors import END_OF_INPUT, Source, SourceReader
from raystream.engine.errors import JobFailed, UserCodeError
from raystream.engine.events import Barrier
from raystream.engine.operator import StreamOperator
from raystream.engine.records import Batch
from raystream.engine.task import Task, TaskHooks, TaskSpec


@dataclass
class Range:
    split_id: str
    pos: int
    end: int


class RangeReader(SourceReader):
    def __init__(self, source: "RangeSource") -> None:
        self.source = source
        self.splits: list[Range] = []

    def _maybe_fail(self, call: str) -> None:
        if call in self.source.fail:
            raise RuntimeError(f"boom in {call}")

    def add_splits(self, splits):
        self._maybe_fail("add_splits")
        if self.source.fail_restored and any(s.pos > 0 for s in splits):
            raise RuntimeError("cannot seek to a restored position")
        self.splits.extend(splits)

    def poll_next(self):
        self._maybe_fail("poll_next")
        if "poll_next_record" in self.source.fail:
            raise UserCodeError({"line": 7}, ValueError("bad line"))
        while self.splits and self.splits[0].pos >= self.splits[0].end:
            self.splits.pop(0)
        if not self.splits:
            return END_OF_INPUT
        s = self.splits[0]
        out = list(range(s.pos, min(s.end, s.pos + 4)))
        s.pos += len(out)
        return Batch.of_records(out)

    def poll_watermark(self):
        self._maybe_fail("poll_watermark")
        return None

    def is_idle(self):
        self._maybe_fail("is_idle")
        return False

    def snapshot_state(self, checkpoint_id):
        self._maybe_fail("snapshot_state")
        if "snapshot_none" in self.source.fail:
            return None  # (a forgotten return)
        if "snapshot_lock" in self.source.fail:
            return [(s, threading.Lock()) for s in self.splits]
        return [Range(s.split_id, s.pos, s.end) for s in self.splits if s.pos < s.end]

    def notify_checkpoint_complete(self, checkpoint_id):
        self._maybe_fail("notify_checkpoint_complete")

    def close(self):
        self._maybe_fail("close")


class RangeSource(Source):
    def __init__(self, fail=(), fail_restored=False) -> None:
        self.fail = set(fail)
        self.fail_restored = fail_restored

    def create_splits(self, parallelism):
        return [Range("r0", 0, 10)]

    def create_reader(self, ctx):
        if "create_reader" in self.fail:
            raise RuntimeError("boom in create_reader")
        if "create_reader_none" in self.fail:
            return None
        return RangeReader(self)

    def describe(self):
        return "RangeSource(1 range)"


class Collect(StreamOperator):
    def __init__(self) -> None:
        self.records: list = []

    def process_batch(self, batch, input_index=0):
        self.records.extend(batch.records())


class Acks(TaskHooks):
    def __init__(self) -> None:
        self.acks: dict = {}

    def acknowledge(self, checkpoint_id, vertex_id, subtask, state):
        self.acks[checkpoint_id] = state


def _task(source: RangeSource, restore: dict | None = None) -> tuple[Task, Acks]:
    spec = TaskSpec(
        job_id="j", vertex_id=0, name="my-src -> my-sink", subtask_index=1, parallelism=2, max_parallelism=128,
        chain=[{"name": "my-src", "uid": "src", "kind": "source"},
               {"name": "my-sink", "uid": "sink", "factory": Collect, "kind": "operator", "keyed": False}],
        inputs=[], outputs=[], config=TaskConfig(), source=source, splits=source.create_splits(2), split_order=[0],
        restore=restore, checkpointing=True,
    )
    hooks = Acks()
    return Task(spec, [], hooks=hooks), hooks


def _fails(task: Task) -> JobFailed:
    with pytest.raises(JobFailed) as info:
        task.run()
    err = info.value
    assert err.operator == "my-src" and err.subtask == 1
    assert str(err).startswith("source operator 'my-src' (RangeSource(1 range), subtask 2/2) failed in "), str(err)
    return err


@pytest.mark.parametrize("call, says", [
    ("create_reader", "create_reader(): RuntimeError: boom in create_reader"),
    ("add_splits", "add_splits(): RuntimeError: boom in add_splits"),
    ("poll_next", "poll_next(): RuntimeError: boom in poll_next"),
    ("is_idle", "is_idle(): RuntimeError: boom in is_idle"),
    ("poll_watermark", "poll_watermark(): RuntimeError: boom in poll_watermark"),
    ("snapshot_state", "snapshot_state() at the end of input: RuntimeError: boom in snapshot_state"),
    ("close", "close(): RuntimeError: boom in close"),
])
def test_a_call_that_raises_is_named_with_the_source(call, says):
    err = _fails(_task(RangeSource(fail=[call]))[0])
    assert says in str(err)
    assert isinstance(err.__cause__, RuntimeError) and str(err.__cause__) == f"boom in {call}"  # (chained)
    assert f"boom in {call}" in (err.cause or "")  # the original traceback


def test_snapshot_state_at_a_checkpoint_names_the_checkpoint():
    task, hooks = _task(RangeSource(fail=["snapshot_state"]))
    task.post(lambda: task.trigger_checkpoint(Barrier(3)))
    err = _fails(task)
    assert "failed in snapshot_state() at checkpoint 3: RuntimeError: boom in snapshot_state" in str(err)
    assert hooks.acks == {}


def test_notify_checkpoint_complete_is_blamed_on_the_source_not_the_sink():
    task, _ = _task(RangeSource(fail=["notify_checkpoint_complete"]))
    task.post(lambda: task.notify_checkpoint_complete(3))
    err = _fails(task)
    assert "failed in notify_checkpoint_complete(3): RuntimeError: boom in notify_checkpoint_complete" in str(err)


def test_snapshot_state_returning_none_says_it_must_return_a_list():
    task, hooks = _task(RangeSource(fail=["snapshot_none"]))
    task.post(lambda: task.trigger_checkpoint(Barrier(1)))
    err = _fails(task)
    msg = str(err)
    assert "failed in snapshot_state() at checkpoint 1: TypeError: RangeReader.snapshot_state() must return a list" in msg
    assert "got NoneType: None" in msg and "not iterable" not in msg
    assert hooks.acks == {}


def test_splits_that_do_not_pickle_name_the_call_and_the_remedy():
    task, hooks = _task(RangeSource(fail=["snapshot_lock"]))
    task.post(lambda: task.trigger_checkpoint(Barrier(2)))
    msg = str(_fails(task))
    assert "failed in snapshot_state() at checkpoint 2: the splits it returned cannot be pickled" in msg
    assert "_thread.lock" in msg and "not open files, locks or clients" in msg
    assert hooks.acks == {}


def test_create_reader_returning_none_says_what_it_must_return():
    msg = str(_fails(_task(RangeSource(fail=["create_reader_none"]))[0]))
    assert "failed in create_reader(): TypeError: RangeSource.create_reader() must return a SourceReader" in msg
    assert "got NoneType" in msg


def test_a_reader_that_fails_only_on_restore_says_the_splits_were_restored():
    source = RangeSource(fail_restored=True)
    task, _ = _task(source, restore={"src": {"splits": [Range("r0", 4, 10)], "split_order": [0]}})
    msg = str(_fails(task))
    assert ("failed in add_splits() of 1 split(s) restored from a checkpoint or savepoint: "
            "RuntimeError: cannot seek to a restored position") in msg


def test_a_record_the_reader_names_is_kept_last():
    msg = str(_fails(_task(RangeSource(fail=["poll_next_record"]))[0]))
    assert msg.endswith("failed in poll_next(): ValueError: bad line\n  while processing record: {'line': 7}"), msg


def test_a_healthy_source_still_reads_everything_and_snapshots():
    task, hooks = _task(RangeSource())
    task.post(lambda: task.trigger_checkpoint(Barrier(1)))
    result = task.run()
    assert sorted(task.operators[0].records) == list(range(10))
    assert 1 in hooks.acks and "src" in result.final_state
