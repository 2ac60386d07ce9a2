"""Connected streams: ``a.connect(b)`` with ``map(fn1, fn2)`` / ``flat_map(fn1, fn2)``,
CoProcessFunction / KeyedCoProcessFunction,
and broadcast state (``a.connect(b.broadcast(descriptor)).process(BroadcastProcessFunction)``).

A graph builder: it adds one two-input node whose operator (from :mod:`operators.two_input`)
receives ``process_batch(batch, input_index)`` with input 0 for the first stream and 1 for the
second. It imports only the stream base, so :mod:`operators.datastream` can import it.

Example:
    >>> import raystream as rs
    >>> from raystream.checkpoint import ValueStateDescriptor
    >>> class Count(rs.KeyedCoProcessFunction):   # one count per user over both inputs
    ...     def open(self, ctx):
    ...         self.n = ctx.get_state(ValueStateDescriptor("n", default=0))
    ...     def process_element1(self, value, ctx):
    ...         self.n.update(self.n.value() + 1)
    ...         yield ctx.get_current_key(), self.n.value()
    ...     process_element2 = process_element1
    >>> env = rs.StreamEnvironment(parallelism=2)
    >>> orders = env.from_collection([{"user": "ann"}, {"user": "bob"}])
    >>> payments = env.from_collection([{"user": "ann"}])
    >>> sorted(orders.connect(payments).key_by("user", "user").process(Count()).execute_and_collect())
    [('ann', 1), ('ann', 2), ('bob', 1)]
"""

from __future__ import annotations

from types import GeneratorType
from typing import Any, Callable, Generic, Iterable, TypeVar

from raystream.engine.errors import GraphError
from raystream.engine.partitioners import BroadcastPartitioner, KeyGroupPartitioner, KeySelector

from ._stream_base import Key, StreamBase, add_two_input, check_callable, record_timestamps
from .functions import (
    NOT_RECORDS,
    BroadcastProcessFunction,
    CoProcessFunction,
    KeyedCoProcessFunction,
    not_records,
)

# the operators, re-exported from where they lived before operators.two_input
from .two_input import (
    BroadcastProcessOperator,
    CoProcessOperator,
    KeyedBroadcastProcessOperator,
    KeyedCoProcessOperator,
    TwoInputWatermarks,
)

__all__ = [
    "ConnectedStreams",
    "BroadcastStream",
    "CoProcessOperator",
    "KeyedCoProcessOperator",
    "BroadcastProcessOperator",
    "KeyedBroadcastProcessOperator",
    "TwoInputWatermarks",
    "add_two_input",
]

S = TypeVar("S")


class _CoMap(CoProcessFunction):
    """``connected.map(fn1, fn2)`` as a co-process function."""

    def __init__(self, fn1: Callable[[Any], Any], fn2: Callable[[Any], Any]) -> None:
        self.fn1, self.fn2 = fn1, fn2

    def process_element1(self, value: Any, ctx: Any) -> Iterable[Any]:
        return (self.fn1(value),)

    def process_element2(self, value: Any, ctx: Any) -> Iterable[Any]:
        return (self.fn2(value),)


class _CoFlatMap(CoProcessFunction):
    """``connected.flat_map(fn1, fn2)`` as a co-process function."""

    def __init__(self, fn1: Callable[[Any], Iterable[Any]], fn2: Callable[[Any], Iterable[Any]]) -> None:
        self.fn1, self.fn2 = fn1, fn2

    def process_element1(self, value: Any, ctx: Any) -> Iterable[Any] | None:
        return _records_of(self.fn1, self.fn1(value), "fn1")

    def process_element2(self, value: Any, ctx: Any) -> Iterable[Any] | None:
        return _records_of(self.fn2, self.fn2(value), "fn2")


def _records_of(fn: Callable[[Any], Any], result: Any, which: str) -> Any:
    """``result`` of a co-flat-map function: an iterable of records or None; one record (a
    dict, str, bytes) or a non-iterable is an error naming the user's function."""
    if result is None or type(result) is list or type(result) is tuple or type(result) is GeneratorType:
        return result
    if isinstance(result, NOT_RECORDS) or not hasattr(result, "__iter__"):
        raise not_records(result, f"flat_map {which} {getattr(fn, '__name__', fn)!r}")
    return result


class BroadcastStream(Generic[S]):
    """A stream whose records reach every parallel instance of the connected operator,
    with the broadcast state it declares (``stream.broadcast(descriptor, ...)``)."""

    def __init__(self, stream: StreamBase[S], state_names: list[str]) -> None:
        self.stream = stream
        self.state_names = state_names


