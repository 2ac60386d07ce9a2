"""Keyed timers: event-time and processing-time timers per (key, namespace, time).

A :class:`InternalTimerService` belongs to one keyed operator subtask. Timers are
deduplicated (registering the same (key, namespace, time) twice keeps one timer), stored
per key group, fired in time order, and are part of the operator's snapshot
(:meth:`InternalTimerService.snapshot` / :meth:`InternalTimerService.restore`, union
semantics: a restored subtask keeps the key groups it owns, so rescaling works).

Event-time timers fire when the watermark reaches their time (``time <= watermark``).
Processing-time timers fire when the injected clock reaches their time: the service keeps
ONE wake-up registered with the task mailbox (``OperatorContext.register_processing_timer``),
at the time of its earliest timer, and moves it (cancelling the old one) when an earlier
timer arrives or the earliest is deleted. Callbacks run on the task thread and may register
new timers; an event-time timer registered at or before the current watermark fires in the
same advance.

Memory follows the *live* timers: a deleted timer leaves its key group's set at once, and
its heap entry is dropped lazily, with the heap rebuilt whenever dead entries outnumber live
ones by more than a small constant (:data:`COMPACT_SLACK`). The key -> key group cache is
bounded (:data:`KG_CACHE_LIMIT` entries, cleared when full). :meth:`InternalTimerService.stats`
reports every count, for metrics.

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

import datetime as dt
import heapq
import numbers
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar, cast

import numpy as np

from raystream.engine.errors import CheckpointError, ConfigError, short_repr
from raystream.engine.events import MIN_WATERMARK
from raystream.engine.keygroups import KeyGroupRange, canonical_key, key_group_for, moved_float
from raystream.engine.operator import Cancellable, Clock, KeyGroupedState

from .time import epoch_ms

if TYPE_CHECKING:
    from raystream.checkpoint.backend import KeyGroupedTimerQueue

__all__ = [
    "timer_ms",
    "InternalTimerService",
    "TimerService",
    "TimeDomain",
    "COMPACT_SLACK",
    "KG_CACHE_LIMIT",
    "EVENT_TIMERS",
    "PROCESSING_TIMERS",
    "backend_timer_queues",
    "backend_restored_timers",
    "backend_restored_state",
]

K = TypeVar("K")  # the operator's keys
N = TypeVar("N")  # timer namespaces (None for process functions, the window for windows)

#: ``callback(key, namespace, time)`` of a firing timer
TimerCallback = Callable[[K, N, int], None]

#: dead (deleted) heap entries tolerated beyond the number of live timers before a rebuild
COMPACT_SLACK = 64
#: keys whose key group a timer queue remembers; the cache is cleared when it is full
KG_CACHE_LIMIT = 1 << 16
#: names of a keyed operator's timer queues in an off-heap keyed backend (one backend per
#: keyed operator subtask, so every operator uses the same two names)
EVENT_TIMERS = "_timers/event_time"
PROCESSING_TIMERS = "_timers/processing_time"


class TimeDomain:
    """Which clock a timer belongs to: what ``ctx.time_domain()`` in ``on_timer`` equals, as
    PyFlink's ``TimeDomain`` (``if ctx.time_domain() == TimeDomain.EVENT_TIME``)."""

    EVENT_TIME = "event_time"
    PROCESSING_TIME = "processing_time"


def timer_ms(time: Any, method: str = "register_event_time_timer") -> int:
    """A timer's time as the epoch milliseconds it is kept at: an int as it is, and what an
    event timestamp may be (:func:`~operators.time.epoch_ms`: a float truncated, a ``datetime``
    floored to its millisecond, naive as UTC, a ``date`` at midnight UTC, a
    ``numpy.datetime64``), so ``register_event_time_timer(record["ts"] + timedelta(minutes=1))``
    works on a stream whose timestamps are datetimes. Anything else (None, a str, a bool,
    NaN) is a ``ConfigError`` naming ``method`` and the value.

    Example:
        >>> import datetime as dt
        >>> timer_ms(dt.datetime(1970, 1, 1, 0, 0, 2)), timer_ms(2500.7)
        (2000, 2500)
        >>> timer_ms("7")
        Traceback (most recent call last):
        ...
        raystream.engine.errors.ConfigError: register_event_time_timer('7'): a timer's time is epoch milliseconds (an int; a float, datetime or date is converted), got a str; convert the field first, e.g. int(record['ts'])
    """
    if isinstance(time, (numbers.Real, dt.date, np.datetime64)) and not isinstance(time, bool):
        try:
            return epoch_ms(time)
        except (ValueError, OverflowError):  # NaN, infinities, NaT
            pass
    hint = "convert the field first, e.g. int(record['ts'])" if isinstance(time, (str, bytes)) else (
        "a timer belongs to a point of time: compute one from ctx.timestamp or the timer service's "
        "current_watermark() / current_processing_time()")
    got = "None" if time is None else f"a {type(time).__name__}"
    raise ConfigError(
        f"{method}({short_repr(time, 60)}): a timer's time is epoch milliseconds (an int; a float, datetime or "
        f"date is converted), got {got}; {hint}"
    )


