"""The heap keyed state backend: Python dicts per key group, snapshots as pickled key groups.

State lives in ``{state_name: {key_group: {key: entry}}}``. A snapshot pickles each
non-empty key group (all states of that key group together) with pickle protocol 5,
falling back to cloudpickle for user objects; the bytes are the consistent copy, so the
task may keep mutating state while the snapshot is written elsewhere.

Snapshots reuse the bytes of key groups that were not touched since the previous
snapshot (a key group is *touched* when a key of it becomes the current key). This
makes checkpoints of large, mostly idle state cheap, at the cost of keeping the last
snapshot's bytes in memory; pass ``reuse_snapshot_bytes=False`` to turn it off. It relies
on the rule of :mod:`checkpoint.state`: a value is never mutated in place after the
current key changed away from its key.

Expired TTL entries leave memory without a checkpoint: every access to a TTL state checks a
few more of its entries, and :meth:`HeapKeyedStateBackend.cleanup`, called by the task's
mailbox loop, sweeps all TTL states in the background (see :mod:`checkpoint.ttl`).

Example:
    >>> from raystream.engine.keygroups import KeyGroupRange
    >>> from raystream.checkpoint import ValueStateDescriptor
    >>> b = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
    >>> count = b.get_state(ValueStateDescriptor("count", default=0))
    >>> for word in ["a", "b", "a"]:
    ...     b.set_current_key(word); count.update(count.value() + 1)
    >>> snap = b.snapshot(checkpoint_id=1)
    >>> b2 = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128); b2.restore([snap])
    >>> c2 = b2.get_state(ValueStateDescriptor("count", default=0))
    >>> b2.set_current_key("a"); c2.value()
    2
"""

from __future__ import annotations

import math
from typing import Any, Iterator, TypeVar

from raystream.engine.errors import CheckpointError, StateError
from raystream.engine.keygroups import KeyGroupRange, key_group_for, moved_float
from raystream.engine.operator import Clock, SystemClock

from .backend import KeyedStateBackend
from .descriptors import (
    StateDescriptor,
)
from .serde import dumps, loads
from .snapshot import KeyedStateSnapshot, KeyTypeCheck, KeyTypeChecked, StateMeta, key_type_names
from .state import (
    STATE_CLASSES,
    KeyedState,
    canonical_key,
)
from .ttl import TtlCleanupCursor

