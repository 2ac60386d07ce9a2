"""A task driven step by step with several channels per input and an output that records,
in order, what leaves it: records, watermarks and stream statuses (for the idleness tests).

The operator harness (``operators.testing``) gives an operator one channel per input; the
idleness rules are about several channels and about what a task announces downstream, so
these tests build the :class:`~raystream.engine.task.Task` themselves, as the barrier
alignment tests do.
"""

from __future__ import annotations

from typing import Any, Callable

from raystream.checkpoint.backends import HeapStateBackend
from raystream.engine.channels import InputInfo
from raystream.engine.config import TaskConfig
from raystream.engine.events import Barrier, EndOfInput, StreamStatus, Watermark
from raystream.engine.operator import ManualClock, StreamOperator
from raystream.engine.records import Batch
from raystream.engine.serde import loads
from raystream.engine.task import Task, TaskHooks, TaskSpec

IDLE = ("status", True)
ACTIVE = ("status", False)


def wm(t: int) -> tuple[str, int]:
    return ("wm", t)


class RecordingOutput:
    """The task's network output: ``events`` holds ``("data", records)``, ``("wm", t)``,
    ``("status", idle)`` and ``("event", barrier)`` in the order they left the task."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.writers: list = []
        self.metrics = None

    def emit(self, batch: Batch) -> None:
        if len(batch):
            self.events.append(("data", batch.records()))

    def emit_side(self, tag: str, batch: Batch) -> None:
        self.events.append(("side", batch.records()))

    def emit_watermark(self, watermark: Watermark) -> None:
        self.events.append(wm(watermark.timestamp))

    def emit_watermark_status(self, idle: bool) -> None:
        self.events.append(("status", idle))

    def broadcast_event(self, event: Any) -> None:
        self.events.append(("event", event))

    def flush_due(self, now: float) -> None:
        """Nothing is buffered."""

    def flush_all(self) -> None:
        """Nothing is buffered."""

    def take(self) -> list[tuple[str, Any]]:
        out, self.events = self.events, []
        return out


class Acks(TaskHooks):
    def __init__(self) -> None:
        self.acks: dict[int, dict] = {}

    def acknowledge(self, checkpoint_id: int, vertex_id: int, subtask: int, state: dict) -> None:
        self.acks[checkpoint_id] = state


class Pass(StreamOperator):
    """Forwards records and watermarks (a chained operator with no idea of stream status)."""

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        self.output.emit(batch)


class IdleTask:
    """A task over ``channel_inputs[c]`` = the input index of channel ``c``, running the
    ``chain`` (operator factories, head first) and driven on the test's thread."""

    def __init__(self, chain: list[Callable[[], StreamOperator]], channel_inputs: tuple[int, ...] = (0, 0),
                 restore: dict | None = None, exactly_once: bool = True, keyed: bool = False) -> None:
        self.output = RecordingOutput()
        self.hooks = Acks()
        self.clock = ManualClock(0)
        spec = TaskSpec(
            job_id="j", vertex_id=0, name="idle", subtask_index=0, parallelism=1, max_parallelism=128,
            chain=[{"name": f"op{i}", "uid": f"op{i}", "factory": f, "keyed": keyed and i == 0}
                   for i, f in enumerate(chain)],
            inputs=[InputInfo(i, f"up{c}") for c, i in enumerate(channel_inputs)], outputs=[],
            config=TaskConfig(exactly_once=exactly_once), restore=restore, clock=self.clock,
            state_backend=HeapStateBackend(),
        )
        self.task = Task(spec, [], self.hooks, output=self.output)  # type: ignore[arg-type]
        self.task.open()
        self._seq = [0] * len(channel_inputs)

    def send(self, channel: int, *items: Any) -> None:
        """Deliver ``items`` on ``channel`` (records as lists) and run one step."""
        converted = [Batch.of_records(list(it)) if isinstance(it, list) else it for it in items]
        self.task.deliver(channel, self._seq[channel], converted, lambda: None)
        self._seq[channel] += 1
        self.task.step()

    def watermark(self, channel: int, t: int) -> None:
        self.send(channel, Watermark(t))

    def idle(self, channel: int, idle: bool = True) -> None:
        self.send(channel, StreamStatus(idle))

    def end(self, channel: int) -> None:
        self.send(channel, EndOfInput())

    def snapshot(self, checkpoint_id: int) -> dict:
        """A barrier on every channel; the restore plan of the state the task acknowledged."""
        for c in range(len(self._seq)):
            self.send(c, Barrier(checkpoint_id))
        state = self.hooks.acks[checkpoint_id]
        return {uid: {"operator": [loads(e["op"], "state")["operator"]]} for uid, e in state.items()}

    def take(self) -> list[tuple[str, Any]]:
        return self.output.take()
