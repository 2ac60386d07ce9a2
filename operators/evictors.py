"""Window evictors (Flink's ``Evictor``): remove elements from a window before and/or after
its window function runs.

``keyed.window(assigner).evictor(CountEvictor.of(3)).reduce(fn)``: a window with an evictor
keeps its elements (with their timestamps) instead of folding them as they arrive (Flink's
``EvictingWindowOperator``). On every firing the operator hands the window's elements, in
arrival order, to ``evict_before``, runs the window function (``reduce`` / ``aggregate``
fold the remaining elements then), calls ``evict_after``, and keeps what is left for the
window's next firing (unless the trigger purges it).

An evictor removes elements from the list it is given, in place (``del elements[i]``,
``elements[:] = ...``); each element is a :class:`TimestampedValue` (``.value``,
``.timestamp``: the event timestamp in event-time windows, the time the record reached the
window in processing-time and global windows).

Example:
    >>> elements = [TimestampedValue(v, t) for v, t in [("a", 1), ("b", 5), ("c", 9)]]
    >>> CountEvictor.of(2).evict_before(elements, 3, None, None)
    >>> [e.value for e in elements]
    ['b', 'c']
    >>> TimeEvictor.of(4).evict_before(elements, 2, None, None)
    >>> [e.value for e in elements]
    ['c']
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from typing import Any, Callable, Generic, Protocol, TypeVar

from raystream.engine.config import as_int
from raystream.engine.errors import ConfigError

from .time import duration_ms, shown_ms

__all__ = [
    "TimestampedValue",
    "EvictorContext",
    "Evictor",
    "CountEvictor",
    "TimeEvictor",
    "DeltaEvictor",
]

T = TypeVar("T")


class TimestampedValue(Generic[T]):
    """A window element with its timestamp (Flink's ``TimestampedValue``)."""

    __slots__ = ("value", "timestamp")

    def __init__(self, value: T, timestamp: int) -> None:
        self.value = value
        self.timestamp = timestamp

    def get_value(self) -> T:
        return self.value

    def get_timestamp(self) -> int:
        return self.timestamp

    def __reduce__(self) -> tuple[type[TimestampedValue[Any]], tuple[Any, int]]:
        return (TimestampedValue, (self.value, self.timestamp))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimestampedValue) and (self.value, self.timestamp) == (other.value, other.timestamp)

    __hash__ = None  # type: ignore[assignment]  # (mutable)

    def __repr__(self) -> str:
        return f"TimestampedValue({self.value!r}, {self.timestamp})"


class EvictorContext(Protocol):
    """What an evictor may ask the operator (Flink's ``Evictor.EvictorContext``)."""

    def current_processing_time(self) -> int: ...

    def current_watermark(self) -> int: ...


class Evictor(ABC):
    """Removes elements of a window before and/or after its window function runs.

    Both methods get the window's elements as a list of :class:`TimestampedValue` in arrival
    order, to change in place (return nothing); ``size`` is the number of elements the
    window held when it fired (both calls get the same, as in Flink); ``ctx`` has
    ``current_watermark()`` and ``current_processing_time()``.

    Example:
        >>> class KeepEven(Evictor):   # drop odd values before the function sees them
        ...     def evict_before(self, elements, size, window, ctx):
        ...         elements[:] = [e for e in elements if e.value % 2 == 0]
        ...     def evict_after(self, elements, size, window, ctx):
        ...         pass
    """

    @abstractmethod
    def evict_before(self, elements: list[TimestampedValue[Any]], size: int, window: Any,
                     ctx: EvictorContext) -> None:
        """Called before the window function."""

    @abstractmethod
    def evict_after(self, elements: list[TimestampedValue[Any]], size: int, window: Any,
                    ctx: EvictorContext) -> None:
        """Called after the window function."""


class _BeforeOrAfter(Evictor):
    """An evictor that evicts at one of the two calls (``do_evict_after``)."""

    def __init__(self, do_evict_after: bool) -> None:
        if not isinstance(do_evict_after, bool):
            raise ConfigError(f"{type(self).__name__}: do_evict_after must be True or False, got {do_evict_after!r}")
        self.do_evict_after = do_evict_after

    def evict_before(self, elements: list[TimestampedValue[Any]], size: int, window: Any,
                     ctx: EvictorContext) -> None:
        if not self.do_evict_after:
            self._evict(elements, size, ctx)

    def evict_after(self, elements: list[TimestampedValue[Any]], size: int, window: Any,
                    ctx: EvictorContext) -> None:
        if self.do_evict_after:
            self._evict(elements, size, ctx)

    @abstractmethod
    def _evict(self, elements: list[TimestampedValue[Any]], size: int, ctx: EvictorContext) -> None: ...


