"""An operator that fails outside its records fails the task naming the operator and the call (no Ray).

Before, the task named the call only for ``close()``: a sink whose ``create_writer`` raised
gave ``operator 'my-sink' (subtask 2/2) failed: RuntimeError: ...`` (at open? at a checkpoint?),
and the calls that restore an operator from a checkpoint or savepoint (its ``restore_state``,
its keyed state) and that create or snapshot its keyed state backend were not guarded at
all: the job failed with ``task 'my-op (2/2)' failed: ...``, naming no operator.
"""

from __future__ import annotations

import pytest

from raystream.checkpoint.backends import HeapStateBackend
from raystream.engine.channels import InputInfo
from raystream.engine.config import TaskConfig
from raystream.engine.errors import JobFailed
from raystream.engine.events import Barrier, EndOfInput
from raystream.engine.operator import ManualClock, StreamOperator
from raystream.engine.records import Batch
from raystream.engine.task import Task, TaskHooks, TaskSpec


class Fussy(StreamOperator):
    """An operator (as ``DataStream.transform`` takes one) that raises in the call it is told."""

    fail = ""

    def open(self, ctx, output):
        super().open(ctx, output)
        if self.fail == "timer":
            ctx.register_processing_timer(5, self._on_timer)
        self._maybe_fail("open")

    def _maybe_fail(self, call):
        if self.fail == call:
            raise RuntimeError(f"boom in {call}")

    def _on_timer(self, time_ms):
        self._maybe_fail("timer")

    def restore_state(self, states):
        self._maybe_fail("restore_state")

    def process_batch(self, batch, input_index=0):
        pass

    def snapshot_state(self, checkpoint_id):
        self._maybe_fail("snapshot_state")
        return None

    def prepare_commit(self, checkpoint_id):
        self._maybe_fail("prepare_commit")
        return []

    def notify_checkpoint_complete(self, checkpoint_id):
        self._maybe_fail("notify_checkpoint_complete")

    def end_input(self):
        self._maybe_fail("end_input")


class RefusingBackend(HeapStateBackend):
    """A state backend that cannot create a keyed backend (a directory it may not write)."""

    def create_keyed_backend(self, ctx):
        raise PermissionError("no room for keyed state")


def _task(fail: str, *, restore: dict | None = None, keyed: bool = False, state_backend=None) -> Task:
    def factory():
        op = Fussy()
        op.fail = fail
        return op

    spec = TaskSpec(
        job_id="j", vertex_id=0, name="my-op", subtask_index=1, parallelism=2, max_parallelism=128,
        chain=[{"name": "my-op", "uid": "op", "factory": factory, "kind": "operator", "keyed": keyed}],
        inputs=[InputInfo(0, "up")], outputs=[], config=TaskConfig(), checkpointing=True, restore=restore,
        state_backend=state_backend or HeapStateBackend(), clock=ManualClock(10),
    )
    return Task(spec, [], hooks=TaskHooks())


def _fails(task: Task, says: str) -> JobFailed:
    with pytest.raises(JobFailed) as info:
        task.run()
    err = info.value
    assert str(err).startswith(f"operator 'my-op' (subtask 2/2) failed in {says}"), str(err)
    assert err.operator == "my-op" and err.subtask == 1 and err.__cause__ is not None
    return err


def _feed(task: Task, *items) -> None:
    task.deliver(0, 0, [Batch.of_records([1, 2, 3]), *items], lambda: None)


@pytest.mark.parametrize("call, items, says", [
    ("open", [EndOfInput()], "open(): RuntimeError: boom in open"),
    ("snapshot_state", [Barrier(4), EndOfInput()], "snapshot_state() at checkpoint 4: RuntimeError: boom in"),
    ("snapshot_state", [EndOfInput()], "snapshot_state() at the end of input: RuntimeError: boom in"),
    ("prepare_commit", [Barrier(4), EndOfInput()], "prepare_commit() at checkpoint 4: RuntimeError: boom in"),
    ("prepare_commit", [EndOfInput()], "prepare_commit() at the end of input: RuntimeError: boom in"),
    ("end_input", [EndOfInput()], "end_input(): RuntimeError: boom in end_input"),
    ("timer", [EndOfInput()], "a processing-time timer at 5: RuntimeError: boom in timer"),
])
def test_a_call_that_raises_is_named(call, items, says):
    task = _task(call)
    _feed(task, *items)
    _fails(task, says)


def test_notify_checkpoint_complete_is_named_with_its_checkpoint():
    task = _task("notify_checkpoint_complete")
    task.post(lambda: task.notify_checkpoint_complete(6))
    _feed(task, EndOfInput())
    _fails(task, "notify_checkpoint_complete(6): RuntimeError: boom in notify_checkpoint_complete")


def test_restore_state_that_raises_is_named_not_a_bare_task_failure():
    task = _task("restore_state", restore={"op": {"operator": ["old state"]}})
    _feed(task, EndOfInput())
    _fails(task, "restore_state() of its state from a checkpoint or savepoint: RuntimeError: boom in restore_state")


def test_keyed_state_that_cannot_be_restored_is_named():
    task = _task("", keyed=True, restore={"op": {"keyed": [b"not a keyed snapshot"], "operator": []}})
    _feed(task, EndOfInput())
    _fails(task, "restoring its keyed state from a checkpoint or savepoint: ")


def test_a_keyed_backend_that_cannot_be_created_is_named():
    task = _task("", keyed=True, state_backend=RefusingBackend())
    _feed(task, EndOfInput())
    _fails(task, "creating its keyed state backend: PermissionError: no room for keyed state")


def test_records_are_named_as_before():
    class Raising(Fussy):
        def process_batch(self, batch, input_index=0):
            raise ValueError("bad")

    spec = TaskSpec(
        job_id="j", vertex_id=0, name="my-op", subtask_index=0, parallelism=1, max_parallelism=128,
        chain=[{"name": "my-op", "uid": "op", "factory": Raising, "kind": "operator", "keyed": False}],
        inputs=[InputInfo(0, "up")], outputs=[], config=TaskConfig(),
    )
    task = Task(spec, [])
    task.deliver(0, 0, [Batch.of_records([7]), EndOfInput()], lambda: None)
    with pytest.raises(JobFailed) as info:
        task.run()
    assert str(info.value) == "operator 'my-op' (subtask 1/1) failed: ValueError: bad\n  while processing record: 7"
