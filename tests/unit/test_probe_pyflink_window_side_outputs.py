"""PyFlink's side outputs from window functions: a ``ProcessWindowFunction`` or a
``ProcessAllWindowFunction`` yields ``output_tag, value``. Before, the pair went into the
window's main output as a tuple ``(OutputTag('x'), value)`` and the side output stayed empty,
silently; now it goes to the side output, as ``context.output(tag, value)`` does.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records

SMALL = rs.OutputTag("small")


class CountOrFlag(rs.ProcessWindowFunction):
    def process(self, key, context, elements):
        n = len(list(elements))
        if n < 3:
            yield SMALL, (key, context.window().start, n)
        else:
            yield key, context.window().start, n


class AllCountOrFlag(rs.ProcessAllWindowFunction):
    def process(self, context, elements):
        n = len(list(elements))
        yield (SMALL, (context.window().start, n)) if n < 5 else (context.window().start, n)


DATA = [(k, t) for k in "ab" for t in range(0, 40, 3 if k == "a" else 9)]


def run(env):
    result = run_in_process(env.get_job_graph(), JobConfig(name="window-side-outputs"), timeout_s=120)
    return {uid: sorted(collected_records(b)) for uid, b in result["results"].items()}


def stamped(env):
    return env.from_collection(DATA).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1]))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_keyed_and_all_window_functions_yield_side_outputs(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    keyed = stamped(env).key_by(lambda r: r[0]).window(rs.TumblingEventTimeWindows.of(10)).process(CountOrFlag())
    keyed.collect().uid("main")
    keyed.get_side_output(SMALL).collect().uid("small")
    every = stamped(env).window_all(rs.TumblingEventTimeWindows.of(10)).process(AllCountOrFlag())
    every.collect().uid("all_main")
    every.get_side_output(SMALL).collect().uid("all_small")
    counts, totals = {}, {}
    for k, t in DATA:
        counts[(k, t // 10 * 10)] = counts.get((k, t // 10 * 10), 0) + 1
        totals[t // 10 * 10] = totals.get(t // 10 * 10, 0) + 1
    out = run(env)
    assert out["main"] == sorted((k, s, n) for (k, s), n in counts.items() if n >= 3)
    assert out["small"] == sorted((k, s, n) for (k, s), n in counts.items() if n < 3)
    assert out["all_main"] == sorted((s, n) for s, n in totals.items() if n >= 5)
    assert out["all_small"] == sorted((s, n) for s, n in totals.items() if n < 5)
    assert out["small"] and out["main"] and out["all_main"] and out["all_small"]
