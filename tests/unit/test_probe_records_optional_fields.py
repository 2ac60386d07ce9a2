"""Dict records whose fields differ (an optional field some records have, a nested field)
under the operators that compute over columns: ``aggregate()`` reads only its key and
value fields, and ``map_batches`` gets a column for every field, null where a record lacks
it, so neither depends on where the batches were cut."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import GraphError
from raystream.engine.local_runtime import run_in_process
from raystream.engine.records import KIND_KEY, Batch, arrow_to_records, records_to_arrow
from raystream.operators.sinks import collected_records

OPTIONAL = [{"k": "a", "v": 1}, {"k": "a", "v": 2, "note": "late"}, {"k": "b", "v": 3}, {"k": "b", "v": 4}]


def _run(env: rs.StreamEnvironment) -> list:
    result = run_in_process(env.get_job_graph(), JobConfig(name="optional-fields"), timeout_s=120)
    [batches] = result["results"].values()
    return collected_records(batches)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8192])
@pytest.mark.parametrize("emit", ["final", "updates"])
def test_aggregate_of_records_with_an_optional_field_at_any_batch_size(batch_size: int, emit: str) -> None:
    """Before: a batch holding records with and without 'note' failed the job (the record's
    keys differ), a batch of only one kind did not."""
    env = rs.StreamEnvironment(parallelism=1)
    (env.from_collection(OPTIONAL, batch_size=batch_size).key_by("k")
     .aggregate(total=("v", "sum"), n=("v", "count"), emit=emit).collect())
    last = {r["k"]: r for r in _run(env)}
    assert last == {"a": {"k": "a", "total": 3, "n": 2}, "b": {"k": "b", "total": 7, "n": 2}}


@pytest.mark.parametrize("emit", ["final", "updates"])
def test_aggregate_ignores_a_nested_field_it_does_not_read(emit: str) -> None:
    """Before: column 'tags' holds list values (nested) failed the job."""
    records = [{"k": "a", "v": 1, "tags": ["x"]}, {"k": "b", "v": 2, "tags": []}, {"k": "a", "v": 5, "tags": {"y": 1}}]
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection(records).key_by("k").aggregate(total=("v", "sum"), emit=emit).collect()
    last = {r["k"]: r["total"] for r in _run(env)}
    assert last == {"a": 6, "b": 2}


def test_a_record_without_the_aggregated_field_is_named_whatever_its_batch() -> None:
    rows = [{"k": "a", "v": 1, "tags": [1]}, {"k": "a", "tags": [2]}]
    with pytest.raises(GraphError, match=r"reads field 'v', and record 1 of the batch has none: \{'k': 'a', 'tags': \[2\]\}"):
        Batch.of_records(rows).typed_columns("aggregate(n=('v', 'count'))", ["k", "v"])
    with pytest.raises(GraphError, match=r"reads field 'k', and record 0"):
        Batch.of_records([{"v": 1}, {"k": "a", "v": 2}]).typed_columns("aggregate(n=('v', 'count'))", ["k", "v"])


def test_a_field_it_reads_of_two_types_is_still_refused_naming_it() -> None:
    rows = [{"k": "a", "v": 1, "tags": [1]}, {"k": "a", "v": "x", "tags": [2]}]
    with pytest.raises(GraphError, match=r"column 'v' mixes int and str \(record 1 of the batch"):
        Batch.of_records(rows).typed_columns("aggregate(n=('v', 'count'))", ["k", "v"])


@pytest.mark.parametrize("batch_size", [1, 2, 8192])
def test_map_batches_gets_every_field_null_where_a_record_lacks_it(batch_size: int) -> None:
    """Before: a mixed batch reached the function as one pickled 'record' column."""
    env = rs.StreamEnvironment(parallelism=1)
    (env.from_collection(OPTIONAL, batch_size=batch_size)
     .map_batches(lambda b: b.select(["k", "v"]).filter(pc.greater(b["v"], 1)))
     .collect())
    assert _run(env) == [{"k": "a", "v": 2}, {"k": "b", "v": 3}, {"k": "b", "v": 4}]


def test_channels_still_send_such_records_as_they_were() -> None:
    """A channel keeps the records exact (a missing field is not a None field)."""
    rb = records_to_arrow(OPTIONAL)
    assert rb.schema.metadata[KIND_KEY] == b"pickle"
    assert arrow_to_records(rb) == OPTIONAL
    columns = Batch.of_records(OPTIONAL).columns()
    assert columns.schema.names == ["k", "v", "note"]
    assert columns.column(2).to_pylist() == [None, "late", None, None]
