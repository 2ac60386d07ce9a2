"""Window contents and trigger state in the keyed state backend (off-heap windows).

On a backend that keeps state off the heap (``KeyedStateBackend.off_heap``: RocksDB), the
:class:`~operators.window_operator.WindowOperator` keeps no per-key dicts: each (key,
window) pair is one entry of a :class:`~checkpoint.state.MapState` (map key: the window,
Flink's window namespace), so contents live in RocksDB, are part of the keyed snapshot and
are re-split by key group on rescaling. Merging (session) assigners also keep each key's
list of windows in a value state (Flink's merging-window set), so merging reads one entry
instead of scanning the key's range. A TimeWindow is stored (map key, timer namespace) as
17 bytes (:func:`window_key`) instead of its pickle; every stored key still decodes with the
backend's canonical key decoding. A job switched back to the heap backend through a RocksDB
snapshot gets these states back into the heap operator's dicts (map keys decoded with
:func:`window_of_key`; see ``WindowOperator._state_from_backend``).

:class:`BackendWindowState` stands where the operator keeps ``key -> window -> value``
dicts on the heap, with the part of the dict API the operator's window logic uses, so that
logic runs unchanged on both backends (and the heap path pays nothing):

* ``state.get(key)`` gives a :class:`KeyWindows` view of the key (never None);
* a view has ``get(w, default)``, ``view[w] = v``, ``del view[w]``, ``pop(w[, default])``
  and, for merging assigners, iteration over the key's windows;
* emptiness is not tracked (a view is always true; ``pop(key)`` / ``del state[key]`` of
  the outer mapping do nothing): a key's entries go away with its windows.

Values read are the backend's (cached) objects: store a changed value back (``view[w] =
v``), as the operator does after every change.

Example:
    >>> from raystream.engine.keygroups import KeyGroupRange
    >>> from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend
    >>> from raystream.operators.windows import TimeWindow
    >>> b = RocksDBKeyedStateBackend(KeyGroupRange(0, 127), 128)
    >>> contents = BackendWindowState(b, "_window/contents")
    >>> per_key = contents.get("a")
    >>> per_key[TimeWindow(0, 10)] = [1, 2]
    >>> contents.get("a").get(TimeWindow(0, 10)), contents.get("b").get(TimeWindow(0, 10), "none")
    ([1, 2], 'none')
    >>> b.num_entries("_window/contents")
    1
    >>> b.close()
"""

from __future__ import annotations

import struct
from typing import Any, Iterator

from raystream.checkpoint.backend import KeyedStateBackend
from raystream.checkpoint.descriptors import (
    MapStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)
from raystream.checkpoint.rocksdb_keys import decode_key, encode_key
from raystream.engine.errors import ConfigError
from raystream.engine.keygroups import key_group_for

from .windows import TimeWindow

__all__ = [
    "BackendWindowState",
    "KeyWindows",
    "WINDOW_CONTENTS",
    "WINDOW_TRIGGER_STATE",
    "MERGING_WINDOWS",
    "encode_window",
    "decode_window",
    "window_key",
    "window_of_key",
    "KeyedStateStore",
    "WINDOW_STATE_PREFIX",
]

#: names of the window operator's state in an off-heap keyed backend
WINDOW_CONTENTS = "_window/contents"
WINDOW_TRIGGER_STATE = "_window/trigger"
MERGING_WINDOWS = "_window/merging"

_RAISE: Any = object()
_TIME_WINDOW = struct.Struct(">qq")


def window_key(window: Any) -> Any:
    """The key that stands for ``window`` in keyed state: 17 bytes (``b"w"``, start and end
    as big-endian int64) for a :class:`TimeWindow`, which the canonical key encoding would
    pickle, else the window itself. :func:`window_of_key` inverts it.

    Example:
        >>> window_key(TimeWindow(0, 10)) == b"w" + bytes(7) + bytes([0]) + bytes(7) + bytes([10])
        True
    """
    if type(window) is TimeWindow:
        try:
            return b"w" + _TIME_WINDOW.pack(window.start, window.end)
        except struct.error:  # beyond int64: stored as the window itself
            pass
    return window


