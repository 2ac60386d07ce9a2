"""``ctx.apply_to_keyed_state(descriptor, fn(key, state))`` in ``process_broadcast_element``
of a keyed stream connected with a broadcast stream (Flink's
``KeyedBroadcastProcessFunction.Context.applyToKeyedState``): a rule change can clear or
rewrite the state of every key of the subtask.

Before, the context had no such method (``AttributeError: '_BroadcastContext' object has no
attribute 'apply_to_keyed_state'``), so a Flink port that resets every key's state when a
rule changes could not be written: the broadcast side has no key, and state read there was
the last record's key's. Heap and RocksDB backends, and on Ray at parallelism 1 and 2.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.engine.errors import ConfigError, UserCodeError
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.operators.testing import OperatorHarness

COUNT = ValueStateDescriptor("count", default=0)


class CountSinceRule(rs.BroadcastProcessFunction):
    """Counts each key's records since the last rule; a new rule reports every key's count
    and resets it (``reset``) or doubles it."""

    def open(self, ctx):  # noqa: ANN001
        self.count = ctx.get_state(COUNT)

    def process_element(self, value, ctx):  # noqa: ANN001
        self.count.update(self.count.value() + 1)
        return None

    def process_broadcast_element(self, rule, ctx):  # noqa: ANN001
        seen = []

        def visit(key, state):  # noqa: ANN001, ANN202
            seen.append((rule["id"], key, state.value()))
            if rule["reset"]:
                state.clear()
            else:
                state.update(state.value() * 2)

        ctx.apply_to_keyed_state(COUNT, visit)
        yield from seen


def harness(function, state_backend=None) -> OperatorHarness:  # noqa: ANN001
    env = rs.StreamEnvironment(parallelism=2)
    events = env.from_collection([]).key_by("k")
    rules = env.from_collection([])
    factory = events.connect(rules.broadcast("rules")).process(function).node.operator_factory
    assert factory is not None
    return OperatorHarness(factory(), state_backend=state_backend)


def test_a_rule_visits_every_key_with_state_and_can_clear_or_change_it(state_backend) -> None:
    h = harness(CountSinceRule(), state_backend)
    h.process([{"k": "a"}, {"k": "b"}, {"k": "a"}, {"k": "é"}], 0)
    h.process([{"id": 1, "reset": False}], 1)
    assert sorted(h.take()) == [(1, "a", 2), (1, "b", 1), (1, "é", 1)]
    h.process([{"k": "b"}], 0)
    h.process([{"id": 2, "reset": True}], 1)
    assert sorted(h.take()) == [(2, "a", 4), (2, "b", 3), (2, "é", 2)]
    h.process([{"id": 3, "reset": True}], 1)  # every key was cleared: nothing to visit
    assert h.take() == []
    h.process([{"k": "c"}], 0)
    h.process([{"id": 4, "reset": False}], 1)
    assert h.take() == [(4, "c", 1)]


def test_only_on_the_broadcast_side_of_a_keyed_stream() -> None:
    class InElement(CountSinceRule):
        def process_element(self, value, ctx):  # noqa: ANN001
            ctx.apply_to_keyed_state(COUNT, lambda key, state: None)

    h = harness(InElement())
    with pytest.raises(UserCodeError) as info:
        h.process([{"k": "a"}], 0)
    assert isinstance(info.value.original, ConfigError)
    assert "apply_to_keyed_state() is for process_broadcast_element()" in str(info.value.original)

    class Unkeyed(CountSinceRule):
        def open(self, ctx):  # noqa: ANN001
            pass  # (no keyed state without a key)

    env = rs.StreamEnvironment(parallelism=1)
    unkeyed = env.from_collection([]).connect(env.from_collection([]).broadcast("rules")).process(Unkeyed())
    h = OperatorHarness(unkeyed.node.operator_factory())
    with pytest.raises(UserCodeError) as info:
        h.process([{"id": 1, "reset": True}], 1)
    assert "of a keyed stream connected with a broadcast stream" in str(info.value.original)


def test_a_function_that_raises_names_the_broadcast_record() -> None:
    class Fails(CountSinceRule):
        def process_broadcast_element(self, rule, ctx):  # noqa: ANN001
            ctx.apply_to_keyed_state(COUNT, lambda key, state: 1 / 0)

    h = harness(Fails())
    h.process([{"k": "a"}], 0)
    with pytest.raises(UserCodeError) as info:
        h.process([{"id": 9, "reset": True}], 1)
    assert info.value.record == {"id": 9, "reset": True}
    assert isinstance(info.value.original, ZeroDivisionError)
    h.process([{"k": "a"}], 0)  # the record side still has its keys
    with pytest.raises(UserCodeError, match="expects a state descriptor"):
        class BadDescriptor(CountSinceRule):
            def process_broadcast_element(self, rule, ctx):  # noqa: ANN001
                ctx.apply_to_keyed_state("count", lambda key, state: None)

        harness(BadDescriptor()).process([{"id": 1}], 1)


def test_at_parallelism_2_each_subtask_visits_its_own_keys(state_backend) -> None:
    events = [{"k": f"k{i % 7}"} for i in range(70)]
    visits = []
    for subtask in (0, 1):
        env = rs.StreamEnvironment(parallelism=2)
        stream = env.from_collection([]).key_by("k").connect(env.from_collection([]).broadcast("rules"))
        h = OperatorHarness(stream.process(CountSinceRule()).node.operator_factory(), subtask_index=subtask,
                            parallelism=2, state_backend=state_backend)
        mine = KeyGroupRange.for_subtask(subtask, 2, h.ctx.max_parallelism)
        h.process([e for e in events if key_group_for(e["k"], h.ctx.max_parallelism) in mine], 0)
        h.process([{"id": 1, "reset": True}], 1)  # a broadcast element reaches every subtask
        visits += h.take()
    assert sorted(visits) == [(1, f"k{i}", 10) for i in range(7)]
