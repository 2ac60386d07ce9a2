"""A join function written as a generator yields any number of results per pair (Flink's
``FlatJoinFunction``), for the window join and the interval join.

Before, the generator object itself became the output record: the job failed in the next
task ("a record cannot be pickled ... cannot pickle 'generator' object", blamed on the
sink, with advice about locks and connections), or, chained, a generator reached the user.
"""

from __future__ import annotations

from raystream.engine.partitioners import KeySelector
from raystream.operators.joins import CoGroupWindowOperator, IntervalJoinOperator, _CoGroup
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.windows import TumblingEventTimeWindows

TS1 = TimestampAssigner(column=1)
KEYS = (KeySelector(0), KeySelector(0))


def pairs_and_matches(left, right):  # noqa: ANN001, ANN201 - a join function
    if left[1] == right[1]:
        yield ("same", left[1])
    yield (left[1], right[1])


LEFT = [("a", 1), ("a", 4), ("b", 2)]
RIGHT = [("a", 1), ("b", 3)]


def test_window_join_with_a_generator_function() -> None:
    h = OperatorHarness(CoGroupWindowOperator(KEYS, (TS1, TS1), TumblingEventTimeWindows.of(10),
                                              _CoGroup(None, pairs_and_matches)))
    h.process(LEFT, 0)
    h.process(RIGHT, 1)
    h.end_input()
    assert sorted(h.records(), key=repr) == sorted([("same", 1), (1, 1), (4, 1), (2, 3)], key=repr)


def test_interval_join_with_a_generator_function() -> None:
    h = OperatorHarness(IntervalJoinOperator(KEYS, (TS1, TS1), -1, 1, pairs_and_matches))
    h.process(LEFT, 0)
    h.process(RIGHT, 1)
    h.end_input()
    assert sorted(h.records(), key=repr) == sorted([("same", 1), (1, 1), (2, 3)], key=repr)


def test_a_plain_function_still_gives_one_record_and_none_skips() -> None:
    h = OperatorHarness(IntervalJoinOperator(KEYS, (TS1, TS1), -1, 1, lambda a, b: None if a[1] == 2 else [a, b]))
    h.process(LEFT, 0)
    h.process(RIGHT, 1)
    h.end_input()
    assert h.records() == [[("a", 1), ("a", 1)]]  # a list result is one record
