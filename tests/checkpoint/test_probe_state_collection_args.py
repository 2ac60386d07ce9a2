"""The collection arguments of list and map state, as in Flink and alike on both backends.

``ListState.update(None)`` and ``add_all(None)`` raised a bare ``TypeError: 'NoneType' object
is not iterable`` from inside the state (a job failed with it); Flink's ``update(null)``
clears the list and ``addAll(null)`` changes nothing, and now so do they. A value that is
not iterable (``update(5)``) is a ``StateError`` naming the state and the remedy, and
``update`` leaves the list as it was. ``MapState.put_all`` took ``(key, value)`` pairs on the
heap backend without TTL only: with a TTL, or on RocksDB, the same call raised
``AttributeError: 'list' object has no attribute 'items'``; it now takes a dict or pairs
everywhere. No Ray."""

from __future__ import annotations

import pytest

from raystream.checkpoint import ListStateDescriptor, MapStateDescriptor, StateTtlConfig
from raystream.engine.errors import StateError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import ManualClock

MAXP = 128
TTLS = [None, StateTtlConfig(60_000)]


@pytest.fixture
def backend(make_backend):
    return make_backend(KeyGroupRange(0, MAXP - 1), MAXP, clock=ManualClock(1_000))


@pytest.mark.parametrize("ttl", TTLS, ids=["plain", "ttl"])
def test_list_update_none_clears_and_add_all_none_changes_nothing(backend, ttl):
    s = backend.get_state(ListStateDescriptor("l", ttl=ttl))
    backend.set_current_key("k")
    s.add_all([1, None, 2])
    s.add_all(None)
    assert s.get() == [1, None, 2]
    s.update(None)
    assert s.get() == []
    s.add_all(x for x in (3, 4))  # any iterable, a generator too
    s.update(iter([5]))
    assert s.get() == [5]


@pytest.mark.parametrize("ttl", TTLS, ids=["plain", "ttl"])
def test_a_value_that_is_not_iterable_names_the_state_and_leaves_it_unchanged(backend, ttl):
    s = backend.get_state(ListStateDescriptor("buffer", ttl=ttl))
    backend.set_current_key("k")
    s.add(1)
    with pytest.raises(StateError, match=r"list state 'buffer': update\(\) takes an iterable .* got 5.*add\(\)"):
        s.update(5)
    with pytest.raises(StateError, match=r"add_all\(\) takes an iterable"):
        s.add_all(7)
    assert s.get() == [1]


@pytest.mark.parametrize("ttl", TTLS, ids=["plain", "ttl"])
def test_map_put_all_takes_a_dict_pairs_or_none(backend, ttl):
    m = backend.get_state(MapStateDescriptor("m", ttl=ttl))
    backend.set_current_key("k")
    m.put_all({"a": 1})
    m.put_all([("b", 2), ("a", 3)])  # pairs: the later one of a key wins, as in dict.update
    m.put_all(None)
    m.put_all({})
    assert sorted(m.items()) == [("a", 3), ("b", 2)]
    with pytest.raises(StateError, match=r"map state 'm': put_all\(\) takes a dict or an iterable of \(key, value\) pairs"):
        m.put_all([1, 2])
    assert sorted(m.items()) == [("a", 3), ("b", 2)]