def window_of_key(key: Any) -> Any:
    """The window :func:`window_key` stands for."""
    if type(key) is bytes and len(key) == 17 and key[:1] == b"w":
        return TimeWindow(*_TIME_WINDOW.unpack_from(key, 1))
    return key


def encode_window(window: Any) -> bytes:
    """``encode_key(window_key(window))``: a window as a timer namespace in the keyed backend
    (any reader decodes it with :func:`~checkpoint.rocksdb_keys.decode_key` and
    :func:`window_of_key`).

    Example:
        >>> decode_window(encode_window(TimeWindow(0, 10))), len(encode_window(TimeWindow(0, 10)))
        (TimeWindow(start=0, end=10), 18)
    """
    return encode_key(window_key(window))


def decode_window(data: bytes) -> Any:
    """The window :func:`encode_window` encoded."""
    return window_of_key(decode_key(data))


class BackendWindowState:
    """``key -> window -> value`` in a map state of ``backend`` (see the module docstring).

    Args:
        backend: the operator's keyed state backend (``off_heap``).
        name: the map state's name.
        merging: also keep each key's windows in the value state :data:`MERGING_WINDOWS`,
            so the views can be iterated (merging assigners).
    """

    __slots__ = ("backend", "name", "map", "windows", "_set_key")

    def __init__(self, backend: KeyedStateBackend, name: str, merging: bool = False) -> None:
        self.backend = backend
        self.name = name
        self.map = backend.get_state(MapStateDescriptor(name))
        self.windows = backend.get_state(ValueStateDescriptor(MERGING_WINDOWS)) if merging else None
        self._set_key = backend.set_current_key

    def get(self, key: Any, default: Any = None) -> KeyWindows:
        """The view of ``key``'s windows (``default`` is ignored: every key has a view)."""
        return KeyWindows(self, key)

    def setdefault(self, key: Any, default: Any = None) -> KeyWindows:
        return KeyWindows(self, key)

    def pop(self, key: Any, default: Any = None) -> None:
        """Nothing to do: a key's entries are removed with its windows."""
        return None

    def __delitem__(self, key: Any) -> None:
        return None

    def put(self, key: Any, window: Any, value: Any) -> None:
        """``get(key)[window] = value``."""
        KeyWindows(self, key)[window] = value

    def num_entries(self) -> int:
        """(key, window) pairs stored (a scan of the backend)."""
        num_entries = getattr(self.backend, "num_entries", None)
        if num_entries is not None:
            return int(num_entries(self.name))
        n = 0
        for key in self.backend.keys(self.name):
            self._set_key(key)
            n += len(self.map.keys())
        return n

    def __repr__(self) -> str:
        return f"BackendWindowState({self.name!r}, backend={type(self.backend).__name__})"


class KeyWindows:
    """The windows of one key in a :class:`BackendWindowState` (a dict-like view)."""

    __slots__ = ("_s", "_key")

    def __init__(self, state: BackendWindowState, key: Any) -> None:
        self._s = state
        self._key = key

    def get(self, window: Any, default: Any = None) -> Any:
        s = self._s
        s._set_key(self._key)
        w = window_key(window)
        value = s.map.get(w)
        if value is None and default is not None and not s.map.contains(w):
            return default
        return value

    def __setitem__(self, window: Any, value: Any) -> None:
        s = self._s
        s._set_key(self._key)
        s.map.put(window_key(window), value)
        if s.windows is not None:
            known = s.windows.value() or []
            if window not in known:
                s.windows.update([*known, window])

    def __delitem__(self, window: Any) -> None:
        if self.pop(window, _RAISE) is _RAISE:
            raise KeyError(window)

    def pop(self, window: Any, default: Any = _RAISE) -> Any:
        """Remove ``window`` and return its value (``default`` if it has none; KeyError
        without a default)."""
        s = self._s
        s._set_key(self._key)
        w = window_key(window)
        value = s.map.get(w)
        if value is None and not s.map.contains(w):
            if default is _RAISE:
                raise KeyError(window)
            return default
        s.map.remove(w)
        if s.windows is not None:
            known = s.windows.value() or []
            if window in known:
                rest = [w for w in known if w != window]
                s.windows.update(rest if rest else None)
        return value

    def __iter__(self) -> Iterator[Any]:
        """The key's windows (merging assigners only)."""
        s = self._s
        if s.windows is None:
            raise TypeError(f"the windows of state {s.name!r} are listed only for merging window assigners")
        s._set_key(self._key)
        return iter(list(s.windows.value() or ()))

    def __bool__(self) -> bool:
        return True  # emptiness is not tracked (see the module docstring)

    def __repr__(self) -> str:
        return f"KeyWindows({self._s.name!r}, key={self._key!r})"



