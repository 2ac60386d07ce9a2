"""String columns decoded to Python values (engine.records._pylist): a column of one value
throughout comes back as that value repeated (one shared object), any other column exactly as
``to_pylist()`` gives it: values of one width that differ only in the middle or at the end,
sliced columns, and the columns of the statefun message batches."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from raystream.engine.records import _constant_string, _pylist, arrow_to_records


def _check(values: list[str], start: int = 0, stop: int | None = None) -> None:
    column = pa.array(values, pa.string()).slice(start, None if stop is None else stop - start)
    expected = column.to_pylist()
    assert _pylist(column) == expected
    if len(expected) > 1:
        one = expected[0] if len(set(expected)) == 1 else None
        assert _constant_string(column, len(expected)) == one


def test_fixed_width_values_that_differ_anywhere_are_not_one_value():
    same = ["k00001"] * 50
    _check(same)
    for i in (0, 1, 2, 25, 48, 49):
        values = list(same)
        values[i] = "k00002"
        _check(values)
        _check(values, 1, 49)  # (sliced: the differing value at an edge of the slice or outside)
        _check(values, 2, 50)


def test_one_value_throughout_is_one_shared_object():
    column = pa.array(["bench/counter"] * 300)
    out = _pylist(column)
    assert out == ["bench/counter"] * 300 and all(v is out[0] for v in out)
    assert _pylist(pa.array(["a", "b"] * 3).slice(1, 1)) == ["b"]


def test_message_batch_columns_decode_as_their_tuples():
    ids = [f"k{i:05d}" for i in range(1000)]
    rb = pa.RecordBatch.from_arrays(
        [pa.array(["a/f"] * 1000), pa.array(ids), pa.array([""] * 1000), pa.array([""] * 1000),
         pa.array(["io.statefun.types/int"] * 1000), pa.array(range(1000)), pa.array([True] * 1000)],
        [f"f{i}" for i in range(7)],
    ).replace_schema_metadata({b"raystream.kind": b"tuple"})
    assert arrow_to_records(rb) == [("a/f", k, "", "", "io.statefun.types/int", i, True) for i, k in enumerate(ids)]


@given(st.lists(st.sampled_from(["", "a", "b", "ab", "ba", "é", "aé"]), min_size=2, max_size=40), st.data())
def test_any_string_column_decodes_as_to_pylist(values, data):
    start = data.draw(st.integers(0, len(values) - 2))
    stop = data.draw(st.integers(start + 2, len(values)))
    _check(values, start, stop)
    _check(values)
