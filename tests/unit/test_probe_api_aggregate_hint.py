"""``require_fields``: the vectorized aggregates' check that the records of a batch have the
fields they read, the same error for typed and pickled batches (see
tests/integration/test_probe_api_aggregate_hint.py)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from raystream.engine.errors import GraphError
from raystream.engine.records import Batch
from raystream.operators.arrow_aggregate import require_fields
from raystream.operators.keyed import AggregateOperator

WHERE = "aggregate(n=('v', 'count'))"
HINT = "give every record the field (None for no value), or filter first"


def test_typed_records_without_the_field_name_the_first_record():
    batch = Batch.of_records([{"k": "a", "w": 2}, {"k": "b", "w": 3}])
    with pytest.raises(GraphError) as info:
        require_fields(batch, WHERE, ["k", "v"])
    assert str(info.value) == f"{WHERE} reads field 'v', and record 0 of the batch has none: {{'k': 'a', 'w': 2}}; {HINT}"


def test_the_same_words_as_for_pickled_records():
    """Records of several shapes travel pickled; ``typed_columns`` names the one at fault
    in the same words."""
    mixed = Batch.of_records([{"k": "a", "v": 1}, {"k": "a", "w": 2}])
    with pytest.raises(GraphError) as pickled:
        mixed.typed_columns(WHERE, ["k", "v"])
    with pytest.raises(GraphError) as typed:
        require_fields(Batch.of_records([{"k": "a", "w": 2}]), WHERE, ["k", "v"])
    assert str(pickled.value).replace("record 1", "record 0") == str(typed.value)


def test_arrow_rows_without_the_column_and_a_lazy_name():
    batch = Batch.of_arrow(pa.record_batch({"k": ["a"], "w": [2]}))
    with pytest.raises(GraphError, match=r"^aggregate\(n=\('v', 'count'\)\) reads field 'v', and record 0"):
        require_fields(batch, AggregateOperator("k", {"n": ("v", "count")}, "updates")._describe, ["k", "v"])


@pytest.mark.parametrize("batch", [
    Batch.of_records([{"k": "a", "v": None}]),  # a null value: counted as none, not refused
    Batch.of_records([{"k": "a", "v": 1}, {"k": "a", "w": 2}]),  # pickled: typed_columns names the record
    Batch.of_records([]),
], ids=["null-value", "pickled", "empty"])
def test_what_it_leaves_alone(batch):
    require_fields(batch, WHERE, ["k", "v"])
