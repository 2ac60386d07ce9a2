"""A job's ``execute_and_collect(as_table=True)`` gives the same table at parallelism 1 and 2
(rows in any order), or the same ConfigError naming a record; never pickle bytes."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import ConfigError


def _table(records, parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    return env.from_collection(records).rebalance().map(lambda r: r).execute_and_collect(as_table=True)


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize(("records", "schema", "values"), [
    ([1, 2.5], "value: double", [1.0, 2.5]),
    (["x", None], "value: string", ["x", None]),
    ([None, None], "value: null", [None, None]),
])
def test_scalar_records_make_one_value_column_at_any_parallelism(records, schema, values, parallelism):
    """At p=1 [1, 2.5] was a column of pickles, at p=2 doubles; ['x', None] at p=2 had a
    'value' and a 'record' column."""
    table = _table(records, parallelism)
    assert table.schema.to_string(show_schema_metadata=False) == schema
    assert sorted(table.column("value").to_pylist(), key=repr) == sorted(values, key=repr)


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("records", [[b"x", "y"], [{"a": 2**70}]])
def test_records_no_table_holds_exactly_are_refused(records, parallelism):
    """[b'x', 'y'] at p=2 gave a binary column where 'y' was b'y'; at p=1 pickle bytes."""
    with pytest.raises(ConfigError, match=r"as_table=True.*as_table=False"):
        _table(records, parallelism)
