"""Tuple batches (statefun message records) decode exactly as their columns' ``to_pylist()``
zipped, whatever shortcut ``arrow_to_records`` takes: constant string and bool columns come
as one repeated value (``_tuple_column``), a string column is constant only when every row
holds the same value (``_constant_string`` compares the data with itself shifted by one value),
sliced batches read only their rows."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.engine.records import _constant_string, arrow_to_records, records_to_arrow

_TEXT = st.sampled_from(["", "a", "ab", "ba", "aba", "é", "ée", "a/b", "io.statefun.types/int"])


def _expected(rb: pa.RecordBatch) -> list[tuple]:
    return list(zip(*(c.to_pylist() for c in rb.columns)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_TEXT, _TEXT, st.booleans(), st.integers(-5, 5)), min_size=1, max_size=12),
    st.integers(0, 11),
    st.integers(0, 12),
)
def test_tuple_batches_decode_as_their_columns(rows: list[tuple], start: int, length: int) -> None:
    rb = records_to_arrow(rows)
    assert arrow_to_records(rb) == rows
    part = rb.slice(min(start, len(rows)), length)
    assert arrow_to_records(part) == _expected(part) == rows[min(start, len(rows)) :][:length]


@settings(max_examples=200, deadline=None)
@given(st.lists(_TEXT, min_size=2, max_size=9), st.integers(0, 8))
def test_a_string_column_is_one_value_only_when_every_row_holds_it(values: list[str], start: int) -> None:
    column = pa.array(values, pa.string()).slice(min(start, len(values) - 2))
    rows = column.to_pylist()
    expected = rows[0] if len(set(rows)) == 1 else None
    assert _constant_string(column, len(rows)) == expected


def test_periodic_data_of_another_period_is_not_one_value() -> None:
    # "abab" + "abab": the data is periodic (period 2) but the rows differ ("ab" "ab" vs "ba")
    assert _constant_string(pa.array(["ab", "ab", "ba", "ab"]), 4) is None
    assert _constant_string(pa.array(["aa", "aa", "aa"]), 3) == "aa"
    assert _constant_string(pa.array(["ab", "ab", "ab"]).slice(1), 2) == "ab"
    assert _constant_string(pa.array(["ab", "ab", "ac"]).slice(0, 2), 2) == "ab"


def test_a_message_batch_with_constant_columns_decodes_to_its_records() -> None:
    records = [("a/f", str(i % 3), "", "", "io.statefun.types/int", i, True) for i in range(50)]
    rb = records_to_arrow(records)
    out = arrow_to_records(rb)
    assert out == records
    assert all(type(r) is tuple and type(r[6]) is bool and type(r[5]) is int for r in out)
    fed_back = [("a/f", str(i), "b/g", "x", "io.statefun.types/string", "v", False) for i in range(20)]
    assert arrow_to_records(records_to_arrow(fed_back)) == fed_back
