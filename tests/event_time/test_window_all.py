"""``window_all``: Flink's non-parallel ``windowAll``. Its window operator runs at
parallelism 1 whatever the environment's (before, it ran at the environment's parallelism
with every record on one subtask through a constant key, the others idle actors); what
follows it runs at the environment's parallelism again, and the records are the same as a
plain-Python reference at parallelism 1 and 2, for every way of ending the window."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.checkpoint import AggregateFunction
from raystream.operators.windows import ProcessWindowFunction

STRATEGY = rs.WatermarkStrategy.for_bounded_out_of_orderness(5).with_timestamp_column("ts")
RECORDS = [{"k": f"k{i % 3}", "ts": (i * 7) % 40, "v": i} for i in range(60)]
SIZE = 10


def reference() -> list[tuple[int, int, int]]:
    """(window start, count, sum of v) of every window of the whole stream."""
    out: dict[int, list[int]] = {}
    for r in RECORDS:
        out.setdefault(r["ts"] - r["ts"] % SIZE, []).append(r["v"])
    return sorted((s, len(vs), sum(vs)) for s, vs in out.items())


class CountSum(AggregateFunction):
    def create_accumulator(self):
        return [0, 0]

    def add(self, value, acc):
        return [acc[0] + 1, acc[1] + value["v"]]

    def get_result(self, acc):
        return tuple(acc)

    def merge(self, a, b):
        return [a[0] + b[0], a[1] + b[1]]


class WithStart(ProcessWindowFunction):
    def process(self, key, context, elements):
        for count, total in elements:
            yield (context.window().start, count, total)


class AllOfWindow(ProcessWindowFunction):
    def process(self, key, context, elements):
        vs = [e["v"] for e in elements]
        yield (context.window().start, len(vs), sum(vs))


def _build(env: rs.StreamEnvironment, how: str):
    windowed = env.from_collection(RECORDS).assign_timestamps_and_watermarks(STRATEGY).window_all(
        rs.TumblingEventTimeWindows.of(SIZE))
    if how == "process":
        out = windowed.process(AllOfWindow())
    elif how == "aggregate":
        out = windowed.aggregate(CountSum(), WithStart())
    elif how == "aggregate-combined":
        out = windowed.aggregate(CountSum(), WithStart(), combine=True)
    elif how == "reduce":
        out = windowed.reduce(lambda a, b: {**a, "n": a.get("n", 1) + b.get("n", 1), "v": a["v"] + b["v"]},
                              WithReduceStart())
    else:  # the vectorized specs, combined before the shuffle at p > 1
        out = windowed.aggregate(n=("v", "count"), total=("v", "sum"))
    return out


class WithReduceStart(ProcessWindowFunction):
    def process(self, key, context, elements):
        for r in elements:
            yield (context.window().start, r.get("n", 1), r["v"])


def _rows(how: str, records: list) -> list[tuple[int, int, int]]:
    if how == "specs":
        return sorted((r["window_start"], r["n"], r["total"]) for r in records)
    return sorted(tuple(r) for r in records)


@pytest.mark.parametrize("how", ["process", "aggregate", "aggregate-combined", "reduce", "specs"])
@pytest.mark.parametrize("parallelism", [1, 2])
def test_window_all_runs_at_parallelism_one_with_the_reference_output(how, parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    out = _build(env, how)
    assert out.node.parallelism == 1
    after = out.map(lambda r: r)  # back at the environment's parallelism
    assert after.node.parallelism in (None, parallelism)
    assert _rows(how, after.execute_and_collect(f"window-all-{how}")) == reference()


class CountAllProcess(rs.ProcessAllWindowFunction):
    """A PyFlink port's ProcessAllWindowFunction: no key, ``context.window()``."""

    def __init__(self):
        self.cleared = 0

    def process(self, context, elements):
        vs = [e["v"] for e in elements]
        yield (context.window().start, len(vs), sum(vs))


class CountAllApply(rs.AllWindowFunction):
    def apply(self, window, inputs):
        vs = [e["v"] for e in inputs]
        yield (window.start, len(vs), sum(vs))


class CountKeyedApply(rs.WindowFunction):
    def apply(self, key, window, inputs):
        vs = [e["v"] for e in inputs]
        yield (key, window.start, len(vs), sum(vs))


class CountSumAll(rs.ProcessAllWindowFunction):
    def process(self, context, elements):
        for count, total in elements:
            yield (context.window.start, count, total)


def _windowed_all(env):
    return env.from_collection(RECORDS).assign_timestamps_and_watermarks(STRATEGY).window_all(
        rs.TumblingEventTimeWindows.of(SIZE))


@pytest.mark.parametrize("how", ["process-all", "apply-all", "apply-all-fn", "aggregate-all"])
@pytest.mark.parametrize("parallelism", [1, 2])
def test_flink_all_window_functions_on_window_all(how, parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    windowed = _windowed_all(env)
    if how == "process-all":
        out = windowed.process(CountAllProcess())
    elif how == "apply-all":
        out = windowed.apply(CountAllApply())
    elif how == "apply-all-fn":
        out = windowed.apply(lambda window, records: [(window.start, len(records), sum(r["v"] for r in records))])
    else:
        out = windowed.aggregate(CountSum(), CountSumAll())
    assert sorted(tuple(r) for r in out.execute_and_collect(f"all-{how}")) == reference()


def test_keyed_window_function_object():
    env = rs.StreamEnvironment(parallelism=2)
    out = (env.from_collection(RECORDS).assign_timestamps_and_watermarks(STRATEGY).key_by("k")
           .window(rs.TumblingEventTimeWindows.of(SIZE)).apply(CountKeyedApply()))
    expected: dict[tuple[str, int], list[int]] = {}
    for r in RECORDS:
        expected.setdefault((r["k"], r["ts"] - r["ts"] % SIZE), []).append(r["v"])
    assert sorted(tuple(r) for r in out.execute_and_collect("keyed-apply")) == sorted(
        (k, s, len(vs), sum(vs)) for (k, s), vs in expected.items())


def test_all_window_functions_refused_where_they_do_not_belong():
    env = rs.StreamEnvironment(parallelism=1)
    keyed = env.from_collection(RECORDS).assign_timestamps_and_watermarks(STRATEGY).key_by("k").window(
        rs.TumblingEventTimeWindows.of(SIZE))
    with pytest.raises(rs.GraphError, match="CountAllProcess is a ProcessAllWindowFunction, for window_all"):
        keyed.process(CountAllProcess())
    with pytest.raises(rs.GraphError, match="CountAllApply is an AllWindowFunction, for window_all"):
        keyed.apply(CountAllApply())
    with pytest.raises(rs.GraphError, match="CountKeyedApply is a WindowFunction"):
        _windowed_all(env).apply(CountKeyedApply())
    with pytest.raises(rs.GraphError, match="aggregate\\(\\) expects a ProcessWindowFunction, got int"):
        keyed.aggregate(CountSum(), 3)


class OneRecordAll(rs.ProcessAllWindowFunction):
    def process(self, context, elements):
        return {"n": len(list(elements))}  # one record returned, not yielded


def test_a_process_all_window_function_returning_one_record_is_named():
    env = rs.StreamEnvironment(parallelism=1)
    out = _windowed_all(env).process(OneRecordAll())
    with pytest.raises(rs.JobFailed, match="OneRecordAll.process\\(\\) returned a dict"):
        out.execute_and_collect("one-record-all")
