"""Window evictors as Flink's: ``WindowedStream.evictor(...)`` with ``CountEvictor``,
``TimeEvictor`` and ``DeltaEvictor`` (before or after the window function) and custom
``Evictor`` subclasses. A window with an evictor keeps its elements with their timestamps;
at each firing ``evict_before`` runs, then the function (reduce / aggregate fold the
remaining elements), then ``evict_after``, and the remaining elements stay for the next
firing. Compared with a plain-Python model of Flink's ``EvictingWindowOperator`` at
parallelism 1 and 2, on the heap and RocksDB backends, across a restore at another
parallelism. Before, there was no ``evictor()`` (README listed evictors as missing), so a
Flink port of ``countWindow(size, slide)`` or of a ``TimeEvictor`` had no equivalent."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint import AggregateFunction
from raystream.engine.errors import ConfigError, GraphError, UserCodeError
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.partitioners import KeySelector
from raystream.operators.evictors import (
    CountEvictor,
    DeltaEvictor,
    Evictor,
    TimeEvictor,
    TimestampedValue,
)
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner, WatermarkStrategy
from raystream.operators.window_operator import AGGREGATE, LIST, REDUCE, WindowOperator
from raystream.operators.windows import (
    CountTrigger,
    EventTimeSessionWindows,
    GlobalWindows,
    ProcessWindowFunction,
    TumblingEventTimeWindows,
)
from tests.event_time.test_windows import backend_of

MAXP = 128
TS = TimestampAssigner(column=2)  # records: (key, value, ts)


def rows(n: int, keys: int = 7, seed: int = 3, disorder: int = 0) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    out = [(f"k{rng.randrange(keys)}", rng.randrange(-50, 50), 1000 + 7 * i) for i in range(n)]
    if disorder:
        out = [(k, v, t + rng.randrange(-disorder, disorder + 1)) for k, v, t in out]
    return out


class SumCount(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + value[1], acc[1] + 1)

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


class Values(ProcessWindowFunction):
    def process(self, key, context, elements):
        yield (key, getattr(context.window, "start", None), [e[1] for e in elements])


def op_of(kind: str, assigner, trigger, evictor, lateness: int = 0) -> WindowOperator:
    if kind == REDUCE:
        return WindowOperator(KeySelector(0).key_of, assigner, REDUCE, lambda a, b: (a[0], a[1] + b[1], max(a[2], b[2])),
                              trigger=trigger, allowed_lateness=lateness, timestamp_assigner=TS, evictor=evictor)
    if kind == AGGREGATE:
        return WindowOperator(KeySelector(0).key_of, assigner, AGGREGATE, SumCount(), trigger=trigger,
                              allowed_lateness=lateness, timestamp_assigner=TS, evictor=evictor)
    return WindowOperator(KeySelector(0).key_of, assigner, LIST, None, Values(), trigger=trigger,
                          allowed_lateness=lateness, timestamp_assigner=TS, evictor=evictor)


def result_of(kind: str, key: str, start: Any, elements: list[tuple]) -> Any:
    """What the window function makes of the remaining elements (the model's side)."""
    values = [e[1] for e in elements]
    if kind == REDUCE:
        return (key, sum(values), max(e[2] for e in elements)) if elements else None
    if kind == AGGREGATE:
        return (sum(values), len(values))
    return (key, start, values)


def run(make, records, parallelism, backend, tmp_path, chunk=10, bound=None):
    """Feed ``records`` in chunks to the subtasks owning their keys; a watermark after each
    chunk (``bound``: max_ts - bound - 1; None: none) and the end of input; output by subtask."""
    hs = [OperatorHarness(make(), i, parallelism, MAXP, state_backend=backend_of(backend, tmp_path / f"p{parallelism}-{i}"))
          for i in range(parallelism)]
    owners = [KeyGroupRange.for_subtask(i, parallelism, MAXP) for i in range(parallelism)]
    max_ts = -(2**63)
    for s in range(0, len(records), chunk):
        part = records[s : s + chunk]
        for h, kgr in zip(hs, owners):
            mine = [r for r in part if key_group_for(r[0], MAXP) in kgr]
            if mine:
                h.process(mine)
        max_ts = max(max_ts, *(r[2] for r in part))
        if bound is not None:
            for h in hs:
                h.advance_watermark(max_ts - bound - 1)
    for h in hs:
        h.end_input()
    return [r for h in hs for r in h.records()]


# ---------------------------------------------------------------------------- count: sliding count windows
def sliding_count_model(kind, records, size, slide, after):
    out: dict[str, list] = defaultdict(list)
    buf: dict[str, list] = defaultdict(list)
    since: dict[str, int] = defaultdict(int)
    for r in records:
        k = r[0]
        buf[k].append(r)
        since[k] += 1
        if since[k] == slide:
            since[k] = 0
            if not after:
                buf[k] = buf[k][-size:]
            out[k].append(result_of(kind, k, None, buf[k]))
            if after:
                buf[k] = buf[k][-size:]
    return out


def by_key(kind, out):
    got: dict[Any, list] = defaultdict(list)
    for r in out:
        got[r[0] if kind != AGGREGATE else None].append(r)
    return got


@pytest.mark.parametrize("kind", [REDUCE, LIST])
@pytest.mark.parametrize("after", [False, True])
@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
def test_sliding_count_windows_equal_flinks_model(kind, after, parallelism, backend, tmp_path):
    records = rows(400)
    size, slide = 5, 2
    make = lambda: op_of(kind, GlobalWindows.create(), CountTrigger.of(slide), CountEvictor.of(size, after))  # noqa: E731
    out = run(make, records, parallelism, backend, tmp_path, chunk=13)
    model = sliding_count_model(kind, records, size, slide, after)
    assert by_key(kind, out) == {k: v for k, v in model.items() if v}


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
def test_aggregate_folds_what_the_evictor_leaves(parallelism, backend, tmp_path):
    records = [r for r in rows(300) if r[0] == "k1"]  # one key: the results are in its order
    make = lambda: op_of(AGGREGATE, GlobalWindows.create(), CountTrigger.of(3), CountEvictor.of(4))  # noqa: E731
    out = run(make, records, parallelism, backend, tmp_path)
    assert out == sliding_count_model(AGGREGATE, records, 4, 3, False)["k1"]


# ---------------------------------------------------------------------------- time: tumbling event-time windows
def time_model(kind, records, size, keep, after):
    """Tumbling event-time windows fired once by the watermark, TimeEvictor(keep): elements
    with ts <= max ts - keep are evicted (before: the function does not see them)."""
    windows: dict[tuple, list] = defaultdict(list)
    for r in records:
        windows[(r[0], r[2] - r[2] % size)].append(r)
    out: dict[str, list] = defaultdict(list)
    for (k, start), elements in sorted(windows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if not after:
            cutoff = max(e[2] for e in elements) - keep
            elements = [e for e in elements if e[2] > cutoff]
        res = result_of(kind, k, start, elements)
        if res is not None:
            out[k].append(res)
    return out


@pytest.mark.parametrize("kind", [REDUCE, LIST])
@pytest.mark.parametrize("after", [False, True])
@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
def test_time_evictor_on_event_time_windows_equals_flinks_model(kind, after, parallelism, backend, tmp_path):
    records = rows(400, disorder=20)  # out of order within the watermark's bound: nothing is late
    make = lambda: op_of(kind, TumblingEventTimeWindows.of(100), None, TimeEvictor.of(30, after))  # noqa: E731
    out = run(make, records, parallelism, backend, tmp_path, chunk=16, bound=40)
    assert by_key(kind, out) == time_model(kind, records, 100, 30, after)


@pytest.mark.parametrize("keep,want", [(1, [2, 3]), (0, []), (31, [2, 3, 4])])
def test_equal_timestamps_are_kept_or_evicted_together_by_the_time_evictor(keep, want):
    h = OperatorHarness(op_of(LIST, TumblingEventTimeWindows.of(100), None, TimeEvictor.of(keep)))
    h.process([("a", 1, 10), ("a", 2, 50), ("a", 3, 50), ("a", 4, 20)])
    h.advance_watermark(99)
    assert h.take() == [("a", 0, want)]  # Flink's cut-off: ts <= max ts - keep is evicted (keep 0: all)


# ---------------------------------------------------------------------------- delta: session windows
def test_delta_evictor_on_merging_session_windows(state_backend):
    records = [("a", 1, 0), ("a", 9, 10), ("b", 5, 12), ("a", 3, 20), ("a", 40, 200), ("a", 38, 205)]
    op = WindowOperator(KeySelector(0).key_of, EventTimeSessionWindows.with_gap(50), LIST, None, Values(),
                        timestamp_assigner=TS, evictor=DeltaEvictor.of(5, lambda old, new: abs(old[1] - new[1])))
    h = OperatorHarness(op, state_backend=state_backend)
    h.process(records)
    h.advance_watermark(10_000)
    # session a [0, 70): last element value 3: 9 is 6 away (evicted), 1 is 2 away; b alone; a [200, 255)
    assert sorted(h.take()) == [("a", 0, [1, 3]), ("a", 200, [40, 38]), ("b", 12, [5])]


def test_delta_function_object_with_get_delta():
    class Delta:
        def get_delta(self, old, new):
            return abs(old - new)

    ev = DeltaEvictor.of(2.5, Delta(), True)
    elements = [TimestampedValue(v, i) for i, v in enumerate([1, 9, 8, 10])]
    ev.evict_before(elements, 4, None, None)
    assert len(elements) == 4  # do_evict_after: nothing before
    ev.evict_after(elements, 4, None, None)
    assert [e.value for e in elements] == [9, 8, 10]


# ---------------------------------------------------------------------------- evictor after the function, repeated firings
def test_evict_after_keeps_the_remaining_elements_for_the_next_firing(state_backend):
    seen: list[tuple[int, list[int]]] = []

    class KeepLast(Evictor):
        def evict_before(self, elements, size, window, ctx):
            seen.append((size, [e.value[1] for e in elements]))

        def evict_after(self, elements, size, window, ctx):
            assert ctx.current_watermark() == -(2**63)
            del elements[:-1]

    op = op_of(LIST, GlobalWindows.create(), CountTrigger.of(2), KeepLast())
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("a", v, v) for v in range(1, 6)])
    assert h.take() == [("a", None, [1, 2]), ("a", None, [2, 3, 4])]
    assert seen == [(2, [1, 2]), (3, [2, 3, 4])]


