"""``MapState.is_empty()`` reads no value, so it refreshes no TTL timestamp, on both backends.

With ``update_type="on_read_and_write"`` the heap backend's ``is_empty()`` refreshed the
timestamp of every entry of the map and the RocksDB backend's that of the first entry in key
order, so a map polled with ``is_empty()`` lived on (heap: all of it, RocksDB: one entry) and
the same program read different maps on the two backends. Now ``is_empty()`` refreshes
nothing: the entries expire ``ttl_ms`` after their last write or value read, on both. No Ray."""

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
