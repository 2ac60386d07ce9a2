"""``window(...).with_timestamp(assigner)`` with a PyFlink-style ``TimestampAssigner``
(``extract_timestamp(value, record_timestamp)``), as the remedy for a window over another
window's results names it. Before, an assigner object (not callable) was taken for a column
name: the job failed as it ran, reading ``record[<MyAssigner object>]``; now it reads the
timestamps, and what is neither a column, a function nor an assigner is refused when the
graph is built.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import ConfigError
from raystream.engine.local_runtime import run_in_process
from raystream.operators import TimestampAssigner
from raystream.operators.sinks import collected_records


class WindowEnd(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp):
        return value[1] - 1


class Count(rs.ProcessWindowFunction):
    def process(self, key, context, elements):
        yield (key, context.window().end, len(list(elements)))


class Total(rs.ProcessAllWindowFunction):
    def process(self, context, elements):
        yield (context.window().end, sum(e[2] for e in elements))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_flink_style_assigner_reads_the_results_time(parallelism):
    data = [(k, t) for t in range(0, 100, 7) for k in "abc"]
    env = rs.StreamEnvironment(parallelism=parallelism)
    counts = (env.from_collection(data)
              .assign_timestamps_and_watermarks(rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1]))
              .key_by(lambda r: r[0]).window(rs.TumblingEventTimeWindows.of(20)).process(Count()))
    counts.window_all(rs.TumblingEventTimeWindows.of(40)).with_timestamp(WindowEnd()).process(Total()).collect()
    result = run_in_process(env.get_job_graph(), JobConfig(name="with-timestamp"), timeout_s=120)
    [batches] = result["results"].values()
    expected = {}
    for _, t in data:
        end = (t // 20 + 1) * 20
        expected[((end - 1) // 40 + 1) * 40] = expected.get(((end - 1) // 40 + 1) * 40, 0) + 1
    assert sorted(collected_records(batches)) == sorted(expected.items())


def test_what_is_no_timestamp_is_refused_when_built():
    keyed = rs.StreamEnvironment().from_collection([("a", 1)]).key_by(lambda r: r[0])
    with pytest.raises(ConfigError, match=r"with_timestamp\(\): expected a function record -> timestamp"):
        keyed.window(rs.TumblingEventTimeWindows.of(10)).with_timestamp(True)
    with pytest.raises(ConfigError, match=r"got the class WindowEnd; pass an instance"):
        keyed.window(rs.TumblingEventTimeWindows.of(10)).with_timestamp(WindowEnd)
