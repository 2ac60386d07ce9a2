"""Window workload contenders: raystream's window operators run in-process on the data set.

* ``window_vectorized`` (batch API): :class:`operators.window_fast.VectorWindowAggregateOperator`
  fed 8192-row Arrow batches, watermark = max ts - 1 after each batch.
* ``window_record`` (record API): :class:`operators.window_operator.WindowOperator` over
  dict rows (``to_pylist``), same watermarks, the way a Flink user counts per window:
  ``key_by("key").window(Tumbling...).aggregate(Count(), WithWindow())``: a user
  ``AggregateFunction.add`` per record and a ``ProcessWindowFunction`` per emitted window.
* ``window_record_reduce`` (record API): the same with ``reduce`` of a function that builds
  a new dict per record (``{"key": .., "ts": .., "count": a["count"] + 1}``), i.e. with a
  heavier user function.

Both run the operator in one process through :class:`operators.testing.OperatorHarness`
(no Ray hop), i.e. they measure the operator cost the engine adds on top of its data plane.
"""

from __future__ import annotations

from typing import Any

from benchmarks import baselines, harness
from raystream.checkpoint import AggregateFunction
from raystream.engine.partitioners import KeySelector
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_fast import VectorWindowAggregateOperator
from raystream.operators.window_operator import AGGREGATE, REDUCE, WindowOperator
from raystream.operators.windows import ProcessWindowFunction, TumblingEventTimeWindows

__all__ = ["window_vectorized", "window_record", "window_record_reduce"]


class Count(AggregateFunction):
    """Counts the records of a window."""

    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, accumulator: int) -> int:
        return accumulator + 1

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, a: int, b: int) -> int:
        return a + b


class WithWindow(ProcessWindowFunction):
    """``(key, window start, count)`` per key per window."""

    def process(self, key: Any, context: Any, elements: Any) -> Any:
        for n in elements:
            yield (key, context.window.start, n)


def _run(op: Any, path: str, as_records: bool) -> Any:
    h = OperatorHarness(op)
    for batch in baselines.read_batches(path, baselines.BATCH_SIZE):
        if batch.num_rows == 0:
            continue
        h.process(batch.to_pylist() if as_records else batch)
        h.advance_watermark(int(batch.column("ts")[-1].as_py()) - 1)
    h.end_input()
    return h.output.batches


def window_vectorized(path: str) -> Any:
    """Vectorized window count per key per 1 s tumbling window."""
    op = VectorWindowAggregateOperator("key", "ts", TumblingEventTimeWindows.of(baselines.WINDOW_MS), {"count": ("value", "count")})
    return [b.arrow() for b in _run(op, path, False)]


def window_record(path: str) -> Any:
    """Record-API window: an AggregateFunction counting per key per 1 s tumbling window."""
    op = WindowOperator(
        KeySelector("key").key_of, TumblingEventTimeWindows.of(baselines.WINDOW_MS), AGGREGATE, Count(),
        WithWindow(), timestamp_assigner=TimestampAssigner(column="ts"),
    )
    return [r for b in _run(op, path, True) for r in b.records()]


def window_record_reduce(path: str) -> Any:
    """Record-API window: reduce (a new dict per record) counting per key per 1 s window."""
    size = baselines.WINDOW_MS
    op = WindowOperator(
        KeySelector("key").key_of, TumblingEventTimeWindows.of(size), REDUCE,
        lambda a, b: {"key": a["key"], "ts": a["ts"], "count": a.get("count", 1) + 1},
        timestamp_assigner=TimestampAssigner(column="ts"),
    )
    out = []
    for b in _run(op, path, True):
        for r in b.records():
            out.append((r["key"], r["ts"] - r["ts"] % size, r.get("count", 1)))
    return out


harness.register("window", "window_vectorized", window_vectorized, api="batch")
harness.register("window", "window_record", window_record, api="record")
harness.register("window", "window_record_reduce", window_record_reduce, api="record")
