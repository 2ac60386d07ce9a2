"""``process_broadcast_element`` of a keyed stream connected with a broadcast stream has no
current key (Flink's ``KeyedBroadcastProcessFunction``: keyed state there throws).

Before, the keyed backend still had the last record's key current, so keyed state read or
written in ``process_broadcast_element`` was that key's, silently: a rule that did
``self.count.update(100)`` set the count of whichever key came last (records ``a, b`` then a
rule: ``b``'s count became 100 and its next record counted 101). Now it fails naming the
broadcast record; ``ctx.apply_to_keyed_state`` reaches every key's state. Heap and RocksDB.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.engine.errors import StateError, UserCodeError
from raystream.operators.testing import OperatorHarness

COUNT = ValueStateDescriptor("count", default=0)


class CountPerKey(rs.BroadcastProcessFunction):
    def open(self, ctx):  # noqa: ANN001
        self.count = ctx.get_state(COUNT)

    def process_element(self, value, ctx):  # noqa: ANN001
        self.count.update(self.count.value() + 1)
        yield (value["k"], self.count.value())

    def process_broadcast_element(self, rule, ctx):  # noqa: ANN001
        if rule.get("write"):
            self.count.update(100)  # no key here: which key's count would this be?
        ctx.get_broadcast_state("rules")["last"] = rule


def harness(state_backend) -> OperatorHarness:  # noqa: ANN001
    env = rs.StreamEnvironment(parallelism=1)
    stream = env.from_collection([]).key_by("k").connect(env.from_collection([]).broadcast("rules"))
    return OperatorHarness(stream.process(CountPerKey()).node.operator_factory(), state_backend=state_backend)


def test_keyed_state_on_the_broadcast_side_fails_instead_of_using_the_last_key(state_backend) -> None:
    h = harness(state_backend)
    h.process([{"k": "a"}, {"k": "b"}], 0)
    with pytest.raises(UserCodeError) as info:
        h.process([{"write": True}], 1)
    assert isinstance(info.value.original, StateError)
    assert "used without a current key" in str(info.value.original)
    assert info.value.record == {"write": True}
    h.process([{"k": "b"}, {"k": "a"}], 0)  # no key's count was touched
    assert h.take() == [("a", 1), ("b", 1), ("b", 2), ("a", 2)]


def test_a_broadcast_element_that_uses_no_keyed_state_leaves_the_keys_alone(state_backend) -> None:
    h = harness(state_backend)
    h.process([{"k": "a"}], 0)
    h.process([{"write": False}], 1)
    h.process([{"k": "a"}, {"k": "c"}], 0)
    assert h.take() == [("a", 1), ("a", 2), ("c", 1)]
