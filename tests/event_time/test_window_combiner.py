"""Window combiners (pre-aggregation before the shuffle) give the non-combined output.

A simulated exchange drives U upstream subtasks (a combiner each, or nothing) and D keyed
window subtasks: batches are routed by key group (through an Arrow round trip, as a channel
does), watermarks go to every downstream channel and a downstream subtask sees the minimum
over its channels, and a seeded random interleaving decides which upstream subtask moves
next. The same interleaving without combiners is the reference: output rows, late side
output and re-firings within the allowed lateness must be equal (as multisets), also across
a snapshot taken mid-stream and restored at another parallelism.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pytest

from raystream.checkpoint.descriptors import AggregateFunction
from raystream.checkpoint.operator_state import DroppableState
from raystream.engine.keygroups import key_groups_of_array, key_groups_of_keys
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_combiner import (
    CombinedWindowOperator,
    VectorWindowCombiner,
    WindowAggregateCombiner,
    first_window_ends,
)
from raystream.operators.window_fast import (
    EMISSION_COLUMN,
    PANE_COLUMN,
    VectorWindowAggregateOperator,
)
from raystream.operators.window_operator import AGGREGATE, WindowOperator
from raystream.operators.windows import (
    ProcessWindowFunction,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)

MAXP = 128
LATE = "late"
SPECS = {"n": ("value", "count"), "total": ("value", "sum"), "lo": ("value", "min"), "hi": ("value", "max"),
         "avg": ("value", "mean")}
TS = TimestampAssigner(column="ts")


class Stats(AggregateFunction):
    """(count, sum, min, max) of ``value``: merge() agrees with add() exactly."""

    def create_accumulator(self):
        return (0, 0, None, None)

    def add(self, value, acc):
        v = value["value"]
        return (acc[0] + 1, acc[1] + v, v if acc[2] is None else min(acc[2], v), v if acc[3] is None else max(acc[3], v))

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        lo = b[2] if a[2] is None else (a[2] if b[2] is None else min(a[2], b[2]))
        hi = b[3] if a[3] is None else (a[3] if b[3] is None else max(a[3], b[3]))
        return (a[0] + b[0], a[1] + b[1], lo, hi)


class WithWindow(ProcessWindowFunction):
    def process(self, key, context, elements):
        for acc in elements:
            yield (key, context.window.start, context.window.end, *acc)


def events(n: int, seed: int, disorder: int, late_every: int) -> list[dict]:
    """Rows with skewed keys, timestamps ~ i // 4 with jitter, and a far-behind record every
    ``late_every`` rows (late against a watermark of max_ts - disorder)."""
    rnd = random.Random(seed)
    keys = [f"k{i}" for i in range(12)]
    weights = [1 / (i + 1) ** 1.1 for i in range(12)]
    rows = []
    for i in range(n):
        ts = i // 4 + rnd.randint(0, disorder)
        if late_every and i % late_every == late_every - 1:
            ts = max(0, ts - 3 * disorder - 150)
        rows.append({"key": rnd.choices(keys, weights)[0], "value": rnd.randint(-50, 1000), "ts": ts})
    return rows


def scripts(rows: list[dict], upstream: int, seed: int, disorder: int) -> list[list[tuple[str, Any]]]:
    """Per upstream subtask: batches of its rows, each followed by its watermark."""
    rnd = random.Random(seed)
    out: list[list[tuple[str, Any]]] = [[] for _ in range(upstream)]
    mine: list[list[dict]] = [[] for _ in range(upstream)]
    for r in rows:
        mine[rnd.randrange(upstream)].append(r)
    for u, part in enumerate(mine):
        max_ts = -(2**62)
        i = 0
        while i < len(part):
            chunk = part[i : i + rnd.randint(1, 60)]
            i += len(chunk)
            out[u].append(("batch", chunk))
            max_ts = max(max_ts, *(r["ts"] for r in chunk))
            out[u].append(("wm", max_ts - disorder - 1))
    return out


class Exchange:
    """U upstream subtasks (combiner harnesses or None) -> D keyed window subtasks."""

    def __init__(self, make_up: Callable[[], Any] | None, make_down: Callable[[], Any], upstream: int,
                 downstream: int, columnar: bool, route_key: Callable[[Batch], Any],
                 restore: dict[str, list] | None = None) -> None:
        self.columnar = columnar
        self.route_key = route_key
        self.up = [OperatorHarness(make_up(), u, upstream, MAXP, restore=(restore or {}).get("up"))
                   if make_up else None for u in range(upstream)]
        self.down = [OperatorHarness(make_down(), d, downstream, MAXP, restore=(restore or {}).get("down"))
                     for d in range(downstream)]
        self.channel_wm = [[-(2**63)] * upstream for _ in range(downstream)]
        self.down_wm = [-(2**63)] * downstream

    def _route(self, batch: Batch) -> None:
        if not len(batch):
            return
        batch = Batch.of_arrow(batch.arrow())  # what a channel ships
        kgs = self.route_key(batch)
        targets = np.asarray(kgs) * len(self.down) // MAXP
        for d in np.unique(targets).tolist():
            idx = np.flatnonzero(targets == d)
            if batch.is_columnar and self.columnar:
                self.down[d].process(batch.arrow().take(pa.array(idx)))
            else:
                recs = batch.records()
                self.down[d].process(Batch.of_records([recs[i] for i in idx.tolist()]))

    def _watermark(self, u: int, wm: int) -> None:
        for d, h in enumerate(self.down):
            self.channel_wm[d][u] = max(self.channel_wm[d][u], wm)
            low = min(self.channel_wm[d])
            if low > self.down_wm[d]:
                self.down_wm[d] = low
                h.advance_watermark(low)

    def step(self, u: int, event: tuple[str, Any]) -> None:
        kind, payload = event
        h = self.up[u]
        if kind == "batch":
            batch = pa.RecordBatch.from_pylist(payload) if self.columnar else Batch.of_records([dict(r) for r in payload])
            if not self.columnar:
                batch.timestamps = np.array([r["ts"] for r in payload], dtype=np.int64)
            if h is None:
                self._route(batch if isinstance(batch, Batch) else Batch.of_arrow(batch))
                return
            h.process(batch)
            out, h.output.batches[:] = list(h.output.batches), []
            for b in out:
                self._route(b)
        else:
            if h is not None:
                h.advance_watermark(payload)
                h.output.watermarks.clear()
            self._watermark(u, payload)

    def snapshot(self) -> dict[str, list]:
        return {"up": [h.snapshot() for h in self.up if h is not None], "down": [h.snapshot() for h in self.down],
                "channels": list(self.channel_wm[0])}

    def restore_channels(self, snap: dict[str, list]) -> None:
        """Every channel's watermark as at the snapshot (as if each upstream re-sent its
        last watermark first; the valves of a real restart start from nothing, which can
        change late-data decisions for records near the restart)."""
        self.channel_wm = [list(snap["channels"]) for _ in self.down]
        self.down_wm = [min(snap["channels"])] * len(self.down)

    def finish(self) -> tuple[list, list]:
        for h in self.down:
            h.end_input()
        return self.results()

    def results(self) -> tuple[list, list]:
        out = [self._row(r) for h in self.down for r in h.records()]
        late = [self._row(r) for h in self.down for r in h.side_records(LATE)]
        return sorted(out, key=repr), sorted(late, key=repr)

    @staticmethod
    def _row(r: Any) -> tuple:
        if isinstance(r, dict):
            return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in r.items()))
        return tuple(r)


def run(scripts_: list[list], seed: int, make_exchange: Callable[..., Exchange], snapshot_at: int | None = None,
        restore_downstream: int = 3) -> tuple[list, list]:
    """Drive the exchange through the scripts in a seeded interleaving; with ``snapshot_at``,
    snapshot after that many steps, keep running a while (output then discarded), restore at
    ``restore_downstream`` keyed subtasks and replay from the snapshot."""
    rnd = random.Random(seed)
    pos = [0] * len(scripts_)
    ex = make_exchange()
    steps = 0
    kept: tuple[list, list] | None = None
    saved: tuple[dict, list[int], Any] | None = None
    while any(p < len(s) for p, s in zip(pos, scripts_)):
        u = rnd.choice([i for i, s in enumerate(scripts_) if pos[i] < len(s)])
        ex.step(u, scripts_[u][pos[u]])
        pos[u] += 1
        steps += 1
        if snapshot_at is not None and steps == snapshot_at:
            saved = (ex.snapshot(), list(pos), rnd.getstate())
            kept = ex.results()
        if saved is not None and steps == snapshot_at + 25:  # a failure: replay from the snapshot
            break
    if saved is None:
        return ex.finish()
    assert kept is not None
    snap, pos, rnd_state = saved
    ex = make_exchange(restore=snap, downstream=restore_downstream)
    ex.restore_channels(snap)
    rnd.setstate(rnd_state)  # the replay interleaves as the failure-free run did
    while any(p < len(s) for p, s in zip(pos, scripts_)):
        u = rnd.choice([i for i, s in enumerate(scripts_) if pos[i] < len(s)])
        ex.step(u, scripts_[u][pos[u]])
        pos[u] += 1
    out, late = ex.finish()
    return sorted(kept[0] + out, key=repr), sorted(kept[1] + late, key=repr)


def vector_exchange(assigner: Any, combine: bool, upstream: int, downstream: int):
    def make(restore: dict | None = None, downstream: int = downstream) -> Exchange:
        return Exchange(
            (lambda: VectorWindowCombiner("key", "ts", assigner, SPECS)) if combine else None,
            lambda: VectorWindowAggregateOperator("key", "ts", assigner, SPECS, late_tag=LATE),
            upstream, downstream, True, lambda b: key_groups_of_array(b.arrow().column("key"), MAXP), restore)
    return make


def record_exchange(lateness: int, combine: bool, upstream: int, downstream: int):
    assigner = TumblingEventTimeWindows.of(100)
    sel = KeySelector("key")

    def make(restore: dict | None = None, downstream: int = downstream) -> Exchange:
        if combine:
            return Exchange(
                lambda: WindowAggregateCombiner(sel, assigner, Stats(), TS),
                lambda: CombinedWindowOperator(sel.key_of, assigner, Stats(), WithWindow(), lateness, LATE, TS),
                upstream, downstream, False, lambda b: key_groups_of_keys([r[0] for r in b.records()], MAXP), restore)
        return Exchange(
            None, lambda: WindowOperator(sel.key_of, assigner, AGGREGATE, Stats(), WithWindow(), None, lateness, LATE, TS),
            upstream, downstream, False, lambda b: key_groups_of_keys([r["key"] for r in b.records()], MAXP), restore)
    return make


ASSIGNERS = [TumblingEventTimeWindows.of(100), SlidingEventTimeWindows.of(100, 40), SlidingEventTimeWindows.of(90, 30, 7)]


@pytest.mark.parametrize("assigner", ASSIGNERS, ids=repr)
@pytest.mark.parametrize("up,down", [(1, 1), (2, 2), (3, 2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vector_combiner_equals_uncombined(assigner, up, down, seed):
    rows = events(1500, seed, disorder=30, late_every=37)
    sc = scripts(rows, up, seed, disorder=30)
    want = run(sc, seed, vector_exchange(assigner, False, up, down))
    got = run(sc, seed, vector_exchange(assigner, True, up, down))
    assert want[1], "the data has late records"
    assert got == want


@pytest.mark.parametrize("lateness", [0, 60])
@pytest.mark.parametrize("up,down", [(1, 1), (2, 2), (3, 2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_record_combiner_equals_uncombined(lateness, up, down, seed):
    rows = events(1500, seed, disorder=30, late_every=37)
    sc = scripts(rows, up, seed, disorder=30)
    want = run(sc, seed, record_exchange(lateness, False, up, down))
    got = run(sc, seed, record_exchange(lateness, True, up, down))
    assert want[1], "the data has late records"
    assert got == want


@pytest.mark.parametrize("seed", [3, 4])
def test_combined_snapshot_restore_at_another_parallelism_equals_uncombined(seed):
    rows = events(1200, seed, disorder=30, late_every=29)
    sc = scripts(rows, 2, seed, disorder=30)
    for make_plain, make_combined in (
        (vector_exchange(ASSIGNERS[1], False, 2, 2), vector_exchange(ASSIGNERS[1], True, 2, 2)),
        (record_exchange(60, False, 2, 2), record_exchange(60, True, 2, 2)),
        (record_exchange(0, False, 2, 2), record_exchange(0, True, 2, 2)),
    ):
        want = run(sc, seed, make_plain)
        assert run(sc, seed, make_plain, snapshot_at=len(rows) // 60) == want  # the simulation's own check
        assert run(sc, seed, make_combined, snapshot_at=len(rows) // 60) == want


def test_combiner_partials_are_fewer_than_rows_for_a_hot_key():
    rows = [{"key": "hot" if i % 3 else f"k{i % 7}", "value": i, "ts": i} for i in range(3000)]
    h = OperatorHarness(VectorWindowCombiner("key", "ts", TumblingEventTimeWindows.of(1000), SPECS))
    h.process(pa.RecordBatch.from_pylist(rows))
    t = h.table()
    assert t.num_rows == 3 * 8  # (hot + 7 keys) x 3 windows
    assert t.column_names == ["key", PANE_COLUMN, "value_count", "value_sum", "value_min", "value_max", EMISSION_COLUMN]
    assert set(t.column(EMISSION_COLUMN).to_pylist()) == {1}  # (the rows of one call: one number)


def test_combiner_passes_records_of_maybe_closed_windows_through():
    h = OperatorHarness(VectorWindowCombiner("key", "ts", TumblingEventTimeWindows.of(100), SPECS))
    h.advance_watermark(199)
    h.process(pa.RecordBatch.from_pylist([{"key": "a", "value": 1, "ts": 150}, {"key": "a", "value": 2, "ts": 250}]))
    raw, partial = [b.arrow() for b in h.output.batches]
    assert raw.to_pylist() == [{"key": "a", "value": 1, "ts": 150}]
    assert partial.to_pylist() == [{"key": "a", PANE_COLUMN: 200, "value_count": 1, "value_sum": 2, "value_min": 2,
                                    "value_max": 2, EMISSION_COLUMN: 1}]
    snap = h.snapshot()
    # (its watermark, droppable: a job restored without the combiner loses nothing)
    assert snap["operator"] == DroppableState({"watermark": 199})
    restored = OperatorHarness(VectorWindowCombiner("key", "ts", TumblingEventTimeWindows.of(100), SPECS),
                               restore=[snap, snap])
    restored.process(pa.RecordBatch.from_pylist([{"key": "a", "value": 1, "ts": 150}, {"key": "a", "value": 2, "ts": 250}]))
    raw, partial = [b.arrow() for b in restored.output.batches]  # (judged by the restored watermark at once)
    assert PANE_COLUMN not in raw.schema.names and raw.num_rows == 1  # still raw after the restore
    assert partial.column(PANE_COLUMN).to_pylist() == [200]
    # a snapshot of an older release (the watermark): the maximum over the old subtasks
    old = OperatorHarness(VectorWindowCombiner("key", "ts", TumblingEventTimeWindows.of(100), SPECS),
                          restore=[{"operator": {"watermark": 199}}, {"operator": {"watermark": 50}}])
    old.process(pa.RecordBatch.from_pylist([{"key": "a", "value": 1, "ts": 150}]))
    assert PANE_COLUMN not in old.output.batches[0].arrow().schema.names


def test_first_window_ends_match_the_assigners():
    for a in ASSIGNERS:
        slide = getattr(a, "slide", a.size)
        g = math.gcd(a.size, slide)
        for t in range(0, 400, 7):
            pane = t - (t - a.offset) % g
            first = min(w.start for w in a.assign_windows(None, t, 0))
            assert first_window_ends(np.array([pane]), a.size, slide, a.offset).tolist() == [first + a.size]


@pytest.mark.parametrize("assigner", ASSIGNERS, ids=repr)
def test_one_partial_batch_with_several_panes_of_a_window_fires_one_row_per_key(assigner):
    rows = [{"key": "a", "value": v, "ts": t} for v, t in ((1, 0), (2, 35), (3, 61), (4, 95), (5, 130))]
    comb = OperatorHarness(VectorWindowCombiner("key", "ts", assigner, SPECS))
    comb.process(pa.RecordBatch.from_pylist(rows))
    (partial,) = [b.arrow() for b in comb.output.batches]
    got = OperatorHarness(VectorWindowAggregateOperator("key", "ts", assigner, SPECS))
    got.process(partial)  # one partial batch, the only pending table at end of input
    got.end_input()
    want = OperatorHarness(VectorWindowAggregateOperator("key", "ts", assigner, SPECS))
    want.process(pa.RecordBatch.from_pylist(rows))
    want.end_input()
    assert sorted(got.table().to_pylist(), key=repr) == sorted(want.table().to_pylist(), key=repr)


@pytest.mark.parametrize("assigner", ASSIGNERS, ids=repr)
def test_partials_of_several_combiner_calls_in_one_batch_fire_one_row_per_key(assigner):
    """One send may carry the partials of several combiner calls as one batch (a channel
    coalesces consecutive batches; a task calls its chain on slices of a batch of large
    records), so a pane of a key can come twice in one partial batch: still one row per key
    and window (a window holding that batch alone fired the key twice)."""
    rows = [{"key": k, "value": v, "ts": t} for k, v, t in
            (("a", 1, 0), ("b", 2, 10), ("a", 3, 20), ("a", 4, 35), ("b", 5, 61), ("a", 6, 95))]
    comb = OperatorHarness(VectorWindowCombiner("key", "ts", assigner, SPECS))
    for i in range(0, len(rows), 2):  # three calls, as slices of one batch
        comb.process(pa.RecordBatch.from_pylist(rows[i:i + 2]))
    coalesced = pa.concat_batches([b.arrow() for b in comb.output.batches])
    got = OperatorHarness(VectorWindowAggregateOperator("key", "ts", assigner, SPECS))
    got.process(coalesced)
    got.end_input()
    want = OperatorHarness(VectorWindowAggregateOperator("key", "ts", assigner, SPECS))
    want.process(pa.RecordBatch.from_pylist(rows))
    want.end_input()
    assert sorted(got.table().to_pylist(), key=repr) == sorted(want.table().to_pylist(), key=repr)


# sliding windows with slide > size sample the stream: a record between two windows is in
# none. Flink's WindowOperator drops it, or side-outputs it when the watermark passed its
# timestamp (isElementLate); the vectorized path (and its combiner) must do the same.
GAP_ASSIGNERS = [SlidingEventTimeWindows.of(30, 100), SlidingEventTimeWindows.of(40, 70, -15)]


def record_window_exchange(assigner: Any, upstream: int, downstream: int):
    sel = KeySelector("key")

    def make(restore: dict | None = None, downstream: int = downstream) -> Exchange:
        return Exchange(
            None, lambda: WindowOperator(sel.key_of, assigner, AGGREGATE, Stats(), WithWindow(), None, 0, LATE, TS),
            upstream, downstream, False, lambda b: key_groups_of_keys([r["key"] for r in b.records()], MAXP), restore)
    return make


def as_record_rows(rows: list[tuple]) -> list[tuple]:
    """The vectorized path's rows as the record path's ``(key, start, end, count, sum, min, max)``."""
    out = []
    for row in rows:
        d = dict(row)
        out.append((d["key"], d["window_start"], d["window_end"], d["n"], d["total"], d["lo"], d["hi"]))
    return sorted(out, key=repr)


@pytest.mark.parametrize("assigner", GAP_ASSIGNERS, ids=repr)
@pytest.mark.parametrize("up,down", [(1, 1), (2, 2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_windows_with_gaps_vectorized_equals_the_record_path(assigner, up, down, seed):
    rows = events(1500, seed, disorder=30, late_every=37)
    sc = scripts(rows, up, seed, disorder=30)
    want_out, want_late = run(sc, seed, record_window_exchange(assigner, up, down))
    assert want_out and want_late  # the input exercises both
    in_gaps = [r for r in rows if not assigner.assign_windows(r, r["ts"], 0)]
    assert len(in_gaps) > len(rows) // 3
    for combine in (False, True):
        out, late = run(sc, seed, vector_exchange(assigner, combine, up, down))
        assert as_record_rows(out) == want_out, combine
        assert late == want_late, combine


@pytest.mark.parametrize("combine", [False, True])
def test_windows_with_gaps_count_only_their_records(combine):
    """One record every 100 ms; windows [1000 k, 1000 k + 300): three records each."""
    assigner = SlidingEventTimeWindows.of(300, 1000)
    rows = [{"key": "a", "value": 1, "ts": t} for t in range(0, 5000, 100)]
    sc = [[("batch", rows[i : i + 7]), ("wm", rows[min(i + 6, len(rows) - 1)]["ts"] - 1)] for i in range(0, 50, 7)]
    sc = [[step for pair in sc for step in pair]]
    for make in (vector_exchange(assigner, combine, 1, 1), record_window_exchange(assigner, 1, 1)):
        out, late = run(sc, 0, make)
        if isinstance(out[0][0], tuple):
            out = as_record_rows(out)
        assert [(s, e, n) for _k, s, e, n, *_ in out] == [(s, s + 300, 3) for s in range(0, 5000, 1000)]
        assert late == []


def test_a_record_between_windows_is_late_once_the_watermark_passed_it():
    assigner = SlidingEventTimeWindows.of(300, 1000)
    late_gap = {"key": "a", "value": 1, "ts": 1500}  # in no window; the watermark is past it
    early_gap = {"key": "a", "value": 2, "ts": 2600}  # in no window; ahead of the watermark
    sc = [[("batch", [{"key": "a", "value": 0, "ts": 2000}]), ("wm", 2500), ("batch", [late_gap, early_gap])]]
    for make in (vector_exchange(assigner, False, 1, 1), vector_exchange(assigner, True, 1, 1),
                 record_window_exchange(assigner, 1, 1)):
        out, late = run(sc, 0, make)
        assert len(out) == 1
        assert late == [tuple(sorted(late_gap.items()))]
