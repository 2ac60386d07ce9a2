"""``a.connect(b).map(fn1, fn2)`` and ``.flat_map(fn1, fn2)`` (Flink's CoMapFunction /
CoFlatMapFunction), keyed after ``connect(...).key_by(k1, k2)``.

Before, ``ConnectedStreams`` offered only ``process``: a Flink user's
``orders.connect(payments).map(f1, f2)`` failed with ``AttributeError: 'ConnectedStreams'
object has no attribute 'map'``. The operators are built with the DataStream API and run in
a task driven step by step.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import GraphError
from raystream.engine.partitioners import KeyGroupPartitioner
from raystream.operators.connected import ConnectedStreams
from raystream.operators.testing import OperatorHarness


def connected() -> ConnectedStreams:
    env = rs.StreamEnvironment(parallelism=2)
    return env.from_collection([]).connect(env.from_collection([]))


def run(stream: rs.DataStream, left: list, right: list) -> list:
    factory = stream.node.operator_factory
    assert factory is not None
    h = OperatorHarness(factory())
    h.process(left, 0)
    h.process(right, 1)
    return h.take()


def test_co_map_applies_each_inputs_function() -> None:
    s = connected().map(lambda order: ("order", order["id"]), lambda payment: ("payment", payment[0]))
    assert s.node.name == "co_map" and not s.node.keyed
    assert run(s, [{"id": 1}, {"id": 2}], [(7, "eur")]) == [("order", 1), ("order", 2), ("payment", 7)]


def test_co_flat_map_keyed_by_both_inputs() -> None:
    s = connected().key_by("id", 0).flat_map(lambda o: [o["id"]] * o["n"], lambda p: [])
    assert s.node.name == "co_flat_map" and s.node.keyed
    assert [type(e.partitioner) for e in s.node.inputs] == [KeyGroupPartitioner, KeyGroupPartitioner]
    assert run(s, [{"id": "a", "n": 2}, {"id": "b", "n": 0}], [("a", 1)]) == ["a", "a"]


@pytest.mark.parametrize("method", ["map", "flat_map"])
def test_co_functions_must_be_callable_and_not_on_a_broadcast_stream(method) -> None:
    with pytest.raises(GraphError, match=f"{method}\\(\\) expects a function"):
        getattr(connected(), method)(lambda r: r, "not a function")
    env = rs.StreamEnvironment()
    broadcast = env.from_collection([]).connect(env.from_collection([]).broadcast("rules"))
    with pytest.raises(GraphError, match="needs process\\(BroadcastProcessFunction\\)"):
        getattr(broadcast, method)(lambda r: r, lambda r: r)
