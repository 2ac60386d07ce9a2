"""A loop head's snapshot still waiting for its barrier to come back on a feedback edge when
the loop's termination is detected (no Ray).

The head of a feedback loop (the StateFun dispatcher) takes checkpoint ``n``'s snapshot at
its barrier, then logs the records that reach it on feedback edges until ``Barrier(n)`` comes
back on each of them (ABS for cycles); only then does it acknowledge ``n``. Once the loop's
regular inputs have ended, the master triggers the head directly (FLIP-147: its upstream
tasks have finished) and, independently, detects that the loop is empty (two probe waves; a
barrier in flight is no record, and ``Task._is_idle`` does not look at the log in progress)
and calls ``end_feedback``. When ``end_feedback`` came before the barriers did, the head
finished with the snapshot neither acknowledged nor declined: what its chained sink had
prepared at the barrier (the output since the checkpoint before) was in no ack, no decline and
not in the final committables, so the job's last checkpoint committed everything but it, and
the output was lost. A quiescent loop has no record in flight, so the log is complete at
``end_feedback``: the snapshot is acknowledged with it.
"""

from __future__ import annotations

import threading

from raystream.checkpoint import loads
from raystream.engine.channels import InputInfo
from raystream.engine.config import TaskConfig
from raystream.engine.events import Barrier, EndOfInput
from raystream.engine.operator import StreamOperator
from raystream.engine.records import Batch
from raystream.engine.task import Task, TaskHooks, TaskSpec
from tests.waiting import wait_for


class Committing(StreamOperator):
    """A chained sink: what it got since the last barrier is its committable at the next one."""

    def __init__(self) -> None:
        self.held: list = []
        self.prepared = threading.Event()

    def process_batch(self, batch, input_index=0):
        self.held.extend(batch.records())

    def prepare_commit(self, checkpoint_id):
        out, self.held = ([list(self.held)] if self.held else []), []
        if checkpoint_id is not None:
            self.prepared.set()
        return out

    def snapshot_state(self, checkpoint_id):
        return None


class Hooks(TaskHooks):
    def __init__(self) -> None:
        self.acked: dict[int, dict] = {}
        self.declined: dict[int, dict | None] = {}
        self.idle = threading.Event()

    def acknowledge(self, checkpoint_id, vertex_id, subtask, state):
        self.acked[checkpoint_id] = state

    def decline(self, checkpoint_id, vertex_id, subtask, reason, committables=None):
        self.declined[checkpoint_id] = committables

    def report_idle(self, vertex_id, subtask):
        self.idle.set()


def test_a_snapshot_waiting_for_its_feedback_barrier_is_acknowledged_when_the_loop_ends():
    spec = TaskSpec(
        job_id="j", vertex_id=0, name="head", subtask_index=0, parallelism=1, max_parallelism=128,
        chain=[{"name": "sink", "uid": "sink", "factory": Committing, "kind": "operator", "keyed": False}],
        inputs=[InputInfo(0, "ingress"), InputInfo(0, "loop", feedback=True)], outputs=[],
        config=TaskConfig(flush_ms=5),
    )
    hooks = Hooks()
    task = Task(spec, [], hooks=hooks)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", task.run()), name="race-head", daemon=True)
    thread.start()
    task.deliver(0, 0, [Batch.of_records(list(range(5))), EndOfInput()], lambda: None)
    wait_for(hooks.idle.is_set, "the head reporting itself idle (its regular input ended)")
    # the master triggers the head (its upstream finished): it snapshots and waits for Barrier(1)
    # to come back on the feedback edge...
    task.post(lambda: task.trigger_checkpoint(Barrier(1)))
    wait_for(lambda: task.operators[0].prepared.is_set(), "the head's snapshot of checkpoint 1")
    # ...while the master's probe waves found the loop empty: end_feedback comes first
    task.post(task.end_feedback)
    thread.join(30)
    assert not thread.is_alive() and "r" in result
    final = result["r"].committables.get("sink", [])
    declined = [c for comms in hooks.declined.values() if comms for c in comms.get("sink", [])]
    acked = [c for state in hooks.acked.values() for c in state["sink"].get("committables", [])]
    assert acked + declined + final == [list(range(5))], (
        f"the output prepared at checkpoint 1 went nowhere: acked {acked}, declined {declined}, final {final}")
    assert list(hooks.acked) == [1]
    assert loads(hooks.acked[1]["sink"]["log"]) == []  # (no record was in flight on the loop)
