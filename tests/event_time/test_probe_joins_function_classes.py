"""Passing a function class instead of an instance to a two-input operator is refused when
the job is built, with the remedy.

Before, ``interval_join(...).process(Enrich)`` (the class) was called as ``Enrich(left,
right)`` on the first pair: the running job failed with "TypeError: Enrich() takes no
arguments"; ``connect(...).process(MyCoProcessFunction)`` was refused with "got ABCMeta".
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import GraphError
from raystream.operators.joins import ProcessJoinFunction
from raystream.operators.time import WatermarkStrategy

STRATEGY = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")


class Enrich(ProcessJoinFunction):
    def process_element(self, left, right, ctx):  # noqa: ANN001
        yield (left, right)


class Tag(rs.CoProcessFunction):
    def process_element1(self, value, ctx):  # noqa: ANN001
        yield value

    def process_element2(self, value, ctx):  # noqa: ANN001
        yield value


class Rules(rs.BroadcastProcessFunction):
    def process_element(self, value, ctx):  # noqa: ANN001
        yield value

    def process_broadcast_element(self, value, ctx):  # noqa: ANN001
        pass


def test_interval_join_refuses_the_class_of_a_process_join_function() -> None:
    env = rs.StreamEnvironment()
    a = env.from_collection([]).assign_timestamps_and_watermarks(STRATEGY).key_by("k")
    with pytest.raises(GraphError, match=r"expects an instance of Enrich, got the class: process\(Enrich\(\)\)"):
        a.interval_join(a).between(0, 1).process(Enrich)
    assert a.interval_join(a).between(0, 1).process(Enrich()).node.name == "interval_join"


@pytest.mark.parametrize("cls,broadcast", [(Tag, False), (Rules, True)])
def test_connect_refuses_the_class_of_a_function(cls, broadcast) -> None:
    env = rs.StreamEnvironment()
    a = env.from_collection([])
    connected = a.connect(a.broadcast("rules") if broadcast else a)
    with pytest.raises(GraphError, match=rf"expects an instance of {cls.__name__}, got the class"):
        connected.process(cls)
