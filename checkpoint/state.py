"""Keyed state objects: views of one state's table scoped to the backend's current key.

A state object never holds a key itself: every call acts on the key last given to the
backend's ``set_current_key``. Objects are created by
:meth:`~checkpoint.heap.HeapKeyedStateBackend.get_state`, not directly.

Storage layout (owned by the backend): each state has a table
``{key_group: {key: entry}}``. Without TTL the entry is the plain value (a list for list
state, a dict for map state). With TTL every value carries the processing time of its last
timestamp update: ``(value, ts)`` for value/reducing/aggregating state, a list of
``(element, ts)`` for list state and ``{map_key: (value, ts)}`` for map state. An entry is
expired when ``ts + ttl_ms <= now``. Every access to a TTL state also advances the state's
:class:`~checkpoint.ttl.TtlCleanupCursor` by ``cleanup_size`` entries, removing expired
entries of other keys (incremental cleanup).

Values are stored by reference (heap backend): a value read from state and mutated in
place changes the state. Call ``update()`` anyway, as other backends need it, and never
mutate a value after the current key has changed.

Example:
    >>> from raystream.engine.keygroups import KeyGroupRange
    >>> from raystream.checkpoint import HeapKeyedStateBackend, ListStateDescriptor
    >>> b = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
    >>> seen = b.get_state(ListStateDescriptor("seen"))
    >>> b.set_current_key("k"); seen.add(1); seen.add(2); seen.get()
    [1, 2]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, TypeVar, cast

from raystream.engine.errors import StateError
from raystream.engine.keygroups import (
    canonical_key as canonical_key,  # (re-exported: defined with the key hash)
)

from .descriptors import (
    AggregateFunction,
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)
from .ttl import TtlCleanupCursor

if TYPE_CHECKING:
    from .heap import HeapKeyedStateBackend

__all__ = [
    "KeyedState",
    "ValueState",
    "ListState",
    "MapState",
    "ReducingState",
    "AggregatingState",
    "canonical_key",
]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
IN = TypeVar("IN")
OUT = TypeVar("OUT")
_MISSING = object()  # "no value" (values may be None)
#: incremental TTL cleanup runs every this many accesses of a state (for cleanup_size each)
_CLEANUP_EVERY = 16
#: types whose values are their own canonical key (checked first: the common keys)
_CANONICAL_TYPES = frozenset([str, int, bytes, bool, type(None)])


def no_current_key_error(name: str) -> StateError:
    """The error of a keyed state used while no key is current (in a function's ``open()`` or
    ``close()``, or a backend driven by hand before ``set_current_key``)."""
    return StateError(
        f"state {name!r} used without a current key: keyed state belongs to the key of the "
        "record or timer being processed, so read and write it in process_element() or "
        "on_timer() (open() only declares it with get_state(), and close() comes after the "
        "last key: per-key values are not available there); a backend driven by hand needs "
        "set_current_key(key) first"
    )


class KeyedState:
    """Base of keyed state objects (see the module docstring)."""

    __slots__ = ("_backend", "_descriptor", "_table", "_ttl_ms", "_on_read", "_ret_expired", "_cursor", "_countdown")

    def __init__(
        self,
        backend: HeapKeyedStateBackend,
        descriptor: StateDescriptor,
        table: dict[int, dict[Any, Any]],
    ) -> None:
        self._backend = backend
        self._descriptor = descriptor
        self._table = table
        ttl = getattr(descriptor, "ttl", None)
        self._ttl_ms: int | None = ttl.ttl_ms if ttl is not None else None
        self._on_read = bool(ttl is not None and ttl.update_on_read)
        self._ret_expired = bool(ttl is not None and ttl.return_expired)
        #: walks the table removing expired entries (TTL states only; see checkpoint.ttl)
        self._cursor: TtlCleanupCursor | None = (
            None if ttl is None else TtlCleanupCursor(table, descriptor.kind, ttl.ttl_ms, ttl.cleanup_size)
        )
        self._countdown = _CLEANUP_EVERY

    @property
    def name(self) -> str:
        """The state's name."""
        return self._descriptor.name

    @property
    def descriptor(self) -> StateDescriptor:
        """The descriptor this state was created from."""
        return self._descriptor

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._descriptor.name!r})"

    # -- helpers -----------------------------------------------------------------------

    def _group(self) -> dict[Any, Any] | None:
        """The current key group's dict of this state (None if it has none yet)."""
        kg = self._backend._kg
        if kg < 0:
            raise self._no_key()
        return self._table.get(kg)

    def _group_w(self) -> dict[Any, Any]:
        kg = self._backend._kg
        if kg < 0:
            raise self._no_key()
        group = self._table.get(kg)
        if group is None:
            group = self._table[kg] = {}
        return group

    def _no_key(self) -> StateError:
        return no_current_key_error(self.name)

    def _now(self) -> int:
        return self._backend._clock.now_ms()

    def _values_arg(self, values: Iterable[Any] | None, method: str) -> list[Any]:
        """The values given to ``add_all``/``update`` as a new list: None is no values (as in
        Flink: ``addAll(null)`` changes nothing, ``update(null)`` clears)."""
        if values is None:
            return []
        try:
            return list(values)
        except TypeError as exc:
            raise StateError(
                f"{self._descriptor.kind} state {self.name!r}: {method}() takes an iterable of values "
                f"(or None), got {values!r}; to add one value use add()"
            ) from exc

    def _entries_arg(self, entries: Any) -> list[tuple[Any, Any]]:
        """The entries given to ``put_all`` as ``(map key, value)`` pairs: a mapping or an
        iterable of pairs (as ``dict.update`` takes them); None is no entries."""
        if entries is None:
            return []
        try:
            return [(k, v) for k, v in (entries.items() if hasattr(entries, "items") else entries)]
        except (TypeError, ValueError) as exc:
            raise StateError(
                f"{self._descriptor.kind} state {self.name!r}: put_all() takes a dict or an iterable of "
                f"(key, value) pairs, got {entries!r}"
            ) from exc

    def _cleanup_step(self, now: int) -> None:
        """Incremental TTL cleanup: ``cleanup_size`` more entries of this state per access
        (not the current key's, which the access itself handles), checked in one go every
        ``_CLEANUP_EVERY`` accesses, which costs far less than a few on each."""
        self._countdown -= 1
        if self._countdown <= 0:
            self._countdown = _CLEANUP_EVERY
            cursor = self._cursor
            if cursor is not None and cursor.size:
                cursor.step(cursor.size * _CLEANUP_EVERY, now, self._backend._key)

    def clear(self) -> None:
        """Remove the current key's value of this state."""
        group = self._group()
        if group is not None:
            group.pop(self._backend._key, None)
        if self._cursor is not None:
            self._cleanup_step(self._now())

    # single-value states (value, reducing, aggregating) --------------------------------

    def _get_single(self, for_write: bool = False) -> Any:
        """The current key's value or ``_MISSING``, applying TTL rules for a read."""
        group = self._group()
        if self._ttl_ms is None:
            return _MISSING if group is None else group.get(self._backend._key, _MISSING)
        now = self._now()
        self._cleanup_step(now)
        if group is None:
            return _MISSING
        key = self._backend._key
        entry = group.get(key, _MISSING)
        if entry is _MISSING:
            return entry
        value, ts = entry
        if ts + self._ttl_ms <= now:
            del group[key]
            return value if (self._ret_expired and not for_write) else _MISSING
        if self._on_read and not for_write:
            group[key] = (value, now)
        return value

    def _put_single(self, value: Any) -> None:
        group = self._group_w()
        if self._ttl_ms is None:
            group[self._backend._key] = value
        else:
            now = self._now()
            self._cleanup_step(now)
            group[self._backend._key] = (value, now)


