"""Keyed state objects of the RocksDB backend: the public state classes of
:mod:`checkpoint.state` (so ``isinstance`` and the typed ``get_state`` hold), acting on
entries of the backend's read cache and RocksDB instead of heap dicts.

Entries have the heap backend's shapes (:mod:`checkpoint.state`): the plain value, or with
TTL ``(value, ts)``; a list (of ``(element, ts)`` with TTL) for list state; **one entry
per map key** for map state (Flink's layout: a large map is never read whole). Every read
goes through the backend's bounded read cache (:class:`~checkpoint.rocksdb_backend.
RocksDBKeyedStateBackend`), so a hot key costs a dict lookup, not a RocksDB read and an
unpickling; writes stay in the cache (marked dirty) until evicted or snapshotted.

Values read from state may be cached objects: as on the heap backend, call ``update()``
after changing one, and never change it after the current key changed.

Example:
    >>> from raystream.engine.keygroups import KeyGroupRange
    >>> from raystream.checkpoint import MapStateDescriptor
    >>> from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend
    >>> b = RocksDBKeyedStateBackend(KeyGroupRange(0, 127), 128)
    >>> m = b.get_state(MapStateDescriptor("m"))
    >>> b.set_current_key("user"); m.put("x", 1); m.put_all({"y": 2}); sorted(m.items())
    [('x', 1), ('y', 2)]
    >>> b.close()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, Iterable, TypeVar

from raystream.engine.errors import StateError

from .descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)
from .rocksdb_keys import encode_key, state_id
from .state import AggregatingState, KeyedState, ListState, MapState, ReducingState, ValueState

if TYPE_CHECKING:
    from .rocksdb_backend import RocksDBKeyedStateBackend

__all__ = ["ROCKSDB_STATE_CLASSES", "ABSENT"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
IN = TypeVar("IN")
OUT = TypeVar("OUT")

#: a cached "no entry" (also a deletion waiting to be written)
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT", "__reduce__": lambda self: "ABSENT"})()
_MISSING: Any = object()
#: incremental TTL cleanup runs every this many accesses of a state (as on the heap backend)
_CLEANUP_EVERY = 16


class _RocksState:
    """What every RocksDB state object shares (mixed into the public state classes)."""

    _rb: RocksDBKeyedStateBackend
    _sid: bytes
    _size: int

    def _setup(self, backend: RocksDBKeyedStateBackend, descriptor: StateDescriptor) -> None:
        self._rb = backend
        self._descriptor = descriptor
        self._sid = state_id(descriptor.name)
        ttl = getattr(descriptor, "ttl", None)
        self._ttl_ms = ttl.ttl_ms if ttl is not None else None
        self._on_read = bool(ttl is not None and ttl.update_on_read)
        self._ret_expired = bool(ttl is not None and ttl.return_expired)
        self._size = ttl.cleanup_size if ttl is not None else 0
        self._countdown = _CLEANUP_EVERY

    def _now(self) -> int:
        return self._rb._clock.now_ms()

    def _step(self, now: int, skip: bytes | None) -> None:
        """Incremental TTL cleanup: ``cleanup_size`` entries of this state per access,
        checked ``_CLEANUP_EVERY`` accesses' worth at a time."""
        self._countdown -= 1
        if self._countdown <= 0:
            self._countdown = _CLEANUP_EVERY
            if self._size:
                self._rb._ttl_step(self._descriptor.name, self._size * _CLEANUP_EVERY, now, skip)

    def clear(self) -> None:
        """Remove the current key's value of this state."""
        rb = self._rb
        k = rb._db_key(self._sid)
        rb._put(k, ABSENT)
        if self._ttl_ms is not None:
            self._step(self._now(), k)

    # single-value states (value, reducing, aggregating) -------------------------------

    def _get_single(self, for_write: bool = False) -> Any:
        rb = self._rb
        k = rb._db_key(self._sid)
        entry = rb._get(k)
        if self._ttl_ms is None:
            return _MISSING if entry is ABSENT else entry
        now = self._now()
        self._step(now, k)
        if entry is ABSENT:
            return _MISSING
        value, ts = entry
        if ts + self._ttl_ms <= now:
            rb._put(k, ABSENT)
            return value if (self._ret_expired and not for_write) else _MISSING
        if self._on_read and not for_write:
            rb._put(k, (value, now))
        return value

    def _put_single(self, value: Any) -> None:
        rb = self._rb
        k = rb._db_key(self._sid)
        if self._ttl_ms is None:
            rb._put(k, value)
        else:
            now = self._now()
            self._step(now, k)
            rb._put(k, (value, now))