class _TimerQueue(Generic[K, N]):
    """Deduplicated timers ordered by time, grouped by key group for snapshots.

    ``by_group`` holds the live timers; ``heap`` orders them as ``(time, seq, key, ns,
    key group)``, plus entries of deleted timers that are skipped when they reach the top
    (``len(heap) - size`` of them, kept below ``size + COMPACT_SLACK`` by :meth:`compact`).
    Every structure mutates in place: the firing loops hold references to them while
    callbacks add and delete timers.
    """

    def __init__(self, max_parallelism: int) -> None:
        self.max_parallelism = max_parallelism
        self.by_group: dict[int, set[tuple[int, K, N]]] = {}
        self.heap: list[tuple[int, int, K, N, int]] = []
        self.seq = 0
        self.size = 0  # live timers
        self._kg_cache: dict[K, int] = {}

    def _kg(self, key: K) -> int:
        cache = self._kg_cache
        try:
            g = cache.get(key)
        except TypeError:  # an unhashable key
            return key_group_for(key, self.max_parallelism)
        if g is None:
            if len(cache) >= KG_CACHE_LIMIT:
                cache.clear()
            g = cache[key] = key_group_for(key, self.max_parallelism)
        return g

    def add(self, key: K, ns: N, time: int, kg: int | None = None) -> bool:
        if kg is None:
            kg = self._kg(key)
        entry = (time, key, ns)
        group = self.by_group.get(kg)
        if group is None:
            group = self.by_group[kg] = set()
        elif entry in group:
            return False
        group.add(entry)
        self.size += 1
        self.seq += 1
        heapq.heappush(self.heap, (time, self.seq, key, ns, kg))
        return True

    def add_many(self, keys: list[K], ns: N, time: int) -> None:
        """``add(key, ns, time)`` for each of ``keys``, in order (one call per batch)."""
        by_group, cache, heap, push = self.by_group, self._kg_cache, self.heap, heapq.heappush
        seq = self.seq
        added = 0
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
            added += 1
            seq += 1
            push(heap, (time, seq, key, ns, g))
        self.seq = seq
        self.size += added

    def remove(self, key: K, ns: N, time: int) -> bool:
        """Delete a timer; True if it existed. Its heap entry is dropped lazily."""
        group = self.by_group.get(self._kg(key))
        entry = (time, key, ns)
        if group is None or entry not in group:
            return False
        group.discard(entry)
        self.size -= 1
        if len(self.heap) > 2 * self.size + COMPACT_SLACK:
            self.compact()
        return True

    def compact(self) -> None:
        """Drop the heap entries of deleted timers (in place; keeps firing order)."""
        heap = self.heap
        if not self.size:
            heap.clear()
            return
        by_group = self.by_group
        first: dict[tuple[int, K, N], tuple[int, int, K, N, int]] = {}
        for item in heap:
            entry = (item[0], item[2], item[3])
            if entry in by_group[item[4]]:
                # a timer deleted and registered again has two entries: the first one fires
                seen = first.get(entry)
                if seen is None or item[1] < seen[1]:
                    first[entry] = item
        heap[:] = first.values()
        heapq.heapify(heap)

    def pop_due(self, limit: int) -> tuple[int, K, N] | None:
        heap, by_group = self.heap, self.by_group
        while heap and heap[0][0] <= limit:
            time, _, key, ns, kg = heapq.heappop(heap)
            entry = (time, key, ns)
            group = by_group[kg]
            if entry in group:
                group.discard(entry)
                self.size -= 1
                return entry
        return None

    def peek_time(self) -> int | None:
        heap, by_group = self.heap, self.by_group
        while heap:
            time, _, key, ns, kg = heap[0]
            if (time, key, ns) in by_group[kg]:
                return time
            heapq.heappop(heap)
        return None

    def __len__(self) -> int:
        return self.size

    def snapshot(self) -> dict[int, list[tuple[int, K, N]]]:
        return {kg: sorted(g, key=lambda e: e[0]) for kg, g in self.by_group.items() if g}

    def restore(self, parts: dict[int, list[tuple[int, K, N]]], key_groups: KeyGroupRange) -> None:
        """Add the timers of ``key_groups`` from a snapshot's ``parts``, under canonical keys
        (an unpickled NaN is a new object: a timer registered again after the restore must
        find the restored one, as keyed state does).

        Raises:
            CheckpointError: a NaN key of another bit pattern (``-nan``, in the key group of
                its bits before 2026-12-07) whose NaN key group is outside ``key_groups``.
        """
        for kg, entries in parts.items():
            if kg in key_groups:
                for time, key, ns in entries:
                    k = canonical_key(key)
                    g = kg
                    if k is not key or _holds_moved_float(key):
                        g = key_group_for(k, self.max_parallelism)
                        if g not in key_groups:
                            why = ("every NaN is one key since 2026-12-07" if k is not key else
                                   "an integral float from 2**63 on hashes as the int it equals since 2026-12-07")
                            raise CheckpointError(
                                f"restored timer of {'NaN ' if k is not key else ''}key {key!r} at {time}: {why}, "
                                f"in key group {g}, outside this subtask's range: restore at parallelism 1 (every "
                                "key group local), take a savepoint, and rescale from that"
                            )
                    self.add(k, ns, time, g)

    def timers_of(self, key: K) -> list[tuple[int, N]]:
        return sorted((t, ns) for t, k, ns in self.by_group.get(self._kg(key), ()) if k is key or k == key)

    def stats(self) -> dict[str, int]:
        return {"heap": len(self.heap), "key_group_cache": len(self._kg_cache)}


