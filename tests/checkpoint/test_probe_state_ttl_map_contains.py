"""``MapState.contains(k)`` is a read of the entry: with ``update_type="on_read_and_write"``
it refreshes the entry's TTL timestamp, as Flink's ``TtlMapState.contains`` (``get(key) !=
null``) does, on both backends.

Before, ``contains`` refreshed nothing, so a map entry that a job only checked with
``contains`` (a "seen before?" dedup map) expired ``ttl_ms`` after it was written however often
it was checked, where Flink keeps it alive while it is read. No Ray."""

from __future__ import annotations

import pytest

from raystream.checkpoint import MapStateDescriptor, StateTtlConfig
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import ManualClock

MAXP = 128


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