#: prefix of the keyed map states behind ``WindowContext.window_state()`` (map key: the window)
WINDOW_STATE_PREFIX = "_window/state/"


class ScopedState:
    """A keyed state object of one key: every call first makes that key current (in its
    key group), so it stays right however the operator moves between keys."""

    __slots__ = ("_state", "_backend", "_key", "_kg")

    def __init__(self, state: Any, backend: KeyedStateBackend, key: Any, key_group: int) -> None:
        self._state = state
        self._backend = backend
        self._key = key
        self._kg = key_group

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._state, name)
        if not callable(attr):
            return attr
        backend, key, kg = self._backend, self._key, self._kg

        def scoped(*args: Any, **kwargs: Any) -> Any:
            backend.set_current_key_with_group(key, kg)
            return attr(*args, **kwargs)

        return scoped

    def __repr__(self) -> str:
        return f"ScopedState({self._state!r}, key={self._key!r})"


class _WindowState:
    """Base of the per-window states: the value of one window of one key, an entry of a map
    state of the key (map key: :func:`window_key`)."""

    __slots__ = ("_descriptor", "_map", "_backend", "_key", "_kg", "_w")

    def __init__(self, descriptor: Any, map_state: Any, backend: KeyedStateBackend, key: Any, kg: int, w: Any) -> None:
        self._descriptor = descriptor
        self._map = map_state
        self._backend = backend
        self._key = key
        self._kg = kg
        self._w = w

    @property
    def name(self) -> str:
        """The state's name."""
        return str(self._descriptor.name)

    def _get(self) -> Any:
        self._backend.set_current_key_with_group(self._key, self._kg)
        return self._map.get(self._w)  # (None: no value; a None value is never stored)

    def _put(self, value: Any) -> None:
        self._backend.set_current_key_with_group(self._key, self._kg)
        self._map.put(self._w, value)

    def clear(self) -> None:
        """Remove this window's value of the state."""
        self._backend.set_current_key_with_group(self._key, self._kg)
        self._map.remove(self._w)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _WindowValueState(_WindowState):
    def value(self) -> Any:
        v = self._get()
        return self._descriptor.default if v is None else v

    def update(self, value: Any) -> None:
        if value is None:
            self.clear()
        else:
            self._put(value)


class _WindowListState(_WindowState):
    def get(self) -> list[Any]:
        return list(self._get() or ())

    def add(self, value: Any) -> None:
        self._put([*(self._get() or ()), value])

    def add_all(self, values: Any) -> None:
        if values is not None:
            self._put([*(self._get() or ()), *values])

    def update(self, values: Any) -> None:
        values = list(values or ())
        if values:
            self._put(values)
        else:
            self.clear()


class _WindowMapState(_WindowState):
    def _dict(self) -> dict[Any, Any]:
        return dict(self._get() or {})

    def _store(self, d: dict[Any, Any]) -> None:
        if d:
            self._put(d)
        else:
            self.clear()

    def get(self, key: Any) -> Any:
        return self._dict().get(key)

    def put(self, key: Any, value: Any) -> None:
        d = self._dict()
        d[key] = value
        self._store(d)

    def put_all(self, entries: Any) -> None:
        d = self._dict()
        d.update(entries or {})
        self._store(d)

    def remove(self, key: Any) -> None:
        d = self._dict()
        if d.pop(key, _RAISE) is not _RAISE:
            self._store(d)

    def contains(self, key: Any) -> bool:
        return key in self._dict()

    def keys(self) -> list[Any]:
        return list(self._dict())

    def values(self) -> list[Any]:
        return list(self._dict().values())

    def items(self) -> list[tuple[Any, Any]]:
        return list(self._dict().items())

    def is_empty(self) -> bool:
        return not self._get()


