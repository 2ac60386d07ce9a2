"""Arrow batches with string_view / binary_view columns (what Polars makes) from a source's
``batch_fn`` or a ``map_batches`` function: before, keying or splitting them failed deep in
Arrow (ArrowNotImplementedError: Function 'array_take' has no kernel matching input types
(string_view, int64)); they now enter the engine as string / binary columns."""

from __future__ import annotations

import collections

import pyarrow as pa
import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.engine.records import Batch
from raystream.operators.sinks import collected_records

N = 300


def _table(idx: range) -> pa.Table:
    t = pa.Table.from_pylist([{"k": f"k{i % 7}", "b": b"x%d" % (i % 3), "v": i} for i in idx])
    return t.set_column(0, "k", t.column("k").cast(pa.string_view())).set_column(
        1, "b", t.column("b").cast(pa.binary_view()))


def _expected() -> dict:
    out: collections.Counter = collections.Counter()
    for i in range(N):
        out[f"k{i % 7}"] += i
    return dict(out)


def _run(env: rs.StreamEnvironment) -> list:
    result = run_in_process(env.get_job_graph(), JobConfig(name="view-columns"), timeout_s=120)
    [batches] = result["results"].values()
    return collected_records(batches)


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("how", ["sum", "aggregate", "reduce"])
def test_keyed_by_a_string_view_column(parallelism: int, how: str) -> None:
    env = rs.StreamEnvironment(parallelism=parallelism)
    keyed = env.generate(batch_fn=_table, count=N, batch_size=40).key_by("k")
    if how == "sum":
        out = keyed.sum("v", emit="final")
    elif how == "aggregate":
        out = keyed.aggregate(v=("v", "sum"), emit="final")
    else:
        out = keyed.reduce(lambda a, b: {**a, "v": a["v"] + b["v"]}, emit="final")
    out.collect()
    rows = _run(env)
    assert {r["k"]: r["v"] for r in rows} == _expected() and len(rows) == 7
    assert {type(r["k"]) for r in rows} == {str}


def test_a_map_batches_function_returning_views_feeds_a_shuffle() -> None:
    env = rs.StreamEnvironment(parallelism=2)
    (env.from_collection(list(range(N)))
     .map_batches(lambda b: _table(b["value"].to_pylist()))
     .rebalance().map(lambda r: (r["k"], r["b"], r["v"]))
     .collect())
    assert sorted(_run(env)) == sorted((f"k{i % 7}", b"x%d" % (i % 3), i) for i in range(N))


def test_view_columns_become_string_and_binary() -> None:
    b = Batch.of_arrow(_table(range(3)))
    assert b.arrow().schema.types == [pa.string(), pa.binary(), pa.int64()]
    assert b.records()[0] == {"k": "k0", "b": b"x0", "v": 0}
