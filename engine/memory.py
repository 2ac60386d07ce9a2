"""Memory that outlives a job: the cyclic garbage a pooled task executor keeps between jobs
is bounded by :data:`IDLE_GARBAGE_BYTES`, not by how many jobs it served.

Example:
    >>> anonymous_memory() is None or anonymous_memory() > 0
    True
"""

from __future__ import annotations

import gc
import os
from typing import Callable

__all__ = ["IDLE_GARBAGE_BYTES", "IdleGarbage", "anonymous_memory"]

#: how much a pooled executor's anonymous memory may grow over a job before its release
#: collects the cyclic garbage the job left (see :class:`IdleGarbage`)
IDLE_GARBAGE_BYTES = 64 << 20

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def anonymous_memory() -> int | None:
    """This process's resident anonymous memory in bytes (resident minus file-backed and
    shared pages, from ``/proc/self/statm``: Ray's object store pages are not ours to free);
    None where that file does not exist."""
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
    except OSError:
        return None
    return (int(fields[1]) - int(fields[2])) * _PAGE


class IdleGarbage:
    """Frees what a finished job left in a process that outlives it (a pooled executor).

    A task's objects form reference cycles (task, operators, contexts, outputs), so when a
    job ends its operators, and whatever their functions captured (a lookup table, a model),
    are freed only by a *full* collection of the cyclic garbage collector. Task processes run
    with a raised young threshold (:func:`engine.ray_runtime.tune_task_gc`), and a captured
    table of a million entries is one container to the collector: without this, an idle
    executor kept every earlier job's table (+150 MB a run of a job capturing a 1M-entry
    dict). :meth:`check`, called when a job's tasks were released, collects once the
    process's anonymous memory has grown more than ``budget_bytes`` since the last point
    where it held no garbage of ours, so retained garbage is bounded by the budget, and small
    jobs, which grow it by little, pay one read of ``/proc/self/statm`` (a full collection
    takes ~30 ms with Ray and pyarrow loaded).

    Example:
        >>> sizes = iter([100, 150, 400, 200])
        >>> idle = IdleGarbage(budget_bytes=100, measure=lambda: next(sizes))
        >>> idle.check(), idle.check(), idle.floor   # +50: within the budget
        (False, True, 200)
    """

    def __init__(self, budget_bytes: int = IDLE_GARBAGE_BYTES,
                 measure: Callable[[], int | None] = anonymous_memory) -> None:
        self.budget_bytes = budget_bytes
        self._measure = measure
        #: the anonymous memory the last time no job's garbage was known to be left
        self.floor = measure()
        self.collections = 0

    def check(self) -> bool:
        """Collect if the memory grew past the budget; True if it collected."""
        now = self._measure()
        if now is None or self.floor is None:
            return False
        if now - self.floor <= self.budget_bytes:
            self.floor = min(self.floor, now)
            return False
        gc.collect()
        self.collections += 1
        # what is left is live, or memory the allocators keep: the next job is measured from here
        self.floor = self._measure()
        return True
