"""Committables that cannot be pickled fail the task naming the sink and prepare_commit (no Ray).

Committables go from the task to the job master (a Ray call) and into checkpoints. Before,
the task handed them over as they were, and one that does not pickle (a lock, an open file,
a client) failed later, inside Ray: ``ray::TaskActor.run() ... cannot pickle
'_thread.lock' object``, naming neither the sink nor the call.
"""

from __future__ import annotations

import threading

import pytest

from raystream.engine.channels import InputInfo
from raystream.engine.config import TaskConfig
from raystream.engine.errors import JobFailed
from raystream.engine.events import Barrier, EndOfInput
from raystream.engine.operator import StreamOperator
from raystream.engine.records import Batch
from raystream.engine.task import Task, TaskHooks, TaskSpec


class LockingSink(StreamOperator):
    """A sink whose committables hold a lock."""

    def process_batch(self, batch, input_index=0):
        pass

    def prepare_commit(self, checkpoint_id):
        return [("part-0", threading.Lock())]


class Capture(TaskHooks):
    def __init__(self) -> None:
        self.acks: dict = {}

    def acknowledge(self, checkpoint_id, vertex_id, subtask, state):
        self.acks[checkpoint_id] = state


def _task() -> tuple[Task, Capture]:
    spec = TaskSpec(
        job_id="j", vertex_id=0, name="my-sink", subtask_index=1, parallelism=2, max_parallelism=128,
        chain=[{"name": "my-sink", "uid": "sink", "factory": LockingSink, "kind": "operator", "keyed": False}],
        inputs=[InputInfo(0, "up")], outputs=[], config=TaskConfig(), checkpointing=True,
    )
    hooks = Capture()
    return Task(spec, [], hooks=hooks), hooks


@pytest.mark.parametrize("at_checkpoint", [True, False])
def test_unpicklable_committables_fail_the_task_naming_the_sink_and_prepare_commit(at_checkpoint):
    task, hooks = _task()
    task.deliver(0, 0, [Batch.of_records([1, 2, 3])], lambda: None)
    task.deliver(0, 1, [Barrier(7), EndOfInput()] if at_checkpoint else [EndOfInput()], lambda: None)
    with pytest.raises(JobFailed) as info:
        task.run()
    msg = str(info.value)
    assert "'my-sink'" in msg and "(subtask 2/2)" in msg and "prepare_commit()" in msg
    assert ("checkpoint 7" if at_checkpoint else "end of input") in msg
    assert "cannot pickle '_thread.lock' object" in msg and "picklable" in msg
    assert info.value.operator == "my-sink"
    assert hooks.acks == {}  # nothing was handed over
