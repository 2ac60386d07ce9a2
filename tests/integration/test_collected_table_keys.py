"""A job's ``execute_and_collect(as_table=True)`` keeps every field of dict records whose keys
differ within a batch (a field a record lacks is null there), at parallelism 1 and 2."""

from __future__ import annotations

import pytest

import raystream as rs


@pytest.mark.parametrize("parallelism", [1, 2])
def test_as_table_keeps_every_field_of_every_record(parallelism):
    records = [{"a": 1}, {"b": 2}, {"a": 3, "c": "x"}]
    table = rs.StreamEnvironment(parallelism=parallelism).from_collection(records).execute_and_collect(as_table=True)
    assert sorted(table.column_names) == ["a", "b", "c"]
    rows = [{k: v for k, v in row.items() if v is not None} for row in table.to_pylist()]
    assert sorted(rows, key=repr) == sorted(records, key=repr)
