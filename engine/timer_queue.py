"""A queue of processing-time callbacks whose cancelled entries are freed.

The task (and :class:`~operators.testing.OperatorHarness`) keep the callbacks registered with
``OperatorContext.register_processing_timer`` in a :class:`TimerQueue`. Registering returns a
:class:`ScheduledTimer`; ``cancel()`` forgets it. Cancelled entries are deleted lazily (skipped
when they reach the head of the heap), and the heap is rebuilt from its live entries whenever
cancelled ones outnumber live ones by more than a small constant, so memory follows the
number of *live* timers, never the number ever registered. When the last live timer is
cancelled the heap is emptied at once, so ``bool(queue)`` is also "some callback is pending".

Single-threaded: every method runs on the task's mailbox thread.

Example:
    >>> q = TimerQueue()
    >>> fired = []
    >>> a = q.push(10, fired.append); b = q.push(5, fired.append)
    >>> b.cancel(); len(q), q.peek_time()
    (1, 10)
    >>> due = q.pop_due(20); due[1](due[0]); fired
    [10]
"""

from __future__ import annotations

import heapq
from typing import Callable

__all__ = ["ScheduledTimer", "TimerQueue"]

TimerCallback = Callable[[int], None]

#: cancelled entries tolerated beyond the number of live ones before the heap is rebuilt
COMPACT_SLACK = 64


class ScheduledTimer:
    """A callback registered with a :class:`TimerQueue` (Flink's ``ScheduledFuture``)."""

    __slots__ = ("time", "callback", "_queue")

    def __init__(self, time: int, callback: TimerCallback, queue: TimerQueue) -> None:
        self.time = time
        self.callback = callback
        self._queue: TimerQueue | None = queue

    @property
    def pending(self) -> bool:
        """True until the callback fired or was cancelled."""
        return self._queue is not None

    def cancel(self) -> None:
        """Forget the callback (no-op if it already fired or was cancelled)."""
        queue = self._queue
        if queue is not None:
            self._queue = None
            queue._cancelled()

    def __repr__(self) -> str:
        state = "pending" if self._queue is not None else "done"
        return f"ScheduledTimer(time={self.time!r}, {state})"


class TimerQueue:
    """Processing-time callbacks ordered by (time, registration order), cancellable.

    ``len(queue)`` is the number of live (not fired, not cancelled) callbacks;
    :attr:`entries` the heap's size including cancelled entries not yet dropped, which stays
    below ``2 * len(queue) + COMPACT_SLACK``.
    """

    __slots__ = ("_heap", "_seq", "_live")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, ScheduledTimer]] = []
        self._seq = 0
        self._live = 0

    def push(self, time: int, callback: TimerCallback) -> ScheduledTimer:
        """Register ``callback(time)``; returns the handle that cancels it."""
        handle = ScheduledTimer(time, callback, self)
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, handle))
        self._live += 1
        return handle

    def _cancelled(self) -> None:
        self._live -= 1
        heap = self._heap
        if not self._live:
            heap.clear()
        elif len(heap) > 2 * self._live + COMPACT_SLACK:
            heap[:] = [e for e in heap if e[2]._queue is not None]
            heapq.heapify(heap)
        else:
            while heap and heap[0][2]._queue is None:  # keep the head live: exact wake-ups
                heapq.heappop(heap)

    def pop_due(self, now: int) -> tuple[int, TimerCallback] | None:
        """Remove and return ``(time, callback)`` of the earliest live callback with
        ``time <= now``, or None. The callback is the caller's to run."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            time, _, handle = heapq.heappop(heap)
            if handle._queue is not None:
                handle._queue = None
                self._live -= 1
                return time, handle.callback
        return None

    def peek_time(self) -> int | None:
        """Time of the earliest live callback, or None."""
        heap = self._heap
        while heap and heap[0][2]._queue is None:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def times(self) -> list[int]:
        """Times of the live callbacks, sorted."""
        return sorted(t for t, _, h in self._heap if h._queue is not None)

    @property
    def entries(self) -> int:
        """Heap entries held, live and cancelled-not-yet-dropped (for metrics)."""
        return len(self._heap)

    def __len__(self) -> int:
        return self._live

    def __repr__(self) -> str:
        return f"TimerQueue(live={self._live}, entries={len(self._heap)})"
