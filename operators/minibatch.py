"""Mini-batch combiners: partials of consecutive batches held and merged before the shuffle.

A combiner chained before a keyed shuffle (the local half of a two-phase aggregation) turns
each batch into one partial row per key. Sending those at once puts a row per key *and
batch* on the exchange and into the keyed operator's merge; holding the partials of
consecutive batches and merging them first (as Flink SQL's MiniBatch local aggregation does)
sends one row per key instead. :class:`MiniBatchCombiner` is that holding, bounded:

* the held partials go out, merged, at the end of input and before every checkpoint barrier
  (:meth:`~engine.operator.StreamOperator.prepare_snapshot_pre_barrier`): a combiner has no
  state in a snapshot, and a restore replays the records behind what it sent;
* more than ``max_held_rows`` held rows are merged in place; if more than half the cap is
  left (the keys are too many for holding to pay) they are sent, and every later batch's
  partials go out at once. Held rows never exceed the cap plus one batch's partials.

The record combiner of ``reduce(fn, combinable=True)`` (``LocalReduceOperator``) holds its
partials in a dict, one per key, merged with ``fn`` as records come, and sends them all at
the same points and whenever more than :data:`HELD_KEYS` keys are held.
"""

from __future__ import annotations

from abc import abstractmethod

import pyarrow as pa

from raystream.engine.operator import StreamOperator
from raystream.engine.records import Batch

__all__ = ["HoldingCombiner", "MiniBatchCombiner", "HELD_ROWS", "HELD_KEYS"]

#: partial rows a combiner holds before it merges them (see the module docstring)
HELD_ROWS = 262_144
#: keys whose Python partial (a record) a record combiner holds before it sends them all
#: (``reduce(..., combinable=True)``: its partials are merged as they come, in a dict)
HELD_KEYS = 65_536


class HoldingCombiner(StreamOperator):
    """A combiner that holds partials between batches: what it holds (:meth:`send_held`)
    goes out before every checkpoint barrier and at the end of input."""

    @abstractmethod
    def send_held(self) -> None:
        """Send what is held."""

    def prepare_snapshot_pre_barrier(self, checkpoint_id: int) -> None:
        self.send_held()

    def end_input(self) -> None:
        self.send_held()


class MiniBatchCombiner(HoldingCombiner):
    """Base of a combiner that holds Arrow partials (see the module docstring). A subclass
    turns its input into partials and calls :meth:`hold`, and says how held partials merge
    (:meth:`merge`); :meth:`send_held` sends what is held (e.g. before output of another
    form, to keep the order of the partials)."""

    def __init__(self, max_held_rows: int = HELD_ROWS) -> None:
        if max_held_rows < 1:
            raise ValueError(f"max_held_rows must be at least 1, got {max_held_rows}")
        self.max_held_rows = max_held_rows
        self._held: list[pa.RecordBatch] = []
        self._held_rows = 0
        self._hold = True  # False once merging stopped paying

    @property
    def held_rows(self) -> int:
        """Partial rows held right now."""
        return self._held_rows

    @abstractmethod
    def merge(self, partials: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        """``partials`` (in arrival order) merged: fewer rows, same result downstream."""

    def hold(self, partial: pa.RecordBatch) -> None:
        """Hold ``partial`` (or send it now, once holding stopped paying); a partial whose
        schema differs from the held ones' first sends those."""
        if not self._hold:
            self.output.emit(Batch.of_arrow(partial))
            return
        if self._held and not partial.schema.equals(self._held[0].schema):
            self.send_held()
        self._held.append(partial)
        self._held_rows += partial.num_rows
        if self._held_rows > self.max_held_rows:
            merged = self.merge(self._held)
            rows = sum(b.num_rows for b in merged)
            if rows > self.max_held_rows // 2:
                self._hold = False
                self._held, self._held_rows = [], 0
                for b in merged:
                    self.output.emit(Batch.of_arrow(b))
            else:
                self._held, self._held_rows = merged, rows

    def send_held(self) -> None:
        """Send the held partials, merged."""
        if self._held:
            merged = self.merge(self._held) if len(self._held) > 1 else self._held
            self._held, self._held_rows = [], 0
            for b in merged:
                self.output.emit(Batch.of_arrow(b))

    def close(self) -> None:
        self._held, self._held_rows = [], 0