# ---------------------------------------------------------------------------- restore at another parallelism
@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
@pytest.mark.parametrize("kind", [REDUCE, LIST])
def test_restore_at_another_parallelism_continues_like_an_uninterrupted_run(backend, kind, tmp_path):
    records = rows(300, keys=9, seed=11)
    make = lambda: op_of(kind, GlobalWindows.create(), CountTrigger.of(3), CountEvictor.of(4))  # noqa: E731
    half = 151
    first = OperatorHarness(make(), state_backend=backend_of(backend, tmp_path / "first"))
    first.process(records[:half])
    before = first.take()
    snap = first.snapshot()
    restored = [OperatorHarness(make(), i, 2, MAXP, restore=[snap], state_backend=backend_of(backend, tmp_path / f"r{i}"))
                for i in range(2)]
    for i, h in enumerate(restored):
        kgr = KeyGroupRange.for_subtask(i, 2, MAXP)
        h.process([r for r in records[half:] if key_group_for(r[0], MAXP) in kgr])
    after = [r for h in restored for r in h.take()]
    model = sliding_count_model(kind, records, 4, 3, False)
    assert by_key(kind, before + after) == {k: v for k, v in model.items() if v}


def test_state_of_a_job_without_the_evictor_is_refused_naming_the_remedy():
    plain = OperatorHarness(op_of(LIST, GlobalWindows.create(), CountTrigger.of(3), None))
    plain.process([("a", 1, 1)])
    snap = plain.snapshot()
    h = OperatorHarness(op_of(LIST, GlobalWindows.create(), CountTrigger.of(3), CountEvictor.of(2)), restore=[snap])
    with pytest.raises(ConfigError, match="without this evictor"):
        h.process([("a", 2, 2), ("a", 3, 3)])


