"""User function interfaces (PyFlink names): KeyedProcessFunction and its contexts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterable

__all__ = ["RuntimeContext", "KeyedProcessFunction", "ProcessContext"]


class RuntimeContext:
    """What a rich function sees in ``open``: its subtask and the keyed state.

    Example:
        >>> class Count(KeyedProcessFunction):
        ...     def open(self, ctx):
        ...         self.count = ctx.get_state(ValueStateDescriptor("count", default=0))
        ...     def process_element(self, value, ctx):
        ...         self.count.update(self.count.value() + 1)
        ...         yield (ctx.get_current_key(), self.count.value())
    """

    def __init__(self, operator_ctx: Any) -> None:
        self._ctx = operator_ctx

    @property
    def task_name(self) -> str:
        return self._ctx.task_name

    @property
    def index_of_this_subtask(self) -> int:
        return self._ctx.subtask_index

    @property
    def number_of_parallel_subtasks(self) -> int:
        return self._ctx.parallelism

    @property
    def attempt_number(self) -> int:
        return self._ctx.attempt

    def get_state(self, descriptor: Any) -> Any:
        """Keyed ValueState/ListState/MapState/ReducingState/AggregatingState for ``descriptor``."""
        return self._ctx.keyed_backend.get_state(descriptor)

    get_list_state = get_state
    get_map_state = get_state
    get_reducing_state = get_state
    get_aggregating_state = get_state


class ProcessContext:
    """Per-record context of a KeyedProcessFunction."""

    __slots__ = ("_key", "timestamp", "_timer_service")

    def __init__(self) -> None:
        self._key = None
        self.timestamp: int | None = None
        self._timer_service = None

    def get_current_key(self) -> Any:
        """The key of the record being processed."""
        return self._key

    def timer_service(self) -> Any:
        """Register/delete event-time and processing-time timers for the current key."""
        return self._timer_service


class KeyedProcessFunction(ABC):
    """Processes the records of a keyed stream one at a time with per-key state.

    ``process_element`` yields (or returns an iterable of) output records.
    """

    def open(self, runtime_context: RuntimeContext) -> None:
        """Called once per subtask before any record; declare state here."""

    @abstractmethod
    def process_element(self, value: Any, ctx: ProcessContext) -> Iterable[Any] | None:
        """Process one record of the current key."""

    def on_timer(self, timestamp: int, ctx: Any) -> Iterable[Any] | None:
        """A timer registered for the current key fired."""
        return None

    def close(self) -> None:
        """Called once at the end."""