class RocksValueState(_RocksState, ValueState[T]):
    """:class:`~checkpoint.state.ValueState` on RocksDB."""

    def __init__(self, backend: RocksDBKeyedStateBackend, descriptor: ValueStateDescriptor[T]) -> None:
        self._setup(backend, descriptor)
        self._default = descriptor.default  # type: ignore[assignment]  # T | None: see ValueState

    def value(self) -> T:
        v = self._get_single()
        return self._default if v is _MISSING else v

    def update(self, value: T | None) -> None:
        if value is None:
            self.clear()
        else:
            self._put_single(value)


class RocksListState(_RocksState, ListState[T]):
    """:class:`~checkpoint.state.ListState` on RocksDB (one entry per key; TTL per element)."""

    def __init__(self, backend: RocksDBKeyedStateBackend, descriptor: ListStateDescriptor[T]) -> None:
        self._setup(backend, descriptor)

    def get(self) -> list[T]:
        rb = self._rb
        k = rb._db_key(self._sid)
        stored = rb._get(k)
        if self._ttl_ms is None:
            return [] if stored is ABSENT else list(stored)
        now = self._now()
        self._step(now, k)
        if stored is ABSENT:
            return []
        limit = now - self._ttl_ms
        live = [e for e in stored if e[1] > limit]
        result = [e[0] for e in (stored if self._ret_expired else live)]
        if self._on_read:
            live = [(e[0], now) for e in live]
        if len(live) != len(stored) or self._on_read:
            rb._put(k, live if live else ABSENT)
        return result

    def add(self, value: T) -> None:
        self.add_all((value,))

    def add_all(self, values: Iterable[T] | None) -> None:
        items: list[Any] = self._values_arg(values, "add_all")
        rb = self._rb
        k = rb._db_key(self._sid)
        if self._ttl_ms is not None:
            now = self._now()
            self._step(now, k)
            items = [(v, now) for v in items]
        if not items:
            return
        stored = rb._get(k)
        if stored is ABSENT:
            rb._put(k, items)
        else:
            stored.extend(items)
            rb._put(k, stored)

    def update(self, values: Iterable[T] | None) -> None:
        items = self._values_arg(values, "update")
        self.clear()
        self.add_all(items)


