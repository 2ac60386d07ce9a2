"""Every keyed state kind on both keyed backends (heap and RocksDB), with and without TTL."""

from __future__ import annotations

import pytest

from raystream.checkpoint import (
    AggregateFunction,
    AggregatingStateDescriptor,
    HeapKeyedStateBackend,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)
from raystream.engine.errors import ConfigError, StateError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import ManualClock

MAXP = 128


class Mean(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + value, acc[1] + 1)

    def get_result(self, acc):
        return acc[0] / acc[1]

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000)


@pytest.fixture
def backend(clock, make_backend) -> HeapKeyedStateBackend:
    return make_backend(KeyGroupRange(0, MAXP - 1), MAXP, clock=clock)


def test_value_state(backend):
    count = backend.get_state(ValueStateDescriptor("count", default=0))
    backend.set_current_key("a")
    assert count.value() == 0
    count.update(5)
    backend.set_current_key("b")
    assert count.value() == 0
    count.update(1)
    backend.set_current_key("a")
    assert count.value() == 5
    count.update(None)  # None clears, as in Flink
    assert count.value() == 0
    backend.set_current_key("b")
    count.clear()
    assert count.value() == 0
    assert backend.num_keys() == 0


def test_list_state(backend):
    s = backend.get_state(ListStateDescriptor("buf"))
    backend.set_current_key(1)
    assert s.get() == []
    s.add("x")
    s.add_all(["y", "z"])
    got = s.get()
    assert got == ["x", "y", "z"]
    got.append("not stored")  # get() returns a copy
    assert s.get() == ["x", "y", "z"]
    s.update(["q"])
    assert s.get() == ["q"]
    s.update([])
    assert s.get() == []
    s.add_all([])
    assert list(backend.keys("buf")) == []


def test_map_state(backend):
    m = backend.get_state(MapStateDescriptor("m"))
    backend.set_current_key(("user", 1))
    assert m.is_empty()
    assert m.get("x") is None
    m.put("x", 1)
    m.put_all({"y": 2, "z": 3})
    assert m.contains("y") and not m.contains("w")
    assert sorted(m.keys()) == ["x", "y", "z"]
    assert sorted(m.values()) == [1, 2, 3]
    for k, _ in m.items():  # mutation while iterating over the returned list is fine
        m.remove(k)
    assert m.is_empty()
    assert list(backend.keys("m")) == []
    m.put("a", 1)
    m.clear()
    assert m.get("a") is None


def test_reducing_state(backend):
    s = backend.get_state(ReducingStateDescriptor("sum", lambda a, b: a + b))
    backend.set_current_key("k")
    assert s.get() is None
    for v in (1, 2, 3):
        s.add(v)
    assert s.get() == 6
    s.clear()
    assert s.get() is None


def test_aggregating_state(backend):
    s = backend.get_state(AggregatingStateDescriptor("mean", Mean()))
    backend.set_current_key("k")
    assert s.get() is None
    s.add(1)
    s.add(5)
    assert s.get() == 3.0
    backend.set_current_key("other")
    assert s.get() is None


def test_state_without_current_key_is_an_error(backend):
    s = backend.get_state(ValueStateDescriptor("v"))
    with pytest.raises(StateError, match="state 'v' used without a current key"):
        s.value()
    with pytest.raises(StateError, match="no current key"):
        _ = backend.current_key


def test_same_object_for_same_name_and_kind_conflict(backend):
    a = backend.get_state(ValueStateDescriptor("s"))
    assert backend.get_state(ValueStateDescriptor("s", default=3)) is a
    with pytest.raises(StateError, match="state 's' is already registered as 'value'"):
        backend.get_state(ListStateDescriptor("s"))


def test_descriptor_validation():
    with pytest.raises(ConfigError):
        ValueStateDescriptor("")
    with pytest.raises(ConfigError, match="reduce_fn of state 'r'"):
        ReducingStateDescriptor("r", 3)
    with pytest.raises(ConfigError, match="aggregate_function of state 'a'"):
        AggregatingStateDescriptor("a", object())
    with pytest.raises(ConfigError, match="ttl of state 'v'"):
        ValueStateDescriptor("v", ttl=1000)
    with pytest.raises(ConfigError, match="ttl_ms"):
        StateTtlConfig(0)
    with pytest.raises(ConfigError, match="update_type"):
        StateTtlConfig(10, update_type="on_read")


def test_key_outside_range_names_the_key(clock, make_backend):
    b = make_backend(KeyGroupRange.for_subtask(0, 2, MAXP), MAXP, clock=clock)
    foreign = next(k for k in range(1000) if b.key_group_range.end < _kg(k))
    with pytest.raises(StateError, match=f"key {foreign!r} belongs to key group"):
        b.set_current_key(foreign)
    with pytest.raises(StateError, match="outside this backend's range"):
        b.set_current_key_with_group("x", MAXP - 1)


def _kg(key):
    from raystream.engine.keygroups import key_group_for

    return key_group_for(key, MAXP)


