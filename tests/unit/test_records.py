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