def _holds_moved_float(key: Any) -> bool:
    """Whether a restored timer's key is (or a tuple holding) an integral float of 2**63 or
    more in magnitude, which snapshots written before 2026-12-07 hold in another key group
    (:func:`~engine.keygroups.moved_float`)."""
    t = type(key)
    if t is float:
        return moved_float(key)
    return t is tuple and any(map(_holds_moved_float, key))


def _cancel(handle: Cancellable | None) -> bool:
    """Cancel a wake-up registered with the task; False if the task gave no handle."""
    if handle is None:
        return False
    handle.cancel()
    return True


def backend_timer_queues(backend: Any) -> tuple[KeyGroupedTimerQueue, KeyGroupedTimerQueue] | None:
    """The ``(event, processing)`` timer queues of a keyed operator in ``backend`` when it
    keeps state off the heap (``off_heap``: RocksDB), else None (the timer service keeps heap
    queues, snapshotted with the operator). Pass the result as ``InternalTimerService(...,
    queues=...)``; timers in the backend are part of the keyed snapshot, re-split by key
    group on rescaling.

    Example:
        >>> from raystream.checkpoint import HeapKeyedStateBackend
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> backend_timer_queues(HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)) is None
        True
    """
    if backend is None or not getattr(backend, "off_heap", False):
        return None
    return backend.create_timer_queue(EVENT_TIMERS), backend.create_timer_queue(PROCESSING_TIMERS)


def backend_restored_timers(backend: Any) -> list[dict[str, Any] | None]:
    """Timers that a heap keyed ``backend`` restored from an off-heap (RocksDB) snapshot
    (a job switched back from RocksDB), in the format of :meth:`InternalTimerService.snapshot`,
    for ``InternalTimerService.restore``; ``[]`` when there are none or the backend keeps
    the timers itself (``off_heap``).

    Example:
        >>> from raystream.checkpoint import HeapKeyedStateBackend
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> backend_restored_timers(HeapKeyedStateBackend(KeyGroupRange(0, 127), 128))
        []
    """
    take = getattr(backend, "take_restored_timers", None)
    if take is None or getattr(backend, "off_heap", False):
        return []
    event, processing = take(EVENT_TIMERS), take(PROCESSING_TIMERS)
    return [{"event": event, "processing": processing}] if event or processing else []


