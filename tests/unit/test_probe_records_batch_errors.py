"""A ``map_batches`` function that returns columns Arrow cannot make one batch of fails the
job naming the operator, the column and the remedy (before: Arrow's bare "only handle
1-dimensional arrays" / "Arrays were not all the same length", naming no column)."""

from __future__ import annotations

import numpy as np
import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobFailed
from raystream.engine.local_runtime import run_in_process


def _fails(fn, batch_format: str = "numpy") -> str:
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection([{"a": 1}, {"a": 2}]).map_batches(fn, batch_format=batch_format).collect()
    with pytest.raises(JobFailed) as info:
        run_in_process(env.get_job_graph(), JobConfig(name="batch-errors"), timeout_s=120)
    return str(info.value)


def test_a_two_dimensional_column_is_named_with_its_shape() -> None:
    msg = _fails(lambda d: {"a": d["a"], "m": np.zeros((len(d["a"]), 3))})
    assert "map_batches" in msg and "column 'm' as a numpy array of shape (2, 3)" in msg
    assert "list(m)" in msg


def test_columns_of_different_lengths_are_named_with_their_lengths() -> None:
    msg = _fails(lambda d: {"a": d["a"], "b": [1]})
    assert "columns of different lengths: {'a': 2, 'b': 1}" in msg


def test_a_column_of_mixed_values_is_named() -> None:
    msg = _fails(lambda b: {"a": [1, "x"]}, batch_format="pyarrow")
    assert "returned column 'a' that Arrow cannot hold as one typed column" in msg


def test_good_columns_still_make_a_batch() -> None:
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection([{"a": 1}, {"a": 2}]).map_batches(
        lambda d: {"a": d["a"] * 2, "rows": [np.arange(2), np.arange(3)]}, batch_format="numpy").collect()
    result = run_in_process(env.get_job_graph(), JobConfig(name="batch-ok"), timeout_s=120)
    [batches] = result["results"].values()
    from raystream.operators.sinks import collected_records
    assert collected_records(batches) == [{"a": 2, "rows": [0, 1]}, {"a": 4, "rows": [0, 1, 2]}]
