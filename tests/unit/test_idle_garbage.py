"""A pooled executor frees the cyclic garbage a finished job left once it adds up
(``engine.memory.IdleGarbage``, checked by ``TaskExecutor.release``): the check collects when the process's anonymous memory
grew past the budget, and only then."""

from __future__ import annotations

import doctest
import gc
import weakref

from raystream.engine import memory
from raystream.engine.memory import IdleGarbage, anonymous_memory


class _Node:
    """One end of a reference cycle that holds a payload."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.other: _Node | None = None


def _cycle_garbage(size: int) -> weakref.ref:
    """Unreachable cyclic garbage holding ``size`` touched bytes; a weak reference to it."""
    a, b = _Node(b"\x01" * size), _Node(b"")
    a.other, b.other = b, a
    return weakref.ref(a)


def test_the_doctests() -> None:
    assert doctest.testmod(memory).failed == 0


def test_garbage_past_the_budget_is_collected_and_small_garbage_waits() -> None:
    assert anonymous_memory() is not None  # (Linux: the CI machines)
    gc.collect()
    gc.disable()  # no automatic collection may free the garbage instead of the check
    try:
        idle = IdleGarbage(budget_bytes=32 << 20)
        small = _cycle_garbage(1 << 20)
        assert not idle.check()
        assert small() is not None  # within the budget: left for the collector's own time
        big = _cycle_garbage(96 << 20)
        assert idle.check()
        assert big() is None and small() is None
        assert idle.collections == 1
        assert not idle.check()  # measured from what was left: nothing to do again
    finally:
        gc.enable()


def test_without_proc_the_check_does_nothing() -> None:
    idle = IdleGarbage(measure=lambda: None)
    assert not idle.check() and idle.collections == 0
