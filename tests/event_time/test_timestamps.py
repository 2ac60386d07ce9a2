"""Event timestamps from Arrow timestamp and date columns of every unit and zone, and from
the datetimes the same column holds once records are Python objects: both read the same
epoch milliseconds (floored), so a window does not depend on whether its input batch
happened to be columnar."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from raystream.engine.errors import ConfigError, GraphError
from raystream.engine.records import Batch
from raystream.operators.time import TimestampAssigner, epoch_ms, timestamp_column

UTC = dt.timezone.utc
#: sub-millisecond parts, both sides of the epoch, a leap day
INSTANTS = [
    dt.datetime(2024, 2, 29, 12, 0, 0, 1500, tzinfo=UTC),
    dt.datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC),
    dt.datetime(1970, 1, 1, tzinfo=UTC),
    dt.datetime(2001, 9, 9, 1, 46, 40, 999, tzinfo=UTC),
]
EXPECTED = [1709208000001, -1, 0, 1000000000000]


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "+02:00"])
def test_a_timestamp_column_and_its_datetimes_give_the_same_floored_milliseconds(unit, tz):
    """The column failed for any unit finer than ms with a value off the millisecond
    (Arrow refused the cast: 'would lose data'); its records failed with 'cannot extract an
    event timestamp' (int() of a datetime)."""
    values = [v if tz else v.replace(tzinfo=None) for v in INSTANTS]
    if unit == "ms":  # (Arrow's cast to ms would truncate -0.5 ms towards zero)
        col = pa.array(EXPECTED, pa.timestamp("ms", tz=tz))
    else:
        col = pa.array(values, pa.timestamp("us", tz=tz)).cast(pa.timestamp(unit, tz=tz))
    expected = EXPECTED
    rb = pa.record_batch([col], ["ts"])
    assert timestamp_column(rb, "ts", "test").tolist() == expected
    records = Batch.of_records([{"ts": v} for v in col.to_pylist()])
    assert TimestampAssigner(column="ts").timestamps(records).tolist() == expected
    assert TimestampAssigner(column="ts").timestamps(Batch.of_arrow(rb)).tolist() == expected
    assert [TimestampAssigner(fn=lambda r: r["ts"]).extract(r) for r in records.records()] == expected