class _WindowReducingState(_WindowState):
    def get(self) -> Any:
        return self._get()

    def add(self, value: Any) -> None:
        current = self._get()
        self._put(value if current is None else self._descriptor.reduce_fn(current, value))


class _WindowAggregatingState(_WindowState):
    def get(self) -> Any:
        acc = self._get()
        return None if acc is None else self._descriptor.aggregate_function.get_result(acc)

    def add(self, value: Any) -> None:
        fn = self._descriptor.aggregate_function
        acc = self._get()
        self._put(fn.add(value, fn.create_accumulator() if acc is None else acc))


_WINDOW_STATES: dict[str, type[_WindowState]] = {
    "value": _WindowValueState, "list": _WindowListState, "map": _WindowMapState,
    "reducing": _WindowReducingState, "aggregating": _WindowAggregatingState,
}


class KeyedStateStore:
    """Keyed state of one key (``window=None``: Flink's ``globalState()``) or of one key and
    window (Flink's ``windowState()``) for a :class:`~operators.windows.ProcessWindowFunction`.

    ``get_state(descriptor)`` takes the descriptors of :mod:`checkpoint.descriptors` (value,
    list, map, reducing, aggregating) and returns that kind of state, with the methods of
    :mod:`checkpoint.state`. A key's global state is its keyed state (TTL too). A window's
    state is an entry of a map state of the key (its name prefixed with
    :data:`WINDOW_STATE_PREFIX`, the map key the window), so it is checkpointed, rescaled
    and moved between the heap and RocksDB with the key; it takes no TTL (clear it in
    ``ProcessWindowFunction.clear``, which runs when the window is cleaned up).

    Example:
        >>> from raystream.checkpoint.heap import HeapKeyedStateBackend
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> b = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
        >>> w = KeyedStateStore(b, "k", TimeWindow(0, 10)).get_state(ValueStateDescriptor("n", default=0))
        >>> g = KeyedStateStore(b, "k", None).get_state(ValueStateDescriptor("n", default=0))
        >>> w.update(2); g.update(5); w.value(), g.value()
        (2, 5)
    """

    __slots__ = ("_backend", "_key", "_kg", "_window")

    def __init__(self, backend: KeyedStateBackend, key: Any, window: Any) -> None:
        self._backend = backend
        self._key = key
        self._window = window
        self._kg = key_group_for(key, backend.max_parallelism)

    def get_state(self, descriptor: Any) -> Any:
        """The state ``descriptor`` describes, for this store's key (and window)."""
        if not isinstance(descriptor, StateDescriptor):
            raise ConfigError(f"get_state() takes a state descriptor (e.g. ValueStateDescriptor('n')), got {descriptor!r}")
        backend = self._backend
        backend.set_current_key_with_group(self._key, self._kg)
        if self._window is None:
            return ScopedState(backend.get_state(descriptor), backend, self._key, self._kg)
        if getattr(descriptor, "ttl", None) is not None:
            raise ConfigError(
                f"window state {descriptor.name!r} has a TTL: per-window state lives as long as its window; "
                "clear it in ProcessWindowFunction.clear(context), or use global_state() for a TTL"
            )
        cls = _WINDOW_STATES[descriptor.kind]
        store = backend.get_state(MapStateDescriptor(f"{WINDOW_STATE_PREFIX}{descriptor.kind}/{descriptor.name}"))
        return cls(descriptor, store, backend, self._key, self._kg, window_key(self._window))

    # PyFlink's KeyedStateStore names: each takes its kind of descriptor, as get_state does
    get_list_state = get_state
    get_map_state = get_state
    get_reducing_state = get_state
    get_aggregating_state = get_state
