"""``execute_and_collect(as_table=True)`` of dict records with different keys in one batch:
every key of every record is a column (first-seen order), null where a record lacks it."""

from __future__ import annotations

from raystream.engine.records import records_to_arrow
from raystream.operators.sinks import collected_table


def test_every_key_of_every_record_is_a_column_in_first_seen_order():
    """``pa.Table.from_pylist`` took the columns from the first record: b=2 and c='x' were lost."""
    table = collected_table([records_to_arrow([{"a": 1}, {"b": 2}, {"a": 3, "c": "x"}])])
    assert table.column_names == ["a", "b", "c"]
    assert table.to_pylist() == [{"a": 1, "b": None, "c": None}, {"a": None, "b": 2, "c": None},
                                 {"a": 3, "b": None, "c": "x"}]


def test_uniform_pickled_dicts_keep_their_columns_and_types():
    """Dicts of one key set that travel pickled (nested values) come out as before."""
    table = collected_table([records_to_arrow([{"k": 1, "tags": ["x"]}, {"k": 2, "tags": []}])])
    assert table.column_names == ["k", "tags"] and table.to_pylist()[1] == {"k": 2, "tags": []}


def test_batches_of_different_keys_unify_across_batches_too():
    batches = [records_to_arrow([{"a": 1}, {"b": 2.5}]), records_to_arrow([{"c": "x"}, {"a": 4, "b": 1}])]
    table = collected_table(batches)
    assert sorted(table.column_names) == ["a", "b", "c"]
    assert sorted(table.to_pylist(), key=repr) == sorted(
        [{"a": 1, "b": None, "c": None}, {"a": None, "b": 2.5, "c": None},
         {"a": None, "b": None, "c": "x"}, {"a": 4, "b": 1.0, "c": None}], key=repr)
