"""A PyFlink port's first lines and its Flink names: ``StreamExecutionEnvironment
.get_execution_environment()``, ``from_collection(collection=...)``, and, where raystream
spells a Flink name differently (``env.set_parallelism``, ``stream.shuffle``, a window's
``sum``, ``from_collection(type_info=...)``, ``ctx.timestamp()``), an error that says what to
write instead. Before, ``StreamExecutionEnvironment`` did not exist, ``collection=`` was a
TypeError, the other names gave Python's bare AttributeError / ``'int' object is not
callable`` from inside the job.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import GraphError, JobFailed
from raystream.engine.local_runtime import run_in_process
from raystream.operators import StreamExecutionEnvironment
from raystream.operators.sinks import collected_records
from raystream.operators.timers import TimeDomain


def test_the_pyflink_environment_and_from_collection_keyword():
    env = StreamExecutionEnvironment.get_execution_environment()
    assert isinstance(env, rs.StreamEnvironment) and env.parallelism == 1
    assert StreamExecutionEnvironment.get_execution_environment(parallelism=2).parallelism == 2
    env.from_collection(collection=[("Alice", 1), ("Bob", 2)]).map(lambda r: r[1] * 10).collect()
    result = run_in_process(env.get_job_graph(), JobConfig(name="collection-keyword"), timeout_s=120)
    [batches] = result["results"].values()
    assert sorted(collected_records(batches)) == [10, 20]


@pytest.mark.parametrize("call, message", [
    (lambda env: env.set_parallelism(1), r"StreamEnvironment has no set_parallelism\(\) \(Flink's set_parallelism\): "
                                         r"write StreamEnvironment\(parallelism=n\)"),
    (lambda env: env.get_checkpoint_config(), r"enable_checkpointing\(interval_ms, checkpoint_dir="),
    (lambda env: env.set_runtime_mode("BATCH"), r"emit='final'"),
    (lambda env: env.set_buffer_timeout(100), r"set_buffer_timeout\(\) \(Flink's set_buffer_timeout\): write StreamEnvironment\(flush_ms=ms\)"),
    (lambda env: env.from_collection([1]).shuffle(), r"DataStream has no shuffle\(\) \(Flink's shuffle\): write rebalance\(\)"),
    (lambda env: env.from_collection([1]).add_sink(None), r"write sink_to\(sink\)"),
    (lambda env: env.from_collection([(1, 2)]).key_by(lambda r: r[0]).rescale(), r"KeyedStream has no rescale\(\)"),
    (lambda env: env.from_collection([(1, 2)]).key_by(lambda r: r[0]).count_window(2).sum(1),
     r"WindowedStream has no sum\(\) \(Flink's sum\): write aggregate\("),
])
def test_flink_names_spelled_differently_say_what_to_write(call, message):
    env = rs.StreamEnvironment()
    with pytest.raises(AttributeError, match=message):
        call(env)
    assert not hasattr(env, "set_parallelism")  # (the README lists it as spelled differently)
    with pytest.raises(AttributeError, match="'StreamEnvironment' object has no attribute 'nothing_such'"):
        env.nothing_such  # noqa: B018


def test_type_info_is_refused_with_the_remedy():
    with pytest.raises(GraphError, match=r"from_collection\(type_info=.*drop type_info="):
        rs.StreamEnvironment().from_collection(collection=[(1, "a")], type_info=("INT", "STRING"))


class PyFlinkTimer(rs.KeyedProcessFunction):
    def process_element(self, value, ctx):
        ctx.timer_service().register_event_time_timer(ctx.timestamp() + 2000)  # PyFlink's method
        yield value


def test_ctx_timestamp_called_as_pyflink_says_what_to_write():
    env = rs.StreamEnvironment()
    (env.from_collection([(1000, "a")])
        .assign_timestamps_and_watermarks(rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column(0))
        .key_by(lambda r: r[1]).process(PyFlinkTimer()).collect())
    with pytest.raises(JobFailed, match=r"write ctx.timestamp instead of ctx.timestamp\(\)"):
        run_in_process(env.get_job_graph(), JobConfig(name="timestamp-called"), timeout_s=120)


class WhichClock(rs.KeyedProcessFunction):
    def process_element(self, value, ctx):
        ctx.timer_service().register_event_time_timer(value[0] + 1)

    def on_timer(self, timestamp, ctx):
        yield ctx.get_current_key(), ctx.time_domain() == TimeDomain.EVENT_TIME, ctx.time_domain() == TimeDomain.PROCESSING_TIME


def test_time_domain_as_pyflink_compares_it():
    from raystream.operators import TimeDomain as Exported

    assert Exported is TimeDomain
    env = rs.StreamEnvironment()
    (env.from_collection([(1000, "a")])
        .assign_timestamps_and_watermarks(rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column(0))
        .key_by(lambda r: r[1]).process(WhichClock()).collect())
    result = run_in_process(env.get_job_graph(), JobConfig(name="time-domain"), timeout_s=120)
    [batches] = result["results"].values()
    assert collected_records(batches) == [("a", True, False)]
