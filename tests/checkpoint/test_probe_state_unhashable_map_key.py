"""An unhashable map key (a list, a dict, a set) in map state on the heap backend is a
StateError naming the state and the key and giving the remedy.

The heap backend keeps each key's map in a dict, so ``put([1, 2], v)`` failed the job with a
bare ``TypeError: unhashable type: 'list'`` raised inside the state; the RocksDB backend,
which stores map keys encoded, takes such keys. No Ray."""

from __future__ import annotations

import pytest

from raystream.checkpoint import HeapKeyedStateBackend, MapStateDescriptor, StateTtlConfig
from raystream.engine.errors import StateError
from raystream.engine.keygroups import KeyGroupRange

MAXP = 128


@pytest.mark.parametrize("ttl", [None, StateTtlConfig(60_000)], ids=["plain", "ttl"])
@pytest.mark.parametrize("bad", [[1, 2], {"a": 1}, {1}, ("t", [1])], ids=["list", "dict", "set", "tuple-of-list"])
def test_an_unhashable_map_key_names_the_state_and_the_remedy(ttl, bad):
    b = HeapKeyedStateBackend(KeyGroupRange(0, MAXP - 1), MAXP)
    m = b.get_state(MapStateDescriptor("by_path", ttl=ttl))
    b.set_current_key("user")
    m.put(("a", 1), "ok")
    remedy = r"map state 'by_path': map key .* is unhashable .*use a tuple, a frozenset or tuple\(sorted\(d.items\(\)\)\)"
    with pytest.raises(StateError, match=remedy):
        m.put(bad, 1)
    with pytest.raises(StateError, match=remedy):
        m.put_all([(bad, 1)])
    with pytest.raises(StateError, match=remedy):
        m.get(bad)
    with pytest.raises(StateError, match=remedy):
        m.contains(bad)
    with pytest.raises(StateError, match=remedy):
        m.remove(bad)
    assert m.items() == [(("a", 1), "ok")]