# ---------------------------------------------------------------------------- errors
def test_a_failing_evictor_is_named_with_window_and_key():
    class Broken(Evictor):
        def evict_before(self, elements, size, window, ctx):
            raise ValueError("boom")

        def evict_after(self, elements, size, window, ctx):
            pass

    h = OperatorHarness(op_of(LIST, GlobalWindows.create(), CountTrigger.of(1), Broken()))
    with pytest.raises(UserCodeError, match="boom") as err:
        h.process([("a", 1, 1)])
    assert err.value.record == "Broken.evict_before() of window GlobalWindow() of key 'a'"


def test_an_evictor_returning_a_new_list_is_told_to_change_it_in_place():
    class Returns(Evictor):
        def evict_before(self, elements, size, window, ctx):
            return elements[-1:]

        def evict_after(self, elements, size, window, ctx):
            pass

    h = OperatorHarness(op_of(LIST, GlobalWindows.create(), CountTrigger.of(1), Returns()))
    with pytest.raises(ConfigError, match="in place"):
        h.process([("a", 1, 1)])


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError):
        CountEvictor.of(-1)
    with pytest.raises(ConfigError):
        TimeEvictor.of("10")
    with pytest.raises(ConfigError):
        DeltaEvictor.of(1.0, 42)
    with pytest.raises(ConfigError):
        CountEvictor.of(3, do_evict_after="yes")
    env = rs.StreamEnvironment(parallelism=1)
    with pytest.raises(GraphError, match="expects an Evictor"):
        env.from_collection([("a", 1, 1)]).key_by(0).window(GlobalWindows.create()).evictor(lambda e: e)


