"""A paused operator (``accepts_input() == False``) takes data from its input channels in
turn once it accepts input again: the first channel must not win every time the gate opens.

Found on the stateful-functions job at p=2: the dispatcher's local ingress channel (first)
was served whenever the dispatcher had room again, the remote one (second) starved, so the
other subtask's source sat blocked on credit (1.95 s of a 4.5 s job) while its own process
ran out of work.
"""

import threading

import pyarrow as pa

from raystream.engine.channels import InputInfo
from raystream.engine.config import TaskConfig
from raystream.engine.events import EndOfInput
from raystream.engine.operator import StreamOperator
from raystream.engine.task import Task, TaskSpec
from tests.waiting import wait_for


class OneAtATime(StreamOperator):
    """Accepts one batch, then pauses until a posted mailbox call has 'worked it off'."""

    def __init__(self):
        self.order = []
        self.busy = False

    def accepts_input(self):
        return not self.busy

    def process_batch(self, batch, input_index=0):
        self.order.extend(r["c"] for r in batch.records())
        self.busy = True
        self.ctx.post(self._done)

    def _done(self):
        self.busy = False


def test_a_paused_operator_serves_its_channels_in_turn():
    spec = TaskSpec(
        job_id="j", vertex_id=0, name="gated", subtask_index=0, parallelism=1, max_parallelism=128,
        chain=[{"name": "gated", "uid": "gated", "factory": OneAtATime, "kind": "operator", "keyed": False}],
        inputs=[InputInfo(0, "up0"), InputInfo(0, "up1")], outputs=[],
        config=TaskConfig(exactly_once=True, flush_ms=5),
    )
    task = Task(spec, [])
    for c in (0, 1):  # every batch of both channels is queued before the task runs
        task.deliver(c, 0, [pa.RecordBatch.from_pylist([{"c": c}]) for _ in range(6)], lambda: None)
    done = threading.Event()
    t = threading.Thread(target=lambda: (task.run(), done.set()), daemon=True)
    t.start()
    # (the end of input comes after the data: data ahead of a control event is never paused)
    wait_for(lambda: len(task.operators[0].order) == 12, "all 12 batches processed", timeout_s=20)
    for c in (0, 1):
        task.deliver(c, 1, [EndOfInput()], lambda: None)
    assert done.wait(20), "task did not finish"
    order = task.operators[0].order
    assert sorted(order) == [0] * 6 + [1] * 6
    assert order == [0, 1] * 6, f"channels not served in turn: {order}"
