import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from raystream.engine.records import KIND_KEY, Batch, arrow_to_records, records_to_arrow

scalars = st.one_of(st.integers(-(2**62), 2**62), st.text(max_size=8), st.booleans(), st.binary(max_size=8))


@given(st.lists(st.one_of(scalars, st.tuples(scalars, scalars), st.dictionaries(st.text(max_size=3), scalars, max_size=3), st.none()), max_size=30))
def test_any_records_round_trip(records):
    assert arrow_to_records(records_to_arrow(records)) == records


def test_uniform_records_are_typed():
    rb = records_to_arrow([{"w": "a", "n": 1}, {"w": "b", "n": 2}])
    assert rb.schema.metadata[KIND_KEY] == b"row"
    assert rb.schema.field("n").type == pa.int64()
    assert records_to_arrow([1, 2]).schema.metadata[KIND_KEY] == b"scalar"
    assert records_to_arrow([("a", 1)]).schema.metadata[KIND_KEY] == b"tuple"


def test_dicts_with_different_keys_are_not_silently_truncated():
    records = [{"a": 1}, {"a": 2, "b": 3}]
    assert arrow_to_records(records_to_arrow(records)) == records


def test_lambdas_are_pickled_with_cloudpickle():
    fn = lambda x: x + 1  # noqa: E731
    back = arrow_to_records(records_to_arrow([fn]))
    assert back[0](1) == 2


def test_batch_converts_lazily_once():
    b = Batch.of_records([1, 2, 3])
    assert not b.is_arrow
    rb = b.arrow()
    assert b.arrow() is rb
    assert len(Batch.of_arrow(rb)) == 3


def _typed(value):
    """A value with the types of its parts (== alone takes 1 for 1.0 and True)."""
    if isinstance(value, dict):
        return ("dict", [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, tuple):
        return ("tuple", [_typed(v) for v in value])
    return (type(value).__name__, value)


_values = st.one_of(scalars, st.floats(allow_nan=False), st.none())


@given(st.lists(st.one_of(_values, st.tuples(_values, _values), st.dictionaries(st.sampled_from("abc"), _values, max_size=3)),
                max_size=30))
def test_round_trip_keeps_every_value_type_and_key_order(records):
    """Mixed ints/floats/bools in one column, dicts of one length with other keys or in
    another key order, tuples of one length with other types: every record comes back
    with its own types (typed columns only where that is exact, else pickled)."""
    back = arrow_to_records(records_to_arrow(records))
    assert [_typed(r) for r in back] == [_typed(r) for r in records]


def test_dicts_of_one_length_with_other_keys_are_kept():
    records = [{"a": 1, "b": 2}, {"a": 3, "c": 4}, {"b": 5, "a": 6}]
    assert [list(r.items()) for r in arrow_to_records(records_to_arrow(records))] == [list(r.items()) for r in records]


def test_numeric_columns_come_back_as_python_values():
    rb = pa.RecordBatch.from_pydict({
        "f32": pa.array([1.5, 2.25], pa.float32()), "u64": pa.array([1, 2**64 - 1], pa.uint64()),
        "b": [True, False], "i8": pa.array([-1, 5], pa.int8()), "n": pa.array([1, None], pa.int64()),
    }).slice(1)
    got = arrow_to_records(rb)
    assert got == rb.to_pylist()
    assert [type(v) for v in got[0].values()] == [float, int, bool, int, type(None)]


def test_tuple_columns():
    from raystream.engine.records import tuple_columns

    assert tuple_columns([("a", 1, None), ("b", 2, 3.5)], 3) == [["a", "b"], [1, 2], [None, 3.5]]
    assert tuple_columns([], 2) == [[], []]


def test_string_columns_of_one_value_decode_to_one_shared_object():
    records = [("same", f"id{i}", "") for i in range(50)]
    back = arrow_to_records(records_to_arrow(records))
    assert back == records
    assert len({id(r[0]) for r in back}) == 1 and len({id(r[2]) for r in back}) == 1
    rows = [{"w": "ü✓", "n": i} for i in range(10)]
    assert arrow_to_records(records_to_arrow(rows)) == rows


def test_string_columns_with_nulls_or_different_values_in_between():
    rows = [{"w": "a", "n": 1}, {"w": None, "n": 2}, {"w": "a", "n": 3}]
    assert arrow_to_records(records_to_arrow(rows)) == rows
    records = [("a", 1), ("b", 2), ("a", 3)]  # first == last, not one value throughout
    assert arrow_to_records(records_to_arrow(records)) == records
    plain = pa.RecordBatch.from_pydict({"s": pa.array(["x", "x", "x"]), "big": pa.array(["y" * 100_000] * 2 + [None])})
    assert arrow_to_records(plain) == [{"s": "x", "big": "y" * 100_000}, {"s": "x", "big": "y" * 100_000},
                                       {"s": "x", "big": None}]
    assert arrow_to_records(plain.slice(0, 0)) == []


@given(st.lists(st.tuples(st.sampled_from(["a", "é", "", "🙂"]), st.sampled_from(["a", "a", "b"]), scalars), max_size=30))
def test_tuples_of_few_distinct_strings_round_trip(records):
    back = arrow_to_records(records_to_arrow(records))
    assert [tuple((type(v), v) for v in r) for r in back] == [tuple((type(v), v) for v in r) for r in records]


@given(
    st.lists(st.sampled_from(["", "a", "aa", "ab", "b", "aaa", "é", "ab\x00"]), min_size=0, max_size=12),
    st.integers(0, 3),
    st.integers(0, 3),
)
def test_string_and_bool_columns_read_back_exactly_sliced_or_not(values, before, after) -> None:
    """The fast paths for a column of one value throughout (read on the Arrow buffers) give
    what ``to_pylist`` gives, on slices too (a non-zero offset into shared buffers)."""
    from raystream.engine.records import _pylist

    column = pa.array(["x"] * before + values + ["y"] * after, pa.string()).slice(before, len(values))
    assert _pylist(column) == values
    flags = pa.array([True] * before + [v == "a" for v in values] + [False] * after).slice(before, len(values))
    assert _pylist(flags) == [v == "a" for v in values]
