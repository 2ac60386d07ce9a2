"""What a process function returns is an iterable of records (a generator, a list) or None.

A ``KeyedProcessFunction``, ``CoProcessFunction``, ``KeyedCoProcessFunction``,
``BroadcastProcessFunction`` or ``ProcessJoinFunction`` that *returned* one record (a dict, a
str, bytes) instead of yielding it had it iterated: a dict came out as its keys and a str as
its characters, silently; an int failed with a bare "'int' object is not iterable". Every one
of them now fails naming the method, the function and the fix (``ProcessFunction`` did since
2fdb61b/72ac68a); the operator's error names the record or the timer. Operator harness, no Ray.
"""

from __future__ import annotations

import pytest

from raystream.engine.errors import UserCodeError
from raystream.engine.partitioners import KeySelector
from raystream.operators.functions import (
    BroadcastProcessFunction,
    CoProcessFunction,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
)
from raystream.operators.keyed import KeyedProcessOperator
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.two_input import (
    BroadcastProcessOperator,
    CoProcessOperator,
    KeyedCoProcessOperator,
)

TS1 = TimestampAssigner(column=1)
NOT_RECORDS = [{"k": "a", "v": 1}, "ab", b"ab", 5]


def message(method: str, fn: object, result: object) -> str:
    return (f"{method}() of {type(fn).__name__} returned a {type(result).__name__}, not an iterable of records: "
            "yield each record (or return a list of them: [record] for one)")


@pytest.mark.parametrize("result", NOT_RECORDS)
def test_keyed_process_element_returning_one_record(result):
    class Echo(KeyedProcessFunction):
        def process_element(self, value, ctx):
            return result

    fn = Echo()
    h = OperatorHarness(KeyedProcessOperator(KeySelector(0), fn, TS1))
    with pytest.raises(UserCodeError) as info:
        h.process([("a", 1)])
    assert str(info.value.original) == message("process_element", fn, result)
    assert info.value.record == ("a", 1)
    assert h.take() == []


@pytest.mark.parametrize("result", NOT_RECORDS)
def test_keyed_on_timer_returning_one_record(result):
    class Later(KeyedProcessFunction):
        def process_element(self, value, ctx):
            ctx.timer_service().register_event_time_timer(10)

        def on_timer(self, timestamp, ctx):
            return result

    fn = Later()
    h = OperatorHarness(KeyedProcessOperator(KeySelector(0), fn, TS1))
    h.process([("a", 1)])
    with pytest.raises(UserCodeError) as info:
        h.advance_watermark(20)
    assert str(info.value.original) == message("on_timer", fn, result)
    assert info.value.record == "on_timer(key='a', time=10)"


@pytest.mark.parametrize("result", NOT_RECORDS)
def test_two_input_process_functions_returning_one_record(result):
    class Co(CoProcessFunction):
        def process_element1(self, value, ctx):
            return result

        def process_element2(self, value, ctx):
            return result

    class KeyedCo(KeyedCoProcessFunction):
        def process_element1(self, value, ctx):
            return result

        def process_element2(self, value, ctx):
            return result

    class Broadcast(BroadcastProcessFunction):
        def process_broadcast_element(self, value, ctx):
            return result

        def process_element(self, value, ctx):
            return result

    for op, fn in [(CoProcessOperator(f := Co()), f),
                   (KeyedCoProcessOperator(f := KeyedCo(), (KeySelector(0), KeySelector(0)), (TS1, TS1)), f),
                   (BroadcastProcessOperator(f := Broadcast(), ["rules"]), f)]:
        for index, method in [(0, "process_element1"), (1, "process_element2")]:
            if isinstance(fn, Broadcast):
                method = "process_element" if index == 0 else "process_broadcast_element"
            h = OperatorHarness(op)
            with pytest.raises(UserCodeError) as info:
                h.process([("a", 1)], index)
            assert str(info.value.original) == message(method, fn, result), (type(fn).__name__, index)


def test_generators_lists_and_none_are_records():
    class Many(KeyedProcessFunction):
        def process_element(self, value, ctx):
            if value[1] == 0:
                return [("list", value[0])]
            if value[1] == 1:
                return None
            return (("gen", value[0], i) for i in range(2))

    h = OperatorHarness(KeyedProcessOperator(KeySelector(0), Many(), TS1))
    h.process([("a", 0), ("b", 1), ("c", 2)])
    assert h.take() == [("list", "a"), ("gen", "c", 0), ("gen", "c", 1)]
