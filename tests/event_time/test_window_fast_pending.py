"""The vectorized window keeps its partials per window: many small batches into one window
(merged on the way), batches whose windows arrive out of order, a snapshot taken while
windows hold several partials, and the count of open windows, against a group-by of all rows."""

import random

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.operators.testing import OperatorHarness
from raystream.operators.window_fast import VectorWindowAggregateOperator
from raystream.operators.windows import SlidingEventTimeWindows, TumblingEventTimeWindows

SPECS = {"n": ("value", "count"), "total": ("value", "sum"), "lo": ("value", "min"), "hi": ("value", "max")}


def _reference(rows: list[dict], size: int, slide: int) -> list[tuple]:
    acc: dict[tuple, list[int]] = {}
    for r in rows:
        last = r["ts"] - r["ts"] % slide
        for start in range(last, r["ts"] - size, -slide):
            a = acc.setdefault((r["key"], start), [0, 0, 2**62, -(2**62)])
            a[0] += 1
            a[1] += r["value"]
            a[2] = min(a[2], r["value"])
            a[3] = max(a[3], r["value"])
    return sorted((k, s, *a) for (k, s), a in acc.items())


def _got(records: list[dict]) -> list[tuple]:
    return sorted((r["key"], r["window_start"], r["n"], r["total"], r["lo"], r["hi"]) for r in records)


def _rows(n: int, seed: int, spread: int) -> list[dict]:
    rnd = random.Random(seed)
    return [{"key": f"k{rnd.randrange(7)}", "value": rnd.randrange(-50, 50), "ts": rnd.randrange(spread)}
            for _ in range(n)]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 9), slide=st.sampled_from([100, 50, 30]))
def test_many_small_batches_per_window_equal_a_group_by(seed, chunk, slide):
    """Up to 300 one-to-nine-row batches of unordered timestamps into a few windows (far more
    than the partials a window keeps before merging them), with the watermark held back
    until the end."""
    rows = _rows(300, seed, 400)
    op = VectorWindowAggregateOperator("key", "ts", SlidingEventTimeWindows.of(100, slide), SPECS)
    h = OperatorHarness(op)
    for i in range(0, len(rows), chunk):
        h.process(pa.RecordBatch.from_pylist(rows[i : i + chunk]))
    open_windows = len({(k, s) for k, s, *_ in _reference(rows, 100, slide)})
    assert op.num_open_windows() == open_windows
    h.end_input()
    assert _got(h.records()) == _reference(rows, 100, slide)


def test_firing_keeps_open_windows_and_a_snapshot_restores_them():
    rows = sorted(_rows(2000, 3, 3000), key=lambda r: r["ts"])
    assigner = TumblingEventTimeWindows.of(250)
    full = OperatorHarness(VectorWindowAggregateOperator("key", "ts", assigner, SPECS))
    fired_before = []
    snap = None
    for i in range(0, len(rows), 50):
        part = rows[i : i + 50]
        full.process(pa.RecordBatch.from_pylist(part))
        full.advance_watermark(part[-1]["ts"] - 400)  # two windows or more stay open
        if i == 1000:
            snap = full.snapshot()
            fired_before = list(full.records())
    full.end_input()
    assert _got(full.records()) == _reference(rows, 250, 250)
    assert snap is not None
    restored = OperatorHarness(VectorWindowAggregateOperator("key", "ts", assigner, SPECS), restore=[snap])
    for i in range(1050, len(rows), 50):
        part = rows[i : i + 50]
        restored.process(pa.RecordBatch.from_pylist(part))
        restored.advance_watermark(part[-1]["ts"] - 400)
    restored.end_input()
    assert _got(fired_before + restored.records()) == _reference(rows, 250, 250)