def test_set_current_key_with_group(backend):
    s = backend.get_state(ValueStateDescriptor("v"))
    backend.set_current_key_with_group("k", _kg("k"))
    s.update(1)
    backend.set_current_key("k")
    assert s.value() == 1
    assert backend.current_key == "k"
    assert backend.current_key_group == _kg("k")


# -- TTL -----------------------------------------------------------------------------


def test_value_ttl_on_create_and_write(backend, clock):
    s = backend.get_state(ValueStateDescriptor("v", default="none", ttl=StateTtlConfig(100)))
    backend.set_current_key("k")
    s.update("x")
    clock.advance(99)
    assert s.value() == "x"  # reads do not refresh
    clock.advance(1)
    assert s.value() == "none"
    assert list(backend.keys("v")) == []


def test_value_ttl_on_read_and_write(backend, clock):
    ttl = StateTtlConfig(100, update_type="on_read_and_write")
    s = backend.get_state(ValueStateDescriptor("v", ttl=ttl))
    backend.set_current_key("k")
    s.update("x")
    for _ in range(5):
        clock.advance(60)
        assert s.value() == "x"  # each read refreshes
    clock.advance(100)
    assert s.value() is None


def test_value_ttl_return_expired_once(backend, clock):
    s = backend.get_state(ValueStateDescriptor("v", ttl=StateTtlConfig(10, return_expired=True)))
    backend.set_current_key("k")
    s.update("old")
    clock.advance(50)
    assert s.value() == "old"  # expired but not cleaned up: returned, then removed
    assert s.value() is None


def test_write_refreshes_ttl(backend, clock):
    s = backend.get_state(ValueStateDescriptor("v", ttl=StateTtlConfig(100)))
    backend.set_current_key("k")
    s.update(1)
    clock.advance(90)
    s.update(2)
    clock.advance(90)
    assert s.value() == 2


def test_list_ttl_is_per_element(backend, clock):
    s = backend.get_state(ListStateDescriptor("l", ttl=StateTtlConfig(100)))
    backend.set_current_key("k")
    s.add("a")
    clock.advance(50)
    s.add_all(["b", "c"])
    clock.advance(50)
    assert s.get() == ["b", "c"]
    clock.advance(50)
    assert s.get() == []
    assert list(backend.keys("l")) == []


def test_map_ttl_is_per_entry(backend, clock):
    m = backend.get_state(MapStateDescriptor("m", ttl=StateTtlConfig(100)))
    backend.set_current_key("k")
    m.put("a", 1)
    clock.advance(60)
    m.put_all({"b": 2})
    clock.advance(40)
    assert m.get("a") is None
    assert m.contains("b") and not m.contains("a")
    assert m.items() == [("b", 2)]
    clock.advance(60)
    assert m.is_empty()
    assert list(backend.keys("m")) == []


def test_map_ttl_on_read_refreshes_entries(backend, clock):
    ttl = StateTtlConfig(100, update_type="on_read_and_write")
    m = backend.get_state(MapStateDescriptor("m", ttl=ttl))
    backend.set_current_key("k")
    m.put("a", 1)
    clock.advance(80)
    assert m.get("a") == 1
    clock.advance(80)
    assert m.values() == [1]
    clock.advance(80)
    assert m.keys() == ["a"]


def test_reducing_and_aggregating_ttl(backend, clock):
    r = backend.get_state(ReducingStateDescriptor("r", max, ttl=StateTtlConfig(10)))
    a = backend.get_state(AggregatingStateDescriptor("a", Mean(), ttl=StateTtlConfig(10)))
    backend.set_current_key("k")
    r.add(5)
    a.add(4)
    clock.advance(10)
    assert r.get() is None and a.get() is None
    r.add(1)  # an expired value is not folded into new ones
    a.add(2)
    assert r.get() == 1 and a.get() == 2.0


def test_keys_and_num_keys_skip_expired(backend, clock):
    v = backend.get_state(ValueStateDescriptor("v", ttl=StateTtlConfig(100)))
    w = backend.get_state(ValueStateDescriptor("w"))
    for k in range(10):
        backend.set_current_key(k)
        v.update(k)
    backend.set_current_key(99)
    w.update(1)
    clock.advance(50)
    backend.set_current_key(0)
    v.update(0)
    assert sorted(backend.keys("v")) == list(range(10))
    assert backend.num_keys() == 11
    clock.advance(50)
    assert list(backend.keys("v")) == [0]
    assert backend.num_keys() == 2
    with pytest.raises(StateError, match="unknown state 'nope'"):
        backend.keys("nope")


def test_keys_allows_changing_state_while_iterating(backend):
    v = backend.get_state(ValueStateDescriptor("v"))
    for k in range(50):
        backend.set_current_key(k)
        v.update(k)
    for k in backend.keys("v"):
        backend.set_current_key(k)
        v.clear()
    assert backend.num_keys() == 0