class ValueState(KeyedState, Generic[T]):
    """One value per key (Flink's ``ValueState``).

    Example:
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> from raystream.checkpoint import HeapKeyedStateBackend, ValueStateDescriptor
        >>> b = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
        >>> count = b.get_state(ValueStateDescriptor("count", default=0))
        >>> b.set_current_key("a"); count.update(count.value() + 1); count.value()
        1
    """

    __slots__ = ("_default",)

    def __init__(
        self, backend: HeapKeyedStateBackend, descriptor: ValueStateDescriptor[T], table: dict[int, dict[Any, Any]]
    ) -> None:
        super().__init__(backend, descriptor, table)
        # what a key without a value reads; a None default means T includes None (see the
        # descriptor), which the type of ``default`` (T | None) cannot say
        self._default = cast(T, descriptor.default)

    def value(self) -> T:
        """The current key's value, or the descriptor's default when it has none."""
        v = self._get_single()
        return self._default if v is _MISSING else v

    def update(self, value: T | None) -> None:
        """Set the current key's value (``None`` clears it, as in Flink)."""
        if value is None:
            self.clear()
        else:
            self._put_single(value)


class ListState(KeyedState, Generic[T]):
    """A list of values per key (Flink's ``ListState``); TTL applies per element.

    Example:
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> from raystream.checkpoint import HeapKeyedStateBackend, ListStateDescriptor
        >>> b = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
        >>> s = b.get_state(ListStateDescriptor("buf"))
        >>> b.set_current_key(7); s.add_all([1, 2]); s.add(3); s.get()
        [1, 2, 3]
    """

    __slots__ = ()

    def get(self) -> list[T]:
        """A new list with the current key's elements (empty if none)."""
        group = self._group()
        if self._ttl_ms is None:
            stored = None if group is None else group.get(self._backend._key)
            return list(stored) if stored else []
        now = self._now()
        self._cleanup_step(now)
        if group is None:
            return []
        key = self._backend._key
        stored = group.get(key)
        if not stored:
            return []
        limit = now - self._ttl_ms  # live iff ts > limit
        live = [e for e in stored if e[1] > limit]
        result = [e[0] for e in (stored if self._ret_expired else live)]
        if self._on_read:
            live = [(e[0], now) for e in live]
        if len(live) != len(stored) or self._on_read:
            if live:
                group[key] = live
            else:
                del group[key]
        return result

    def add(self, value: T) -> None:
        """Append ``value`` to the current key's list."""
        group = self._group_w()
        key = self._backend._key
        item: object = value
        if self._ttl_ms is not None:
            now = self._now()
            self._cleanup_step(now)
            item = (value, now)
        stored = group.get(key)
        if stored is None:
            group[key] = [item]
        else:
            stored.append(item)

    def add_all(self, values: Iterable[T] | None) -> None:
        """Append every value of ``values`` to the current key's list (None or empty: no
        change, as in Flink).

        Raises:
            StateError: ``values`` is not iterable (one value goes with :meth:`add`).
        """
        items: list[object] = self._values_arg(values, "add_all")
        if self._ttl_ms is not None:
            now = self._now()
            self._cleanup_step(now)
            items = [(v, now) for v in items]
        if not items:
            return
        group = self._group_w()
        key = self._backend._key
        stored = group.get(key)
        if stored is None:
            group[key] = items
        else:
            stored.extend(items)

    def update(self, values: Iterable[T] | None) -> None:
        """Replace the current key's list with ``values`` (None or empty clears it, as in
        Flink).

        Raises:
            StateError: ``values`` is not iterable; the list is left unchanged.
        """
        items = self._values_arg(values, "update")
        self.clear()
        self.add_all(items)


