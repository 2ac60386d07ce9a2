"""A str or bool event timestamp is refused on Python records as on Arrow columns. Before,
the record path read it with ``int()`` / ``np.fromiter``: a timestamp ``"5"`` became 5 ms
and ``True`` became 1 ms, silently (so a window counted a CSV's string times as epoch
milliseconds), while an Arrow column of strings or booleans failed the job. Now both fail
with a ConfigError naming the field, the value, the record and the remedy."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from raystream.engine.errors import ConfigError
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner, epoch_ms
from raystream.operators.window_operator import LIST, REDUCE, WindowOperator
from raystream.operators.windows import TumblingEventTimeWindows

BAD = ["5", "2024-01-01T00:00:00", b"5", True, False, np.bool_(True)]


@pytest.mark.parametrize("bad", BAD)
def test_a_record_field_that_is_no_time_is_refused_naming_field_record_and_remedy(bad):
    rows = [{"k": "a", "ts": 5}, {"k": "b", "ts": bad}, {"k": "c", "ts": 7}]
    with pytest.raises(ConfigError) as err:
        TimestampAssigner(column="ts").timestamps(Batch.of_records(rows))
    msg = str(err.value)
    assert "'ts'" in msg and repr(bad) in msg and "'k': 'b'" in msg and "convert" in msg


@pytest.mark.parametrize("bad", ["5", True])
def test_the_arrow_column_refuses_it_too(bad):
    rows = [{"k": "a", "ts": bad}]
    with pytest.raises(ConfigError, match="'ts' must hold integers"):
        TimestampAssigner(column="ts").timestamps(Batch.of_arrow(pa.RecordBatch.from_pylist(rows)))


def test_an_assigner_function_returning_a_str_is_refused_naming_it():
    def ts_of(r):
        return r[1]

    with pytest.raises(ConfigError) as err:
        TimestampAssigner(fn=ts_of).timestamps(Batch.of_records([("a", 1), ("b", "17")]))
    assert "'ts_of'" in str(err.value) and "('b', '17')" in str(err.value)
    with pytest.raises(ConfigError, match="'ts_of'"):
        TimestampAssigner(fn=ts_of).timestamps(Batch.of_records([("b", False)]))


@pytest.mark.parametrize("bad", ["5", True])
def test_epoch_ms_refuses_str_and_bool(bad):
    with pytest.raises(TypeError):
        epoch_ms(bad)


def test_good_timestamps_still_read_on_both_paths():
    rows = [{"ts": 5}, {"ts": 6.9}, {"ts": np.int64(7)}, {"ts": np.float64(8.5)}, {"ts": dt.datetime(1970, 1, 1, 0, 0, 1)},
            {"ts": dt.date(1970, 1, 2)}, {"ts": np.datetime64(9, "ms")}]
    assert TimestampAssigner(column="ts").timestamps(Batch.of_records(rows)).tolist() == [
        5, 6, 7, 8, 1000, 86_400_000, 9]
    ints = [{"ts": i} for i in range(1000)]
    assert TimestampAssigner(column="ts").timestamps(Batch.of_records(ints)).tolist() == list(range(1000))


def test_a_window_fails_instead_of_counting_string_times_as_milliseconds():
    op = WindowOperator(KeySelector("k").key_of, TumblingEventTimeWindows.of(100), REDUCE, lambda a, b: a,
                        timestamp_assigner=TimestampAssigner(column="ts"))
    h = OperatorHarness(op)
    with pytest.raises(ConfigError, match="'ts' gives '50'"):
        h.process([{"k": "a", "ts": 10}, {"k": "a", "ts": "50"}])


@pytest.mark.parametrize("lateness", [0, 10])  # the pane path and the per-batch tumbling path
def test_the_window_fast_paths_refuse_a_bool_between_int_timestamps(lateness):
    # min() and max() of [0, True, 5, 150] are ints: the operator's own raw-column fast paths
    # took True for 1 ms
    op = WindowOperator(KeySelector("k").key_of, TumblingEventTimeWindows.of(100), LIST, None,
                        allowed_lateness=lateness, timestamp_assigner=TimestampAssigner(column="ts"))
    h = OperatorHarness(op)
    with pytest.raises(ConfigError, match="'ts' gives True"):
        h.process([{"k": "a", "ts": 0}, {"k": "a", "ts": True}, {"k": "a", "ts": 5}, {"k": "a", "ts": 150}])

