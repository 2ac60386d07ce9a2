"""``DataStream.process(ProcessFunction)`` in jobs at parallelism 1 and 2: every record once,
side outputs through ``get_side_output``, timestamps from the assigner, the same output as
a plain-Python reference whatever the batch cut; a timer on a stream without a key fails
the job naming the operator and saying to key the stream first. Before, a stream without a
key had no ``process()`` (only ``flat_map``), so a Flink job's ProcessFunction did not port.
"""

from __future__ import annotations

from collections import Counter

import pytest

import raystream as rs
from raystream.engine.errors import JobFailed


class Route(rs.ProcessFunction):
    """Records without an ``x`` go to the side output ``missing``; the others come out as
    ``(x * 2, timestamp, name)``."""

    def open(self, runtime_context):
        self.subtasks = runtime_context.number_of_parallel_subtasks

    def process_element(self, value, ctx):
        if value["x"] is None:
            ctx.output(rs.OutputTag("missing"), value["name"])
            return
        yield (value["x"] * 2, ctx.timestamp, value["name"])


def records(n: int) -> list[dict]:
    return [{"x": i if i % 5 else None, "ts": 1_000 + (i % 7) * 10, "name": f"é☃{i}"} for i in range(n)]


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_output_and_side_output_match_a_reference(parallelism, batch_size):
    data = records(60)
    env = rs.StreamEnvironment(parallelism=parallelism, batch_size=batch_size)
    strategy = rs.WatermarkStrategy.for_bounded_out_of_orderness(5).with_timestamp_column("ts")
    out = env.from_collection(data).assign_timestamps_and_watermarks(strategy).process(Route())
    both = out.union(out.get_side_output("missing").map(lambda name: ("missing", name)))
    got = Counter(both.execute_and_collect())
    want = Counter([("missing", r["name"]) for r in data if r["x"] is None]
                   + [(r["x"] * 2, r["ts"], r["name"]) for r in data if r["x"] is not None])
    assert got == want


@pytest.mark.parametrize("parallelism", [1, 2])
def test_empty_input_gives_nothing(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    assert env.from_collection([]).process(Route()).execute_and_collect() == []


def test_a_process_function_on_a_keyed_stream_gets_the_key():
    class WithKey(rs.ProcessFunction):
        def process_element(self, value, ctx):
            yield (ctx.get_current_key(), value)

    env = rs.StreamEnvironment(parallelism=2)
    got = env.from_collection(range(6)).key_by(lambda v: v % 3).process(WithKey()).execute_and_collect()
    assert sorted(got) == sorted((v % 3, v) for v in range(6))


def test_a_timer_fails_the_job_naming_the_operator():
    class Timer(rs.ProcessFunction):
        def process_element(self, value, ctx):
            ctx.timer_service().register_event_time_timer(value)
            yield value

    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection([1, 2]).process(Timer()).name("timeouts").collect()
    with pytest.raises(JobFailed, match=r"operator 'timeouts'.*timers are only supported on keyed streams: key_by first"):
        env.execute("timer")