class MapState(KeyedState, Generic[K, V]):
    """A dict per key (Flink's ``MapState``); TTL applies per map entry.

    ``keys()``, ``values()`` and ``items()`` return new lists, so the map may be changed
    while iterating over them.

    Example:
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> from raystream.checkpoint import HeapKeyedStateBackend, MapStateDescriptor
        >>> b = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
        >>> m = b.get_state(MapStateDescriptor("m"))
        >>> b.set_current_key("user"); m.put("x", 1); m.put_all({"y": 2}); sorted(m.items())
        [('x', 1), ('y', 2)]
    """

    __slots__ = ()

    def _map(self, create: bool = False) -> dict[Any, Any] | None:
        if self._cursor is not None:  # every map access goes through here
            self._cleanup_step(self._now())
        key = self._backend._key
        if create:
            group_w = self._group_w()
            m = group_w.get(key)
            if m is None:
                m = group_w[key] = {}
            return m
        group = self._group()
        return None if group is None else group.get(key)

    def _map_key(self, key: Any) -> Any:
        """``key`` as a key of the heap's map dict (``canonical_key``), refusing an unhashable
        one with the remedy (a bare ``TypeError: unhashable type`` before)."""
        key = canonical_key(key)
        if type(key) not in _CANONICAL_TYPES:
            try:
                hash(key)
            except TypeError as exc:
                raise StateError(
                    f"map state {self.name!r}: map key {key!r} is unhashable ({exc}); the heap backend "
                    "keeps a map in a dict: use a tuple, a frozenset or tuple(sorted(d.items())) as map key"
                ) from exc
        return key

    def _drop_if_empty(self, m: dict[Any, Any]) -> None:
        if not m:
            group = self._group()
            if group is not None:
                group.pop(self._backend._key, None)

    def get(self, key: K) -> V | None:
        """The value under ``key`` in the current key's map, or None."""
        m = self._map()
        if not m:
            return None
        key = self._map_key(key)
        if self._ttl_ms is None:
            return m.get(key)
        entry = m.get(key, _MISSING)
        if entry is _MISSING:
            return None
        value, ts = entry
        now = self._now()
        if ts + self._ttl_ms <= now:
            del m[key]
            self._drop_if_empty(m)
            return value if self._ret_expired else None
        if self._on_read:
            m[key] = (value, now)
        return value

    def put(self, key: K, value: V) -> None:
        """Set ``key`` to ``value`` in the current key's map."""
        m = self._map(create=True)
        assert m is not None
        m[self._map_key(key)] = value if self._ttl_ms is None else (value, self._now())

    def put_all(self, entries: dict[K, V] | Iterable[tuple[K, V]] | None) -> None:
        """Set every entry of ``entries`` (a dict or ``(key, value)`` pairs; None: none) in
        the current key's map.

        Raises:
            StateError: ``entries`` is neither a dict nor an iterable of pairs.
        """
        pairs = [(self._map_key(k), v) for k, v in self._entries_arg(entries)]
        if not pairs:
            return
        m = self._map(create=True)
        assert m is not None
        if self._ttl_ms is None:
            m.update(pairs)
        else:
            now = self._now()
            m.update((k, (v, now)) for k, v in pairs)

    def remove(self, key: K) -> None:
        """Delete ``key`` from the current key's map (no error if absent)."""
        m = self._map()
        if m:
            m.pop(self._map_key(key), None)
            self._drop_if_empty(m)

    def contains(self, key: K) -> bool:
        """True if the current key's map has a live entry for ``key``; a read of the entry
        (``"on_read_and_write"`` refreshes its timestamp, as Flink's ``get(key) != null``)."""
        m = self._map()
        key = self._map_key(key)
        if not m or key not in m:
            return False
        if self._ttl_ms is None:
            return True
        value, ts = m[key]
        now = self._now()
        if ts + self._ttl_ms <= now:
            del m[key]
            self._drop_if_empty(m)
            return self._ret_expired
        if self._on_read:
            m[key] = (value, now)
        return True

    def _live_items(self) -> list[tuple[K, V]]:
        m = self._map()
        if not m:
            return []
        if self._ttl_ms is None:
            return list(m.items())
        now = self._now()
        limit = now - self._ttl_ms
        expired = [k for k, e in m.items() if e[1] <= limit]
        result = [(k, e[0]) for k, e in m.items() if self._ret_expired or e[1] > limit]
        for k in expired:
            del m[k]
        if self._on_read:
            for k, e in m.items():
                m[k] = (e[0], now)
        self._drop_if_empty(m)
        return result

    def keys(self) -> list[K]:
        """The keys of the current key's map."""
        return [k for k, _ in self._live_items()]

    def values(self) -> list[V]:
        """The values of the current key's map."""
        return [v for _, v in self._live_items()]

    def items(self) -> list[tuple[K, V]]:
        """The ``(key, value)`` pairs of the current key's map."""
        return self._live_items()

    def is_empty(self) -> bool:
        """True if the current key's map has no live entry (with ``return_expired``: no
        entry not cleaned up yet). It reads no value, so it refreshes no TTL timestamp
        (also with ``"on_read_and_write"``); expired entries it finds are removed."""
        m = self._map()
        if not m:
            return True
        if self._ttl_ms is None:
            return False
        limit = self._now() - self._ttl_ms
        expired = [k for k, e in m.items() if e[1] <= limit]
        live = len(expired) < len(m)
        for k in expired:
            del m[k]
        self._drop_if_empty(m)
        return not (live or (self._ret_expired and expired))


