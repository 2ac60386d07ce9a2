"""Keyed timers: event-time and processing-time timers per (key, namespace, time).

A :class:`InternalTimerService` belongs to one keyed operator subtask. Timers are
deduplicated (registering the same (key, namespace, time) twice keeps one timer), stored
per key group, fired in time order, and are part of the operator's snapshot
(:meth:`InternalTimerService.snapshot` / :meth:`InternalTimerService.restore`, union
semantics: a restored subtask keeps the key groups it owns, so rescaling works).

Event-time timers fire when the watermark reaches their time (``time <= watermark``).
Processing-time timers are registered with the task mailbox
(``OperatorContext.register_processing_timer``) once per distinct time and fire when the
injected clock reaches it. Callbacks run on the task thread and may register new timers;
an event-time timer registered at or before the current watermark fires in the same
advance.

Example:
    >>> fired = []
    >>> ts = InternalTimerService(128, lambda key, ns, t: fired.append((key, t)), lambda *a: None)
    >>> ts.register_event_time_timer("a", None, 10); ts.register_event_time_timer("a", None, 10)
    >>> ts.register_event_time_timer("b", None, 5)
    >>> ts.advance_watermark(20)
    2
    >>> fired
    [('b', 5), ('a', 10)]
"""

from __future__ import annotations

import heapq
from typing import Any, Callable

from engine.events import MIN_WATERMARK
from engine.keygroups import KeyGroupRange, key_group_for

__all__ = ["InternalTimerService", "TimerService", "TimeDomain"]

TimerCallback = Callable[[Any, Any, int], None]


class TimeDomain:
    """Which clock a timer belongs to."""

    EVENT_TIME = "event_time"
    PROCESSING_TIME = "processing_time"


class _TimerQueue:
    """Deduplicated timers ordered by time, grouped by key group for snapshots."""

    def __init__(self, max_parallelism: int) -> None:
        self.max_parallelism = max_parallelism
        self.by_group: dict[int, set[tuple[int, Any, Any]]] = {}
        self.heap: list[tuple[int, int, Any, Any]] = []
        self.seq = 0
        self._kg_cache: dict[Any, int] = {}

    def _kg(self, key: Any) -> int:
        try:
            return self._kg_cache[key]
        except KeyError:
            g = self._kg_cache[key] = key_group_for(key, self.max_parallelism)
            return g
        except TypeError:
            return key_group_for(key, self.max_parallelism)

    def add(self, key: Any, ns: Any, time: int) -> bool:
        entry = (time, key, ns)
        group = self.by_group.setdefault(self._kg(key), set())
        if entry in group:
            return False
        group.add(entry)
        self.seq += 1
        heapq.heappush(self.heap, (time, self.seq, key, ns))
        return True

    def add_many(self, keys: list, ns: Any, time: int) -> None:
        """``add(key, ns, time)`` for each of ``keys``, in order (one call per batch)."""
        by_group, cache, heap, push = self.by_group, self._kg_cache, self.heap, heapq.heappush
        seq = self.seq
        for key in keys:
            try:
                g = cache[key]
            except (KeyError, TypeError):
                g = self._kg(key)
            group = by_group.get(g)
            if group is None:
                group = by_group[g] = set()
            entry = (time, key, ns)
            if entry in group:
                continue
            group.add(entry)
            seq += 1
            push(heap, (time, seq, key, ns))
        self.seq = seq

    def remove(self, key: Any, ns: Any, time: int) -> None:
        group = self.by_group.get(self._kg(key))
        if group is not None:
            group.discard((time, key, ns))  # the heap entry is skipped lazily

    def pop_due(self, limit: int) -> tuple[int, Any, Any] | None:
        heap = self.heap
        while heap and heap[0][0] <= limit:
            time, _, key, ns = heapq.heappop(heap)
            group = self.by_group.get(self._kg(key))
            entry = (time, key, ns)
            if group is not None and entry in group:
                group.discard(entry)
                return entry
        return None

    def peek_time(self) -> int | None:
        heap = self.heap
        while heap:
            time, _, key, ns = heap[0]
            group = self.by_group.get(self._kg(key))
            if group is not None and (time, key, ns) in group:
                return time
            heapq.heappop(heap)
        return None

    def __len__(self) -> int:
        return sum(len(g) for g in self.by_group.values())

    def snapshot(self) -> dict[int, list[tuple[int, Any, Any]]]:
        return {kg: sorted(g, key=lambda e: e[0]) for kg, g in self.by_group.items() if g}

    def restore(self, parts: dict[int, list], key_groups: KeyGroupRange) -> None:
        for kg, entries in parts.items():
            if kg in key_groups:
                for time, key, ns in entries:
                    self.add(key, ns, time)

    def timers_of(self, key: Any) -> list[tuple[int, Any]]:
        return sorted((t, ns) for t, k, ns in self.by_group.get(self._kg(key), ()) if k == key)