def backend_restored_state(backend: Any, name: str) -> dict[int, dict[Any, Any]]:
    """The entries of an operator's own state ``name`` (a window's contents, a join's
    buffers: what the operator keeps in the keyed backend on RocksDB) that a heap keyed
    ``backend`` restored from an off-heap (RocksDB) snapshot, ``{key group: {key: value}}``,
    handed over once (:meth:`HeapKeyedStateBackend.take_restored_state`) for the operator to
    keep in its own structures; ``{}`` when there are none or the backend keeps the state
    itself (``off_heap``).

    Example:
        >>> from raystream.checkpoint import HeapKeyedStateBackend
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> backend_restored_state(HeapKeyedStateBackend(KeyGroupRange(0, 127), 128), "_join/left")
        {}
    """
    take = getattr(backend, "take_restored_state", None)
    if take is None or getattr(backend, "off_heap", False):
        return {}
    return cast(dict[int, dict[Any, Any]], take(name))


class InternalTimerService(Generic[K, N]):
    """Event-time and processing-time timers of one keyed operator subtask.

    Args:
        max_parallelism: number of key groups (timers are stored per key group).
        on_event_time: ``callback(key, namespace, time)`` for a firing event-time timer.
        on_processing_time: the same for processing-time timers.
        register_processing_timer: the task's ``register_processing_timer(time, cb)``
            (None: processing-time timers only fire through :meth:`advance_processing_time`);
            if it returns a handle with ``cancel()``, a wake-up that is no longer needed is
            cancelled.
        clock: processing-time clock (``OperatorContext.clock``).
        queues: ``(event, processing)`` timer queues kept elsewhere, e.g. in an off-heap
            keyed state backend (:meth:`checkpoint.backend.KeyedStateBackend.create_timer_queue`);
            default: heap queues of this service, snapshotted with the operator.
    """

    def __init__(
        self,
        max_parallelism: int,
        on_event_time: TimerCallback[K, N],
        on_processing_time: TimerCallback[K, N],
        register_processing_timer: Callable[[int, Callable[[int], None]], Cancellable | None] | None = None,
        clock: Clock | None = None,
        queues: tuple[KeyGroupedTimerQueue, KeyGroupedTimerQueue] | None = None,
    ) -> None:
        self.event: KeyGroupedTimerQueue
        self.processing: KeyGroupedTimerQueue
        if queues is None:
            self.event, self.processing = _TimerQueue(max_parallelism), _TimerQueue(max_parallelism)
        else:
            self.event, self.processing = queues
        self._heap_queues = queues is None
        self.on_event_time = on_event_time
        self.on_processing_time = on_processing_time
        self._register_with_task = register_processing_timer
        self.clock = clock
        self.watermark = MIN_WATERMARK
        self._wakeup: tuple[int, Cancellable | None] | None = None  # (time, handle) registered with the task

    # -------------------------------------------------------------- registration
    def register_event_time_timer(self, key: K, ns: N, time: int) -> None:
        """Fire ``on_event_time(key, ns, time)`` once the watermark reaches ``time`` (epoch ms,
        or what an event timestamp may be: a float, a ``datetime``, a ``date``, see :func:`timer_ms`)."""
        self.event.add(key, ns, time if type(time) is int else timer_ms(time, "register_event_time_timer"))

    def delete_event_time_timer(self, key: K, ns: N, time: int) -> None:
        """Forget an event-time timer (no error if there is none)."""
        self.event.remove(key, ns, time if type(time) is int else timer_ms(time, "delete_event_time_timer"))

    def register_processing_time_timer(self, key: K, ns: N, time: int) -> None:
        """Fire ``on_processing_time(key, ns, time)`` once the clock reaches ``time``."""
        if type(time) is not int:
            time = timer_ms(time, "register_processing_time_timer")
        if self.processing.add(key, ns, time):
            self._schedule(time)

    def delete_processing_time_timer(self, key: K, ns: N, time: int) -> None:
        """Forget a processing-time timer (no error if there is none)."""
        if type(time) is not int:
            time = timer_ms(time, "delete_processing_time_timer")
        if self.processing.remove(key, ns, time) and self._wakeup is not None and self._wakeup[0] == time:
            self._reschedule()  # the earliest timer may be gone: move the wake-up

    def _schedule(self, time: int) -> None:
        """A timer at ``time`` was added: wake up then unless an earlier wake-up is pending."""
        wakeup = self._wakeup
        if self._register_with_task is None or (wakeup is not None and wakeup[0] <= time):
            return
        self._wakeup = (time, self._register_with_task(time, self._on_task_timer))
        if wakeup is not None:
            _cancel(wakeup[1])

    def _reschedule(self) -> None:
        """Make the one wake-up match the earliest live timer (none if there is none)."""
        if self._register_with_task is None:
            return
        earliest = self.processing.peek_time()
        wakeup = self._wakeup
        if wakeup is not None:
            if wakeup[0] == earliest:
                return
            if earliest is None or wakeup[0] < earliest:  # not needed, or too early
                if not _cancel(wakeup[1]):
                    return  # the task gave no handle: it fires early and reschedules then
            else:  # too late (the timers fired without it): an earlier one is needed
                _cancel(wakeup[1])
            self._wakeup = None
        if earliest is not None:
            self._schedule(earliest)

    def _on_task_timer(self, time: int) -> None:
        if self._wakeup is not None and self._wakeup[0] == time:
            self._wakeup = None
        now = self.clock.now_ms() if self.clock is not None else time
        self.advance_processing_time(max(now, time))
        self._reschedule()

    # -------------------------------------------------------------- firing
    def advance_watermark(self, watermark: int) -> int:
        """Fire every event-time timer with time <= ``watermark`` in time order; returns
        the number fired."""
        if watermark > self.watermark:
            self.watermark = watermark
        n = 0
        q = self.event
        if not isinstance(q, _TimerQueue):
            pop_due, callback = q.pop_due, self.on_event_time
            while True:
                entry = pop_due(watermark)
                if entry is None:
                    return n
                callback(entry[1], entry[2], entry[0])
                n += 1
        heap, by_group = q.heap, q.by_group
        pop, callback = heapq.heappop, self.on_event_time
        while heap and heap[0][0] <= watermark:  # _TimerQueue.pop_due, inlined
            time, _, key, ns, kg = pop(heap)
            entry = (time, key, ns)
            group = by_group[kg]
            if entry in group:
                group.discard(entry)
                q.size -= 1
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

    def stats(self) -> dict[str, int]:
        """Sizes of every structure behind the timers, for metrics: live timers, heap
        entries (live plus deleted ones not dropped yet), key group cache entries and
        wake-ups registered with the task (at most 1).

        Example:
            >>> ts = InternalTimerService(128, lambda *a: None, lambda *a: None)
            >>> ts.register_event_time_timer("a", None, 10); ts.delete_event_time_timer("a", None, 10)
            >>> ts.stats()["event_timers"], ts.stats()["event_heap"]
            (0, 1)
        """
        event, processing = self.event, self.processing
        if isinstance(event, _TimerQueue) and isinstance(processing, _TimerQueue):
            return {
                "event_timers": len(event),
                "event_heap": len(event.heap),
                "processing_timers": len(processing),
                "processing_heap": len(processing.heap),
                "key_group_cache": len(event._kg_cache) + len(processing._kg_cache),
                "task_wakeups": int(self._wakeup is not None),
            }
        # queues of an off-heap backend: the in-memory part is their caches and head heaps
        ev, pr = event.stats(), processing.stats()
        return {
            "event_timers": len(event),
            "event_heap": ev.get("heap", 0),
            "processing_timers": len(processing),
            "processing_heap": pr.get("heap", 0),
            "key_group_cache": 0,
            "task_wakeups": int(self._wakeup is not None),
        }

    def timers_of(self, key: K) -> dict[str, list[tuple[int, N]]]:
        """The pending timers of ``key``: ``{"event_time": [(time, ns)], "processing_time": [...]}``."""
        return {TimeDomain.EVENT_TIME: self.event.timers_of(key),
                TimeDomain.PROCESSING_TIME: self.processing.timers_of(key)}

    # -------------------------------------------------------------- state
    def snapshot(self) -> dict[str, Any]:
        """A picklable copy of every timer, per key group (each queue's a :class:`KeyGroupedState`:
        a restored subtask receives the timers of its own key groups only)."""
        return {"event": KeyGroupedState(self.event.snapshot()),
                "processing": KeyGroupedState(self.processing.snapshot()),
                "watermark": self.watermark}

    def restore(self, states: list[dict[str, Any] | None], key_groups: KeyGroupRange,
                owner: str | None = None) -> None:
        """Add the timers of ``key_groups`` from the snapshots of all old subtasks and
        re-register processing-time timers with the task (call after ``open``).

        Args:
            states: :meth:`snapshot` values of the old subtasks (None: none).
            key_groups: the key groups of this subtask.
            owner: who the timers are, for errors (``"operator 'x' (uid 'y')"``); default:
                the operator whose callbacks this service calls, named by its context.

        Raises:
            CheckpointError: a timer cannot be restored (a NaN key of an older snapshot in
                another subtask's key group, a key the queue cannot store, a malformed
                snapshot): the message names ``owner`` and the cause.
        """
        try:
            for st in states:
                if not st:
                    continue
                self.event.restore(st.get("event", {}), key_groups)
                self.processing.restore(st.get("processing", {}), key_groups)
        except Exception as exc:
            what = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
            raise CheckpointError(f"restoring the timers of {owner or self._owner()} from a checkpoint or "
                                  f"savepoint failed: {what}") from exc
        self._reschedule()

    def _owner(self) -> str:
        """The operator whose callbacks this service calls, as errors name it."""
        operator = getattr(self.on_event_time, "__self__", None)
        ctx = getattr(operator, "ctx", None)
        if ctx is not None and hasattr(ctx, "operator_uid"):
            return f"operator {ctx.operator_name!r} (uid {ctx.operator_uid!r})"
        return "a keyed operator"