class ReducingState(KeyedState, Generic[T]):
    """A value per key folded with the descriptor's ``reduce_fn`` (Flink's ``ReducingState``).

    Example:
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> from raystream.checkpoint import HeapKeyedStateBackend, ReducingStateDescriptor
        >>> b = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
        >>> total = b.get_state(ReducingStateDescriptor("sum", lambda a, c: a + c))
        >>> b.set_current_key("a"); total.add(2); total.add(3); total.get()
        5
    """

    __slots__ = ("_reduce",)

    def __init__(
        self, backend: HeapKeyedStateBackend, descriptor: ReducingStateDescriptor[T], table: dict[int, dict[Any, Any]]
    ) -> None:
        super().__init__(backend, descriptor, table)
        reduce_fn = descriptor.reduce_fn
        if reduce_fn is None:  # (the descriptor refuses it: see ReducingStateDescriptor)
            raise StateError(f"reducing state {descriptor.name!r} has no reduce_fn")
        self._reduce: Callable[[T, T], T] = reduce_fn

    def get(self) -> T | None:
        """The reduced value of the current key, or None if nothing was added."""
        v = self._get_single()
        return None if v is _MISSING else v

    def add(self, value: T) -> None:
        """Fold ``value`` into the current key's reduced value."""
        current = self._get_single(for_write=True)
        self._put_single(value if current is _MISSING else self._reduce(current, value))


