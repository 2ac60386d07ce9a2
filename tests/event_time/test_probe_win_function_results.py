"""A window function returns an iterable of records (or yields them, or returns None).
One that returns a single record instead (a dict, a str) or a non-iterable fails the job
with a ConfigError naming the function and the remedy. Before, the dict's keys (the str's
characters) were emitted as records, silently, and an int failed with a bare
"'int' object is not iterable"."""

from __future__ import annotations

import pytest

from raystream.engine.errors import ConfigError, UserCodeError
from raystream.engine.partitioners import KeySelector
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_operator import AGGREGATE, LIST, WindowOperator
from raystream.operators.windowed_stream import _ApplyFunction
from raystream.operators.windows import (
    ProcessWindowFunction,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)
from tests.event_time.test_windows import Avg

TS = TimestampAssigner(column="ts")
ROWS = [{"key": "a", "value": 1, "ts": 1}, {"key": "a", "value": 3, "ts": 2}]


class ReturnsOneDict(ProcessWindowFunction):
    def process(self, key, context, elements):
        return {"key": key, "n": len(list(elements))}


def one_per_window(key, window, records):
    return {"key": key, "n": len(records)}


@pytest.mark.parametrize("assigner", [TumblingEventTimeWindows.of(10), SlidingEventTimeWindows.of(10, 5)])
@pytest.mark.parametrize("function,name", [(ReturnsOneDict(), "ReturnsOneDict.process()"),
                                           (_ApplyFunction(one_per_window), "apply() function 'one_per_window'")])
def test_a_window_function_returning_one_dict_fails_naming_it(state_backend, assigner, function, name):
    op = WindowOperator(KeySelector("key").key_of, assigner, LIST, None, function, timestamp_assigner=TS)
    h = OperatorHarness(op, state_backend=state_backend)
    h.process(ROWS)
    with pytest.raises(UserCodeError) as err:
        h.advance_watermark(100)
    cause = err.value.original
    assert isinstance(cause, ConfigError)
    assert str(cause).startswith(f"{name} returned a dict ({{'key': 'a', 'n': 2}}), not an iterable of records")
    assert "return [record]" in str(cause)
    assert h.records() == []  # never the dict's keys


@pytest.mark.parametrize("result", ["a", 3, b"xy"])
def test_a_str_or_a_number_is_refused_too(state_backend, result):
    op = WindowOperator(KeySelector("key").key_of, TumblingEventTimeWindows.of(10), AGGREGATE, Avg(),
                        _ApplyFunction(lambda key, window, records: result), timestamp_assigner=TS)
    h = OperatorHarness(op, state_backend=state_backend)
    h.process(ROWS)
    with pytest.raises(UserCodeError) as err:
        h.advance_watermark(100)
    assert f"returned a {type(result).__name__} ({result!r})" in str(err.value.original)


def test_lists_generators_and_none_are_records(state_backend):
    results = iter([[{"n": 1}, {"n": 2}], None, ({"n": n} for n in (3,))])
    op = WindowOperator(KeySelector("key").key_of, TumblingEventTimeWindows.of(10), LIST, None,
                        _ApplyFunction(lambda key, window, records: next(results)), timestamp_assigner=TS)
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([dict(r, ts=t) for r, t in zip(ROWS * 2, (1, 11, 21, 22))])
    h.advance_watermark(100)
    assert h.records() == [{"n": 1}, {"n": 2}, {"n": 3}]
