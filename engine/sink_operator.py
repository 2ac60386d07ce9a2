"""The operator that runs a :class:`~engine.connectors.Sink` inside a task."""

from __future__ import annotations

from typing import Any

from .connectors import Sink, SinkWriter
from .errors import short_repr
from .events import Watermark
from .operator import OperatorContext, Output, StreamOperator
from .records import Batch

__all__ = ["SinkOperator", "GatedSinkOperator"]


class SinkOperator(StreamOperator):
    """Feeds batches to the sink's writer and hands its committables to the checkpoint."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.writer: SinkWriter | None = None
        self._restored: list[Any] = []

    @property
    def _open_writer(self) -> SinkWriter:
        if self.writer is None:
            raise RuntimeError(f"sink operator {self.name!r} was used before open() created its writer")
        return self.writer

    def restore_state(self, states: list[Any]) -> None:
        self._restored = states

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        self.writer = writer = self.sink.create_writer(ctx)
        if self._restored:
            writer.restore_state(self._restored)
        self._restored = []

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        self._open_writer.write(batch)

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        pass  # sinks end the stream

    def prepare_commit(self, checkpoint_id: int | None) -> list[Any]:
        """The writer's committables, checked to be a list: the job master commits what it
        holds, so anything else would be committed wrongly (a bare committable taken apart)
        or not at all (None: the output dropped without a word)."""
        writer = self._open_writer
        committables = writer.prepare_commit(checkpoint_id)
        if not isinstance(committables, list):
            raise TypeError(
                f"{type(writer).__qualname__}.prepare_commit() of sink {self.sink.describe()!r} must return a list "
                f"of committables (an empty list when there is nothing to commit), got "
                f"{type(committables).__name__}: {short_repr(committables)}"
            )
        return committables

    def snapshot_state(self, checkpoint_id: int) -> Any:
        return self._open_writer.snapshot_state(checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self._open_writer.notify_checkpoint_complete(checkpoint_id)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class GatedSinkOperator(SinkOperator):
    """A sink operator whose writer may pause the task's input (``writer.accepts_input()``,
    for sinks with ``gates_input = True``): back-pressure from a writer that holds what it
    cannot hand on yet. The writer wakes the task through ``ctx.post`` when it takes input
    again."""

    def accepts_input(self) -> bool:
        return self._open_writer.accepts_input()