class AggregatingState(KeyedState, Generic[IN, OUT]):
    """An accumulator per key driven by an AggregateFunction (Flink's ``AggregatingState``).

    Example:
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> from raystream.checkpoint import AggregateFunction, AggregatingStateDescriptor
        >>> from raystream.checkpoint import HeapKeyedStateBackend
        >>> class Mean(AggregateFunction):
        ...     def create_accumulator(self): return (0, 0)
        ...     def add(self, v, acc): return (acc[0] + v, acc[1] + 1)
        ...     def get_result(self, acc): return acc[0] / acc[1]
        ...     def merge(self, a, b): return (a[0] + b[0], a[1] + b[1])
        >>> b = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
        >>> mean = b.get_state(AggregatingStateDescriptor("mean", Mean()))
        >>> b.set_current_key("a"); mean.add(1); mean.add(4); mean.get()
        2.5
    """

    __slots__ = ("_agg",)

    def __init__(
        self,
        backend: HeapKeyedStateBackend,
        descriptor: AggregatingStateDescriptor[IN, Any, OUT],
        table: dict[int, dict[Any, Any]],
    ) -> None:
        super().__init__(backend, descriptor, table)
        fn = descriptor.aggregate_function
        if fn is None:  # (the descriptor refuses it: see AggregatingStateDescriptor)
            raise StateError(f"aggregating state {descriptor.name!r} has no aggregate_function")
        self._agg: AggregateFunction[IN, Any, OUT] = fn

    def get(self) -> OUT | None:
        """``get_result`` of the current key's accumulator, or None if nothing was added."""
        acc = self._get_single()
        if acc is _MISSING:
            return None
        return self._agg.get_result(acc)

    def add(self, value: IN) -> None:
        """Add ``value`` to the current key's accumulator."""
        fn = self._agg
        acc = self._get_single(for_write=True)
        if acc is _MISSING:
            acc = fn.create_accumulator()
        self._put_single(fn.add(value, acc))


#: state class for each descriptor kind
STATE_CLASSES: dict[str, type[KeyedState]] = {
    ValueStateDescriptor.kind: ValueState,
    ListStateDescriptor.kind: ListState,
    MapStateDescriptor.kind: MapState,
    ReducingStateDescriptor.kind: ReducingState,
    AggregatingStateDescriptor.kind: AggregatingState,
}
