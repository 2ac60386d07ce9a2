"""An idle channel that becomes active again while a barrier is being aligned (no Ray).

Two channels of one input (a union). Channel 1 is idle; channel 0 sends watermark 10 and its
barrier, which blocks it. Channel 1 then becomes active behind the input's watermark (its
watermark 5: it does not pull event time back, Flink's StatusWatermarkValve re-alignment),
sends a record, catches up (watermark 20) and sends its barrier. The head must see, in this
order: watermark 10, the record, the snapshot, then watermark 20 (channel 0's watermark 30,
sent after its barrier, counts only after the snapshot, and channel 1 holds it at 20), and no
status change (the input as a whole never went idle).
The order holds whether channel 1's items arrive before or after channel 0's barrier was
processed, and whether they come in one send or one send each.
"""

from __future__ import annotations

import threading

import pytest

from raystream.engine.channels import InputInfo
from raystream.engine.config import TaskConfig
from raystream.engine.events import MAX_WATERMARK, Barrier, EndOfInput, StreamStatus, Watermark
from raystream.engine.operator import StreamOperator
from raystream.engine.records import Batch
from raystream.engine.task import Task, TaskHooks, TaskSpec
from tests.waiting import wait_for


class Events(StreamOperator):
    def __init__(self) -> None:
        self.events: list = []

    def process_batch(self, batch, input_index=0):
        self.events.extend(("record", r) for r in batch.records())

    def process_watermark(self, watermark, input_index=0):
        self.events.append(("wm", watermark.timestamp))

    def process_watermark_status(self, idle, input_index=0):
        self.events.append(("idle", idle))

    def snapshot_state(self, checkpoint_id):
        self.events.append(("snapshot", checkpoint_id))
        return None


@pytest.mark.parametrize("one_send", [True, False])
@pytest.mark.parametrize("channel_1_after_the_barrier", [True, False])
def test_watermarks_records_and_the_snapshot_keep_their_order(one_send, channel_1_after_the_barrier):
    spec = TaskSpec(
        job_id="j", vertex_id=0, name="union", subtask_index=0, parallelism=1, max_parallelism=128,
        chain=[{"name": "ev", "uid": "ev", "factory": Events, "kind": "operator", "keyed": False}],
        inputs=[InputInfo(0, "a"), InputInfo(0, "b")], outputs=[], config=TaskConfig(flush_ms=5),
    )
    task = Task(spec, [], hooks=TaskHooks())
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", task.run()), name="race-union", daemon=True)
    thread.start()
    task.deliver(1, 0, [StreamStatus(True)], lambda: None)
    task.deliver(0, 0, [Watermark(10), Barrier(1)], lambda: None)
    if channel_1_after_the_barrier:
        wait_for(lambda: ("wm", 10) in task.operators[0].events, "channel 0's watermark and barrier processed")
    later = [StreamStatus(False), Watermark(5), Batch.of_records(["r5"]), Watermark(20), Barrier(1)]
    sends = [later] if one_send else [[item] for item in later]
    for seq, items in enumerate(sends, start=1):
        task.deliver(1, seq, items, lambda: None)
    task.deliver(0, 1, [Watermark(30)], lambda: None)
    wait_for(lambda: ("wm", 20) in task.operators[0].events, "the input's watermark after the snapshot")
    task.deliver(1, len(sends) + 1, [EndOfInput()], lambda: None)
    task.deliver(0, 2, [EndOfInput()], lambda: None)
    thread.join(30)
    assert not thread.is_alive() and "r" in result
    assert task.operators[0].events == [
        ("wm", 10), ("record", "r5"), ("snapshot", 1), ("wm", 20), ("wm", MAX_WATERMARK),
        ("snapshot", 1)]  # (the last: the task's final state, FLIP-147)
