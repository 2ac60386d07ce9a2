"""PyFlink's ``Duration``, ``Time`` and ``TimestampAssigner`` as a port of Flink's Python
examples writes them (``event_time_timer.py``, ``windowing/*.py``): before, none of the three
could be imported from raystream, and a ``TimestampAssigner`` subclass overriding
``extract_timestamp(value, record_timestamp)`` failed when it was constructed
("TimestampAssigner needs exactly one of column= or fn="). Now ``Duration``/``Time`` are
ints of milliseconds that every setting in ms takes, and such an assigner (of raystream's
class or any object with the method) assigns the timestamps, getting the records' earlier
timestamps as ``record_timestamp``.
"""

from __future__ import annotations

import pickle

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.engine.config import JobConfig
from raystream.engine.errors import ConfigError
from raystream.engine.local_runtime import run_in_process
from raystream.engine.records import Batch
from raystream.operators import Duration, Time, TimestampAssigner
from raystream.operators.sinks import collected_records
from raystream.operators.time import as_timestamp_assigner


def test_duration_and_time_are_milliseconds_everywhere_ms_are_taken():
    assert Duration.of_seconds(2) == 2000 and Duration.of_millis(7) == 7 and Duration.of_minutes(1) == 60_000
    assert Duration.of_hours(1) == 3_600_000 and Duration.of_days(1) == 86_400_000
    assert Time.milliseconds(5) == 5 and Time.seconds(3) == 3000 and Time.minutes(2) == 120_000
    assert Time.hours(1).to_milliseconds() == 3_600_000 and Time.days(2) == 2 * 86_400_000
    assert type(pickle.loads(pickle.dumps(Time.seconds(1)))) is int  # (travels as a plain int)
    assert str(Time.seconds(1)) == "1000"
    assert rs.TumblingEventTimeWindows.of(Time.milliseconds(5)).size == 5
    w = rs.SlidingEventTimeWindows.of(Time.milliseconds(5), Time.milliseconds(2))
    assert (w.size, w.slide) == (5, 2)
    assert rs.WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(2)).bound_ms == 2000
    assert rs.EventTimeSessionWindows.with_gap(Time.seconds(1)).gap == 1000
    with pytest.raises(ConfigError, match=r"Duration.of_seconds\('2'\): give a whole number"):
        Duration.of_seconds("2")


class FirstField(TimestampAssigner):
    """As in PyFlink: no constructor arguments, ``extract_timestamp`` overridden."""

    def extract_timestamp(self, value, record_timestamp):
        return int(value[0])


class WithOwnInit(TimestampAssigner):
    """A subclass whose ``__init__`` does not call TimestampAssigner's."""

    def __init__(self, field):
        self.field = field

    def extract_timestamp(self, value, record_timestamp):
        return value[self.field]


class NotASubclass:
    """Flink's interface without raystream's class."""

    def extract_timestamp(self, value, record_timestamp):
        return value[0] * 10


def test_flink_style_assigners_extract_the_timestamps():
    batch = Batch.of_records([(5, "a"), (7, "b")])
    assert FirstField().timestamps(batch).tolist() == [5, 7]
    for given, expected in [(FirstField(), [5, 7]), (WithOwnInit(0), [5, 7]), (NotASubclass(), [50, 70]),
                            (lambda r: r[0] + 1, [6, 8])]:
        assert as_timestamp_assigner(given, "t").timestamps(batch).tolist() == expected


def test_record_timestamp_is_the_timestamp_the_record_has():
    seen = []

    class Keep(TimestampAssigner):
        def extract_timestamp(self, value, record_timestamp):
            seen.append(record_timestamp)
            return (record_timestamp or 0) + value

    assigner = as_timestamp_assigner(Keep(), "t")
    assert assigner.timestamps(Batch.of_records([1, 2])).tolist() == [1, 2] and seen == [None, None]
    batch = Batch.of_records([1, 2])
    batch.timestamps = assigner.timestamps(batch)
    assert assigner.timestamps(batch).tolist() == [2, 4] and seen[4:] == [1, 2]


def test_wrong_assigners_name_the_remedy():
    strategy = rs.WatermarkStrategy.for_monotonous_timestamps()
    with pytest.raises(ConfigError, match=r"got the class FirstField; pass an instance, FirstField\(\)"):
        strategy.with_timestamp_assigner(FirstField)
    with pytest.raises(ConfigError, match=r"extract_timestamp\(value, record_timestamp\) \(Flink's TimestampAssigner\), got int 5"):
        strategy.with_timestamp_assigner(5)
    with pytest.raises(ConfigError, match="needs exactly one of column= or fn="):
        TimestampAssigner()


class Sum(rs.KeyedProcessFunction):
    """Flink's event_time_timer.py: a sum per key, emitted by a timer 2 s after each record."""

    def open(self, runtime_context):
        self.state = runtime_context.get_state(ValueStateDescriptor("state"))

    def process_element(self, value, ctx):
        current = self.state.value()
        if current is None:
            current = 0
        current += value[2]
        self.state.update(current)
        ctx.timer_service().register_event_time_timer(ctx.timestamp + 2000)

    def on_timer(self, timestamp, ctx):
        yield ctx.get_current_key(), timestamp, self.state.value()


EVENTS = [(1000, "Alice", 110.1), (4000, "Bob", 30.2), (3000, "Alice", 20.0), (2000, "Bob", 53.1),
          (5000, "Alice", 13.1), (3000, "Bob", 3.1), (7000, "Bob", 16.1), (10000, "Alice", 20.1)]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_event_time_timer_example_port(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    ds = env.from_collection(EVENTS).set_parallelism(1).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(2)).with_timestamp_assigner(FirstField()))
    ds.key_by(lambda value: value[1]).process(Sum()).collect()
    result = run_in_process(env.get_job_graph(), JobConfig(name="event-time-timer"), timeout_s=120)
    [batches] = result["results"].values()
    # one batch of records, then the end of input: every timer fires after all the records, once
    # per distinct time, with the key's whole sum
    totals = {}
    for _ts, name, amount in EVENTS:
        totals[name] = totals.get(name, 0) + amount
    expected = sorted({(name, ts + 2000, totals[name]) for ts, name, _ in EVENTS})
    assert sorted(collected_records(batches)) == expected