class InternalTimerService:
    """Event-time and processing-time timers of one keyed operator subtask.

    Args:
        max_parallelism: number of key groups (timers are stored per key group).
        on_event_time: ``callback(key, namespace, time)`` for a firing event-time timer.
        on_processing_time: the same for processing-time timers.
        register_processing_timer: the task's ``register_processing_timer(time, cb)``
            (None: processing-time timers only fire through :meth:`advance_processing_time`).
        clock: processing-time clock (``OperatorContext.clock``).
    """

    def __init__(
        self,
        max_parallelism: int,
        on_event_time: TimerCallback,
        on_processing_time: TimerCallback,
        register_processing_timer: Callable[[int, Callable[[int], None]], None] | None = None,
        clock: Any = None,
    ) -> None:
        self.event = _TimerQueue(max_parallelism)
        self.processing = _TimerQueue(max_parallelism)
        self.on_event_time = on_event_time
        self.on_processing_time = on_processing_time
        self._register_with_task = register_processing_timer
        self.clock = clock
        self.watermark = MIN_WATERMARK
        self._scheduled: set[int] = set()

    # -------------------------------------------------------------- registration
    def register_event_time_timer(self, key: Any, ns: Any, time: int) -> None:
        """Fire ``on_event_time(key, ns, time)`` once the watermark reaches ``time``."""
        self.event.add(key, ns, int(time))

    def delete_event_time_timer(self, key: Any, ns: Any, time: int) -> None:
        """Forget an event-time timer (no error if there is none)."""
        self.event.remove(key, ns, int(time))

    def register_processing_time_timer(self, key: Any, ns: Any, time: int) -> None:
        """Fire ``on_processing_time(key, ns, time)`` once the clock reaches ``time``."""
        time = int(time)
        if self.processing.add(key, ns, time):
            self._schedule(time)

    def delete_processing_time_timer(self, key: Any, ns: Any, time: int) -> None:
        """Forget a processing-time timer (no error if there is none)."""
        self.processing.remove(key, ns, int(time))

    def _schedule(self, time: int) -> None:
        if self._register_with_task is not None and time not in self._scheduled:
            self._scheduled.add(time)
            self._register_with_task(time, self._on_task_timer)

    def _on_task_timer(self, time: int) -> None:
        self._scheduled.discard(time)
        now = self.clock.now_ms() if self.clock is not None else time
        self.advance_processing_time(max(now, time))

    # -------------------------------------------------------------- firing
    def advance_watermark(self, watermark: int) -> int:
        """Fire every event-time timer with time <= ``watermark`` in time order; returns
        the number fired."""
        if watermark > self.watermark:
            self.watermark = watermark
        n = 0
        q = self.event
        heap, by_group, cache, kg = q.heap, q.by_group, q._kg_cache, q._kg
        pop, callback = heapq.heappop, self.on_event_time
        while heap and heap[0][0] <= watermark:  # _TimerQueue.pop_due, inlined
            time, _, key, ns = pop(heap)
            try:
                g = cache[key]
            except (KeyError, TypeError):
                g = kg(key)
            group = by_group.get(g)
            entry = (time, key, ns)
            if group is not None and entry in group:
                group.discard(entry)
                callback(key, ns, time)
                n += 1
        return n

    def advance_processing_time(self, now: int) -> int:
        """Fire every processing-time timer with time <= ``now`` in time order."""
        n = 0
        while True:
            entry = self.processing.pop_due(now)
            if entry is None:
                return n
            time, key, ns = entry
            self.on_processing_time(key, ns, time)
            n += 1

    def current_processing_time(self) -> int:
        """The processing time of the injected clock (ms)."""
        return self.clock.now_ms() if self.clock is not None else 0

    def num_event_timers(self) -> int:
        """Number of pending event-time timers."""
        return len(self.event)

    def num_processing_timers(self) -> int:
        """Number of pending processing-time timers."""
        return len(self.processing)

    def timers_of(self, key: Any) -> dict[str, list[tuple[int, Any]]]:
        """The pending timers of ``key``: ``{"event_time": [(time, ns)], "processing_time": [...]}``."""
        return {TimeDomain.EVENT_TIME: self.event.timers_of(key),
                TimeDomain.PROCESSING_TIME: self.processing.timers_of(key)}

    # -------------------------------------------------------------- state
    def snapshot(self) -> dict:
        """A picklable copy of every timer, per key group."""
        return {"event": self.event.snapshot(), "processing": self.processing.snapshot(),
                "watermark": self.watermark}

    def restore(self, states: list[dict | None], key_groups: KeyGroupRange) -> None:
        """Add the timers of ``key_groups`` from the snapshots of all old subtasks and
        re-register processing-time timers with the task (call after ``open``)."""
        for st in states:
            if not st:
                continue
            self.event.restore(st.get("event", {}), key_groups)
            self.processing.restore(st.get("processing", {}), key_groups)
        for group in self.processing.by_group.values():
            for time, _k, _ns in group:
                self._schedule(time)


class TimerService:
    """The timer service a user function sees: timers of the **current key**.

    Example:
        >>> # inside KeyedProcessFunction.process_element(value, ctx):
        >>> # ctx.timer_service().register_event_time_timer(ctx.timestamp + 60_000)
    """

    __slots__ = ("_internal", "_key_fn")

    def __init__(self, internal: InternalTimerService, current_key: Callable[[], Any]) -> None:
        self._internal = internal
        self._key_fn = current_key

    def current_watermark(self) -> int:
        """The operator's current event time (last watermark)."""
        return self._internal.watermark

    def current_processing_time(self) -> int:
        """Processing time from the injected clock."""
        return self._internal.current_processing_time()

    def register_event_time_timer(self, time: int) -> None:
        """Call ``on_timer(time, ...)`` for the current key when the watermark reaches ``time``."""
        self._internal.register_event_time_timer(self._key_fn(), None, time)

    def delete_event_time_timer(self, time: int) -> None:
        """Delete the current key's event-time timer at ``time``."""
        self._internal.delete_event_time_timer(self._key_fn(), None, time)

    def register_processing_time_timer(self, time: int) -> None:
        """Call ``on_timer(time, ...)`` for the current key when the clock reaches ``time``."""
        self._internal.register_processing_time_timer(self._key_fn(), None, time)

    def delete_processing_time_timer(self, time: int) -> None:
        """Delete the current key's processing-time timer at ``time``."""
        self._internal.delete_processing_time_timer(self._key_fn(), None, time)
