"""PyFlink's side outputs: a process function yields ``output_tag, value`` (PyFlink has no
``ctx.output``). Before, such a pair went into the main output as a tuple
``(OutputTag('x'), value)`` and the side output stayed empty, silently; now keyed, timer,
co-process and join functions route it to the side output as ``ctx.output(tag, value)``
does, and a function without a context for it (a ProcessFunction on a stream without a key)
fails naming the remedy instead of emitting the pair.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.operators.functions import OutputTag, add_results
from raystream.operators.sinks import collected_records

ODD = OutputTag("odd")


class SplitOdd(rs.KeyedProcessFunction):
    """As PyFlink writes it: the odd values to a side output, a timer's value to it too."""

    def process_element(self, value, ctx):
        if value[1] % 2:
            yield ODD, value[1]
        else:
            yield value
        if value[1] == 0:
            ctx.timer_service().register_event_time_timer(10_000)

    def on_timer(self, timestamp, ctx):
        yield ODD, ("timer", ctx.get_current_key())


def run(env):
    result = run_in_process(env.get_job_graph(), JobConfig(name="side-outputs"), timeout_s=120)
    return {uid: sorted(collected_records(b), key=repr) for uid, b in result["results"].items()}


@pytest.mark.parametrize("parallelism", [1, 2])
def test_keyed_and_timer_side_outputs_yielded_as_pyflink(parallelism):
    data = [(k, v) for k in "abc" for v in range(6)]
    env = rs.StreamEnvironment(parallelism=parallelism, batch_size=4)
    main = (env.from_collection(data)
            .assign_timestamps_and_watermarks(rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1]))
            .key_by(lambda r: r[0]).process(SplitOdd()))
    main.collect().uid("main")
    main.get_side_output(ODD).collect().uid("odd")
    out = run(env)
    assert out["main"] == sorted((r for r in data if r[1] % 2 == 0), key=repr)
    assert out["odd"] == sorted([v for _, v in data if v % 2] + [("timer", k) for k in "abc"], key=repr)


class CoSplit(rs.CoProcessFunction):
    def process_element1(self, value, ctx):
        yield ODD, value

    def process_element2(self, value, ctx):
        yield value


def test_co_process_side_outputs_yielded_as_pyflink():
    env = rs.StreamEnvironment(parallelism=2)
    main = env.from_collection([1, 2, 3]).connect(env.from_collection([10, 20])).process(CoSplit())
    main.collect().uid("main")
    main.get_side_output(ODD).collect().uid("odd")
    assert run(env) == {"main": [10, 20], "odd": [1, 2, 3]}


def test_a_pair_without_a_context_names_the_remedy_and_other_pairs_stay_records():
    out: list = []
    add_results(out, iter([("x", 1), (ODD, 2, 3), 4]), object(), "process_element")
    assert out == [("x", 1), (ODD, 2, 3), 4]  # (not a (tag, value) pair)
    with pytest.raises(TypeError, match=r"gave \(OutputTag\('odd'\), value\), PyFlink's side output: write ctx.output"):
        add_results(out, iter([(ODD, 5)]), object(), "process_element")
