"""``backend.keys(name)`` iterates the keys live when it is called (a snapshot, as Flink's
``applyToAllKeys``), however the caller changes state while iterating.

Before, the heap backend listed the key groups when called and copied each group's keys
when it reached the group: a key added during the iteration was visited when it fell into
a group that existed and was not reached yet, and not when it made a new group; a key
cleared before its group was reached was skipped. Which keys a scan saw depended on key
group order. No Ray.
"""

from __future__ import annotations

import pytest

from raystream.checkpoint import (
    HeapKeyedStateBackend,
    ListStateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import ManualClock

MAXP = 128
FULL = KeyGroupRange(0, MAXP - 1)
KEYS = [f"k{i}" for i in range(40)]


@pytest.mark.parametrize("ttl", [None, StateTtlConfig(60_000)], ids=["plain", "ttl"])
def test_keys_added_and_cleared_during_the_iteration_do_not_change_it(ttl):
    b = HeapKeyedStateBackend(FULL, MAXP, ManualClock(1_000))
    v = b.get_state(ValueStateDescriptor("v", ttl=ttl))
    for i, k in enumerate(KEYS):
        b.set_current_key(k)
        v.update(i)
    seen, values = [], {}
    for k in b.keys("v"):
        seen.append(k)
        b.set_current_key(k)
        values[k] = v.value()
        for added in (f"new-{k}", f"{k}-new", f"x{len(seen)}"):  # keys in groups before and after
            b.set_current_key(added)
            v.update(-1)
        if len(seen) == 1:  # the first key visited clears every other key of the call
            for cleared in KEYS:
                if cleared != k:
                    b.set_current_key(cleared)
                    v.clear()
    assert sorted(seen) == sorted(KEYS)  # exactly the keys of the call, each once
    first = seen[0]
    assert values[first] == KEYS.index(first)
    assert all(values[k] is None for k in seen[1:])  # cleared before they were visited: read empty
    assert sorted(b.keys("v")) == sorted([first] + [a for k in KEYS for a in (f"new-{k}", f"{k}-new")]
                                         + [f"x{i}" for i in range(1, len(KEYS) + 1)])  # a new call: the keys now


def test_keys_of_an_empty_state_and_a_state_filled_during_the_iteration():
    b = HeapKeyedStateBackend(FULL, MAXP, ManualClock(0))
    lst = b.get_state(ListStateDescriptor("l"))
    keys = b.keys("l")
    b.set_current_key("a")
    lst.add(1)
    assert list(keys) == []  # empty when called
    assert list(b.keys("l")) == ["a"]
