"""Float timestamps that are no time (NaN, ±inf, beyond int64 milliseconds) fail with a
ConfigError naming the column, the row and the record, on Arrow columns as on Python
records. Before, an Arrow float column cast them to -2**63 without a word: read from
Parquet, a NaN timestamp's record was dropped as late at parallelism 1 and made a window
starting at 9223372036854775700 at parallelism 2; on records, ±inf and 1e30 were blamed
on user code (a UserCodeError) and the wrong record was named."""

from __future__ import annotations

import pyarrow as pa
import pytest

from raystream.engine.errors import ConfigError
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_fast import VectorWindowAggregateOperator
from raystream.operators.window_operator import REDUCE, WindowOperator
from raystream.operators.windows import TumblingEventTimeWindows

BAD = [float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 2.0**63]


@pytest.mark.parametrize("bad", BAD)
def test_an_arrow_float_column_refuses_a_value_that_is_no_time(bad):
    rows = [{"k": "a", "ts": 5.0}, {"k": "b", "ts": bad}, {"k": "c", "ts": 7.0}]
    with pytest.raises(ConfigError) as err:
        TimestampAssigner(column="ts").timestamps(Batch.of_arrow(pa.RecordBatch.from_pylist(rows)))
    msg = str(err.value)
    assert "'ts'" in msg and "row 1 of a batch of 3" in msg and "'k': 'b'" in msg and repr(bad) in msg


@pytest.mark.parametrize("bad", BAD)
def test_python_records_refuse_it_too_naming_the_record(bad):
    rows = [{"k": "a", "ts": 5.0}, {"k": "b", "ts": bad}]
    with pytest.raises(ConfigError) as err:
        TimestampAssigner(column="ts").timestamps(Batch.of_records(rows))
    assert "{'k': 'b'" in str(err.value)


def test_good_float_timestamps_are_truncated_on_both_paths():
    rows = [{"ts": 5.9}, {"ts": -(2.0**62)}, {"ts": 0.0}]
    ta = TimestampAssigner(column="ts")
    want = [5, -(2**62), 0]
    assert ta.timestamps(Batch.of_arrow(pa.RecordBatch.from_pylist(rows))).tolist() == want
    assert ta.timestamps(Batch.of_records(rows)).tolist() == want


@pytest.mark.parametrize("vectorized", [True, False])
def test_a_window_fails_on_a_nan_timestamp_instead_of_dropping_or_misplacing_it(vectorized):
    window = TumblingEventTimeWindows.of(100)
    if vectorized:
        op = VectorWindowAggregateOperator("key", "ts", window, {"n": ("v", "count")})
    else:
        op = WindowOperator(KeySelector("key").key_of, window, REDUCE, lambda a, b: a,
                            timestamp_assigner=TimestampAssigner(column="ts"))
    h = OperatorHarness(op)
    batch = pa.RecordBatch.from_pydict({"key": ["a", "a"], "v": [1, 2], "ts": [1.0, float("nan")]})
    with pytest.raises(ConfigError, match="holds nan in row 1"):
        h.process(batch)
