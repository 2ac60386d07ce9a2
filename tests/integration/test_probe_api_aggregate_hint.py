"""``aggregate(...)`` over dict records that lack a field it reads says the same at any
parallelism and batch cut: it names a record without the field and the remedy. Before, at
parallelism 1 a batch mixing records with and without the field was refused naming the
record ("reads field 'v', and record 1 of the batch has none: ...; give every record the
field (None for no value), or filter first"), but at parallelism 2 the shuffle (or a batch
cut) sent the records without it on alone, as typed columns, and the job only said
"column 'v' is not in the batch (columns: ['k', 'w'])".
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import JobFailed

HINT = (r"aggregate\(n=\('v', 'count'\)\) reads field 'v', and record \d+ of the batch has none: "
        r"\{'k': '[ab]', 'w': \d\}; give every record the field \(None for no value\), or filter first")


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("emit", ["updates", "final"])
@pytest.mark.parametrize("batch_size", [1, 1000])
@pytest.mark.parametrize("records", [
    [{"k": "a", "v": 1}, {"k": "a", "w": 2}, {"k": "b", "w": 3}],
    [{"k": "a", "w": 2}, {"k": "b", "v": 1}, {"k": "b", "w": 3}, {"k": "a", "v": 4}],
], ids=["tail-lacks", "mixed"])
def test_a_missing_field_names_the_record_and_the_remedy(parallelism, emit, batch_size, records):
    env = rs.StreamEnvironment(parallelism=parallelism, batch_size=batch_size)
    stream = env.from_collection(records).map(lambda r: r)  # (no columns known when the graph is built)
    stream.key_by("k").aggregate(n=("v", "count"), emit=emit).collect()
    with pytest.raises(JobFailed, match=r"operator 'aggregate[^']*' .*" + HINT):
        env.execute("missing field")


@pytest.mark.parametrize("parallelism", [1, 2])
def test_after_a_map_with_no_known_columns(parallelism):
    """Records that all lack the field, behind a map (no columns known at graph build time)."""
    env = rs.StreamEnvironment(parallelism=parallelism)
    stream = env.from_collection([{"k": "a", "w": 1}, {"k": "b", "w": 2}]).map(lambda r: r)
    stream.key_by("k").aggregate(n=("v", "count")).collect()
    with pytest.raises(JobFailed, match=r"operator 'aggregate' .*" + HINT):
        env.execute("missing field")


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("emit", ["updates", "final"])
def test_records_with_the_field_still_aggregate(parallelism, emit):
    records = [{"k": "ab"[i % 2], "v": i if i % 3 else None, "w": i} for i in range(20)]
    env = rs.StreamEnvironment(parallelism=parallelism, batch_size=3)
    got = env.from_collection(records).key_by("k").aggregate(n=("v", "count"), total=("v", "sum"), emit=emit)
    rows = got.execute_and_collect()
    final = {}
    for r in rows:
        final[r["k"]] = (r["n"], r["total"])
    want = {k: (sum(1 for r in records if r["k"] == k and r["v"] is not None),
                sum(r["v"] for r in records if r["k"] == k and r["v"] is not None)) for k in "ab"}
    assert final == want
