"""``execute_and_collect(as_table=True)`` of records that crossed the channels pickled to
stay exact gives the typed table those records used to give."""

from __future__ import annotations

import datetime as dt
import enum

import pyarrow as pa
import pytest

from raystream.engine.errors import ConfigError
from raystream.engine.records import records_to_arrow
from raystream.operators.sinks import collected_records, collected_table


class Level(enum.IntEnum):
    LOW = 1


def test_pickled_batches_become_typed_columns_and_the_records_stay_exact():
    utc = dt.timezone.utc
    records = [{"at": dt.datetime(2024, 1, 1, tzinfo=utc), "level": Level.LOW, "n": 1}]
    batches = [records_to_arrow(records), records_to_arrow([{"at": dt.datetime(2024, 1, 2, tzinfo=utc), "level": 2, "n": 2}])]
    table = collected_table(batches)
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert table.column("level").to_pylist() == [1, 2] and table.column("n").to_pylist() == [1, 2]
    assert collected_records(batches[:1]) == records and collected_records(batches[:1])[0]["level"] is Level.LOW


def test_records_of_no_tabular_form_are_refused_naming_one_never_pickled_bytes():
    """A field of an int and a list made a column of pickle bytes named 'record'."""
    with pytest.raises(ConfigError, match=r"as_table=True.*record \('b', \[1, 2\]\).*as_table=False"):
        collected_table([records_to_arrow([("a", 1), ("b", [1, 2])])])
    assert collected_table([]).num_rows == 0


def test_batches_of_several_schemas_make_one_table():
    """Two subtasks' batches: one of ints, one of floats, one of nulls, one without a field.
    ``pa.Table.from_batches`` failed with 'Schema at index 1 was different', after the job."""
    batches = [records_to_arrow(b) for b in ([{"a": 1}], [{"a": 2.5}], [{"a": None}], [{"b": "x"}])]
    table = collected_table(batches)
    assert table.to_pylist() == [{"a": 1.0, "b": None}, {"a": 2.5, "b": None}, {"a": None, "b": None},
                                 {"a": None, "b": "x"}]


def test_nested_dict_records_become_nested_columns():
    table = collected_table([records_to_arrow([{"a": 1, "tags": ["x", "y"]}, {"a": 2, "tags": []}])])
    assert table.to_pylist() == [{"a": 1, "tags": ["x", "y"]}, {"a": 2, "tags": []}]


def test_schemas_that_do_not_unify_fail_naming_both():
    with pytest.raises(ConfigError, match=r"as_table=True.*'value: int64' vs 'value: string'.*as_table=False"):
        collected_table([records_to_arrow([1]), records_to_arrow(["x"])])
