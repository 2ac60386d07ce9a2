"""Timers in the RocksDB state backend (Flink's ``RocksDBCachingPriorityQueueSet`` per key
group behind a ``KeyGroupPartitionedPriorityQueue``): a keyed operator's timers live in the
same RocksDB as its keyed state, so they are part of the keyed snapshot, re-split by key
group on rescaling, and memory does not grow with their number.

Layout: one entry per timer, an empty value (or the registered key, above), under the key
(cf. :mod:`checkpoint.rocksdb_keys`)::

    key group     2 bytes, big-endian
    queue id      8 bytes             (state_id of the queue's name)
    time          8 bytes, big-endian, offset by 2**63 (byte order = time order)
    key           4-byte length + the canonically encoded key
    namespace     the canonically encoded namespace

so the timers of one key group are sorted by (time, key, namespace) in RocksDB. Memory: for
every key group that has timers, a sorted cache of its first :data:`CACHE_PER_GROUP` db keys
(all of them when there are fewer; refilled with one seek when it runs empty), and a heap
of the key groups' earliest timers. Timers are written straight to RocksDB (not through
the read cache), so a snapshot (which flushes the memtable) always holds them.

Timers with the same time fire in (key group, key encoding) order, not in registration
order as on the heap.

Keys are encoded canonically (``1``, ``True`` and ``1.0`` are one key, as in the heap's
sets of timers); a timer whose key would not decode as the object it was registered with
(``True`` as ``1``, a namedtuple as a tuple: :func:`~checkpoint.rocksdb_keys.keeps_type`)
keeps that key, pickled, as its entry's value, and fires with it, so ``on_timer`` sees the
key the records had; the first registration of equal keys wins, as on the heap.
Namespaces are encoded with :func:`~checkpoint.rocksdb_keys.encode_namespace` (each type
apart, as ever) unless the operator gives the queue its own serializer
(:meth:`RocksDBTimerQueue.set_namespace_serializer`; the window operator does: a TimeWindow
as 17 bytes, which ``encode_namespace`` would pickle; its encoding is still one
``decode_key`` reads, as bytes).

Example:
    >>> from raystream.engine.keygroups import KeyGroupRange
    >>> from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend
    >>> b = RocksDBKeyedStateBackend(KeyGroupRange(0, 127), 128)
    >>> q = b.create_timer_queue("event")
    >>> q.add("a", None, 10), q.add("b", None, 5), q.add("a", None, 10)
    (True, True, False)
    >>> q.pop_due(20), q.pop_due(20), q.pop_due(20)
    ((5, 'b', None), (10, 'a', None), None)
    >>> b.close()
"""

from __future__ import annotations

import bisect
import heapq
import struct
from typing import TYPE_CHECKING, Any, Callable

from raystream.engine.errors import CheckpointError
from raystream.engine.keygroups import KeyGroupRange, holds_moved_number, key_group_for

from .rocksdb_keys import (
    KEY_GROUP_BYTES,
    STATE_ID_BYTES,
    decode_key,
    encode_key,
    encode_namespace,
    keeps_type,
    key_group_prefix,
    key_part,
)
from .serde import dumps, loads

if TYPE_CHECKING:
    from .rocksdb_backend import RocksDBKeyedStateBackend

__all__ = ["RocksDBTimerQueue", "CACHE_PER_GROUP"]

#: db keys of each key group's earliest timers kept in memory
CACHE_PER_GROUP = 32
#: stale entries tolerated in the heap of key-group heads beyond the key groups with timers
_HEAP_SLACK = 256
_OFFSET = 1 << 63
_LEN = struct.Struct(">I")
_TIME_AT = KEY_GROUP_BYTES + STATE_ID_BYTES
_KEY_AT = _TIME_AT + 8


def _upper(prefix: bytes) -> bytes:
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return b"\xff" * (len(prefix) + 1)
    p[-1] += 1
    return bytes(p)


def _time_of(k: bytes) -> int:
    return int.from_bytes(k[_TIME_AT:_KEY_AT], "big") - _OFFSET


