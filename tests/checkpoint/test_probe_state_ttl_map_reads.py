"""The reads of a ``MapState`` with TTL refresh the timestamps Flink's ``TtlMapState`` refreshes,
on both backends. No Ray.

* ``contains(k)`` is a read of the entry (Flink: ``get(key) != null``): with
  ``update_type="on_read_and_write"`` it refreshes the entry. Before, it refreshed nothing, so a
  "seen before?" dedup map checked only with ``contains`` expired ``ttl_ms`` after its write
  however often it was checked.
* ``is_empty()`` reads no value, so it refreshes nothing. Before, with ``on_read_and_write`` the
  heap backend's refreshed every entry of the map and the RocksDB backend's the first entry in
  key order, so a map polled with ``is_empty()`` lived on (heap: all of it, RocksDB: one entry)
  and the same program read different maps on the two backends.
"""

from __future__ import annotations

import pytest

from raystream.checkpoint import MapStateDescriptor, StateTtlConfig
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import ManualClock

MAXP = 128
ON_READ = StateTtlConfig(100, update_type="on_read_and_write", cleanup_size=0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000)


@pytest.fixture
def backend(clock, make_backend):
    return make_backend(KeyGroupRange(0, MAXP - 1), MAXP, clock=clock)


def test_contains_keeps_an_entry_alive_with_on_read_and_write(backend, clock):
    seen = backend.get_state(MapStateDescriptor("seen", ttl=StateTtlConfig(100, update_type="on_read_and_write")))
    backend.set_current_key("user")
    seen.put("event-1", True)
    for _ in range(5):  # checked every 60 ms: each check is a read that refreshes it
        clock.advance(60)
        assert seen.contains("event-1")
    clock.advance(99)
    assert seen.items() == [("event-1", True)]


def test_contains_refreshes_nothing_with_on_create_and_write(backend, clock):
    seen = backend.get_state(MapStateDescriptor("seen", ttl=StateTtlConfig(100)))
    backend.set_current_key("user")
    seen.put("event-1", True)
    clock.advance(60)
    assert seen.contains("event-1")
    clock.advance(40)  # 100 ms after the write
    assert not seen.contains("event-1")
    assert seen.items() == []


def test_is_empty_refreshes_no_entry(backend, clock):
    m = backend.get_state(MapStateDescriptor("m", ttl=ON_READ))
    backend.set_current_key("k")
    m.put_all({"a": 1, "b": 2, "c": 3})  # written at 1000: expire at 1100
    clock.advance(60)
    assert not m.is_empty()
    assert m.get("b") == 2  # a read of "b" at 1060: it lives until 1160
    for t in (1100, 1130, 1159):
        clock.set(t)
        assert not m.is_empty()  # "b" lives; "a" and "c" expired, is_empty() kept none alive
    clock.set(1160)
    assert m.is_empty()
    assert m.items() == [] and m.keys() == [] and not m.contains("b")


def test_is_empty_leaves_the_entries_as_items_finds_them(backend, clock):
    m = backend.get_state(MapStateDescriptor("m", ttl=ON_READ))
    backend.set_current_key("k")
    m.put_all({"a": 1, "b": 2, "c": 3})
    clock.advance(60)
    assert not m.is_empty()
    clock.advance(40)  # 1100: everything written at 1000 expired
    assert m.items() == []


def test_is_empty_sees_live_entries_and_removes_expired_ones(backend, clock):
    m = backend.get_state(MapStateDescriptor("m", ttl=StateTtlConfig(100, cleanup_size=0)))
    backend.set_current_key("k")
    m.put("old", 1)
    clock.advance(50)
    m.put("young", 2)
    clock.advance(50)  # "old" expired, "young" lives until 1150
    assert not m.is_empty()
    assert m.items() == [("young", 2)]
    clock.advance(50)
    assert m.is_empty()
    assert m.items() == []


def test_is_empty_with_return_expired_reports_an_expired_entry_not_cleaned_up(backend, clock):
    m = backend.get_state(MapStateDescriptor("m", ttl=StateTtlConfig(100, return_expired=True, cleanup_size=0)))
    backend.set_current_key("k")
    m.put("a", 1)
    clock.advance(100)
    assert not m.is_empty()  # the expired entry was not cleaned up yet: it is still there ...
    assert m.is_empty()  # ... and is_empty() removed it
    assert m.items() == []
