"""``a.connect(b).key_by(k1, k2).process(CoProcessFunction)`` partitions both inputs by key.

A Flink user keys connected streams and runs a (non-keyed) co-function over them: the
records of one key from both inputs must meet in one subtask. Before, ``key_by`` was ignored
for a plain ``CoProcessFunction`` (only a ``KeyedCoProcessFunction`` used it): the inputs
were forwarded or rebalanced, so at parallelism 2 a key's records were split between
subtasks and per-key logic was silently wrong. Now it runs keyed, with the key, keyed state
and timers as a KeyedCoProcessFunction has them.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.engine.errors import GraphError
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.partitioners import KeyGroupPartitioner
from raystream.operators.testing import OperatorHarness

LEFT = [{"user": f"u{i % 5}", "v": i} for i in range(40)]
RIGHT = [{"id": f"u{i % 5}", "w": i} for i in range(10)]


class CountBoth(rs.CoProcessFunction):
    """Counts each key's records of both inputs in keyed state."""

    def open(self, ctx):  # noqa: ANN001
        self.counts = ctx.get_state(ValueStateDescriptor("counts", default=(0, 0)))

    def process_element1(self, value, ctx):  # noqa: ANN001
        left, right = self.counts.value()
        self.counts.update((left + 1, right))
        yield (ctx.get_current_key(), left + 1, right)

    def process_element2(self, value, ctx):  # noqa: ANN001
        left, right = self.counts.value()
        self.counts.update((left, right + 1))
        yield (ctx.get_current_key(), left, right + 1)


def keyed_connect(function: rs.CoProcessFunction) -> rs.DataStream:
    env = rs.StreamEnvironment(parallelism=2)
    return env.from_collection(LEFT).connect(env.from_collection(RIGHT)).key_by("user", "id").process(function)


def test_keyed_connected_streams_are_partitioned_by_key_for_a_co_process_function() -> None:
    node = keyed_connect(CountBoth()).node
    assert node.keyed
    assert [type(e.partitioner) for e in node.inputs] == [KeyGroupPartitioner, KeyGroupPartitioner]
    assert [e.partitioner.key_selector.key for e in node.inputs] == ["user", "id"]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_each_key_is_counted_on_one_subtask_across_both_inputs(parallelism, state_backend) -> None:
    factory = keyed_connect(CountBoth()).node.operator_factory
    assert factory is not None
    finals: dict[str, tuple[int, int]] = {}
    for i in range(parallelism):  # each subtask gets what the key-group partitioner sends it
        groups = KeyGroupRange.for_subtask(i, parallelism, 128)
        h = OperatorHarness(factory(), subtask_index=i, parallelism=parallelism, state_backend=state_backend)
        h.process([r for r in LEFT if key_group_for(r["user"], 128) in groups], 0)
        h.process([r for r in RIGHT if key_group_for(r["id"], 128) in groups], 1)
        for key, left, right in h.take():
            finals[key] = max(finals.get(key, (0, 0)), (left, right))
    assert finals == {f"u{k}": (8, 2) for k in range(5)}


class TimerWithoutOnTimer(rs.CoProcessFunction):
    def process_element1(self, value, ctx):  # noqa: ANN001
        ctx.timer_service().register_processing_time_timer(10)

    def process_element2(self, value, ctx):  # noqa: ANN001
        pass


def test_a_timer_of_a_co_process_function_without_on_timer_names_the_remedy() -> None:
    factory = keyed_connect(TimerWithoutOnTimer()).node.operator_factory
    assert factory is not None
    h = OperatorHarness(factory())
    h.process([LEFT[0]], 0)
    with pytest.raises(Exception, match="TimerWithoutOnTimer registered a timer .* subclass KeyedCoProcessFunction"):
        h.advance_processing_time(10)


def test_a_broadcast_function_on_connected_streams_names_the_broadcast_remedy() -> None:
    class Rules(rs.BroadcastProcessFunction):
        def process_element(self, value, ctx):  # noqa: ANN001
            pass

        def process_broadcast_element(self, value, ctx):  # noqa: ANN001
            pass

    env = rs.StreamEnvironment()
    with pytest.raises(GraphError, match=r"needs a broadcast stream: a.connect\(b.broadcast\(descriptor\)\)"):
        env.from_collection(LEFT).connect(env.from_collection(RIGHT)).process(Rules())


def test_connected_keyed_streams_run_a_co_process_function_keyed() -> None:
    """``a.key_by(k1).connect(b.key_by(k2))``: keyed as after ``connect(...).key_by(k1, k2)``
    (before, the inputs were partitioned by key but the function had no key or keyed state:
    "keyed state needs a keyed stream (key_by(...) before process())")."""
    env = rs.StreamEnvironment(parallelism=2)
    s = env.from_collection(LEFT).key_by("user").connect(env.from_collection(RIGHT).key_by("id")).process(CountBoth())
    assert s.node.keyed
    factory = s.node.operator_factory
    assert factory is not None
    h = OperatorHarness(factory())
    h.process(LEFT[:2], 0)
    h.process(RIGHT[:1], 1)
    assert h.take() == [("u0", 1, 0), ("u1", 1, 0), ("u0", 1, 1)]
    env = rs.StreamEnvironment(parallelism=2)
    unkeyed = env.from_collection(LEFT).key_by("user").connect(env.from_collection(RIGHT)).process(CountBoth())
    assert not unkeyed.node.keyed  # one keyed input is not keyed connected streams
