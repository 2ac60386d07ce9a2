"""Window workload contenders: raystream's window operators run in-process on the data set.

* ``window_vectorized`` (batch API): :class:`operators.window_fast.VectorWindowAggregateOperator`
  fed 8192-row Arrow batches, watermark = max ts - 1 after each batch.
* ``window_record`` (record API): :class:`operators.window_operator.WindowOperator` with
  ``reduce`` over dict rows (``to_pylist``), same watermarks.

Both run the operator in one process through :class:`operators.testing.OperatorHarness`
(no Ray hop), i.e. they measure the operator cost the engine adds on top of its data plane.
"""

from __future__ import annotations

from typing import Any

from benchmarks import baselines, harness
from engine.partitioners import KeySelector
from operators.testing import OperatorHarness
from operators.time import TimestampAssigner
from operators.window_fast import VectorWindowAggregateOperator
from operators.window_operator import REDUCE, WindowOperator
from operators.windows import TumblingEventTimeWindows

__all__ = ["window_vectorized", "window_record"]


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
    """Record-API window: reduce counting per key per 1 s tumbling window."""
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