def _decode(k: bytes, decode_ns: Callable[[bytes], Any] = decode_key, value: bytes | None = None) -> tuple[int, Any, Any]:
    """``(time, key, ns)`` of a timer's db key (and its value: the registered key, if any)."""
    (size,) = _LEN.unpack_from(k, _KEY_AT)
    start = _KEY_AT + 4
    key = loads(value, "a timer's key") if value else decode_key(k[start:start + size])
    return _time_of(k), key, decode_ns(k[start + size:])


def timer_value(key: Any, kpart: bytes) -> bytes:
    """The value of a timer entry of ``key`` (``kpart``: its encoding, length first): empty,
    or the pickled key when decoding ``kpart`` would not give it back as it was."""
    if keeps_type(key) or kpart[4:5] == b"p":  # (a pickled key decodes as itself)
        return b""
    return dumps(key, "a timer's key")


class RocksDBTimerQueue:
    """The timers of one time domain of one keyed operator subtask, in its RocksDB backend
    (see the module docstring); implements :class:`checkpoint.backend.KeyGroupedTimerQueue`.
    Made by :meth:`RocksDBKeyedStateBackend.create_timer_queue`."""

    def __init__(self, backend: RocksDBKeyedStateBackend, sid: bytes, cache_per_group: int = CACHE_PER_GROUP) -> None:
        self._b = backend
        self._sid = sid
        self._per_group = max(1, cache_per_group)
        self._generation = -1  # the backend's database generation the caches describe
        self._cache: dict[int, list[bytes]] = {}  # key group -> its earliest db keys, sorted
        self._partial: set[int] = set()  # key groups with more timers than their cache holds
        self._heap: list[tuple[int, int, bytes]] = []  # (time, key group, db key) of heads; stale ones skipped
        self._size: int | None = None  # live timers (None: unknown since a restore, counted on demand)
        self._encode_ns: Callable[[Any], bytes] = encode_namespace
        self._decode_ns: Callable[[bytes], Any] = decode_key
        # the values of cached db keys whose timer keeps its registered key (few: only keys
        # of types that do not decode as themselves, e.g. True, an IntEnum, a namedtuple)
        self._values: dict[bytes, bytes] = {}

    def set_namespace_serializer(self, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]) -> None:
        """Encode namespaces with ``encode`` (``decode`` inverts it) instead of
        :func:`~checkpoint.rocksdb_keys.encode_namespace`: call it before the first timer is added,
        with the same pair in every run that restores the queue (the bytes are in the db keys).

        Example:
            >>> from raystream.engine.keygroups import KeyGroupRange
            >>> from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend
            >>> b = RocksDBKeyedStateBackend(KeyGroupRange(0, 127), 128)
            >>> q = b.create_timer_queue("t")
            >>> q.set_namespace_serializer(lambda ns: ns.to_bytes(2, "big"), lambda data: int.from_bytes(data, "big"))
            >>> q.add("a", 7, 10), q.pop_due(10)
            (True, (10, 'a', 7))
            >>> b.close()
        """
        self._encode_ns, self._decode_ns = encode, decode

    # -- loading -----------------------------------------------------------------------

    def _sync(self) -> None:
        """(Re)build the caches when the backend's database was replaced (a restore)."""
        b = self._b
        if self._generation == b._generation:
            return
        self._generation = b._generation
        self._cache.clear()
        self._values.clear()
        self._partial.clear()
        self._heap.clear()
        self._size = None
        r = b.key_group_range
        for kg in range(r.start, r.end + 1):
            self._refill(kg)

    def _refill(self, kg: int) -> None:
        """Read the earliest timers of ``kg`` from RocksDB into its cache."""
        lower = key_group_prefix(kg) + self._sid
        upper = _upper(lower)
        it = self._b._db.iter()
        it.seek(lower)
        found: list[bytes] = []
        limit = self._per_group
        complete = True
        while it.valid():
            k = it.key()
            if k >= upper:
                break
            if len(found) == limit:
                complete = False
                break
            found.append(k)
            v = it.value()
            if v:
                self._values[k] = v
            it.next()
        if complete:
            self._partial.discard(kg)
        else:
            self._partial.add(kg)
        if found:
            self._cache[kg] = found
            self._push(kg)
        else:
            self._cache.pop(kg, None)

    def _db_key(self, key: Any, ns: Any, time: int) -> tuple[int, bytes, bytes]:
        """``(key group, db key, key part)`` of a timer."""
        b = self._b
        if key is b._key and b._kg >= 0:  # the current key: its group and encoding are known
            kg = b._kg
            kpart = b._kpart
            if kpart is None:
                kpart = b._kpart = key_part(encode_key(key))
        else:
            kg = key_group_for(key, b._max_par)
            kpart = key_part(encode_key(key))
        return kg, key_group_prefix(kg) + self._sid + (time + _OFFSET).to_bytes(8, "big") + kpart + self._encode_ns(ns), kpart

    # -- the queue ---------------------------------------------------------------------

    def add(self, key: Any, ns: Any, time: int, kg: int | None = None) -> bool:
        """Add a timer; False if it exists already."""
        self._sync()
        group, k, kpart = self._db_key(key, ns, time)
        cache = self._cache.get(group)
        db = self._b._db
        t = type(key)
        value = b"" if t is str or t is int else timer_value(key, kpart)  # (the common keys: no call)
        if cache is None:  # no timer in this key group yet
            self._cache[group] = [k]
            self._push(group)
            if value:
                self._values[k] = value
        else:
            i = bisect.bisect_left(cache, k)
            if i < len(cache) and cache[i] == k:
                return False
            if i == len(cache) and group in self._partial:  # beyond the cache: ask RocksDB
                if db.get(k) is not None:
                    return False
            else:
                cache.insert(i, k)
                if value:
                    self._values[k] = value
                if len(cache) > self._per_group:
                    self._values.pop(cache.pop(), None)
                    self._partial.add(group)
                if i == 0:
                    self._push(group)
        db.put(k, value)
        if self._size is not None:
            self._size += 1
        return True

    def add_many(self, keys: list[Any], ns: Any, time: int) -> None:
        for key in keys:
            self.add(key, ns, time)

    def remove(self, key: Any, ns: Any, time: int) -> bool:
        """Delete a timer; True if it existed."""
        self._sync()
        group, k, _ = self._db_key(key, ns, time)
        cache = self._cache.get(group)
        if cache is None:
            return False
        i = bisect.bisect_left(cache, k)
        if i < len(cache) and cache[i] == k:
            del cache[i]
            self._values.pop(k, None)
            self._b._db.delete(k)
            if not cache:
                self._emptied(group)
            elif i == 0:
                self._push(group)
        elif i == len(cache) and group in self._partial and self._b._db.get(k) is not None:
            self._b._db.delete(k)
        else:
            return False
        if self._size is not None:
            self._size -= 1
        return True

    def _push(self, group: int) -> None:
        """Push key group ``group``'s new head onto the heap, the only way onto it: the heads it
        replaced stay as stale entries (skipped when they come up), so the heap is rebuilt
        from the live heads once stale ones outnumber them by :data:`_HEAP_SLACK`. Before,
        a group's first timer (the group had none left) and a refilled cache were pushed
        without that check: a timeout timer moved on every record (deleted, registered an
        hour later) on a group's only key left one stale head per record until the hour had
        passed (20,000 moves of one timer: a heap of 20,001 entries)."""
        head = self._cache[group][0]
        heap = self._heap
        heapq.heappush(heap, (_time_of(head), group, head))
        if len(heap) > 2 * len(self._cache) + _HEAP_SLACK:  # drop stale heads
            heap[:] = [(_time_of(c[0]), g, c[0]) for g, c in self._cache.items()]
            heapq.heapify(heap)

    def _emptied(self, group: int) -> None:
        if group in self._partial:
            self._refill(group)
        else:
            del self._cache[group]

    def _top(self) -> tuple[int, int, bytes] | None:
        heap, cache = self._heap, self._cache
        while heap:
            top = heap[0]
            c = cache.get(top[1])
            if c is not None and c[0] == top[2]:
                return top
            heapq.heappop(heap)
        return None

    def pop_due(self, limit: int) -> tuple[int, Any, Any] | None:
        """Remove and return the earliest timer with time <= ``limit``."""
        self._sync()
        top = self._top()
        if top is None or top[0] > limit:
            return None
        heapq.heappop(self._heap)
        time, group, k = top
        cache = self._cache[group]
        del cache[0]
        value = self._values.pop(k, None) if self._values else None
        self._b._db.delete(k)
        if not cache:
            self._emptied(group)
        else:
            self._push(group)
        if self._size is not None:
            self._size -= 1
        return _decode(k, self._decode_ns, value)

    def peek_time(self) -> int | None:
        self._sync()
        top = self._top()
        return None if top is None else top[0]

    @property
    def entries(self) -> int:
        """Key-group heads held in memory, live and stale (for metrics): below twice the
        key groups with timers plus a small slack, whatever the timers' history.

        Example:
            >>> from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend
            >>> b = RocksDBKeyedStateBackend(KeyGroupRange(0, 127), 128)
            >>> q = b.create_timer_queue("t")
            >>> q.add("a", None, 10), q.remove("a", None, 10), q.add("a", None, 20)
            (True, True, True)
            >>> len(q), q.entries      # one stale head (time 10) waits to be skipped
            (1, 2)
            >>> b.close()
        """
        return len(self._heap)

    def __len__(self) -> int:
        self._sync()
        if self._size is None:
            self._b._write_pending()
            n = 0
            r = self._b.key_group_range
            for kg in range(r.start, r.end + 1):
                lower = key_group_prefix(kg) + self._sid
                n += sum(1 for _ in self._b._iter_range(lower, _upper(lower)))
            self._size = n
        return self._size

    def timers_of(self, key: Any) -> list[tuple[int, Any]]:
        """``[(time, ns)]`` of ``key``'s timers (a scan of its key group's timers)."""
        self._sync()
        group, _, kpart = self._db_key(key, None, 0)
        lower = key_group_prefix(group) + self._sid
        out = []
        for k, _ in self._b._iter_range(lower, _upper(lower)):
            if k[_KEY_AT:_KEY_AT + len(kpart)] == kpart:
                time, _key, ns = _decode(k, self._decode_ns)
                out.append((time, ns))
        return sorted(out, key=lambda e: (e[0], self._encode_ns(e[1])))

    def snapshot(self) -> dict[int, list[tuple[int, Any, Any]]]:
        """Nothing: the timers are in the keyed snapshot."""
        return {}

    def restore(self, parts: dict[int, list[tuple[int, Any, Any]]], key_groups: KeyGroupRange) -> None:
        """Import timers of the heap format (a heap job's savepoint) for ``key_groups``; a key
        that a snapshot written before 2026-12-07 filed under another key group (an integral
        float from 2**63 on: :func:`~engine.keygroups.holds_moved_number`) goes to its own.

        Raises:
            CheckpointError: such a key's own key group is outside ``key_groups``.
        """
        for kg, entries in parts.items():
            if kg in key_groups:
                for time, key, ns in entries:
                    own = key_group_for(key, self._b._max_par) if holds_moved_number(key) else kg
                    if own not in key_groups:
                        raise CheckpointError(
                            f"restored timer of key {key!r} at {time}: an integral float from 2**63 on hashes as "
                            f"the int it equals since 2026-12-07, in key group {own}, outside this subtask's range: "
                            "restore at parallelism 1 (every key group local), take a savepoint, and rescale from that"
                        )
                    self.add(key, ns, time, own)

    def stats(self) -> dict[str, int]:
        """In-memory sizes: cached db keys, heap entries, key groups with timers."""
        return {"cached": sum(len(c) for c in self._cache.values()), "heap": len(self._heap),
                "key_groups": len(self._cache)}