class ConnectedStreams(Generic[S]):
    """Two streams connected for a two-input operator (``a.connect(b)``)."""

    def __init__(self, first: StreamBase[S], second: StreamBase[Any] | BroadcastStream[Any],
                 selectors: tuple[KeySelector, KeySelector] | None = None) -> None:
        self.first = first
        self.second = second
        self.selectors = selectors

    def key_by(self, key1: Key, key2: Key) -> ConnectedStreams[S]:
        """Partition both inputs by key (so a KeyedCoProcessFunction sees both sides of a key)."""
        if isinstance(self.second, BroadcastStream):
            raise GraphError("key_by() on a connected broadcast stream: key the first stream before connect()")
        return ConnectedStreams(self.first, self.second, (KeySelector(key1), KeySelector(key2)))

    def map(self, fn1: Callable[[Any], Any], fn2: Callable[[Any], Any]) -> S:
        """One output record per input record: ``fn1(r)`` for the first input, ``fn2(r)`` for
        the second (Flink's ``CoMapFunction``; keyed after :meth:`key_by`).

        Example:
            >>> import raystream as rs
            >>> env = rs.StreamEnvironment(parallelism=2)
            >>> orders, payments = env.from_collection(["o1"]), env.from_collection(["p1"])
            >>> both = orders.connect(payments).map(lambda o: ("order", o), lambda p: ("payment", p))
            >>> sorted(both.execute_and_collect())
            [('order', 'o1'), ('payment', 'p1')]
        """
        check_callable(fn1, "map")
        check_callable(fn2, "map")
        return self._co_function(_CoMap(fn1, fn2), "co_map")

    def flat_map(self, fn1: Callable[[Any], Iterable[Any]], fn2: Callable[[Any], Iterable[Any]]) -> S:
        """Zero or more output records per input record: every item of ``fn1(r)`` for the first
        input, of ``fn2(r)`` for the second (Flink's ``CoFlatMapFunction``; keyed after
        :meth:`key_by`)."""
        check_callable(fn1, "flat_map")
        check_callable(fn2, "flat_map")
        return self._co_function(_CoFlatMap(fn1, fn2), "co_flat_map")

    def _co_function(self, function: CoProcessFunction, name: str) -> S:
        if isinstance(self.second, BroadcastStream):
            raise GraphError(f"{name}: a connected broadcast stream needs process(BroadcastProcessFunction)")
        return self._process(function, name)

    def process(self, function: CoProcessFunction | BroadcastProcessFunction) -> S:
        """Run a CoProcessFunction, KeyedCoProcessFunction (after key_by) or BroadcastProcessFunction."""
        return self._process(function, "co_process")

    def _process(self, function: CoProcessFunction | BroadcastProcessFunction, name: str) -> S:
        if isinstance(function, type) and issubclass(function, (CoProcessFunction, BroadcastProcessFunction)):
            raise GraphError(f"process() expects an instance of {function.__name__}, got the class: "
                             f"process({function.__name__}())")
        first, second = self.first, self.second
        if isinstance(second, BroadcastStream):
            if not isinstance(function, BroadcastProcessFunction):
                raise GraphError(f"a connected broadcast stream needs a BroadcastProcessFunction, got {type(function).__name__}")
            broadcast_fn, names = function, list(second.state_names)
            stamps = (record_timestamps(first.node), record_timestamps(second.stream.node))
            key = first._key_selector()
            if key is not None:  # a keyed stream: keys, keyed state and timers in process_element
                keyed_sel = key
                return add_two_input(first, second.stream, "broadcast_process",
                                     lambda: KeyedBroadcastProcessOperator(broadcast_fn, names, keyed_sel, stamps), True,
                                     (KeyGroupPartitioner(keyed_sel), BroadcastPartitioner()))
            return add_two_input(first, second.stream, "broadcast_process",
                                 lambda: BroadcastProcessOperator(broadcast_fn, names, stamps), False,
                                 (first._partitioner, BroadcastPartitioner()))
        keyed_inputs = self.selectors is not None or (first._key_selector() is not None
                                                      and second._key_selector() is not None)
        if isinstance(function, KeyedCoProcessFunction) or (isinstance(function, CoProcessFunction) and keyed_inputs):
            # (a plain CoProcessFunction on keyed connected streams, connect(...).key_by(k1, k2) or
            # a.key_by(k1).connect(b.key_by(k2)), runs keyed too: both sides of a key reach one
            # subtask, with the key, keyed state and timers, as in Flink)
            keyed_fn, sels = function, self.selectors
            if sels is None:
                k1, k2 = first._key_selector(), second._key_selector()
                if k1 is None or k2 is None:
                    raise GraphError("a KeyedCoProcessFunction needs keyed inputs: connect(...).key_by(key1, key2)")
                sels = (k1, k2)
            key_sels = sels
            ts = (record_timestamps(first.node), record_timestamps(second.node))
            return add_two_input(first, second, name,
                                 lambda: KeyedCoProcessOperator(keyed_fn, key_sels, ts), True,
                                 (KeyGroupPartitioner(sels[0]), KeyGroupPartitioner(sels[1])))
        if isinstance(function, CoProcessFunction):
            co_fn = function
            co_stamps = (record_timestamps(first.node), record_timestamps(second.node))
            return add_two_input(first, second, name, lambda: CoProcessOperator(co_fn, co_stamps), False,
                                 (first._partitioner, second._partitioner))
        if isinstance(function, BroadcastProcessFunction):
            raise GraphError(f"a BroadcastProcessFunction ({type(function).__name__}) needs a broadcast stream: "
                             "a.connect(b.broadcast(descriptor)).process(...)")
        raise GraphError(f"process() expects a CoProcessFunction, KeyedCoProcessFunction or BroadcastProcessFunction, got {type(function).__name__}")
