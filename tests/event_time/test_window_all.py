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
