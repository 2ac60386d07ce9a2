"""Barrier alignment while the other input is back-pressured (no Ray).

Input 0's barrier arrives first and blocks its channel; input 1's producer sends through a
credit window of one send, so each of its sends waits until the task has *processed* the one
before, and its barrier sits behind three such sends. Alignment must keep taking input 1's
records (their acks are the producer's credit) rather than wait for input 1's barrier with
input 1 stalled: no deadlock, and the snapshot is the cut before both barriers. Input 0's
producer, whose records after its barrier are held by the alignment, waits on its credit until
the checkpoint is taken; everything arrives once, in each channel's order.
"""

from __future__ import annotations

import threading

import pytest

from raystream.checkpoint import loads
from raystream.engine.channels import InputInfo, LocalSender
from raystream.engine.config import TaskConfig
from raystream.engine.events import Barrier, EndOfInput
from raystream.engine.operator import StreamOperator
from raystream.engine.records import Batch
from raystream.engine.task import Task, TaskHooks, TaskSpec
from tests.waiting import wait_for


class TwoInputRecorder(StreamOperator):
    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    def process_batch(self, batch, input_index=0):
        self.seen.extend((input_index, r) for r in batch.records())

    def snapshot_state(self, checkpoint_id):
        return list(self.seen)


class Acks(TaskHooks):
    def __init__(self) -> None:
        self.acks: dict[int, list] = {}

    def acknowledge(self, checkpoint_id, vertex_id, subtask, state):
        self.acks[checkpoint_id] = loads(state["rec"]["op"])["operator"]


def _produce(sender: LocalSender, sends: list[list]) -> threading.Thread:
    def run() -> None:
        for items in sends:
            sender.send(items)  # (blocks while the window's one send is unprocessed)
        sender.drain()

    thread = threading.Thread(target=run, name="race-producer", daemon=True)
    thread.start()
    return thread


def _records(tag: str, n: int) -> list[list]:
    return [[Batch.of_records([f"{tag}{i}"])] for i in range(n)]


@pytest.mark.parametrize("first", ["barrier first", "records first"])
def test_alignment_takes_the_back_pressured_input_until_its_barrier(first):
    spec = TaskSpec(
        job_id="j", vertex_id=0, name="join", subtask_index=0, parallelism=1, max_parallelism=128,
        chain=[{"name": "rec", "uid": "rec", "factory": TwoInputRecorder, "kind": "operator", "keyed": False}],
        inputs=[InputInfo(0, "left"), InputInfo(1, "right")], outputs=[], config=TaskConfig(flush_ms=5),
    )
    hooks = Acks()
    task = Task(spec, [], hooks=hooks)
    result: dict = {}
    consumer = threading.Thread(target=lambda: result.setdefault("r", task.run()), name="race-consumer", daemon=True)
    consumer.start()
    left = LocalSender(0, 1, task.deliver, is_cancelled=lambda: task.cancelled)
    right = LocalSender(1, 1, task.deliver, is_cancelled=lambda: task.cancelled)
    left_sends = [[Batch.of_records(["a0"]), Barrier(1)], *_records("x", 3), [EndOfInput()]]
    right_sends = [*_records("b", 3), [Barrier(1)], *_records("y", 2), [EndOfInput()]]
    if first == "barrier first":
        # input 0's barrier is processed (in the same pass as a0, the send's first item)
        # before input 1's producer sends anything; the send's ack waits for the alignment
        left.send(left_sends[0])
        wait_for(lambda: (0, "a0") in task.operators[0].seen, "input 0's record before its barrier")
        producers = [_produce(left, left_sends[1:]), _produce(right, right_sends)]
    else:
        producers = [_produce(right, right_sends), _produce(left, left_sends)]
    for p in producers:
        p.join(30)
        assert not p.is_alive(), "a producer is stuck on its credit (alignment deadlock)"
    consumer.join(30)
    assert not consumer.is_alive() and "r" in result
    assert sorted(hooks.acks[1]) == [(0, "a0"), (1, "b0"), (1, "b1"), (1, "b2")]
    seen = task.operators[0].seen
    assert [r for i, r in seen if i == 0] == ["a0", "x0", "x1", "x2"]
    assert [r for i, r in seen if i == 1] == ["b0", "b1", "b2", "y0", "y1"]
    assert left.metrics.max_in_flight == right.metrics.max_in_flight == 1
