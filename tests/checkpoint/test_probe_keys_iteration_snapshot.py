"""``backend.keys(name)`` iterates the keys live when it is called (a snapshot, as Flink's
``applyToAllKeys``), however the caller changes state while iterating.

Before, the heap backend listed the key groups when called and copied each group's keys
when it reached the group: a key added during the iteration was visited when it fell into
a group that existed and was not reached yet, and not when it made a new group; a key
cleared before its group was reached was skipped. Which keys a scan saw depended on key
group order. The RocksDB backend read each key group from the database when it reached
it, after writing the caller's changes: the same keys added during the iteration were
visited and the cleared ones skipped (the docs told RocksDB users to take ``list(...)``
first). It now reads one RocksDB iterator opened at the call (an implicit snapshot). Both
backends run every test (``make_backend``). No Ray.
"""

from __future__ import annotations

import pytest

from raystream.checkpoint import (
    ListStateDescriptor,
    MapStateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import ManualClock

MAXP = 128
FULL = KeyGroupRange(0, MAXP - 1)
KEYS = [f"k{i}" for i in range(40)]


@pytest.mark.parametrize("ttl", [None, StateTtlConfig(60_000)], ids=["plain", "ttl"])
def test_keys_added_and_cleared_during_the_iteration_do_not_change_it(ttl, make_backend):
    b = make_backend(FULL, MAXP, ManualClock(1_000))
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


def test_keys_of_an_empty_state_and_a_state_filled_during_the_iteration(make_backend):
    b = make_backend(FULL, MAXP, ManualClock(0))
    lst = b.get_state(ListStateDescriptor("l"))
    keys = b.keys("l")
    b.set_current_key("a")
    lst.add(1)
    assert list(keys) == []  # empty when called
    assert list(b.keys("l")) == ["a"]


def test_map_state_keys_during_the_iteration_and_an_iteration_left_unfinished(make_backend):
    b = make_backend(FULL, MAXP, ManualClock(0))
    m = b.get_state(MapStateDescriptor("m"))
    for k in KEYS:
        b.set_current_key(k)
        m.put("a", 1)
        m.put("b", 2)  # (RocksDB: one entry per map key, one key to visit)
    seen = []
    for k in b.keys("m"):
        seen.append(k)
        b.set_current_key(k)
        m.clear()
        b.set_current_key(f"new-{k}")
        m.put("a", 1)
    assert sorted(seen) == sorted(KEYS)
    it = b.keys("m")
    first = next(it)
    del it  # (an iteration left unfinished: RocksDB releases its view)
    assert first.startswith("new-")
    b.set_current_key("z")
    m.put("a", 1)
    assert sorted(b.keys("m")) == sorted([f"new-{k}" for k in KEYS] + ["z"])
