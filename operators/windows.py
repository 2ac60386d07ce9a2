"""Windows: window types, assigners, triggers and window functions (Flink's model).

A *window assigner* puts each record into windows (tumbling, sliding, session, global; in
event time or processing time); a *trigger* decides when a window's contents are evaluated
(fire) and/or discarded (purge); a window function (``reduce``, ``aggregate`` with an
:class:`~checkpoint.AggregateFunction`, or a :class:`ProcessWindowFunction`) turns them
into results. The operator that runs them is :class:`operators.window_operator.WindowOperator`;
the API is ``keyed_stream.window(assigner)`` (see :class:`operators.window_operator.WindowedStream`).

Example:
    >>> TumblingEventTimeWindows.of(1000).assign_windows(None, 2500, 0)
    [TimeWindow(start=2000, end=3000)]
    >>> [w.start for w in SlidingEventTimeWindows.of(1000, 500).assign_windows(None, 2500, 0)]
    [2500, 2000]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import timedelta
from enum import Enum
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Generic,
    Iterable,
    NamedTuple,
    Protocol,
    Sequence,
    TypeVar,
)

from raystream.engine.config import as_int
from raystream.engine.errors import ConfigError, UserCodeError, short_repr
from raystream.engine.operator import OperatorContext

from .functions import IN, KEY, OUT, OutputTag, RuntimeContext, tag_name
from .time import duration_ms, shown_ms
from .timers import InternalTimerService

__all__ = [
    "Window",
    "TimeWindow",
    "GlobalWindow",
    "WindowAssigner",
    "MergingWindowAssigner",
    "TumblingEventTimeWindows",
    "TumblingProcessingTimeWindows",
    "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows",
    "EventTimeSessionWindows",
    "ProcessingTimeSessionWindows",
    "GlobalWindows",
    "TriggerResult",
    "Trigger",
    "TriggerContext",
    "EventTimeTrigger",
    "ProcessingTimeTrigger",
    "CountTrigger",
    "PurgingTrigger",
    "NeverTrigger",
    "ProcessWindowFunction",
    "ProcessAllWindowFunction",
    "WindowFunction",
    "AllWindowFunction",
    "WindowContext",
]


class Window(Protocol):
    """What the window operator and triggers need of a window: it is hashable (it keys the
    contents and timers of a key) and knows its last timestamp."""

    def max_timestamp(self) -> int:
        """The largest timestamp that belongs to the window."""
        ...


# the window type a window function works with (the assigner's; Any when not given: PEP 696)
if TYPE_CHECKING:
    from typing_extensions import TypeVar as _TypeVarWithDefault

    W = _TypeVarWithDefault("W", bound=Window, default=Any)
else:
    W = TypeVar("W", bound=Window)


class TimeWindow(NamedTuple):
    """The half-open interval ``[start, end)`` of event or processing time (ms).

    A named tuple (immutable, ordered by ``(start, end)``) so that hashing and comparing
    windows, which the operator and the timer queues do per (key, window), run in C."""

    start: int
    end: int

    def max_timestamp(self) -> int:
        """The largest timestamp that belongs to the window (``end - 1``)."""
        return self.end - 1

    def __call__(self) -> "TimeWindow":
        """The window itself: a PyFlink port's ``context.window()`` reads the same window as
        ``context.window`` (PyFlink's context has a ``window()`` method).

        Example:
            >>> w = TimeWindow(0, 10)
            >>> w() is w
            True
        """
        return self

    def intersects(self, other: "TimeWindow") -> bool:
        """True if the windows overlap or touch (session windows merge then)."""
        return self.start <= other.end and self.end >= other.start

    def cover(self, other: "TimeWindow") -> "TimeWindow":
        """The smallest window containing both."""
        return TimeWindow(min(self.start, other.start), max(self.end, other.end))


class GlobalWindow:
    """The single window of :class:`GlobalWindows` (never ends)."""

    _instance: "GlobalWindow | None" = None

    def __new__(cls) -> "GlobalWindow":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def max_timestamp(self) -> int:
        return 2**63 - 1

    def __call__(self) -> "GlobalWindow":
        """The window itself (a PyFlink port's ``context.window()``, as :meth:`TimeWindow.__call__`)."""
        return self

    def __reduce__(self) -> tuple[type[GlobalWindow], tuple[()]]:
        return (GlobalWindow, ())

    def __lt__(self, other: object) -> bool:
        return False

    def __repr__(self) -> str:
        return "GlobalWindow()"


def _check_ms(name: str, value: object) -> int:
    """A window length: a positive int of ms or a ``timedelta`` (:func:`~operators.time.duration_ms`)."""
    ms = duration_ms(value, f"window {name}")
    if ms is None or ms <= 0:
        raise ConfigError(f"window {name} must be a positive int (ms) or timedelta, got {shown_ms(value)}")
    return ms


def _check_offset(value: object, period: int, period_name: str) -> int:
    """A window offset as Flink takes it: ``abs(offset) < period`` (a negative offset shifts
    the windows back, e.g. ``-8 h`` for days in UTC+8), normalized to ``0 <= offset < period``;
    an int of ms or a ``timedelta``."""
    offset = duration_ms(value, "window offset")
    if offset is None or abs(offset) >= period:
        raise ConfigError(
            f"window offset must be an int (ms) or timedelta with abs(offset) < {period_name} ({period}), got {shown_ms(value)}")
    return offset % period


class WindowAssigner(ABC):
    """Assigns each record to zero or more windows."""

    is_event_time: bool = True
    is_merging: bool = False

    @abstractmethod
    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> Sequence[Window]:
        """The windows of a record with event ``timestamp`` at processing time ``now_ms``."""

    @abstractmethod
    def default_trigger(self) -> "Trigger":
        """The trigger used unless ``.trigger(...)`` overrides it."""


class MergingWindowAssigner(WindowAssigner):
    """An assigner whose windows merge when they overlap or touch (session windows): each
    record gets :class:`TimeWindow` s that the operator merges with the key's windows."""

    is_merging = True

    @abstractmethod
    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[TimeWindow]:
        """The (unmerged) windows of a record."""


class TumblingEventTimeWindows(WindowAssigner):
    """Fixed-size, non-overlapping event-time windows ``[k*size + offset, (k+1)*size + offset)``."""

    def __init__(self, size_ms: int | timedelta, offset_ms: int | timedelta = 0) -> None:
        self.size = _check_ms("size", size_ms)
        self.offset = _check_offset(offset_ms, self.size, "size")

    @classmethod
    def of(cls, size_ms: int | timedelta, offset_ms: int | timedelta = 0) -> "TumblingEventTimeWindows":
        """Windows of ``size_ms`` (shifted by ``offset_ms``): ms, a ``timedelta`` or PyFlink's ``Time``.

        Example:
            >>> TumblingEventTimeWindows.of(timedelta(seconds=5)).assign_windows(None, 7_000, 0)
            [TimeWindow(start=5000, end=10000)]
        """
        return cls(size_ms, offset_ms)

    def _time(self, timestamp: int, now_ms: int) -> int:
        return timestamp

    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[TimeWindow]:
        t = self._time(timestamp, now_ms)
        start = t - (t - self.offset) % self.size
        return [TimeWindow(start, start + self.size)]

    def default_trigger(self) -> "Trigger":
        return EventTimeTrigger()

    def __repr__(self) -> str:
        return f"{type(self).__name__}.of({self.size}{f', {self.offset}' if self.offset else ''})"


class TumblingProcessingTimeWindows(TumblingEventTimeWindows):
    """Tumbling windows over processing time (the operator's injected clock)."""

    is_event_time = False

    def _time(self, timestamp: int, now_ms: int) -> int:
        return now_ms

    def default_trigger(self) -> "Trigger":
        return ProcessingTimeTrigger()


class SlidingEventTimeWindows(WindowAssigner):
    """Windows of ``size`` every ``slide`` ms; a record is in ``size / slide`` windows."""

    def __init__(self, size_ms: int | timedelta, slide_ms: int | timedelta, offset_ms: int | timedelta = 0) -> None:
        self.size = _check_ms("size", size_ms)
        self.slide = _check_ms("slide", slide_ms)
        self.offset = _check_offset(offset_ms, self.slide, "slide")

    @classmethod
    def of(cls, size_ms: int | timedelta, slide_ms: int | timedelta, offset_ms: int | timedelta = 0) -> "SlidingEventTimeWindows":
        """Windows of ``size_ms`` starting every ``slide_ms`` (ms or ``timedelta``)."""
        return cls(size_ms, slide_ms, offset_ms)

    def _time(self, timestamp: int, now_ms: int) -> int:
        return timestamp

    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[TimeWindow]:
        t = self._time(timestamp, now_ms)
        last = t - (t - self.offset) % self.slide
        out = []
        start = last
        while start > t - self.size:
            out.append(TimeWindow(start, start + self.size))
            start -= self.slide
        return out

    def default_trigger(self) -> "Trigger":
        return EventTimeTrigger()

    def __repr__(self) -> str:
        return f"{type(self).__name__}.of({self.size}, {self.slide}{f', {self.offset}' if self.offset else ''})"


class SlidingProcessingTimeWindows(SlidingEventTimeWindows):
    """Sliding windows over processing time."""

    is_event_time = False

    def _time(self, timestamp: int, now_ms: int) -> int:
        return now_ms

    def default_trigger(self) -> "Trigger":
        return ProcessingTimeTrigger()


class EventTimeSessionWindows(MergingWindowAssigner):
    """Session windows: a key's records closer than ``gap`` ms belong to one session
    (windows ``[ts, ts + gap)`` that overlap or touch are merged)."""

    def __init__(self, gap_ms: int | timedelta) -> None:
        self.gap = _check_ms("gap", gap_ms)

    @classmethod
    def with_gap(cls, gap_ms: int | timedelta) -> "EventTimeSessionWindows":
        """Sessions separated by more than ``gap_ms`` of inactivity (ms or ``timedelta``)."""
        return cls(gap_ms)

    @classmethod
    def with_dynamic_gap(cls, extractor: Callable[[Any], int] | Any) -> "EventTimeSessionWindows":
        """Sessions whose gap each record sets (Flink's ``withDynamicGap``): ``extractor``
        is a function ``record -> gap ms`` or an object with such an ``extract`` method
        (Flink's ``SessionWindowTimeGapExtractor``). A record's window is ``[t, t + gap)``;
        a gap that is not a positive int fails the job naming the record.

        Example:
            >>> w = EventTimeSessionWindows.with_dynamic_gap(lambda r: r["gap"])
            >>> w.assign_windows({"gap": 30}, 100, 0)
            [TimeWindow(start=100, end=130)]
        """
        return _DynamicSessions(extractor, cls)

    def _time(self, timestamp: int, now_ms: int) -> int:
        return timestamp

    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[TimeWindow]:
        t = self._time(timestamp, now_ms)
        return [TimeWindow(t, t + self.gap)]

    def default_trigger(self) -> "Trigger":
        return EventTimeTrigger()

    def __repr__(self) -> str:
        return f"{type(self).__name__}.with_gap({self.gap})"


class ProcessingTimeSessionWindows(EventTimeSessionWindows):
    """Session windows over processing time."""

    is_event_time = False

    def _time(self, timestamp: int, now_ms: int) -> int:
        return now_ms

    def default_trigger(self) -> "Trigger":
        return ProcessingTimeTrigger()


class _DynamicSessions(EventTimeSessionWindows):
    """Session windows with a gap per record (``with_dynamic_gap``), in the time of
    ``base`` (event time or processing time)."""

    def __init__(self, extractor: Callable[[Any], int] | Any, base: type[EventTimeSessionWindows]) -> None:
        fn = getattr(extractor, "extract", extractor)
        if not callable(fn):
            raise ConfigError(
                f"{base.__name__}.with_dynamic_gap({extractor!r}): the extractor must be a function record -> gap (ms) "
                "or have an extract(record) method"
            )
        self.extractor = extractor
        self._extract: Callable[[Any], Any] = fn
        self._base = base
        self.is_event_time = base.is_event_time
        self.gap = 0  # (no fixed gap: each record's gap is extracted)

    def _time(self, timestamp: int, now_ms: int) -> int:
        return timestamp if self.is_event_time else now_ms

    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[TimeWindow]:
        try:
            value = self._extract(element)
        except Exception as exc:
            raise UserCodeError(element, exc) from exc
        try:
            gap = duration_ms(value, f"{self!r}: the session gap of record {short_repr(element, 200)}")
        except ConfigError:
            gap = None
        if gap is None or gap <= 0:
            raise ConfigError(
                f"{self!r}: the session gap of record {short_repr(element, 200)} is {value!r}; a dynamic session gap "
                "must be a positive int (ms) or a timedelta of whole ms: filter such records out or give them a "
                "default gap in the extractor"
            )
        t = self._time(timestamp, now_ms)
        return [TimeWindow(t, t + gap)]

    def default_trigger(self) -> "Trigger":
        return EventTimeTrigger() if self.is_event_time else ProcessingTimeTrigger()

    def __repr__(self) -> str:
        name = getattr(self.extractor, "__name__", None) or type(self.extractor).__name__
        return f"{self._base.__name__}.with_dynamic_gap({name})"


class GlobalWindows(WindowAssigner):
    """One window per key for all time; needs a trigger (default: never fires), e.g.
    ``count_window(n)`` = GlobalWindows + PurgingTrigger(CountTrigger(n))."""

    is_event_time = False

    @classmethod
    def create(cls) -> "GlobalWindows":
        """The global window assigner."""
        return cls()

    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[GlobalWindow]:
        return [GlobalWindow()]

    def default_trigger(self) -> "Trigger":
        return NeverTrigger()

    def __repr__(self) -> str:
        return "GlobalWindows.create()"


# --------------------------------------------------------------------------- triggers


class TriggerResult(Enum):
    """What a trigger decides for a window."""

    CONTINUE = (False, False)
    FIRE = (True, False)
    PURGE = (False, True)
    FIRE_AND_PURGE = (True, True)

    @property
    def is_fire(self) -> bool:
        return self.value[0]

    @property
    def is_purge(self) -> bool:
        return self.value[1]


class TriggerContext(ABC):
    """What a trigger may do for the current key and window: timers and small state."""

    @abstractmethod
    def current_watermark(self) -> int: ...

    @abstractmethod
    def current_processing_time(self) -> int: ...

    @abstractmethod
    def register_event_time_timer(self, time: int) -> None: ...

    @abstractmethod
    def register_processing_time_timer(self, time: int) -> None: ...

    @abstractmethod
    def delete_event_time_timer(self, time: int) -> None: ...

    @abstractmethod
    def delete_processing_time_timer(self, time: int) -> None: ...

    @abstractmethod
    def get_state(self, name: str, default: Any = None) -> Any:
        """Per-(key, window) trigger state (checkpointed with the window)."""

    @abstractmethod
    def set_state(self, name: str, value: Any) -> None:
        """Set state ``name`` of the current key and window; ``None`` removes it (Flink's
        ``state.clear()``): a trigger that sets its state back to None when it fires or is
        cleared leaves nothing behind for the key (a global window is never cleaned up)."""

    @abstractmethod
    def merged_states(self, name: str) -> list[Any]:
        """In ``on_merge``: the values of state ``name`` of the windows being merged."""


class Trigger(ABC):
    """Decides when a window fires. Subclass it for custom triggers.

    Example:
        >>> class EveryTen(Trigger):   # fire each 10 elements, keep the contents
        ...     def on_element(self, element, timestamp, window, ctx):
        ...         n = ctx.get_state("n", 0) + 1
        ...         ctx.set_state("n", n)
        ...         return TriggerResult.FIRE if n % 10 == 0 else TriggerResult.CONTINUE
    """

    @abstractmethod
    def on_element(self, element: Any, timestamp: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        """A record was added to ``window``."""

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        """An event-time timer this trigger registered fired."""
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        """A processing-time timer this trigger registered fired."""
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        """True if the trigger supports merging (session) windows."""
        return False

    def on_merge(self, window: Window, ctx: TriggerContext) -> None:
        """Windows were merged into ``window`` (their timers are already deleted)."""
        raise ConfigError(f"trigger {type(self).__name__} does not support merging windows")

    def clear(self, window: Window, ctx: TriggerContext) -> None:
        """The window is being discarded: delete the timers this trigger registered."""


class EventTimeTrigger(Trigger):
    """Fires once the watermark passes the window's end (and again for each late record
    within the allowed lateness)."""

    def on_element(self, element: Any, timestamp: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        if window.max_timestamp() <= ctx.current_watermark():
            return TriggerResult.FIRE  # late but within allowed lateness: fire again now
        ctx.register_event_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.FIRE if time == window.max_timestamp() else TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Window, ctx: TriggerContext) -> None:
        if window.max_timestamp() > ctx.current_watermark():
            ctx.register_event_time_timer(window.max_timestamp())

    def clear(self, window: Window, ctx: TriggerContext) -> None:
        ctx.delete_event_time_timer(window.max_timestamp())


class ProcessingTimeTrigger(Trigger):
    """Fires when the processing-time clock passes the window's end."""

    def on_element(self, element: Any, timestamp: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        ctx.register_processing_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.FIRE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Window, ctx: TriggerContext) -> None:
        ctx.register_processing_time_timer(window.max_timestamp())

    def clear(self, window: Window, ctx: TriggerContext) -> None:
        ctx.delete_processing_time_timer(window.max_timestamp())


class CountTrigger(Trigger):
    """Fires every ``count`` records of a window."""

    def __init__(self, count: int) -> None:
        n = as_int(count)
        if n is None or n <= 0:
            raise ConfigError(f"CountTrigger count must be a positive int, got {count!r}")
        self.count = n

    @classmethod
    def of(cls, count: int) -> "CountTrigger":
        """Fire every ``count`` records."""
        return cls(count)

    def on_element(self, element: Any, timestamp: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        n = ctx.get_state("count", 0) + 1
        if n >= self.count:
            ctx.set_state("count", None)  # cleared (Flink: count.clear()): a fired key keeps no state
            return TriggerResult.FIRE
        ctx.set_state("count", n)
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Window, ctx: TriggerContext) -> None:
        ctx.set_state("count", sum(ctx.merged_states("count")) or None)

    def clear(self, window: Window, ctx: TriggerContext) -> None:
        ctx.set_state("count", None)


class PurgingTrigger(Trigger):
    """Wraps a trigger and purges the window whenever it fires."""

    def __init__(self, inner: Trigger) -> None:
        self.inner = inner

    @classmethod
    def of(cls, inner: Trigger) -> "PurgingTrigger":
        """Purge on every firing of ``inner``."""
        return cls(inner)

    @staticmethod
    def _purge(r: TriggerResult) -> TriggerResult:
        return TriggerResult.FIRE_AND_PURGE if r.is_fire else r

    def on_element(self, element: Any, timestamp: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return self._purge(self.inner.on_element(element, timestamp, window, ctx))

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return self._purge(self.inner.on_event_time(time, window, ctx))

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return self._purge(self.inner.on_processing_time(time, window, ctx))

    def can_merge(self) -> bool:
        return self.inner.can_merge()

    def on_merge(self, window: Window, ctx: TriggerContext) -> None:
        self.inner.on_merge(window, ctx)

    def clear(self, window: Window, ctx: TriggerContext) -> None:
        self.inner.clear(window, ctx)


class NeverTrigger(Trigger):
    """Never fires (the default of GlobalWindows)."""

    def on_element(self, element: Any, timestamp: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Window, ctx: TriggerContext) -> None:
        return None


# --------------------------------------------------------------------------- window functions


class _WindowOperatorLike(Protocol):
    """What a :class:`WindowContext` reads of its window operator: its timers (event time)
    and its context (processing-time clock)."""

    @property
    def timers(self) -> InternalTimerService[Any, Any]: ...

    @property
    def ctx(self) -> OperatorContext: ...

    @property
    def assigner(self) -> WindowAssigner: ...

    def state_store(self, key: Any, window: Any) -> Any:
        """The keyed state of ``key`` for ``window`` (None: the key's own, all windows')."""
        ...


class WindowContext(Generic[W]):
    """What a :class:`ProcessWindowFunction` sees: the window, time, side outputs and keyed
    state (the window's and the key's)."""

    __slots__ = ("window", "key", "_op", "_side")

    #: the window being evaluated (set by the operator before each ``process`` call); a
    #: :class:`TimeWindow` or :class:`GlobalWindow` may also be called, so a PyFlink port's
    #: ``context.window()`` gives the same window
    window: W

    def __init__(self, op: _WindowOperatorLike) -> None:
        self._op = op
        self._side: dict[str, list[Any]] = {}
        #: the key of the window being evaluated
        self.key: Any = None

    def window_state(self) -> Any:
        """State of this key and window (Flink's ``windowState()``): ``get_state(descriptor)``
        with any state descriptor but a TTL; e.g. how often a window fired within its allowed
        lateness. It lives as long as the window: clear it in
        :meth:`ProcessWindowFunction.clear`. Not for merging (session) windows, as in Flink.

        Example:
            >>> # fired = context.window_state().get_state(ValueStateDescriptor("fired", default=0))
            >>> # fired.update(fired.value() + 1)
        """
        if self._op.assigner.is_merging:
            raise ConfigError(
                f"window_state() is not supported with merging windows ({self._op.assigner!r}): their windows "
                "merge away (Flink refuses it too); keep state per key with global_state()"
            )
        return self._op.state_store(self.key, self.window)

    def global_state(self) -> Any:
        """Keyed state of the key, shared by all its windows and kept across them (Flink's
        ``globalState()``): ``get_state(descriptor)`` as in a ``KeyedProcessFunction``."""
        return self._op.state_store(self.key, None)

    def current_watermark(self) -> int:
        """The operator's event time."""
        return self._op.timers.watermark

    def current_processing_time(self) -> int:
        """The operator's processing time (injected clock)."""
        return self._op.ctx.clock.now_ms()

    def output(self, tag: OutputTag | str, value: Any) -> None:
        """Emit ``value`` to side output ``tag``."""
        self._side.setdefault(tag_name(tag), []).append(value)


class ProcessWindowFunction(ABC, Generic[IN, OUT, KEY, W]):
    """Evaluates a whole window: ``process(key, context, elements)`` yields results.

    ``elements`` are the window's records, or the single pre-aggregated value when used
    with ``reduce(fn, window_function=...)`` / ``aggregate(agg, window_function=...)``.
    Parameterize it to type the records, the key and ``context.window`` (Flink's order:
    ``ProcessWindowFunction[dict, tuple, str, TimeWindow]``).

    Example:
        >>> class CountWithWindow(ProcessWindowFunction):
        ...     def process(self, key, context, elements):
        ...         yield (key, context.window.start, len(list(elements)))
    """

    def open(self, runtime_context: RuntimeContext) -> None:
        """Called once per subtask."""

    @abstractmethod
    def process(self, key: KEY, context: WindowContext[W], elements: Iterable[IN]) -> Iterable[OUT] | None:
        """Evaluate one window of one key."""

    def clear(self, context: WindowContext[W]) -> None:
        """Called when ``context.window`` of ``context.key`` is cleaned up (after its allowed
        lateness; Flink's ``clear``): clear its ``context.window_state()`` here."""

    def close(self) -> None:
        """Called once at the end."""


class ProcessAllWindowFunction(ABC, Generic[IN, OUT, W]):
    """Evaluates a whole window of :meth:`~operators.datastream.DataStream.window_all`:
    ``process(context, elements)`` yields results (Flink's ``ProcessAllWindowFunction``: no
    key; ``context`` is a :class:`WindowContext`, its ``window`` or ``window()`` the window).

    Example:
        >>> class CountAll(ProcessAllWindowFunction):
        ...     def process(self, context, elements):
        ...         yield (context.window().start, len(list(elements)))
    """

    def open(self, runtime_context: RuntimeContext) -> None:
        """Called once (the window of ``window_all`` runs in one subtask)."""

    @abstractmethod
    def process(self, context: WindowContext[W], elements: Iterable[IN]) -> Iterable[OUT] | None:
        """Evaluate one window."""

    def clear(self, context: WindowContext[W]) -> None:
        """Called when ``context.window`` is cleaned up (after its allowed lateness)."""

    def close(self) -> None:
        """Called once at the end."""


class WindowFunction(ABC, Generic[IN, OUT, KEY, W]):
    """Flink's ``WindowFunction``: ``apply(key, window, inputs)`` yields the results of one
    window of one key (``WindowedStream.apply`` takes it, or a plain function of the same
    three arguments).

    Example:
        >>> class Count(WindowFunction):
        ...     def apply(self, key, window, inputs):
        ...         yield (key, window.start, len(list(inputs)))
    """

    @abstractmethod
    def apply(self, key: KEY, window: W, inputs: Iterable[IN]) -> Iterable[OUT] | None:
        """Evaluate one window of one key."""


class AllWindowFunction(ABC, Generic[IN, OUT, W]):
    """Flink's ``AllWindowFunction``: ``apply(window, inputs)`` yields the results of one
    window of :meth:`~operators.datastream.DataStream.window_all` (its ``apply`` takes it, or
    a plain function of the same two arguments).

    Example:
        >>> class CountAll(AllWindowFunction):
        ...     def apply(self, window, inputs):
        ...         yield (window.start, len(list(inputs)))
    """

    @abstractmethod
    def apply(self, window: W, inputs: Iterable[IN]) -> Iterable[OUT] | None:
        """Evaluate one window."""