# ---------------------------------------------------------------------------- the public API on Ray
@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("parallelism", [1, 2])
def test_windowed_stream_evictor_end_to_end(parallelism):
    records = rows(200, keys=5, seed=7)
    env = rs.StreamEnvironment(parallelism=parallelism)
    out = (env.from_collection(records)
           .assign_timestamps_and_watermarks(WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column(2))
           .key_by(0).window(TumblingEventTimeWindows.of(100)).evictor(TimeEvictor.of(30))
           .reduce(lambda a, b: (a[0], a[1] + b[1], max(a[2], b[2])))
           .execute_and_collect())
    assert by_key(REDUCE, out) == time_model(REDUCE, records, 100, 30, False)
    env = rs.StreamEnvironment(parallelism=parallelism)
    spec = (env.from_collection([{"k": r[0], "v": r[1], "ts": r[2]} for r in records])
            .assign_timestamps_and_watermarks(WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts"))
            .key_by("k").window(TumblingEventTimeWindows.of(100)).evictor(CountEvictor.of(2))
            .aggregate(n=("v", "count"), total=("v", "sum")).execute_and_collect())
    windows: dict[tuple, list] = defaultdict(list)
    for k, v, t in records:
        windows[(k, t - t % 100)].append(v)
    assert sorted((r["k"], r["window_start"], r["n"], r["total"]) for r in spec) == sorted(
        (k, s, len(vs[-2:]), sum(vs[-2:])) for (k, s), vs in windows.items())

