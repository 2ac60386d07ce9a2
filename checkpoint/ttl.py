"""Incremental TTL cleanup: a cursor that walks one state's table and removes expired entries.

Flink-style incremental cleanup for the heap backend. Each TTL state owns a
:class:`TtlCleanupCursor` over its table ``{key_group: {key: entry}}`` (layout in
:mod:`checkpoint.state`). Two drivers advance it:

* **on access**: every access to the state pays for ``StateTtlConfig.cleanup_size`` entries
  (checked in one go every 16 accesses, which is cheaper than a few on each), skipping the
  current key, whose entry the access itself checks;
* **in the background**: the task's mailbox loop calls
  :meth:`HeapKeyedStateBackend.cleanup(budget) <checkpoint.heap.HeapKeyedStateBackend.cleanup>`
  for a slice of time every ~100 ms, which advances the cursors of all TTL states, so state
  that is no longer accessed is removed as well.

Either way expired entries leave memory within a bounded time, without a checkpoint.

A pass visits every key group and every key once. The cursor tolerates any change of the
table between steps: it copies the key groups at the start of a pass and the keys of one key
group when it enters it, and looks every key up again before touching it. A value is never
mutated in place (an expired element of a list or map entry is dropped by storing a new list
or dict), so a snapshot or a caller holding the old value is unaffected.

**Nothing to do, no cost.** A finished pass knows a lower bound of every timestamp in the
table: the oldest live timestamp it saw, or the time the pass started, as anything written
later is newer. Until that bound expires no entry can be expired, and steps return at once;
so long TTLs cost (almost) nothing on the access path.

Example:
    >>> table = {0: {"a": (1, 0), "b": (2, 900)}}
    >>> c = TtlCleanupCursor(table, "value", ttl_ms=1000)
    >>> c.step(10, now=1000)  # visits the key group and both keys; the pass ends
    3
    >>> table
    {0: {'b': (2, 900)}}
    >>> c.step(10, now=1500)  # "b" (the oldest, ts 900) expires at 1900: nothing to check
    0
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["TtlCleanupCursor", "DEFAULT_CLEANUP_SIZE"]

#: entries checked per state access (Flink's ``cleanupIncrementally`` default)
DEFAULT_CLEANUP_SIZE = 5

_NO_SKIP: Any = object()


class TtlCleanupCursor:
    """Walks one TTL state's table in passes, removing expired entries as it goes.

    Args:
        table: the state's ``{key_group: {key: entry}}`` (owned by the backend).
        kind: the state kind (``"list"`` and ``"map"`` hold per-element timestamps).
        ttl_ms: the state's time to live.
        size: entries to check per state access (``StateTtlConfig.cleanup_size``).
    """

    __slots__ = (
        "table", "kind", "ttl_ms", "size", "removed", "_single", "_bound",
        "_groups", "_gi", "_kg", "_keys", "_ki", "_start", "_oldest",
    )

    def __init__(
        self, table: dict[int, dict[Any, Any]], kind: str, ttl_ms: int, size: int = DEFAULT_CLEANUP_SIZE
    ) -> None:
        self.table = table
        self.kind = kind
        self.ttl_ms = ttl_ms
        self.size = size
        self.removed = 0  # entries (list/map: elements) removed so far, for metrics
        self._single = kind not in ("list", "map")  # one (value, ts) per key
        self.reset()

    def reset(self) -> None:
        """Forget what is known of the table and start a new pass at the next step (the
        table was restored or cleared)."""
        self._bound: float = -math.inf  # every timestamp in the table is >= this
        self._new_pass()

    def _new_pass(self) -> None:
        self._groups: list[int] | None = None
        self._gi = 0
        self._kg = -1
        self._keys: list[Any] = []
        self._ki = 0
        self._start = 0  # the time the pass started
        self._oldest: float = math.inf  # oldest live timestamp seen in this pass

    def step(self, budget: int, now: int, skip: Any = _NO_SKIP) -> int:
        """Check up to ``budget`` entries (entering a key group counts as one) and remove
        the expired ones; ``skip`` is a key left alone (the key being accessed).

        Returns the work done; less than ``budget`` means the pass ended (the next step
        starts a new one from the first key group) or nothing can be expired yet.
        """
        limit = now - self.ttl_ms  # live iff ts > limit
        if self._groups is None and self._bound > limit:
            return 0  # the oldest entry is not expired: nothing to check
        ki = self._ki
        end = ki + budget
        keys = self._keys
        if end <= len(keys) and self._single:  # fast path (accesses): within one key group
            group = self.table.get(self._kg)
            if group is not None:
                self._ki = end
                get = group.get
                oldest = self._oldest
                for key in keys[ki:end]:
                    e = get(key)
                    if e is not None:
                        ts = e[1]
                        if ts <= limit and not (key is skip or key == skip):
                            del group[key]
                            self.removed += 1
                        elif ts < oldest:
                            oldest = ts
                self._oldest = oldest
                return budget
        return self._step(budget, now, limit, skip)

    def _step(self, budget: int, now: int, limit: int, skip: Any) -> int:
        table = self.table
        done = 0
        while done < budget:
            keys, ki = self._keys, self._ki
            if ki >= len(keys):
                groups = self._groups
                if groups is None:
                    groups = self._groups = list(table)
                    self._start = now
                if self._gi >= len(groups):  # pass over: what it learnt bounds the table
                    self._bound = min(self._oldest, self._start)
                    self._new_pass()
                    return done
                self._kg = groups[self._gi]
                self._gi += 1
                group = table.get(self._kg)
                self._keys = list(group) if group else []
                self._ki = 0
                done += 1
                continue
            end = min(len(keys), ki + budget - done)
            self._ki = end
            done += end - ki
            group = table.get(self._kg)
            if group is None:
                self._ki = len(keys)
                continue
            get = group.get
            oldest = self._oldest
            for i in range(ki, end):
                key = keys[i]
                e = get(key)
                if not e:
                    continue
                keep = key is skip or key == skip
                if self._single:
                    ts = e[1]
                    if ts <= limit and not keep:
                        del group[key]
                        self.removed += 1
                    elif ts < oldest:
                        oldest = ts
                    continue
                done += len(e) >> 3  # big entries cost more
                stamps = [x[1] for x in e] if self.kind == "list" else [x[1] for x in e.values()]
                if not keep and min(stamps) <= limit:
                    if self.kind == "list":
                        kept: list[Any] | dict[Any, Any] = [x for x in e if x[1] > limit]
                    else:
                        kept = {mk: x for mk, x in e.items() if x[1] > limit}
                    self.removed += len(e) - len(kept)
                    if kept:
                        group[key] = kept  # a new list/dict: the old value is never mutated
                    else:
                        del group[key]
                        continue
                    stamps = [ts for ts in stamps if ts > limit]
                oldest = min(oldest, min(stamps))
            self._oldest = oldest
        return done

    def __repr__(self) -> str:
        return f"TtlCleanupCursor(kind={self.kind!r}, ttl_ms={self.ttl_ms!r}, removed={self.removed!r})"
