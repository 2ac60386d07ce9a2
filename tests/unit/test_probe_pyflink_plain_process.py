"""A PyFlink ``ProcessFunction`` on a stream without a key, ported as written: ``yield
output_tag, value`` is its side output (before: refused, "write ctx.output") and
``ctx.timestamp()`` fails naming ``ctx.timestamp`` (before: Python's bare "'int' object is
not callable" from inside the job)."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.operators.functions import OutputTag
from raystream.operators.sinks import collected_records

ODD = OutputTag("odd")


class SplitOdd(rs.ProcessFunction):
    def process_element(self, value, ctx):
        if value % 2:
            yield ODD, value
        else:
            yield value


class CallsTimestamp(rs.ProcessFunction):
    def process_element(self, value, ctx):
        yield value, ctx.timestamp()


def run(env):
    result = run_in_process(env.get_job_graph(), JobConfig(name="plain-process"), timeout_s=120)
    return {uid: sorted(collected_records(b)) for uid, b in result["results"].items()}


@pytest.mark.parametrize("parallelism", [1, 2])
def test_side_outputs_yielded_as_pyflink(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism, batch_size=3)
    main = env.from_collection(list(range(10))).process(SplitOdd())
    main.collect().uid("main")
    main.get_side_output(ODD).collect().uid("odd")
    assert run(env) == {"main": [0, 2, 4, 6, 8], "odd": [1, 3, 5, 7, 9]}


def test_ctx_timestamp_called_names_the_remedy():
    env = rs.StreamEnvironment(parallelism=1)
    (env.from_collection([1, 2])
        .assign_timestamps_and_watermarks(rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r))
        .process(CallsTimestamp()).collect())
    with pytest.raises(Exception, match=r"write ctx\.timestamp instead of ctx\.timestamp\(\)"):
        run(env)
