"""``KeyedStream.map_with_state`` / ``flat_map_with_state``: a function of the record and its
key's state that returns the output and the new state (Flink Scala's ``mapWithState`` /
``flatMapWithState``; Bytewax's ``stateful_map`` / ``stateful_flat_map``).

The function is called as ``fn(record, state)``, ``state`` the key's last state or None for a
key seen for the first time (or whose state was cleared), and returns ``(output, new_state)``;
``new_state`` None **clears** the key's state (Flink's ``None`` option, Bytewax's discard),
so a finished session or an expired key holds no memory. The state is keyed state: in
every checkpoint and savepoint, re-split by key group on rescale, on the heap or RocksDB.
It runs as a :class:`~operators.functions.KeyedProcessFunction` with one value state.

Example:
    >>> import raystream as rs
    >>> def running_mean(value, state):
    ...     n, total = state or (0, 0.0)
    ...     n, total = n + 1, total + value[1]
    ...     return (value[0], total / n), (n, total)
    >>> env = rs.StreamEnvironment(parallelism=2)
    >>> pairs = env.from_collection([("a", 1.0), ("a", 3.0), ("b", 2.0)]).set_parallelism(1)
    >>> sorted(pairs.key_by(0).map_with_state(running_mean).execute_and_collect())
    [('a', 1.0), ('a', 2.0), ('b', 2.0)]
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from raystream.checkpoint.descriptors import ValueStateDescriptor
from raystream.engine.errors import short_repr

from .functions import (
    NOT_RECORDS,
    KeyedProcessFunction,
    ProcessContext,
    RuntimeContext,
    not_records,
)

__all__ = ["WithStateFunction", "STATE_NAME"]

#: the name of the value state the function's state is kept in (savepoints name it)
STATE_NAME = "with_state"


class WithStateFunction(KeyedProcessFunction):
    """Calls ``fn(record, state) -> (output, new_state)`` per record of a key: ``flat``
    (``flat_map_with_state``) emits every element of ``output``, else ``output`` itself."""

    def __init__(self, fn: Callable[[Any, Any], tuple[Any, Any]], flat: bool) -> None:
        self.fn = fn
        self.flat = flat
        self.method = "flat_map_with_state" if flat else "map_with_state"
        self._name = getattr(fn, "__qualname__", None) or type(fn).__name__

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor(STATE_NAME))

    def process_element(self, value: Any, ctx: ProcessContext[Any]) -> Iterable[Any] | None:
        result = self.fn(value, self.state.value())
        if not (isinstance(result, tuple) and len(result) == 2):
            what = f"a {len(result)}-tuple" if isinstance(result, tuple) else type(result).__name__
            raise TypeError(
                f"{self.method} function {self._name!r} returned {short_repr(result, 80)} ({what}), not a 2-tuple "
                f"(output, new_state){' whose output is an iterable of records' if self.flat else ''}: "
                "new_state None clears the key's state"
            )
        output, new_state = result
        if new_state is None:
            self.state.clear()
        else:
            self.state.update(new_state)
        if not self.flat:
            return [output]
        if output is None:
            return None
        if isinstance(output, NOT_RECORDS) or not hasattr(output, "__iter__"):
            raise not_records(output, f"{self.method} function {self._name!r}")
        return output