class CountEvictor(_BeforeOrAfter):
    """Keeps the last ``max_count`` elements of a window (the oldest arrivals go first)."""

    def __init__(self, max_count: int, do_evict_after: bool = False) -> None:
        n = as_int(max_count)
        if n is None or n < 0:
            raise ConfigError(f"CountEvictor.of({max_count!r}): the count to keep is a non-negative int")
        super().__init__(do_evict_after)
        self.max_count = n

    @classmethod
    def of(cls, max_count: int, do_evict_after: bool = False) -> CountEvictor:
        """Keep at most ``max_count`` elements; evict after the function if ``do_evict_after``."""
        return cls(max_count, do_evict_after)

    def _evict(self, elements: list[TimestampedValue[Any]], size: int, ctx: EvictorContext) -> None:
        extra = len(elements) - self.max_count
        if extra > 0:
            del elements[:extra]

    def __repr__(self) -> str:
        return f"CountEvictor.of({self.max_count}, do_evict_after={self.do_evict_after})"


class TimeEvictor(_BeforeOrAfter):
    """Keeps the elements of the last ``window_size_ms`` of a window: an element whose
    timestamp is ``<= max timestamp - window_size_ms`` is evicted (Flink's cut-off)."""

    def __init__(self, window_size_ms: int | dt.timedelta, do_evict_after: bool = False) -> None:
        n = duration_ms(window_size_ms, "TimeEvictor's time to keep")
        if n is None or n < 0:
            raise ConfigError(f"TimeEvictor.of({shown_ms(window_size_ms)}): the time to keep is a non-negative int "
                              "(ms) or timedelta")
        super().__init__(do_evict_after)
        self.window_size = n

    @classmethod
    def of(cls, window_size_ms: int, do_evict_after: bool = False) -> TimeEvictor:
        """Keep the elements of the last ``window_size_ms``; evict after the function if ``do_evict_after``."""
        return cls(window_size_ms, do_evict_after)

    def _evict(self, elements: list[TimestampedValue[Any]], size: int, ctx: EvictorContext) -> None:
        if not elements:
            return
        cutoff = max(e.timestamp for e in elements) - self.window_size
        elements[:] = [e for e in elements if e.timestamp > cutoff]

    def __repr__(self) -> str:
        return f"TimeEvictor.of({self.window_size}, do_evict_after={self.do_evict_after})"


class DeltaEvictor(_BeforeOrAfter):
    """Evicts the elements whose ``delta_fn(element, last element) >= threshold`` (the last
    element: the window's newest arrival), as Flink's ``DeltaEvictor``.

    ``delta_fn`` is a function ``(old, new) -> float`` of two element values, or an object
    with such a ``get_delta`` method (Flink's ``DeltaFunction``).
    """

    def __init__(self, threshold: float, delta_fn: Callable[[Any, Any], float] | Any,
                 do_evict_after: bool = False) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold != threshold:
            raise ConfigError(f"DeltaEvictor.of({threshold!r}, ...): the threshold is a number")
        fn = getattr(delta_fn, "get_delta", delta_fn)
        if not callable(fn):
            raise ConfigError(
                f"DeltaEvictor.of({threshold!r}, {delta_fn!r}): delta_fn must be a function (old, new) -> float "
                "or have a get_delta(old, new) method"
            )
        super().__init__(do_evict_after)
        self.threshold = threshold
        self.delta_fn: Callable[[Any, Any], float] = fn

    @classmethod
    def of(cls, threshold: float, delta_fn: Callable[[Any, Any], float] | Any,
           do_evict_after: bool = False) -> DeltaEvictor:
        """Evict elements at least ``threshold`` away from the last one."""
        return cls(threshold, delta_fn, do_evict_after)

    def _evict(self, elements: list[TimestampedValue[Any]], size: int, ctx: EvictorContext) -> None:
        if not elements:
            return
        last, fn, threshold = elements[-1].value, self.delta_fn, self.threshold
        elements[:] = [e for e in elements if fn(e.value, last) < threshold]

    def __repr__(self) -> str:
        return f"DeltaEvictor.of({self.threshold!r}, {getattr(self.delta_fn, '__name__', self.delta_fn)!r}, " \
               f"do_evict_after={self.do_evict_after})"