class TimerService(Generic[K]):
    """The timer service a user function sees: timers of the **current key**.

    Example:
        >>> # inside KeyedProcessFunction.process_element(value, ctx):
        >>> # ctx.timer_service().register_event_time_timer(ctx.timestamp + 60_000)
    """

    __slots__ = ("_internal", "_key_fn")

    def __init__(self, internal: InternalTimerService[K, None], current_key: Callable[[], K]) -> None:
        self._internal = internal
        self._key_fn = current_key

    def current_watermark(self) -> int:
        """The operator's current event time (last watermark)."""
        return self._internal.watermark

    def current_processing_time(self) -> int:
        """Processing time from the injected clock."""
        return self._internal.current_processing_time()

    def register_event_time_timer(self, time: int) -> None:
        """Call ``on_timer(time, ...)`` for the current key when the watermark reaches ``time``:
        epoch ms, or a float, ``datetime`` or ``date`` as event timestamps may be (``on_timer``
        gets it as epoch ms, like ``ctx.timestamp``; see :func:`timer_ms`)."""
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


class NonKeyedTimerService(TimerService[Any]):
    """The timer service of a function on a stream without a key (a ``CoProcessFunction`` on
    connected streams that are not keyed, a ``BroadcastProcessFunction``, the broadcast side
    of a keyed one): it reads event and processing time, and refuses timers, which belong to
    a key (as Flink's, which throws "Setting timers is only supported on a keyed streams").

    Example:
        >>> from raystream.engine.operator import ManualClock
        >>> ts = NonKeyedTimerService(lambda: 41, ManualClock(7))
        >>> ts.current_watermark(), ts.current_processing_time()
        (41, 7)
    """

    __slots__ = ("_watermark_of", "_clock")

    def __init__(self, watermark: Callable[[], int], clock: Clock) -> None:  # (no timers: no internal service)
        self._watermark_of = watermark
        self._clock = clock

    def current_watermark(self) -> int:
        return self._watermark_of()

    def current_processing_time(self) -> int:
        return self._clock.now_ms()

    def _refuse(self, time: int) -> None:
        raise ConfigError(
            f"a timer (at {time!r}) needs a key: timers are only supported on keyed streams; key both inputs "
            "(a.connect(b).key_by(k1, k2), or a.key_by(k).connect(rules.broadcast(d))) and register it in "
            "process_element (the broadcast side has no key)"
        )

    def register_event_time_timer(self, time: int) -> None:
        self._refuse(time)

    def delete_event_time_timer(self, time: int) -> None:
        self._refuse(time)

    def register_processing_time_timer(self, time: int) -> None:
        self._refuse(time)

    def delete_processing_time_timer(self, time: int) -> None:
        self._refuse(time)

