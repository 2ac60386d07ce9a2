"""``spill.estimate_bytes`` counts exactly ``RECORD_OVERHEAD`` per record plus each value's
``operator.length_hint`` (its length, or 0), whichever shortcut it takes for values of one
exact type: numbers and bools count nothing, str and bytes their length, anything else
(mixed kinds, subclasses with a length) as ``length_hint`` says."""

from __future__ import annotations

from operator import length_hint

from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.statefun_api.spill import RECORD_OVERHEAD, estimate_bytes


class _Sized(int):
    """An int subclass with a length: not counted as a plain int."""

    def __len__(self) -> int:
        return 7


class _Text(str):
    pass


_VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.builds(_Sized, st.integers(0, 9)),
    st.builds(_Text, st.text(max_size=5)),
)


def _records(values: list) -> list[tuple]:
    return [("f/a", str(i), "", "", "t/x", v, True) for i, v in enumerate(values)]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(_VALUES, max_size=12), st.integers(1, 12).flatmap(lambda n: _VALUES.map(lambda v: [v] * n))))
def test_estimate_is_overhead_plus_each_length(values: list) -> None:
    records = _records(values)
    assert estimate_bytes(records) == len(records) * RECORD_OVERHEAD + sum(length_hint(v) for v in values)


def test_values_of_one_type() -> None:
    assert estimate_bytes([]) == 0
    assert estimate_bytes(_records([1, 2, 3])) == 3 * RECORD_OVERHEAD
    assert estimate_bytes(_records([1.5, -0.0])) == 2 * RECORD_OVERHEAD
    assert estimate_bytes(_records(["ab", "é"])) == 2 * RECORD_OVERHEAD + 3
    assert estimate_bytes(_records([b"abcd", b""])) == 2 * RECORD_OVERHEAD + 4
    assert estimate_bytes(_records([_Sized(1), _Sized(2)])) == 2 * RECORD_OVERHEAD + 14
    assert estimate_bytes(_records([1, _Sized(2)])) == 2 * RECORD_OVERHEAD + 7
    assert estimate_bytes(_records([True, "abc"])) == 2 * RECORD_OVERHEAD + 3