class RocksMapState(_RocksState, MapState[K, V]):
    """:class:`~checkpoint.state.MapState` on RocksDB: one entry per map key, so reading
    or writing one map key never reads the whole map; ``keys()``/``items()`` scan the
    current key's range of RocksDB."""

    def __init__(self, backend: RocksDBKeyedStateBackend, descriptor: MapStateDescriptor[K, V]) -> None:
        self._setup(backend, descriptor)

    def _entry_key(self, key: Any) -> bytes:
        return self._rb._db_key(self._sid) + encode_key(key)

    def _tick(self, skip: bytes | None) -> int:
        now = self._now()
        self._step(now, skip)
        return now

    def get(self, key: K) -> V | None:
        rb = self._rb
        k = self._entry_key(key)
        entry = rb._get(k)
        if entry is ABSENT:
            if self._ttl_ms is not None:
                self._tick(None)
            return None
        if self._ttl_ms is None:
            return entry
        now = self._tick(None)
        value, ts = entry
        if ts + self._ttl_ms <= now:
            rb._put(k, ABSENT)
            return value if self._ret_expired else None
        if self._on_read:
            rb._put(k, (value, now))
        return value

    def put(self, key: K, value: V) -> None:
        k = self._entry_key(key)
        if self._ttl_ms is None:
            self._rb._put(k, value)
        else:
            self._rb._put(k, (value, self._tick(None)))

    def put_all(self, entries: dict[K, V] | Iterable[tuple[K, V]] | None) -> None:
        for key, value in self._entries_arg(entries):
            self.put(key, value)

    def remove(self, key: K) -> None:
        if self._ttl_ms is not None:
            self._tick(None)
        self._rb._put(self._entry_key(key), ABSENT)

    def contains(self, key: K) -> bool:
        rb = self._rb
        k = self._entry_key(key)
        entry = rb._get(k)
        if entry is ABSENT:
            return False
        if self._ttl_ms is None:
            return True
        now = self._tick(None)
        if entry[1] + self._ttl_ms <= now:
            rb._put(k, ABSENT)
            return self._ret_expired
        if self._on_read:  # a read of the entry (see MapState.contains)
            rb._put(k, (entry[0], now))
        return True

    def _live_items(self, first_only: bool = False) -> list[tuple[K, V]]:
        """The live ``(map key, value)`` pairs (expired ones removed; with
        ``return_expired`` returned once). ``first_only`` (``is_empty``): up to the first
        live entry, refreshing no timestamp, as no value is read."""
        rb = self._rb
        prefix = rb._db_key(self._sid)
        out: list[tuple[K, V]] = []
        if self._ttl_ms is None:
            for map_key, value in rb._scan_map(prefix, first_only):
                out.append((map_key, value))
            return out
        now = self._tick(None)
        limit = now - self._ttl_ms
        for map_key, (value, ts), k in rb._scan_map_raw(prefix):
            if ts <= limit:
                rb._put(k, ABSENT)
                if not self._ret_expired:
                    continue
            elif self._on_read and not first_only:
                rb._put(k, (value, now))
            out.append((map_key, value))
            if first_only and ts > limit:
                break
        return out

    def clear(self) -> None:
        rb = self._rb
        if self._ttl_ms is not None:
            self._tick(None)
        rb._delete_prefix(rb._db_key(self._sid))

    def keys(self) -> list[K]:
        return [k for k, _ in self._live_items()]

    def values(self) -> list[V]:
        return [v for _, v in self._live_items()]

    def items(self) -> list[tuple[K, V]]:
        return self._live_items()

    def is_empty(self) -> bool:
        """See :meth:`MapState.is_empty` (refreshes no TTL timestamp)."""
        return not self._live_items(first_only=True)


class RocksReducingState(_RocksState, ReducingState[T]):
    """:class:`~checkpoint.state.ReducingState` on RocksDB."""

    def __init__(self, backend: RocksDBKeyedStateBackend, descriptor: ReducingStateDescriptor[T]) -> None:
        self._setup(backend, descriptor)
        if descriptor.reduce_fn is None:  # (the descriptor refuses it)
            raise StateError(f"reducing state {descriptor.name!r} has no reduce_fn")
        self._reduce = descriptor.reduce_fn

    def get(self) -> T | None:
        v = self._get_single()
        return None if v is _MISSING else v

    def add(self, value: T) -> None:
        current = self._get_single(for_write=True)
        self._put_single(value if current is _MISSING else self._reduce(current, value))

    def add_and_get(self, value: T) -> T:
        """``add(value)``, then the reduced value (what ``get()`` would return), reading the
        entry once: the record-API reduce emits it for every record."""
        current = self._get_single(for_write=True)
        reduced = value if current is _MISSING else self._reduce(current, value)
        self._put_single(reduced)
        return reduced


class RocksAggregatingState(_RocksState, AggregatingState[IN, OUT], Generic[IN, OUT]):
    """:class:`~checkpoint.state.AggregatingState` on RocksDB."""

    def __init__(self, backend: RocksDBKeyedStateBackend, descriptor: AggregatingStateDescriptor[IN, Any, OUT]) -> None:
        self._setup(backend, descriptor)
        if descriptor.aggregate_function is None:  # (the descriptor refuses it)
            raise StateError(f"aggregating state {descriptor.name!r} has no aggregate_function")
        self._agg = descriptor.aggregate_function

    def get(self) -> OUT | None:
        acc = self._get_single()
        return None if acc is _MISSING else self._agg.get_result(acc)

    def add(self, value: IN) -> None:
        acc = self._get_single(for_write=True)
        if acc is _MISSING:
            acc = self._agg.create_accumulator()
        self._put_single(self._agg.add(value, acc))


#: state class for each descriptor kind
ROCKSDB_STATE_CLASSES: dict[str, type[KeyedState]] = {
    ValueStateDescriptor.kind: RocksValueState,
    ListStateDescriptor.kind: RocksListState,
    MapStateDescriptor.kind: RocksMapState,
    ReducingStateDescriptor.kind: RocksReducingState,
    AggregatingStateDescriptor.kind: RocksAggregatingState,
}
