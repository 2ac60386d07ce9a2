"""records -> Arrow without a per-value type check for columns whose inferred Arrow type
proves their values were of one Python type (int64, bool, string), and with it for the
others (double, binary: pyarrow would coerce ints or str)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raystream.engine.records import KIND_KEY, arrow_to_records, records_to_arrow


def _typed(records: list) -> list:
    return [[(k, type(v), v) for k, v in r.items()] if isinstance(r, dict) else [(type(v), v) for v in r]
            for r in records]


@pytest.mark.parametrize("records", [
    [{"a": 1, "b": "x", "c": True}, {"a": None, "b": None, "c": False}],
    [(1, "x", False), (2, "y", None)],
])
def test_int_bool_string_columns_are_typed_without_a_per_value_check(records):
    rb = records_to_arrow(records)
    assert rb.schema.metadata[KIND_KEY] in (b"row", b"tuple")
    assert [f.type for f in rb.schema] == [pa.int64(), pa.string(), pa.bool_()]
    assert _typed(arrow_to_records(rb)) == _typed(records)


@pytest.mark.parametrize("records", [
    [{"v": 1}, {"v": 2.5}],  # pyarrow would make a double column: 1 -> 1.0
    [{"v": 2.5}, {"v": True}],
    [{"v": b"x"}, {"v": "y"}],  # a binary column: "y" -> b"y"
    [(1.5, "a"), (2, "b")],
    [("a", b"x"), ("b", "y")],
])
def test_columns_that_arrow_would_coerce_keep_their_python_types(records):
    back = arrow_to_records(records_to_arrow(records))
    assert _typed(back) == _typed(records)


def test_numpy_integers_among_ints_come_back_as_ints():
    """As a column of numpy integers alone always did (int64 is exact for their values)."""
    records = [{"v": 1}, {"v": np.int64(2)}, {"v": np.int32(3)}]
    back = arrow_to_records(records_to_arrow(records))
    assert back == [{"v": 1}, {"v": 2}, {"v": 3}]
    assert {type(r["v"]) for r in back} == {int}
