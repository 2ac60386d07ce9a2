"""A watermark that closes several windows of the vectorized window emits them as one batch
(ordered by window start), with the same rows as one batch per window; windows it does not
close stay open."""

import random

import pyarrow as pa

from raystream.operators.testing import OperatorHarness
from raystream.operators.window_combiner import VectorWindowCombiner
from raystream.operators.window_fast import VectorWindowAggregateOperator
from raystream.operators.windows import TumblingEventTimeWindows

SPECS = {"n": ("value", "count"), "total": ("value", "sum"), "avg": ("value", "mean")}


def _rows(n: int, seed: int, spread: int) -> list[dict]:
    rnd = random.Random(seed)
    return sorted(({"key": f"k{rnd.randrange(9)}", "value": rnd.randrange(100), "ts": rnd.randrange(spread)}
                   for _ in range(n)), key=lambda r: r["ts"])


def _reference(rows: list[dict], size: int, upto: int | None = None) -> list[tuple]:
    acc: dict[tuple, list[int]] = {}
    for r in rows:
        start = r["ts"] - r["ts"] % size
        if upto is None or start + size - 1 <= upto:
            a = acc.setdefault((r["key"], start), [0, 0])
            a[0] += 1
            a[1] += r["value"]
    return sorted((k, s, n, t, t / n) for (k, s), (n, t) in acc.items())


def _got(records: list[dict]) -> list[tuple]:
    return sorted((r["key"], r["window_start"], r["n"], r["total"], r["avg"]) for r in records)


def test_one_batch_per_firing_over_raw_batches():
    rows = _rows(3000, 1, 1000)
    h = OperatorHarness(VectorWindowAggregateOperator("key", "ts", TumblingEventTimeWindows.of(100), SPECS))
    for i in range(0, len(rows), 170):  # windows spread over several batches: several partials each
        h.process(pa.RecordBatch.from_pylist(rows[i : i + 170]))
    h.advance_watermark(699)  # closes the windows starting at 0..600
    assert len(h.output.batches) == 1
    starts = h.table().column("window_start").to_pylist()
    assert starts == sorted(starts)
    assert _got(h.records()) == _reference(rows, 100, upto=699)
    h.end_input()
    assert len(h.output.batches) == 2  # the rest at the end of input, again as one batch
    assert _got(h.records()) == _reference(rows, 100)


def test_one_batch_per_firing_over_combined_partials():
    rows = _rows(3000, 2, 1000)
    assigner = TumblingEventTimeWindows.of(100)
    h = OperatorHarness(VectorWindowAggregateOperator("key", "ts", assigner, SPECS))
    for i in range(0, len(rows), 400):
        c = OperatorHarness(VectorWindowCombiner("key", "ts", assigner, SPECS))
        c.process(pa.RecordBatch.from_pylist(rows[i : i + 400]))
        for rb in c.table().to_batches():
            h.process(rb)
    h.advance_watermark(2000)
    assert len(h.output.batches) == 1
    assert _got(h.records()) == _reference(rows, 100)
