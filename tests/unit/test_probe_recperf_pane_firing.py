"""A tumbling window's panes fired in one loop (recperf): the window function of a reduce or
aggregate gets the same calls, its results and side outputs land as before, and its errors name
the window and the key, at parallelism 1 and 2 (in process), against a plain Python reference."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream import AggregateFunction, OutputTag, ProcessWindowFunction
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobFailed
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.windows import TumblingEventTimeWindows

SIZE = 10
BIG = OutputTag("big")
DATA = [(f"k{i % 7}", i, (i * 3) % 45) for i in range(120)]  # (key, value, ts), out of order


class Count(AggregateFunction):
    def create_accumulator(self):
        return [0, 0]

    def add(self, value, acc):
        acc[0] += 1
        acc[1] += value[1]
        return acc

    def get_result(self, acc):
        return tuple(acc)

    def merge(self, a, b):
        return [a[0] + b[0], a[1] + b[1]]


class Yields(ProcessWindowFunction):
    def process(self, key, context, elements):
        (n, total), = elements
        yield (key, context.window().start, n, total)
        if total > 400:
            yield BIG, (key, context.window.start)


class ReturnsList(ProcessWindowFunction):
    def process(self, key, context, elements):
        return [(key, context.window.end, e) for e in elements] if key != "k3" else None


def reference():
    windows: dict = {}
    for k, v, ts in DATA:
        acc = windows.setdefault((k, ts - ts % SIZE), [0, 0])
        acc[0] += 1
        acc[1] += v
    return windows


def build(parallelism, function, reduce=False):
    env = rs.StreamEnvironment(parallelism=parallelism, batch_size=16)
    strategy = rs.WatermarkStrategy.for_bounded_out_of_orderness(100).with_timestamp_assigner(lambda r: r[2])
    windowed = (env.from_collection(DATA).assign_timestamps_and_watermarks(strategy)
                .key_by(lambda r: r[0]).window(TumblingEventTimeWindows.of(SIZE)))
    if reduce:
        main = windowed.reduce(lambda a, b: (a[0], a[1] + b[1], max(a[2], b[2])), function)
    else:
        main = windowed.aggregate(Count(), function)
    main.collect().uid("main")
    main.get_side_output(BIG).collect().uid("big")
    return env


def run(env):
    result = run_in_process(env.get_job_graph(), JobConfig(name="panes"), timeout_s=120)
    return {uid: sorted(collected_records(b), key=repr) for uid, b in result["results"].items()}


@pytest.mark.parametrize("parallelism", [1, 2])
def test_aggregate_with_a_generator_window_function_and_side_outputs(parallelism):
    out = run(build(parallelism, Yields()))
    ref = reference()
    assert out["main"] == sorted(((k, s, n, t) for (k, s), (n, t) in ref.items()), key=repr)
    assert out["big"] == sorted(((k, s) for (k, s), (n, t) in ref.items() if t > 400), key=repr)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_reduce_with_a_window_function_returning_a_list_or_none(parallelism):
    out = run(build(parallelism, ReturnsList(), reduce=True))
    expected = []
    for (k, s), _ in reference().items():
        if k == "k3":
            continue
        rows = [r for r in DATA if r[0] == k and s <= r[2] < s + SIZE]
        expected.append((k, s + SIZE, (k, sum(r[1] for r in rows), max(r[2] for r in rows))))
    assert out["main"] == sorted(expected, key=repr)
    assert out["big"] == []


class NotIterable(ProcessWindowFunction):
    def process(self, key, context, elements):
        return 42


class Fails(ProcessWindowFunction):
    def process(self, key, context, elements):
        if key == "k5":
            raise ValueError("no k5 here")
        yield key


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_window_function_that_returns_no_records_is_named(parallelism):
    with pytest.raises(JobFailed, match=r"NotIterable.process\(\) returned a int \(42\), not an iterable of records"):
        run(build(parallelism, NotIterable()))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_failing_window_function_names_the_window_and_the_key(parallelism):
    with pytest.raises(JobFailed, match=r"(?s)ValueError: no k5 here.*window TimeWindow\(start=0, end=10\) of key 'k5'"):
        run(build(parallelism, Fails()))
