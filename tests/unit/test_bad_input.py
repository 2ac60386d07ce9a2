"""Bad input fails clearly, naming what and where, instead of hanging, being dropped or being
changed silently (found by an audit of the error paths; each case was silent or a bare
traceback before)."""

from __future__ import annotations

import doctest

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import raystream as rs
from raystream.engine.errors import ConfigError, GraphError, UserCodeError
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch
from raystream.operators import sources
from raystream.operators import time as time_module
from raystream.operators.basic import MapBatchesOperator
from raystream.operators.keyed_final import LocalReduceOperator
from raystream.operators.sources import ParquetSource
from raystream.operators.time import timestamp_column


class _Out:
    def __init__(self):
        self.batches = []

    def emit(self, batch):
        self.batches.append(batch)


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 0}, "batch_size must be an int >= 1"),
    ({"batch_size": "big"}, "batch_size must be an int >= 1"),
    ({"flush_ms": -1}, "flush_ms must be a finite number >= 0"),
    ({"credits": "4"}, "credits must be an int >= 1"),
    ({"credits": None}, "credits must be an int >= 1"),
    ({"task_num_cpus": -1}, "task_num_cpus must be a number >= 0"),
])
def test_environment_settings_are_checked_when_made(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        rs.StreamEnvironment(**kwargs)


def test_sources_reject_batch_sizes_counts_and_inputs_that_cannot_work(tmp_path):
    env = rs.StreamEnvironment()
    with pytest.raises(GraphError, match=r"from_collection\(\): batch_size must be an int >= 1, got 0"):
        env.from_collection([1, 2], batch_size=0)  # (hung, filling memory with empty batches)
    pq.write_table(pa.table({"v": [1]}), tmp_path / "a.parquet")
    with pytest.raises(GraphError, match=r"read_parquet\(\): batch_size must be an int >= 1, got -1"):
        env.read_parquet(str(tmp_path / "a.parquet"), batch_size=-1)
    with pytest.raises(GraphError, match=r"generate\(\): count must be an int >= 0"):
        env.generate(-3)
    with pytest.raises(GraphError, match=r"generate\(\): count must be an int >= 0"):
        env.generate(lambda i: i, count=-1)
    with pytest.raises(GraphError, match="from_collection.. expects an iterable of records, got int"):
        env.from_collection(5)
    with pytest.raises(GraphError, match="expects an engine.connectors.Source, got list"):
        env.from_source([1, 2, 3])


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    (tmp_path / "notes.parquet").write_text("hello\n")
    with pytest.raises(ConfigError, match=r"notes.parquet' is not a readable Parquet file"):
        ParquetSource(str(tmp_path / "notes.parquet"))
    pq.write_table(pa.table({"k": [1], "v": [2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"k": [3], "w": [4]}), tmp_path / "b.parquet")
    (tmp_path / "notes.parquet").unlink()
    with pytest.raises(ConfigError, match=r"columns \['v'\] are not in '.*b.parquet' \(has \['k', 'w'\]\)"):
        ParquetSource(str(tmp_path), columns=["k", "v"]).create_splits(1)  # (was read as records without 'v')


def test_a_null_or_text_timestamp_in_a_column_fails_naming_the_row_and_record():
    rb = pa.RecordBatch.from_pydict({"k": [1, 2, 3], "ts": [10, None, 30]})
    with pytest.raises(ConfigError, match=r"window aggregate: the timestamp column 'ts' is null in row 1 .*'ts': None"):
        timestamp_column(rb, "ts", "window aggregate")  # (became int64 min: the record dropped as late)
    text = pa.RecordBatch.from_pydict({"ts": ["abc"]})
    with pytest.raises(ConfigError, match=r"must hold integers \(ms\), Arrow timestamps or dates, got string"):
        timestamp_column(text, "ts", "demo")
    stamps = pa.RecordBatch.from_pydict({"ts": pa.array([1_000, 2_000], pa.timestamp("s"))})
    assert timestamp_column(stamps, "ts", "demo").tolist() == [1_000_000, 2_000_000]


def test_map_batches_returning_none_fails_instead_of_dropping_the_batch():
    op = MapBatchesOperator(lambda rb: None)
    op.open(None, _Out())
    with pytest.raises(UserCodeError) as info:
        op.process_batch(Batch.of_arrow(pa.RecordBatch.from_pydict({"a": [1, 2]})))
    assert "returned None" in str(info.value.original) and "batch.slice(0, 0)" in str(info.value.original)


def test_a_combinable_reduce_that_changes_the_key_fails_instead_of_merging_keys():
    out = _Out()
    op = LocalReduceOperator(KeySelector("k"), lambda a, b: {"k": "X", "v": a["v"] + b["v"]})
    op.open(None, out)
    op.process_batch(Batch.of_records([{"k": i % 2, "v": i} for i in range(6)]))
    with pytest.raises(UserCodeError) as info:
        op.end_input()
    assert "turned a partial of key 0 into one of key 'X'" in str(info.value.original)
    assert out.batches == []


def test_doctests_of_the_checks():
    from raystream.engine import records

    for module in (records, sources, time_module):
        assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0, module.__name__
