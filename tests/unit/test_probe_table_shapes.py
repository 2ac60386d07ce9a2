"""``execute_and_collect(as_table=True)`` (``collected_table``) gives a table that depends only
on the records, never on how they were cut into batches: the same records in one batch or
one batch each make the same table, or the same ConfigError naming a record; never a column
of pickle bytes, never a str made bytes."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from raystream.engine.errors import ConfigError
from raystream.engine.records import records_to_arrow
from raystream.operators.sinks import collected_table


def _cuts(records):
    """The records in one batch, and in one batch each."""
    return [[records_to_arrow(list(records))], [records_to_arrow([r]) for r in records]]


@pytest.mark.parametrize(("records", "schema", "rows"), [
    ([1, 2.5], "value: double", [1.0, 2.5]),
    ([None, None], "value: null", [None, None]),
    (["x", None], "value: string", ["x", None]),
    ([None, 1], "value: int64", [None, 1]),
    ([{"a": 1}, {"a": 2.5, "b": "x"}], "a: double\nb: string", [{"a": 1.0, "b": None}, {"a": 2.5, "b": "x"}]),
    ([{"a": [1]}, {"a": [2.5]}], "a: list<item: double>\n  child 0, item: double", [{"a": [1.0]}, {"a": [2.5]}]),
    ([("a", 1), ("b", None)], "f0: string\nf1: int64", [{"f0": "a", "f1": 1}, {"f0": "b", "f1": None}]),
])
def test_the_table_of_records_does_not_depend_on_the_batch_cuts(records, schema, rows):
    """[1, 2.5] in one batch was a 'record' column of pickle bytes, in two a double column;
    [None, None] pickle bytes; ['x', None] in two batches a 'value' and a 'record' column."""
    for batches in _cuts(records):
        table = collected_table(batches)
        assert table.schema.to_string(show_schema_metadata=False) == schema
        got = table.to_pylist()
        assert (got if isinstance(rows[0], dict) or "value" not in table.column_names
                else [r["value"] for r in got]) == rows


@pytest.mark.parametrize(("records", "named"), [
    ([b"x", "y"], r"'y'"),
    ([{"a": b"x"}, {"a": "y"}], r"'y'"),
    ([{"a": 2**70}], r"1180591620717411303424"),
    ([True, 1], r"1"),
    ([2**53 + 1, 0.5], r"0\.5|9007199254740993"),
    ([1, {"a": 1}], r"\{'a': 1\}"),
    ([{"value": 1}, 2], r"2"),
    ([("a", 1), ("b",)], r"\('b',\)"),
    ([1, object()], r"object"),
])
def test_records_no_exact_table_holds_are_refused_at_every_cut(records, named):
    """b'x' and 'y' in two batches became a binary column (the str silently b'y'); in one
    batch, and 2**70 or an object anywhere, a column of pickle bytes."""
    for batches in _cuts(records):
        with pytest.raises(ConfigError, match=rf"as_table=True.*({named}).*as_table=False"):
            collected_table(batches)


def test_empty_batches_add_no_column():
    """An empty batch of a subtask that got no record added a 'record' column."""
    batches = [records_to_arrow([]), records_to_arrow(["x"]), records_to_arrow([])]
    assert collected_table(batches).to_pylist() == [{"value": "x"}]


def test_datetimes_of_several_zones_take_the_first_zone_at_every_cut():
    """In one batch they made a column in the first record's zone; in one batch each the
    batches did not unify (a ConfigError)."""
    plus1 = dt.timezone(dt.timedelta(hours=1))
    records = [dt.datetime(2024, 1, 1, tzinfo=plus1), dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)]
    for batches in _cuts(records):
        table = collected_table(batches)
        assert table.schema.field("value").type == pa.timestamp("us", tz="+01:00")
        assert table.column("value").to_pylist() == records
