"""Flink's function classes, as a PyFlink port writes them: ``MapFunction.map(value)``,
``FlatMapFunction.flat_map(value)``, ``FilterFunction.filter(value)``,
``ReduceFunction.reduce(a, b)``, and a key selector object's ``get_key(value)``.

``map``, ``flat_map``, ``filter``, ``reduce`` and ``key_by`` take a plain function or one of
these objects (subclassing the classes here is optional: any object with the method will do).
An object that overrides ``open(runtime_context)`` or ``close()`` (Flink's rich functions:
load a model, open a connection) runs inside a process function, which calls them once per
subtask; one without them runs as its method alone, at a plain function's speed.

Example:
    >>> import raystream as rs
    >>> class Double(rs.MapFunction):
    ...     def map(self, value):
    ...         return value * 2
    >>> env = rs.StreamEnvironment(parallelism=1)
    >>> env.from_collection([1, 2]).map(Double()).execute_and_collect()
    [2, 4]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Generic, Iterable

from raystream.engine.errors import GraphError

from .functions import (
    IN,
    NOT_RECORDS,
    OUT,
    ProcessContext,
    ProcessFunction,
    RuntimeContext,
    not_records,
)

__all__ = ["FilterFunction", "FlatMapFunction", "MapFunction", "ReduceFunction", "user_function"]


class _Function:
    """Flink's ``Function`` life cycle: ``open`` once per subtask before any record,
    ``close`` once at the end."""

    def open(self, runtime_context: RuntimeContext) -> None:
        """Called once per subtask before any record."""

    def close(self) -> None:
        """Called once per subtask at the end."""


class MapFunction(_Function, ABC, Generic[IN, OUT]):
    """One output record per input record (``stream.map(MyMap())``).

    Example:
        >>> class Upper(MapFunction):
        ...     def map(self, value):
        ...         return value.upper()
    """

    @abstractmethod
    def map(self, value: IN) -> OUT:
        """The output record of ``value``."""


class FlatMapFunction(_Function, ABC, Generic[IN, OUT]):
    """Any number of output records per input record: ``flat_map`` yields them (or returns an
    iterable of them).

    Example:
        >>> class Words(FlatMapFunction):
        ...     def flat_map(self, value):
        ...         yield from value.split()
    """

    @abstractmethod
    def flat_map(self, value: IN) -> Iterable[OUT]:
        """The output records of ``value``."""


class FilterFunction(_Function, ABC, Generic[IN]):
    """Keeps the records for which ``filter`` is true.

    Example:
        >>> class Positive(FilterFunction):
        ...     def filter(self, value):
        ...         return value > 0
    """

    @abstractmethod
    def filter(self, value: IN) -> bool:
        """Whether ``value`` is kept."""


class ReduceFunction(_Function, ABC, Generic[IN]):
    """Combines two records of a key into one (``key_by(k).reduce(MyReduce())``, window
    ``reduce``).

    Example:
        >>> class Sum(ReduceFunction):
        ...     def reduce(self, value1, value2):
        ...         return {**value1, "v": value1["v"] + value2["v"]}
    """

    @abstractmethod
    def reduce(self, value1: IN, value2: IN) -> IN:
        """The combination of two records."""


def _has_life_cycle(obj: Any) -> bool:
    """Whether ``obj``'s class defines ``open`` or ``close`` of its own."""
    cls = type(obj)
    return any(getattr(cls, name, None) not in (None, getattr(_Function, name)) for name in ("open", "close"))


def user_function(fn: Any, api: str, method: str) -> tuple[Callable[..., Any], Any]:
    """``(call, owner)`` of what a user gave ``api`` (``"map"``...): a plain function is
    ``(fn, None)``; an object with a ``method`` (a :class:`MapFunction`...) is ``(its bound
    method, the object)``, the object given only when it has a life cycle (``open``/``close``)
    that a process function must run.

    Raises:
        GraphError: a class with ``method`` where its instance belongs, or neither a function
            nor an object with ``method``.

    Example:
        >>> class Inc:
        ...     def map(self, v):
        ...         return v + 1
        >>> call, owner = user_function(Inc(), "map", "map")
        >>> call(1), owner
        (2, None)
    """
    if isinstance(fn, type) and hasattr(fn, method):  # (a class such as str is a function of the record)
        raise GraphError(f"{api}() got the class {fn.__name__}: pass an instance, {fn.__name__}()")
    bound = getattr(fn, method, None)
    if callable(bound) and (not callable(fn) or isinstance(fn, _Function)):
        return bound, (fn if _has_life_cycle(fn) else None)
    if callable(fn):
        return fn, None
    raise GraphError(
        f"{api}() expects a function or an object with a {method}() method "
        f"(Flink's {_FLINK_NAMES.get(method, method)}), got {type(fn).__name__} {fn!r}"
    )


_FLINK_NAMES = {"map": "MapFunction", "flat_map": "FlatMapFunction", "filter": "FilterFunction",
                "reduce": "ReduceFunction", "get_key": "KeySelector"}


class RichFunctionProcess(ProcessFunction):
    """A map/flat_map/filter function object with ``open``/``close`` run as a process
    function, so that its life cycle runs once per subtask as in Flink."""

    def __init__(self, owner: Any, call: Callable[[Any], Any], api: str) -> None:
        self.owner = owner
        self.call = call
        self.api = api

    def open(self, runtime_context: RuntimeContext) -> None:
        self.owner.open(runtime_context)

    def close(self) -> None:
        self.owner.close()

    def process_element(self, value: Any, ctx: ProcessContext) -> Iterable[Any] | None:
        api = self.api
        if api == "map":
            return [self.call(value)]
        if api == "filter":
            return [value] if self.call(value) else None
        result = self.call(value)
        if isinstance(result, NOT_RECORDS) or not (result is None or hasattr(result, "__iter__")):
            raise not_records(result, f"{type(self.owner).__name__}.flat_map()")  # (not the adapter's name)
        return result

    def __repr__(self) -> str:
        return f"{type(self.owner).__name__}.{self.api}"