__all__ = ["HeapKeyedStateBackend", "TIMERS_KIND"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
IN = TypeVar("IN")
ACC = TypeVar("ACC")
OUT = TypeVar("OUT")

_NO_KEY: Any = object()
#: key types whose key group never changed: restored keys of other types are checked
_PLAIN_KEY_TYPES = frozenset([str, int, float, bytes, bool, type(None)])
_TWO_63 = 2**63


def _needs_check(key: Any) -> bool:
    """Whether a restored key may have hashed otherwise before: anything but plain values
    and tuples of them, NaN (a NaN of another bit pattern than the canonical one, e.g.
    ``-nan``, had a key group of its own before 2026-12-07) and an integral float of 2**63
    or more in magnitude (hashed by its bits, not as the int it equals, before 2026-12-07;
    from a RocksDB snapshot it comes back as that int, so such ints are checked too)."""
    t = type(key)
    if t is float:
        return key != key or moved_float(key)
    if t is int:  # (such a float from a RocksDB snapshot, decoded as the int it equals)
        return not -_TWO_63 < key < _TWO_63
    if t in _PLAIN_KEY_TYPES:
        return False
    if t is tuple:
        return any(map(_needs_check, key))
    return True
_LIST, _MAP = "list", "map"
#: keys that are their own canonical key (see checkpoint.state.canonical_key)
_CANONICAL_KEY_TYPES = frozenset([str, int, bytes])


def _canonical_entries(kind: str, entries: dict) -> dict:
    """A restored key group's entries of one state with their keys (and map keys) made
    canonical (NaN: unpickled as a new object each; see ``canonical_key``); the same dict
    when nothing changes, the common case."""
    if not any(type(k) not in _CANONICAL_KEY_TYPES and canonical_key(k) is not k for k in entries):
        out = entries
    elif kind == _MAP:  # NaN keys written as several keys (before they were canonical): one map
        out = {}
        for k, m in entries.items():
            out.setdefault(canonical_key(k), {}).update(m)
    else:
        out = {canonical_key(k): v for k, v in entries.items()}
    if kind == _MAP:
        for k, m in out.items():
            if any(type(mk) not in _CANONICAL_KEY_TYPES and canonical_key(mk) is not mk for mk in m):
                out[k] = {canonical_key(mk): v for mk, v in m.items()}
    return out
#: the kind of the pseudo-states that carry an off-heap backend's timer queues into a heap
#: restore: ``{key group: [(time, key, namespace)]}`` per queue name (see
#: :meth:`HeapKeyedStateBackend.take_restored_timers`)
TIMERS_KIND = "timers"


def _live_entries(kind: str, entries: dict, limit: int) -> tuple[dict, float]:
    """Entries of one key group whose timestamps are > ``limit``, and their oldest ts."""
    oldest = math.inf
    live: dict = {}
    if kind == _LIST:
        for k, items in entries.items():
            kept = [x for x in items if x[1] > limit]
            if kept:
                live[k] = kept
                oldest = min(oldest, min(x[1] for x in kept))
    elif kind == _MAP:
        for k, m in entries.items():
            kept_map = {mk: e for mk, e in m.items() if e[1] > limit}
            if kept_map:
                live[k] = kept_map
                oldest = min(oldest, min(e[1] for e in kept_map.values()))
    else:
        for k, e in entries.items():
            if e[1] > limit:
                live[k] = e
                oldest = min(oldest, e[1])
    return live, oldest


def _is_live(kind: str, entry: Any, limit: int) -> bool:
    if kind == _LIST:
        return any(x[1] > limit for x in entry)
    if kind == _MAP:
        return any(e[1] > limit for e in entry.values())
    return entry[1] > limit


def _convert_entries(kind: str, entries: dict, wrap: bool, now: int) -> dict:
    """Add (``wrap``) or strip TTL timestamps of one key group's entries."""
    if kind == _LIST:
        if wrap:
            return {k: [(x, now) for x in v] for k, v in entries.items()}
        return {k: [x[0] for x in v] for k, v in entries.items()}
    if kind == _MAP:
        if wrap:
            return {k: {mk: (mv, now) for mk, mv in m.items()} for k, m in entries.items()}
        return {k: {mk: e[0] for mk, e in m.items()} for k, m in entries.items()}
    if wrap:
        return {k: (v, now) for k, v in entries.items()}
    return {k: e[0] for k, e in entries.items()}


def _key_check(snapshots: list[Any]) -> KeyTypeCheck | None:
    """The check of the keys after restoring ``snapshots`` (those that held key groups of
    the restoring backend): None when they recorded no key types (written before 2026-12-07)
    or hold no key."""
    types: set[str] = set()
    for snap in snapshots:
        if snap.key_types is None:
            return None
        types |= snap.key_types
    return KeyTypeCheck(types) if types else None


class HeapKeyedStateBackend(KeyTypeChecked, KeyedStateBackend):
    """Keyed state in Python dicts, stored per key group (Flink's ``HeapKeyedStateBackend``).

    Args:
        key_group_range: the key groups this subtask owns.
        max_parallelism: the job's number of key groups.
        clock: processing-time source for TTL (default: wall clock).
        reuse_snapshot_bytes: reuse the previous snapshot's bytes for untouched key groups.

    Example:
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> b = HeapKeyedStateBackend(KeyGroupRange.for_subtask(0, 2, 128), 128)
        >>> b.key_group_range
        KeyGroupRange(start=0, end=63)
    """

    def __init__(
        self,
        key_group_range: KeyGroupRange,
        max_parallelism: int,
        clock: Clock | None = None,
        *,
        reuse_snapshot_bytes: bool = True,
    ) -> None:
        if not isinstance(max_parallelism, int) or max_parallelism <= 0:
            raise StateError(f"max_parallelism must be a positive int, got {max_parallelism!r}")
        if not (0 <= key_group_range.start and key_group_range.end < max_parallelism):
            raise StateError(
                f"key group range {key_group_range!r} is outside 0..{max_parallelism - 1} "
                f"(max_parallelism {max_parallelism!r})"
            )
        self._range = key_group_range
        self._start = key_group_range.start
        self._end = key_group_range.end
        self._max_par = max_parallelism
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._key: Any = _NO_KEY
        self._kg: int = -1
        self._tables: dict[str, dict[int, dict[Any, Any]]] = {}
        self._states: dict[str, KeyedState] = {}
        self._restored: dict[str, StateMeta] = {}  # restored, not yet asked for by get_state
        self._reuse = reuse_snapshot_bytes
        self._touched: set[int] = set()
        self._cache: dict[int, tuple[bytes, float]] = {}  # kg -> (bytes, earliest expiry)
        self._cursors: dict[str, TtlCleanupCursor] = {}  # TTL state name -> cleanup cursor
        self._restored_timers: dict[str, dict[int, list]] = {}  # queue name -> key group -> timers
        self._sweep = 0  # index of the TTL state the background sweep works on
        self._group_types: dict[int, frozenset[str]] = {}  # kg -> type names of its keys at the last snapshot
        self._key_check: KeyTypeCheck | None = None  # after a restore: the restored keys' types

    # -- keys --------------------------------------------------------------------------

    def set_current_key(self, key: Any) -> None:
        """Make ``key`` current; its key group is computed with ``key_group_for``.

        Raises:
            StateError: the key's group is outside this backend's range (the record was
                routed to the wrong subtask).
        """
        if self._key_check is not None:
            self._check_key_type(key)
        kg = key_group_for(key, self._max_par)
        if not self._start <= kg <= self._end:
            raise StateError(
                f"key {key!r} belongs to key group {kg}, outside this backend's range "
                f"{self._start}..{self._end} (max_parallelism {self._max_par}); the record was "
                "routed to the wrong subtask, or max_parallelism differs between stages"
            )
        self._key = key if type(key) in _CANONICAL_KEY_TYPES else canonical_key(key)
        self._kg = kg
        self._touched.add(kg)

    def clear_current_key(self) -> None:
        self._key, self._kg = _NO_KEY, -1

    def set_current_key_with_group(self, key: Any, key_group: int) -> None:
        """Fast path of :meth:`set_current_key` when the caller knows the key group.

        The group is trusted (not recomputed) but still checked against the range.
        """
        if self._key_check is not None:
            self._check_key_type(key)
        if not self._start <= key_group <= self._end:
            raise StateError(
                f"key {key!r} with key group {key_group!r} is outside this backend's range "
                f"{self._start}..{self._end}"
            )
        self._key = key if type(key) in _CANONICAL_KEY_TYPES else canonical_key(key)
        self._kg = key_group
        self._touched.add(key_group)

    @property
    def has_current_key(self) -> bool:
        """True once a current key was set."""
        return self._kg >= 0

    def value_table(self, state: KeyedState) -> tuple[dict[int, dict[Any, Any]], set[int]] | None:
        """Direct access to a plain value state's entries, for a caller that reads and writes
        many keys without making each one current (the statefun dispatcher; value_table).

        Returns ``(table, touched)``: ``table[key_group][key]`` is the key's value (no key
        group or no key: no value; a key group's dict may be created, and a key removed to
        clear it); the caller adds a key group to ``touched`` when it changes an entry of it
        or a value object stored in it (:meth:`set_current_key` does it for every key made
        current), so the next snapshot does not reuse that key group's old bytes (value_table).
        The key group must be the key's (``key_group_for``) and in this backend's range: it
        is not checked. ``None`` when ``state`` is not a ``ValueState`` of this backend or has
        a TTL (value_table): use its ``value()`` / ``update()`` then.

        Example:
            >>> from raystream.engine.keygroups import KeyGroupRange, key_group_for, moved_float
            >>> from raystream.checkpoint import ValueStateDescriptor
            >>> b = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
            >>> s = b.get_state(ValueStateDescriptor("v"))
            >>> table, touched = b.value_table(s)
            >>> kg = key_group_for("a", 128); touched.add(kg); table.setdefault(kg, {})["a"] = 1
            >>> b.set_current_key("a"); s.value()
            1
        """
        if type(state) is not STATE_CLASSES["value"] or state._ttl_ms is not None:  # value_table
            return None
        if self._states.get(state.descriptor.name) is not state:  # value_table: another backend's
            return None
        return state._table, self._touched  # value_table

    # -- states ------------------------------------------------------------------------

    def _new_state(self, descriptor: StateDescriptor) -> KeyedState:
        name = descriptor.name
        cls = self._state_class(STATE_CLASSES, descriptor)
        restored = self._restored.get(name)
        if restored is not None:
            self._check_restored_kind(name, restored.kind, descriptor)
            self._convert(name, restored, self._meta_of(descriptor))
            del self._restored[name]
        table = self._tables.setdefault(name, {})
        state = cls(self, descriptor, table)
        self._cursors.pop(name, None)
        if state._cursor is not None:
            self._cursors[name] = state._cursor
        self._cache.clear()  # a new state may change how entries are filtered
        return state

    @staticmethod
    def _meta_of(descriptor: StateDescriptor) -> StateMeta:
        ttl = getattr(descriptor, "ttl", None)
        return StateMeta(descriptor.kind, None if ttl is None else ttl.ttl_ms)

    def _metas(self) -> dict[str, StateMeta]:
        metas = dict(self._restored)
        for name, state in self._states.items():
            metas[name] = self._meta_of(state.descriptor)
        return metas

    def _convert(self, name: str, old: StateMeta, new: StateMeta) -> None:
        """Switch a restored table between plain and TTL-wrapped entries if TTL changed."""
        if (old.ttl_ms is None) == (new.ttl_ms is None):
            return
        table = self._tables.get(name, {})
        now = self._clock.now_ms()
        for kg, entries in list(table.items()):
            if old.ttl_ms is not None:  # drop what already expired, then unwrap
                entries, _ = _live_entries(old.kind, entries, now - old.ttl_ms)
            table[kg] = _convert_entries(old.kind, entries, new.ttl_ms is not None, now)

    def state_names(self) -> list[str]:
        """Names of all states: registered ones and restored ones not yet asked for."""
        return sorted(set(self._tables) | set(self._restored))

    def keys(self, state_name: str) -> Iterator[Any]:
        """Iterate over the keys with a live value in ``state_name`` when called (key-group
        order): a snapshot of the keys, as Flink's ``applyToAllKeys`` iterates one. The
        caller may set the current key and add, change or clear state while iterating; keys
        added meanwhile are not visited, keys cleared meanwhile still are (their state reads
        empty).

        Raises:
            StateError: no state of that name exists.
        """
        table = self._tables.get(state_name)
        if table is None:
            raise StateError(f"unknown state {state_name!r}; states are {self.state_names()!r}")
        meta = self._metas().get(state_name)
        ttl = meta.ttl_ms if meta is not None else None
        return iter(self._live_keys(table, meta.kind if meta else "value", ttl))

    def _live_keys(self, table: dict, kind: str, ttl: int | None) -> list[Any]:
        """The keys of ``table`` with a live value now, in key-group order (a new list)."""
        out: list[Any] = []
        limit = self._clock.now_ms() - ttl if ttl is not None else None
        for kg in sorted(table):
            entries = table[kg]
            if not entries:
                continue
            if limit is None:
                out.extend(entries)
            else:
                out.extend(k for k, e in entries.items() if _is_live(kind, e, limit))
        return out

    def num_keys(self) -> int:
        """Number of distinct keys with a live value in any state."""
        seen: set = set()
        for name in list(self._tables):
            seen.update(self.keys(name))
        return len(seen)

    def num_entries(self, state_name: str | None = None) -> int:
        """Entries held in memory by ``state_name`` (all states if None), counting expired
        TTL entries not removed yet: one per key, for metrics.

        Example:
            >>> from raystream.engine.keygroups import KeyGroupRange
            >>> from raystream.checkpoint import ValueStateDescriptor
            >>> b = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
            >>> s = b.get_state(ValueStateDescriptor("v"))
            >>> b.set_current_key("a"); s.update(1); b.num_entries("v")
            1
        """
        if state_name is None:
            return sum(self.num_entries(name) for name in self._tables)
        table = self._tables.get(state_name)
        if table is None:
            raise StateError(f"unknown state {state_name!r}; states are {self.state_names()!r}")
        return sum(len(entries) for entries in table.values())

    # -- TTL cleanup -------------------------------------------------------------------

    def cleanup(self, budget: int = 1000) -> int:
        """Background TTL cleanup: check up to ``budget`` entries of the TTL states and
        remove the expired ones, continuing where the previous call stopped.

        The task calls this from its mailbox loop (a slice of time every ~100 ms), so state
        that is no longer accessed still leaves memory once it expired. Returns the work
        done; less than ``budget`` means every TTL state finished a full pass.

        Example:
            >>> from raystream.engine.keygroups import KeyGroupRange
            >>> from raystream.engine.operator import ManualClock
            >>> from raystream.checkpoint import StateTtlConfig, ValueStateDescriptor
            >>> clock = ManualClock(0)
            >>> b = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128, clock)
            >>> s = b.get_state(ValueStateDescriptor("v", ttl=StateTtlConfig(1000)))
            >>> for k in range(100):
            ...     b.set_current_key(k); s.update(k)
            >>> clock.advance(1000); _ = b.cleanup(10_000); b.num_entries("v")
            0
        """
        cursors = self._cursors
        if not cursors or budget <= 0:
            return 0
        now = self._clock.now_ms()
        order = list(cursors.values())
        done = 0
        for _ in range(len(order)):
            cursor = order[self._sweep % len(order)]
            done += cursor.step(budget - done, now)
            if done >= budget:
                break  # this state is (maybe) mid-pass: the next call continues it
            self._sweep += 1
        return done

    def ttl_stats(self) -> dict[str, int]:
        """Counters of TTL cleanup, for metrics: ``{"states": TTL states, "removed":
        entries (or list/map elements) removed by incremental and background cleanup}``."""
        return {"states": len(self._cursors), "removed": sum(c.removed for c in self._cursors.values())}

    # -- snapshot / restore ------------------------------------------------------------

    def snapshot(self, checkpoint_id: int) -> KeyedStateSnapshot:
        """A consistent, immutable copy of all state (expired TTL entries dropped).

        Runs on the task thread and costs one pickling of every key group touched since
        the previous snapshot; the result shares nothing with live state.

        Raises:
            CheckpointError: a state value cannot be pickled (the message names the state).
        """
        metas = self._metas()
        now = self._clock.now_ms() if any(m.ttl_ms is not None for m in metas.values()) else 0
        groups: set[int] = set()
        for table in self._tables.values():
            groups.update(table)
        out: dict[int, bytes] = {}
        group_types = self._group_types
        for kg in sorted(groups):
            if self._reuse and kg not in self._touched:
                cached = self._cache.get(kg)
                if cached is not None and cached[1] > now and kg in group_types:
                    out[kg] = cached[0]
                    continue
            blob, expiry, types = self._snapshot_group(kg, metas, now)
            if blob is None:
                self._cache.pop(kg, None)
                group_types.pop(kg, None)
                continue
            out[kg] = blob
            group_types[kg] = types
            if self._reuse:
                self._cache[kg] = (blob, expiry)
        self._touched.clear()
        for kg in [g for g in group_types if g not in out]:
            del group_types[kg]
        key_types = frozenset().union(*(group_types[kg] for kg in out))
        return KeyedStateSnapshot(checkpoint_id, self._max_par, self._range, metas, out, key_types)

    def _snapshot_group(
        self, kg: int, metas: dict[str, StateMeta], now: int
    ) -> tuple[bytes | None, float, frozenset[str]]:
        """The bytes of key group ``kg``'s live entries (None: none), their earliest expiry
        and the type names of their keys."""
        per_state: dict[str, dict] = {}
        expiry = math.inf
        for name, table in self._tables.items():
            entries = table.get(kg)
            if not entries:
                continue
            meta = metas[name]
            if meta.ttl_ms is not None:
                entries, oldest = _live_entries(meta.kind, entries, now - meta.ttl_ms)
                table[kg] = entries  # expired entries leave live state too
                if not entries:
                    continue
                expiry = min(expiry, oldest + meta.ttl_ms)
            per_state[name] = entries
        if not per_state:
            return None, expiry, frozenset()
        types: set[str] = set()
        for entries in per_state.values():
            types |= key_type_names(entries)
        try:
            return dumps(per_state, f"key group {kg}"), expiry, frozenset(types)
        except CheckpointError:
            for name, entries in per_state.items():  # find the state to blame
                dumps(entries, f"state {name!r} (key group {kg})")
            raise

    def restore(self, snapshots: list[KeyedStateSnapshot]) -> None:
        """Replace all state with the key groups of ``snapshots`` that this backend owns.

        ``snapshots`` may come from any number of old subtasks (any old parallelism with
        the same ``max_parallelism``); key groups outside this backend's range are skipped
        without being unpickled. A RocksDB backend's snapshot converted by
        :meth:`HeapStateBackend.deserialize_snapshot` (switching a job back to the heap
        backend) carries its timer queues along; the operators take them with
        :meth:`take_restored_timers`.

        The keys given to :meth:`set_current_key` afterwards are checked against the types
        of the restored keys the snapshots recorded (:class:`~checkpoint.snapshot.KeyTypeCheck`)
        until one of those types comes.

        Raises:
            CheckpointError: max_parallelism differs, a key group appears in two snapshots,
                or two snapshots disagree on a state's kind.
        """
        metas: dict[str, StateMeta] = {}
        chosen: dict[int, tuple[int, bytes]] = {}
        for i, snap in enumerate(snapshots):
            if not isinstance(snap, KeyedStateSnapshot):
                raise CheckpointError(
                    f"restore() needs KeyedStateSnapshot objects, got {snap!r}; a RocksDB backend's snapshot "
                    "is converted by HeapStateBackend.deserialize_snapshot"
                )
            if snap.max_parallelism != self._max_par:
                raise CheckpointError(
                    f"cannot restore keyed state written with max_parallelism "
                    f"{snap.max_parallelism!r} into a job with max_parallelism {self._max_par!r}; "
                    "key groups cannot be re-split"
                )
            for name, meta in snap.states.items():
                prev = metas.setdefault(name, meta)
                if prev.kind != meta.kind or (prev.ttl_ms is None) != (meta.ttl_ms is None):
                    raise CheckpointError(
                        f"snapshots disagree on state {name!r}: {prev!r} vs {meta!r}"
                    )
            for kg, blob in snap.key_groups.items():
                if kg not in self._range:
                    continue
                if kg in chosen:
                    raise CheckpointError(
                        f"key group {kg} is in two snapshots (#{chosen[kg][0]} and #{i}); "
                        "restore each old subtask's snapshot exactly once"
                    )
                chosen[kg] = (i, blob)
        timer_queues = {name for name, meta in metas.items() if meta.kind == TIMERS_KIND}
        for name in timer_queues:
            del metas[name]
        self._restored_timers = {}
        for table in self._tables.values():
            table.clear()  # keep table objects: registered states point at them
        self._cache.clear()
        self._group_types.clear()
        self._touched.clear()
        self.clear_current_key()
        self._key_check = _key_check([snapshots[i] for i in {i for i, _ in chosen.values()}])
        for kg, (_, blob) in sorted(chosen.items()):
            per_state = loads(blob, f"key group {kg}")
            for name, entries in per_state.items():
                if name in timer_queues:
                    if entries:
                        self._restored_timers.setdefault(name, {})[kg] = entries
                    continue
                if name not in metas:
                    raise CheckpointError(f"key group {kg} holds state {name!r} with no metadata")
                self._tables.setdefault(name, {})[kg] = _canonical_entries(metas[name].kind, entries)
        self._refile_moved_keys()
        self._restored = {}
        self._cursors = {n: c for n, c in self._cursors.items() if n in self._states}
        for cursor in self._cursors.values():
            cursor.reset()
        for name, meta in metas.items():
            state = self._states.get(name)
            if state is None:
                self._restored[name] = meta
                table = self._tables.setdefault(name, {})
                if meta.ttl_ms is not None:  # swept in the background until get_state asks for it
                    self._cursors[name] = TtlCleanupCursor(table, meta.kind, meta.ttl_ms)
            elif state.descriptor.kind != meta.kind:
                raise StateError(
                    f"state {name!r} is registered as {state.descriptor.kind!r} state but the "
                    f"snapshot holds {meta.kind!r} state"
                )
            else:
                self._convert(name, meta, self._meta_of(state.descriptor))

    def _refile_moved_keys(self) -> None:
        """Move the restored keys whose key group this version computes differently from the
        snapshot's: keys equal to values of other types (an ``IntEnum``, a ``str`` Enum, a
        namedtuple, a ``Decimal``, a tz-aware ``datetime``) hashed by their repr in snapshots
        written before 2026-12-06 and hash as the values they equal since; a NaN key of
        another bit pattern than the canonical one (``-nan``) had its own key group before
        2026-12-07 and is the one NaN key since; an integral float of 2**63 or more in
        magnitude (``2.0**70``) hashed by its bits before 2026-12-07 and as the int it equals
        since (:func:`~engine.keygroups.moved_float`). Only such keys are
        checked (a type test each); a moved key whose new group this backend owns is re-filed.

        Raises:
            CheckpointError: a moved key's new group belongs to another subtask (restore at
                parallelism 1, where every group is local, then take a new savepoint).
        """
        for name, table in self._tables.items():
            moved = [(kg, k) for kg, entries in table.items() for k in entries
                     if (type(k) not in _PLAIN_KEY_TYPES or (type(k) is float and (k != k or moved_float(k)))
                         or (type(k) is int and not -_TWO_63 < k < _TWO_63))
                     and _needs_check(k) and key_group_for(k, self._max_par) != kg]
            for kg, key in moved:
                new_kg = key_group_for(key, self._max_par)
                if new_kg not in self._range:
                    raise CheckpointError(
                        f"state {name!r} holds key {key!r} in key group {kg}, but this raystream puts it in key "
                        f"group {new_kg}, outside this subtask's range {self._range.start}..{self._range.end}: the "
                        "snapshot was written before keys equal to values of other types (IntEnum, str Enum, "
                        "namedtuple, Decimal, tz-aware datetime; integral floats from 2**63 on) hashed as those "
                        "values, or before every NaN (-nan, any payload) was one key; restore it at parallelism 1 (every key group local: "
                        "such keys are moved), take a savepoint, and rescale from that"
                    )
                target = table.setdefault(new_kg, {})
                if key in target:
                    raise CheckpointError(
                        f"state {name!r} holds key {key!r} in key groups {kg} and {new_kg} (written before equal "
                        "keys of different types hashed alike); keep one of them with the raystream that wrote it"
                    )
                target[key] = table[kg].pop(key)
                self._touched.update((kg, new_kg))

    def take_restored_timers(self, name: str) -> dict[int, list[tuple[int, Any, Any]]]:
        """The timers of queue ``name`` that the last restore brought from an off-heap
        (RocksDB) snapshot, ``{key group: [(time, key, namespace)]}`` (the heap timer
        queues' snapshot format), handed over once: an operator that keeps its timers on
        the heap adds them to its own (``{}`` when there are none).

        Example:
            >>> from raystream.engine.keygroups import KeyGroupRange
            >>> HeapKeyedStateBackend(KeyGroupRange(0, 127), 128).take_restored_timers("_timers/event_time")
            {}
        """
        return self._restored_timers.pop(name, {})

    def take_restored_state(self, name: str) -> dict[int, dict[Any, Any]]:
        """The entries of state ``name`` that the last restore brought and nobody asked for
        with ``get_state``, ``{key group: {key: value}}`` (a map state's value is its
        ``{map key: value}`` dict), handed over once and removed from this backend: an
        operator that keeps this state in its own structures on the heap (a window's
        contents, a join's buffers) takes what an off-heap (RocksDB) snapshot held, and
        its later snapshots carry it as operator state only (``{}`` when there is none).

        Raises:
            StateError: the state is registered with ``get_state`` (it is in use as keyed
                state), or has a TTL (operator state never has one).

        Example:
            >>> from raystream.engine.keygroups import KeyGroupRange
            >>> from raystream.checkpoint import MapStateDescriptor
            >>> b = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
            >>> b.set_current_key("a"); b.get_state(MapStateDescriptor("m")).put("w", 1)
            >>> b2 = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128); b2.restore([b.snapshot(1)])
            >>> list(b2.take_restored_state("m").values()), b2.state_names()
            ([{'a': {'w': 1}}], [])
        """
        if name in self._states:
            raise StateError(
                f"state {name!r} is registered with get_state: its entries are keyed state, "
                "not operator state to hand over"
            )
        meta = self._restored.pop(name, None)
        if meta is None:
            return {}
        if meta.ttl_ms is not None:
            self._restored[name] = meta
            raise StateError(
                f"restored state {name!r} has a TTL of {meta.ttl_ms!r} ms: it is keyed state, "
                "not operator state to hand over"
            )
        self._cursors.pop(name, None)
        self._cache.clear()  # cached key group bytes hold the state's entries
        return {kg: entries for kg, entries in self._tables.pop(name, {}).items() if entries}

    def close(self) -> None:
        """Drop all state."""
        for table in self._tables.values():
            table.clear()
        for cursor in self._cursors.values():
            cursor.reset()
        self._cache.clear()
        self._group_types.clear()
        self._touched.clear()
        self._restored.clear()
        self._restored_timers.clear()
        self._key_check = None

    def __repr__(self) -> str:
        return (
            f"HeapKeyedStateBackend(key_groups={self._start}..{self._end}, "
            f"max_parallelism={self._max_par}, states={self.state_names()!r})"
        )
