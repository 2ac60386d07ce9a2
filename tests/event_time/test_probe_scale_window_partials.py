"""A vectorized window's partials from its combiner: merged at firing only where a key may be
in them twice.

The combiner's rows of one call are one per (key, pane) and carry the call's number
(``EMISSION_COLUMN``); a channel may coalesce consecutive calls' batches into one. A tumbling
window whose rows of a batch all come from one call fires them as they are; one whose rows
come from several calls (or from several batches) is merged. Each test drives combiner
harnesses into window harnesses in one process and compares with the window fed the raw rows.
"""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from raystream.engine.keygroups import key_groups_of_array
from raystream.operators import window_fast
from raystream.operators.testing import OperatorHarness
from raystream.operators.window_combiner import VectorWindowCombiner
from raystream.operators.window_fast import (
    EMISSION_COLUMN,
    PANE_COLUMN,
    VectorWindowAggregateOperator,
)
from raystream.operators.windows import SlidingEventTimeWindows, TumblingEventTimeWindows

MAXP = 128
SPECS = {"n": ("value", "count"), "total": ("value", "sum"), "lo": ("value", "min"), "hi": ("value", "max"),
         "avg": ("value", "mean")}


def _rows(table: pa.Table) -> list:
    return sorted((tuple((k, round(v, 9) if isinstance(v, float) else v) for k, v in sorted(r.items()))
                   for r in table.to_pylist()), key=repr)


def _uncombined(assigner, batches: list[list[dict]], watermarks: list[int]) -> list:
    h = OperatorHarness(VectorWindowAggregateOperator("key", "ts", assigner, SPECS))
    for rows, wm in zip(batches, watermarks):
        h.process(pa.RecordBatch.from_pylist(rows))
        h.advance_watermark(wm)
    h.end_input()
    return _rows(h.table())


@pytest.mark.parametrize("assigner", [TumblingEventTimeWindows.of(50), SlidingEventTimeWindows.of(50, 25)], ids=repr)
@pytest.mark.parametrize("seed", range(6))
def test_coalesced_partials_of_calls_sharing_windows_equal_the_raw_rows(assigner, seed):
    """Two upstream subtasks, each a combiner; their partials go by key group to two window
    subtasks, and consecutive batches of one channel are coalesced in random runs (as a
    channel's send does), so a batch holds one call's rows or several calls' rows of the same
    windows (timestamps overlap between calls). Output equals the window fed the raw rows."""
    rnd = random.Random(seed)
    keys = [f"k{i}" for i in range(9)]
    batches, watermarks, owner = [], [], []
    t = 0
    for _ in range(40):
        rows = [{"key": rnd.choice(keys), "value": rnd.randint(-9, 99), "ts": t + rnd.randint(0, 60)}
                for _ in range(rnd.randint(1, 30))]
        t += rnd.randint(0, 25)
        batches.append(rows)
        watermarks.append(t - 1)  # never past a record still to come: nothing late
        owner.append(rnd.randrange(2))
    want = _uncombined(assigner, batches, watermarks)

    combiners = [OperatorHarness(VectorWindowCombiner("key", "ts", assigner, SPECS), u, 2, MAXP) for u in range(2)]
    windows = [OperatorHarness(VectorWindowAggregateOperator("key", "ts", assigner, SPECS), d, 2, MAXP)
               for d in range(2)]
    pending: list[list[list[pa.RecordBatch]]] = [[[] for _ in range(2)] for _ in range(2)]  # [up][down]
    channel_wm = [[-(2**63)] * 2 for _ in range(2)]

    def send(u: int, d: int) -> None:  # one send: the buffered batches as one batch
        if pending[u][d]:
            windows[d].process(pa.concat_batches(pending[u][d]))
            pending[u][d] = []

    for rows, wm, u in zip(batches, watermarks, owner):
        combiners[u].process(pa.RecordBatch.from_pylist(rows))
        out, combiners[u].output.batches[:] = [b.arrow() for b in combiners[u].output.batches], []
        for rb in out:
            targets = key_groups_of_array(rb.column("key"), MAXP) * 2 // MAXP
            for d in range(2):
                idx = np.flatnonzero(targets == d)
                if len(idx):
                    pending[u][d].append(rb.take(pa.array(idx)))
                    if rnd.random() < 0.3:
                        send(u, d)
        for v in range(2):  # every subtask's watermark moves on (each combiner's own flows through it)
            combiners[v].advance_watermark(wm)
            combiners[v].output.watermarks.clear()
            for d in range(2):
                send(v, d)  # a watermark goes with the data before it
                channel_wm[d][v] = wm
                windows[d].advance_watermark(min(channel_wm[d]))
    for d in range(2):
        windows[d].end_input()
    got = _rows(pa.concat_tables([windows[d].table() for d in range(2) if windows[d].table().num_rows]))
    assert got == want


def test_calls_sharing_a_window_in_one_batch_are_merged():
    """The rows of window [0, 100) in one batch come from two combiner calls (two rows of key
    'a'): merged into one row per key; a batch without the call numbers (as an older producer's)
    is merged too."""
    assigner = TumblingEventTimeWindows.of(100)
    comb = OperatorHarness(VectorWindowCombiner("key", "ts", assigner, SPECS))
    comb.process(pa.RecordBatch.from_pylist([{"key": "a", "value": 1, "ts": 5}, {"key": "b", "value": 2, "ts": 6}]))
    comb.process(pa.RecordBatch.from_pylist([{"key": "a", "value": 3, "ts": 50}, {"key": "a", "value": 4, "ts": 150}]))
    partials = pa.concat_batches([b.arrow() for b in comb.output.batches])
    assert len(set(partials.column(EMISSION_COLUMN).to_pylist())) == 2
    for batch in (partials, partials.drop_columns([EMISSION_COLUMN])):
        h = OperatorHarness(VectorWindowAggregateOperator("key", "ts", assigner, SPECS))
        h.process(batch)
        h.end_input()
        got = {(r["key"], r["window_start"]): (r["n"], r["total"]) for r in h.table().to_pylist()}
        assert got == {("a", 0): (2, 4), ("b", 0): (1, 2), ("a", 100): (1, 4)}


def test_a_window_with_the_rows_of_one_call_fires_without_a_merge(monkeypatch):
    """The partials of one combiner call hold each key once per window: the window fires them
    as they are, with no group-by of them again (before: every window of a partial batch was
    merged at its firing, about doubling the p=2 job's group-by work)."""
    assigner = TumblingEventTimeWindows.of(100)
    rows = [{"key": f"k{i % 7}", "value": i, "ts": i} for i in range(300)]  # windows 0, 100, 200
    comb = OperatorHarness(VectorWindowCombiner("key", "ts", assigner, SPECS))
    comb.process(pa.RecordBatch.from_pylist(rows))
    (partials,) = [b.arrow() for b in comb.output.batches]
    assert PANE_COLUMN in partials.schema.names
    h = OperatorHarness(VectorWindowAggregateOperator("key", "ts", assigner, SPECS))
    h.process(partials)
    calls = []
    real = window_fast.group_aggregate

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(window_fast, "group_aggregate", counting)
    h.advance_watermark(299)
    assert calls == []
    assert _rows(h.table()) == _uncombined(assigner, [rows], [299])
