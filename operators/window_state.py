"""Window contents and trigger state in the keyed state backend (off-heap windows).

On a backend that keeps state off the heap (``KeyedStateBackend.off_heap``: RocksDB), the
:class:`~operators.window_operator.WindowOperator` keeps no per-key dicts: each (key,
window) pair is one entry of a :class:`~checkpoint.state.MapState` (map key: the window,
Flink's window namespace), so contents live in RocksDB, are part of the keyed snapshot and
are re-split by key group on rescaling. Merging (session) assigners also keep each key's
list of windows in a value state (Flink's merging-window set), so merging reads one entry
instead of scanning the key's range.

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

from typing import Any, Iterator

from raystream.checkpoint.backend import KeyedStateBackend
from raystream.checkpoint.descriptors import MapStateDescriptor, ValueStateDescriptor

__all__ = ["BackendWindowState", "KeyWindows", "WINDOW_CONTENTS", "WINDOW_TRIGGER_STATE", "MERGING_WINDOWS"]

#: names of the window operator's state in an off-heap keyed backend
WINDOW_CONTENTS = "_window/contents"
WINDOW_TRIGGER_STATE = "_window/trigger"
MERGING_WINDOWS = "_window/merging"

_RAISE: Any = object()


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
        if default is None:
            return s.map.get(window)
        value = s.map.get(window)
        if value is None and not s.map.contains(window):
            return default
        return value

    def __setitem__(self, window: Any, value: Any) -> None:
        s = self._s
        s._set_key(self._key)
        s.map.put(window, value)
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
        value = s.map.get(window)
        if value is None and not s.map.contains(window):
            if default is _RAISE:
                raise KeyError(window)
            return default
        s.map.remove(window)
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
