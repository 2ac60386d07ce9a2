"""What a ``flat_map`` function returns is an iterable of records (a list, a tuple, a generator,
any iterable) or None.

``stream.flat_map(fn)`` and ``a.connect(b).flat_map(fn1, fn2)`` whose function *returned* one
record had it iterated: a dict came out as its keys, a str as its characters and bytes as
ints, silently (an int failed with a bare "'int' object is not iterable"). Process functions
refuse this since 74bb87c; now flat_map does too, naming the function, the record and the
remedy (``list(s)`` for a str's characters). Operator harness, no Ray.
"""

from __future__ import annotations

import pytest

from raystream.engine.errors import UserCodeError
from raystream.operators.basic import FlatMapOperator
from raystream.operators.connected import _CoFlatMap
from raystream.operators.testing import OperatorHarness
from raystream.operators.two_input import CoProcessOperator

ONE_RECORD = [{"k": "a", "v": 1}, "ab", b"ab", 5]


def _message(what: str, result: object) -> str:
    return (f"{what} returned a {type(result).__name__} ({result!r}), not an iterable of records: return a list "
            "of records ([record] for one; list(s) for a str's characters), yield them, or return None for none")


@pytest.mark.parametrize("result", ONE_RECORD)
def test_flat_map_returning_one_record_fails_naming_the_function_and_the_record(result):
    def explode(r):
        return result

    h = OperatorHarness(FlatMapOperator(explode))
    with pytest.raises(UserCodeError) as info:
        h.process([("a", 1)])
    assert str(info.value.original) == _message("flat_map function 'explode'", result)
    assert info.value.record == ("a", 1)
    assert h.take() == []


@pytest.mark.parametrize("result", ONE_RECORD)
def test_connected_flat_map_returning_one_record_fails_naming_the_function(result):
    def first(r):
        return result

    def second(r):
        return result

    for index, what in [(0, "flat_map fn1 'first'"), (1, "flat_map fn2 'second'")]:
        h = OperatorHarness(CoProcessOperator(_CoFlatMap(first, second)))
        with pytest.raises(UserCodeError) as info:
            h.process([("a", 1)], index)
        assert str(info.value.original) == _message(what, result)
        assert info.value.record == ("a", 1)


def test_iterables_and_none_are_records():
    def many(r):
        kind, n = r
        if kind == "list":
            return [(kind, i) for i in range(n)]
        if kind == "tuple":
            return tuple((kind, i) for i in range(n))
        if kind == "gen":
            return ((kind, i) for i in range(n))
        if kind == "range":
            return range(n)
        if kind == "iter":
            return iter([(kind, i) for i in range(n)])
        if kind == "words":
            return "x y".split()
        return None

    records = [("list", 2), ("tuple", 1), ("gen", 2), ("range", 2), ("iter", 1), ("none", 3), ("words", 0)]
    h = OperatorHarness(FlatMapOperator(many))
    h.process(records)
    assert h.take() == [("list", 0), ("list", 1), ("tuple", 0), ("gen", 0), ("gen", 1), 0, 1, ("iter", 0), "x", "y"]
    co = OperatorHarness(CoProcessOperator(_CoFlatMap(many, many)))
    co.process(records, 0)
    co.process([("gen", 1), ("none", 1)], 1)
    assert co.take() == [("list", 0), ("list", 1), ("tuple", 0), ("gen", 0), ("gen", 1), 0, 1, ("iter", 0), "x", "y",
                         ("gen", 0)]


def test_a_generator_function_yielding_dicts_and_strs_is_fine():
    def rows(r):
        yield {"k": r}
        yield r * 2

    h = OperatorHarness(FlatMapOperator(rows))
    h.process(["a", "b"])
    assert h.take() == [{"k": "a"}, "aa", {"k": "b"}, "bb"]