def test_a_naive_datetime_is_read_as_utc_and_an_aware_one_at_its_instant():
    assert epoch_ms(dt.datetime(1970, 1, 1, 0, 0, 1)) == 1000
    assert epoch_ms(dt.datetime(1970, 1, 1, 1, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == 1000
    assert epoch_ms(dt.datetime(1969, 12, 31, 23, 59, 59, 999999)) == -1  # floored, not truncated


def test_dates_seconds_numpy_datetimes_and_numbers():
    days = pa.array([dt.date(1970, 1, 2), dt.date(1969, 12, 31)])
    assert timestamp_column(pa.record_batch([days], ["d"]), "d", "t").tolist() == [86_400_000, -86_400_000]
    assert timestamp_column(pa.record_batch([days.cast(pa.date64())], ["d"]), "d", "t").tolist() == [86_400_000, -86_400_000]
    secs = pa.array([1, -2], pa.timestamp("s"))
    assert timestamp_column(pa.record_batch([secs], ["t"]), "t", "t").tolist() == [1000, -2000]
    assert epoch_ms(dt.date(1970, 1, 2)) == 86_400_000
    assert epoch_ms(np.datetime64("1970-01-01T00:00:01.5")) == 1500
    assert epoch_ms(12.9) == 12 and epoch_ms(7) == 7
    stamps = TimestampAssigner(column=0).timestamps(Batch.of_records([(dt.date(1970, 1, 2), "x"), (5, "y")]))
    assert stamps.tolist() == [86_400_000, 5]


def test_a_column_of_another_type_and_a_record_without_a_time_fail_naming_them():
    with pytest.raises(ConfigError, match=r"timestamp column 'ts' must hold integers \(ms\), Arrow timestamps or dates, got string"):
        timestamp_column(pa.record_batch([pa.array(["2024-01-01"])], ["ts"]), "ts", "demo")
    with pytest.raises(ConfigError, match=r"cannot extract an event timestamp .* from record \{'ts': 'noon'\}"):
        TimestampAssigner(column="ts").timestamps(Batch.of_records([{"ts": dt.datetime(2024, 1, 1)}, {"ts": "noon"}]))


def _stamped(env, rows, column=None, fn=None):
    import raystream as rs

    strategy = rs.WatermarkStrategy.for_monotonous_timestamps()
    strategy = strategy.with_timestamp_column(column) if column else strategy.with_timestamp_assigner(fn)
    return env.from_collection(rows).assign_timestamps_and_watermarks(strategy)


def test_a_union_of_streams_stamped_differently_cannot_be_windowed_where_timestamps_are_read_again():
    """A window after the union read every record's timestamp with the FIRST input's
    assigner: the second input's records went silently into windows of another field, or
    failed the job (the field missing). Records now carry their timestamps through a union
    (Flink), so only a union with an unstamped stream, or one whose records lose their
    timestamps on the way (map_batches), is refused: there the assigner is applied again."""
    import raystream as rs
    from raystream.operators.windows import TumblingEventTimeWindows

    env = rs.StreamEnvironment(parallelism=1)
    a = _stamped(env, [{"k": "x", "ts": 100}], column="ts")
    b = _stamped(env, [{"k": "x", "ts": 50_000, "event_ms": 500}], column="event_ms")
    c = env.from_collection([{"k": "x", "ts": 7}])  # no timestamps at all
    for union in (a.union(c), c.union(a), a.map_batches(lambda t: t).union(b), a.union(b).map_batches(lambda t: t)):
        with pytest.raises(GraphError, match="different event timestamps.*assign_timestamps_and_watermarks.. after the union"):
            union.key_by("k").window(TumblingEventTimeWindows.of(1000)).apply(lambda k, w, rs_: [len(rs_)])


def test_a_union_of_streams_stamped_differently_windows_each_record_by_its_own_timestamp():
    """Flink's union keeps each record's timestamp: the first input's by ``ts``, the second's
    by ``event_ms`` (before, refused at build time)."""
    import raystream as rs
    from raystream.engine.config import JobConfig
    from raystream.engine.local_runtime import run_in_process
    from raystream.operators.sinks import collected_records
    from raystream.operators.windows import TumblingEventTimeWindows

    env = rs.StreamEnvironment(parallelism=1)
    a = _stamped(env, [{"k": "x", "ts": 100}, {"k": "x", "ts": 1_100}], column="ts")
    b = _stamped(env, [{"k": "x", "ts": 50_000, "event_ms": 500}], column="event_ms")
    for union in (a.union(b), b.union(a), a.map(dict).union(b.filter(bool))):
        union.key_by("k").window(TumblingEventTimeWindows.of(1000)).apply(lambda k, w, rs_: [(w.start, len(rs_))]).collect()
    results = run_in_process(env.get_job_graph(), JobConfig(name="union-stamps"), timeout_s=120)["results"]
    assert [sorted(collected_records(b)) for b in results.values()] == [[(0, 2), (1_000, 1)]] * 3


def test_a_union_of_streams_with_one_timestamp_assigner_is_windowed():
    import raystream as rs
    from raystream.operators._stream_base import find_timestamp_assigner

    env = rs.StreamEnvironment(parallelism=1)
    a = _stamped(env, [{"k": "x", "ts": 100}], column="ts")
    b = _stamped(env, [{"k": "x", "ts": 1500}], column="ts")  # another assigner object, the same column
    stamped = _stamped(env, [{"k": "x", "ts": 1}], fn=lambda r: r["ts"])
    both = stamped.filter(bool).union(stamped.map(dict), a)  # one function object on two paths
    assert find_timestamp_assigner(a.union(b).node).column == "ts"
    assert find_timestamp_assigner(both.node).fn is not None  # a function and a column: each record its own
    with pytest.raises(GraphError, match="different event timestamps"):  # (unless read again after map_batches)
        find_timestamp_assigner(both.map_batches(lambda t: t).node)
    assert find_timestamp_assigner(stamped.filter(bool).union(stamped.map(dict)).node).fn is not None
    restamped = a.union(b, env.from_collection([{"k": "y", "ts": 3}])).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts"))
    assert find_timestamp_assigner(restamped.map(dict).node).column == "ts"  # stamped after the union


def test_an_assigner_function_that_raises_names_the_record():
    """A ZeroDivisionError of the user's assigner escaped unwrapped: the job's error named
    neither the record nor, after a map, the right one (the batch's first)."""
    from raystream.engine.errors import UserCodeError

    rows = [{"ts": i * 100, "v": i} for i in range(10)]
    assigner = TimestampAssigner(fn=lambda r: r["ts"] // (r["v"] - 7))
    with pytest.raises(UserCodeError) as info:
        assigner.timestamps(Batch.of_records(rows))
    assert info.value.record == {"ts": 700, "v": 7}
    assert isinstance(info.value.original, ZeroDivisionError)
    with pytest.raises(ConfigError, match=r"cannot extract an event timestamp .* from record \{'v': 3\}"):
        TimestampAssigner(fn=lambda r: r["ts"]).timestamps(Batch.of_records([{"ts": 1}, {"v": 3}]))
