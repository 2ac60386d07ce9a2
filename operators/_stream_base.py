"""The shared base of the stream kinds and the graph helpers they share.

A stream is a handle on one node of the logical graph (plus how the next operator reads it:
a partitioner and a side-output tag). :class:`StreamBase` holds that handle and adds nodes
after it; it is generic in ``S``, the plain stream type that operators on the stream produce.
The builders of two-input operators and windows (:mod:`operators.connected`,
:mod:`operators.joins`, :mod:`operators.windowed_stream`) take a ``StreamBase[S]`` and return
an ``S`` that the stream itself makes (:meth:`StreamBase._stream`), so they need not import
:class:`~operators.datastream.DataStream` — which imports them to offer ``connect``, ``join``
and ``window``. The imports of the API modules thus go one way:

    _environment_base  <-  _stream_base  <-  connected, joins, windowed_stream
                       <-  datastream  <-  environment

Example:
    >>> from raystream.operators.environment import StreamEnvironment
    >>> s = StreamEnvironment().from_collection([1, 2]).map(str)
    >>> isinstance(s, StreamBase), s.node.name
    (True, 'map')
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from typing import Any, Callable, Generic, TypeVar

from raystream.engine.errors import ConfigError, GraphError, short_repr
from raystream.engine.graph import StreamEdge, Transformation
from raystream.engine.operator import StreamOperator
from raystream.engine.partitioners import KeySelector, Partitioner

from ._environment_base import StreamEnvironmentBase
from .time import TimestampAssigner

__all__ = ["Key", "StreamBase", "add_two_input", "check_callable", "find_timestamp_assigner", "lost_timestamps_upstream",
           "lost_timestamps_error", "WINDOW_NODES", "GLOBAL_WINDOW_NODES", "DROPS_TIMESTAMPS", "window_upstream",
           "UnstampedAfterWindow", "event_time_assigner", "global_window_error", "record_timestamps"]

S = TypeVar("S")

Key = str | int | Callable[[Any], Any]
"""A key: a column name, a tuple index or a function of the record (see ``KeySelector``)."""


def check_callable(fn: object, method: str) -> None:
    """A :class:`GraphError` naming ``method`` unless ``fn`` is callable."""
    if not callable(fn):
        raise GraphError(f"{method}() expects a function, got {type(fn).__name__} {fn!r}")


def find_timestamp_assigner(node: Transformation | None) -> TimestampAssigner | None:
    """The assigner of the nearest upstream ``assign_timestamps_and_watermarks`` on every
    path into ``node`` (None: no path has one).

    Event-time operators read the timestamps records carry and apply this assigner to records
    that carry none (after an operator of :data:`DROPS_TIMESTAMPS`, or from a stream without
    one). A ``union`` of streams stamped differently is taken as Flink takes it, each record
    with its own timestamp (the first input's assigner is returned), when no operator on the
    way drops them; else, and for a union of a stamped and an unstamped stream, a
    :class:`GraphError` names them (stamp after the union).
    """
    if node is None:
        return None
    found: dict[int, tuple[Transformation, TimestampAssigner | None]] = {}  # node id -> its nearest
    order: list[Transformation] = []  # post-order: every node after the inputs it reads
    seen: set[int] = set()
    stack: list[tuple[Transformation, bool]] = [(node, False)]
    while stack:  # the nodes up to (and including) the nearest assigners
        n, expanded = stack.pop()
        if expanded:
            order.append(n)
            continue
        if id(n) in seen:
            continue
        seen.add(id(n))
        stack.append((n, True))
        if n.timestamp_assigner is None:
            stack.extend((e.source, False) for e in n.inputs if not e.feedback)
    for n in order:
        a = n.timestamp_assigner
        if a is not None:
            if not isinstance(a, TimestampAssigner):  # only assign_timestamps_and_watermarks sets it
                raise GraphError(f"{n.name!r} carries {a!r} as its timestamp assigner, not an operators.time.TimestampAssigner")
            found[id(n)] = (n, a)
            continue
        ins = [found[id(e.source)] for e in n.inputs if not e.feedback]
        if not ins:
            found[id(n)] = (n, None)
            continue
        first_node, first = ins[0]
        for other_node, other in ins[1:]:
            if not _same_assigner(first, other):
                lost = None if first is None or other is None else _dropper_upstream(node)
                if first is not None and other is not None and lost is None:
                    continue  # (every record carries its own timestamp through the union: none is read again)
                why = ("one of them has no timestamps" if lost is None else
                       f"{lost.name!r} gives its records no timestamps, so they are read again from the records")
                raise GraphError(
                    f"{n.name!r} merges streams with different event timestamps: {first_node.name!r} has "
                    f"{first!r} and {other_node.name!r} has {other!r}, and {why}. Event-time operators apply the "
                    "upstream assigner to records that carry no timestamp, so the inputs of a union need one "
                    "timestamp assigner there: give their records one timestamp field, or "
                    "assign_timestamps_and_watermarks() after the union"
                )
        found[id(n)] = ins[0]
    return found[id(node)][1]


#: the nodes of window operators: their records are the window function's results, each
#: carrying its window's ``max_timestamp()`` (see :func:`lost_timestamps_upstream`)
WINDOW_NODES: weakref.WeakSet[Transformation] = weakref.WeakSet()

#: the window nodes of :class:`~operators.windows.GlobalWindows` (count windows): their results
#: carry ``GlobalWindow.max_timestamp()`` (the largest watermark) as their timestamp
GLOBAL_WINDOW_NODES: weakref.WeakSet[Transformation] = weakref.WeakSet()

#: nodes whose output carries no event timestamps of their records (Flink's StreamRecord
#: timestamps): ``map_batches`` (a new table, no row of which is a record of the input), a
#: user's ``transform`` operator and final values (``emit="final"`` reduces and aggregates)
DROPS_TIMESTAMPS: weakref.WeakSet[Transformation] = weakref.WeakSet()


def _dropper_upstream(node: Transformation) -> Transformation | None:
    """A node of :data:`DROPS_TIMESTAMPS` between ``node`` (included) and the nearest upstream
    ``assign_timestamps_and_watermarks`` on some path into it (None: none is)."""
    return _window_upstream(node, DROPS_TIMESTAMPS)


def lost_timestamps_upstream(node: Transformation) -> tuple[Transformation, Transformation] | None:
    """``(window, dropper)``: a window operator upstream of ``node`` whose results reach it
    through ``dropper`` (a node of :data:`DROPS_TIMESTAMPS`, ``node`` included), with no
    ``assign_timestamps_and_watermarks`` after the window on that path; None: none is.

    Records carry their timestamps through every other operator (a window's results its
    window's ``max_timestamp()``, as Flink stamps them). Past such a node they carry none,
    and an event-time operator falls back to applying the upstream assigner again, which
    on a window's results reads a field of a result: that is the case to refuse.

    Example:
        >>> from raystream.operators.environment import StreamEnvironment
        >>> from raystream.operators.time import WatermarkStrategy
        >>> from raystream.operators.windows import TumblingEventTimeWindows
        >>> s = StreamEnvironment().from_collection([("a", 1)]).assign_timestamps_and_watermarks(
        ...     WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1]))
        >>> w = s.key_by(0).window(TumblingEventTimeWindows.of(10)).reduce(lambda a, b: a)
        >>> lost_timestamps_upstream(w.map(lambda r: r).node) is None
        True
        >>> [n.name for n in lost_timestamps_upstream(w.map_batches(lambda b: b).node)]
        ['window_reduce', 'map_batches']
    """
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Transformation, Transformation | None]] = [(node, None)]
    while stack:
        n, dropper = stack.pop()
        if (id(n), id(dropper)) in seen or n.timestamp_assigner is not None:
            continue
        seen.add((id(n), id(dropper)))
        if dropper is not None and n in WINDOW_NODES:
            return n, dropper
        if dropper is None and n in DROPS_TIMESTAMPS:
            dropper = n
        stack.extend((e.source, dropper) for e in n.inputs if not e.feedback)
    return None


def lost_timestamps_error(what: str, node: Transformation, assigner: TimestampAssigner | None) -> GraphError | None:
    """The :class:`GraphError` for ``what`` (an event-time operator) reading ``node``'s
    output when :func:`lost_timestamps_upstream` finds timestamps lost, else None."""
    found = lost_timestamps_upstream(node)
    if found is None:
        return None
    window, dropper = found
    return GraphError(
        f"{what} reads the results of window {window.name!r} through {dropper.name!r}, which gives its records no "
        f"event timestamps (its output is not records of its input), so their window timestamps (Flink stamps a "
        f"window's results with the window's max_timestamp()) are lost there, and the upstream assigner "
        f"{assigner!r} applied again would read a field of a result: use a record operator (map, flat_map, process) "
        f"instead of {dropper.name!r}, give this operator the time each result holds (window(...).with_timestamp(fn), "
        "e.g. the result's window_end - 1), or assign_timestamps_and_watermarks(...) after it"
    )


def _window_upstream(node: Transformation, windows: weakref.WeakSet[Transformation]) -> Transformation | None:
    """A node of ``windows`` between ``node`` (included) and the nearest upstream
    ``assign_timestamps_and_watermarks`` on some path into it (None: none is); feedback
    edges are not followed."""
    seen: set[int] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if id(n) in seen or n.timestamp_assigner is not None:
            continue
        seen.add(id(n))
        if n in windows:
            return n
        stack.extend(e.source for e in n.inputs if not e.feedback)
    return None


def window_upstream(node: Transformation) -> Transformation | None:
    """A window node (:data:`WINDOW_NODES`) between ``node`` (included) and the nearest
    upstream ``assign_timestamps_and_watermarks`` on some path into it (None: none is).

    Records downstream of a window carry their timestamps (a window's results its window's
    ``max_timestamp()``) unless an operator emitted them without one (a processing-time
    timer's output, as Flink's); applying the upstream assigner to such a record would read a
    field of a window's result, so there a record without a timestamp has none.

    Example:
        >>> from raystream.operators.environment import StreamEnvironment
        >>> from raystream.operators.time import WatermarkStrategy
        >>> from raystream.operators.windows import TumblingEventTimeWindows
        >>> s = StreamEnvironment().from_collection([("a", 1)]).assign_timestamps_and_watermarks(
        ...     WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1]))
        >>> w = s.key_by(0).window(TumblingEventTimeWindows.of(10)).reduce(lambda a, b: a)
        >>> window_upstream(s.map(str).node) is None, window_upstream(w.map(str).node).name
        (True, 'window_reduce')
    """
    return _window_upstream(node, WINDOW_NODES)


class UnstampedAfterWindow(TimestampAssigner):
    """The assigner of an event-time operator downstream of window ``window`` (no
    ``assign_timestamps_and_watermarks`` in between): every record must carry its timestamp;
    one that carries none (the output of a processing-time timer, as Flink's) is a
    :class:`ConfigError` naming the operator, the record and the window, instead of the
    upstream assigner ``upstream`` reading a field of a window's result as its time (Flink:
    "Record has Long.MIN_VALUE timestamp (= no timestamp marker)").

    Example:
        >>> from raystream.engine.records import Batch
        >>> a = UnstampedAfterWindow(TimestampAssigner(column="ts"), "window_reduce", "event-time window W")
        >>> a.timestamps(Batch.stamped([{"ts": 1}], [999])).tolist()
        [999]
        >>> a.timestamps(Batch.of_records([{"ts": 1}]))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        raystream.engine.errors.ConfigError: event-time window W: the record {'ts': 1} carries no event timestamp...
    """

    def __init__(self, upstream: TimestampAssigner, window: str, what: str) -> None:
        # (not TimestampAssigner.__init__: the upstream's column/fn are kept for what reads
        # them to choose a path, e.g. a vectorized window's time column, never to read a time)
        self.column = upstream.column
        self.fn = upstream.fn
        self.origin = upstream.origin or repr(upstream)
        self.upstream = upstream
        self.window = window
        self.what = what

    def refusal(self, record: Any) -> ConfigError:
        """The error for ``record``, which carries no timestamp."""
        return ConfigError(
            f"{self.what}: the record {short_repr(record)} carries no event timestamp (it comes after window "
            f"{self.window!r}, whose results carry their window's max_timestamp(), and an operator on the way "
            "emitted it without one, e.g. from a processing-time timer, as Flink's; the upstream assigner "
            f"{self.upstream!r} would read a field of a window's result as its time). Remedies: give this operator "
            "the time the record holds (window(...).with_timestamp(fn or 'column')), or "
            "assign_timestamps_and_watermarks(...) after the operator that emits it"
        )

    def timestamps(self, batch: Any, *, first: bool = False) -> Any:
        stamps = batch.timestamps
        if stamps is not None and len(stamps) == len(batch):
            return stamps
        records = batch.records()
        raise self.refusal(records[0] if records else None)

    def timestamps_list(self, batch: Any) -> list[int]:
        return self.timestamps(batch).tolist()  # type: ignore[no-any-return]

    def extract(self, record: Any) -> int:
        raise self.refusal(record)

    def extract_timestamp(self, value: Any, record_timestamp: int | None) -> int:
        if record_timestamp is not None:
            return record_timestamp
        raise self.refusal(value)

    def __repr__(self) -> str:
        return f"UnstampedAfterWindow({self.upstream!r}, window={self.window!r})"


def record_timestamps(node: Transformation) -> TimestampAssigner | None:
    """The assigner a process function after ``node`` reads a record's ``ctx.timestamp()``
    with when the record carries none: the upstream one (:func:`find_timestamp_assigner`),
    or None where it would read a field of a window's result (a window upstream with no
    assigner after it: :func:`window_upstream`; its results carry
    their timestamps, a record without one was emitted so, e.g. by a processing-time
    timer), so ``ctx.timestamp()`` is None there, as Flink's for a record without a timestamp."""
    ts = find_timestamp_assigner(node)
    if ts is not None and window_upstream(node) is not None:
        return None
    return ts


def event_time_assigner(what: str, node: Transformation, assigner: TimestampAssigner) -> TimestampAssigner:
    """The assigner an event-time operator (``what``) reading ``node``'s output is built with,
    given the upstream one (:func:`find_timestamp_assigner`): :class:`UnstampedAfterWindow`
    when a window is upstream (:func:`window_upstream`), else ``assigner`` itself (records
    without a timestamp are read with it)."""
    window = window_upstream(node)
    if window is None:
        return assigner
    return UnstampedAfterWindow(assigner, window.name, what)


def global_window_error(what: str, node: Transformation) -> GraphError | None:
    """The :class:`GraphError` for an event-time ``what`` reading ``node``'s output when a
    GlobalWindows window (a count window) is upstream with no ``assign_timestamps_and_watermarks``
    after it: its results carry ``GlobalWindow.max_timestamp()``, the largest watermark, so an
    event-time window of theirs would never fire (Flink stamps them so too, and drops them as
    late); else None."""
    window = _window_upstream(node, GLOBAL_WINDOW_NODES)
    if window is None:
        return None
    return GraphError(
        f"{what} reads the results of {window.name!r}, a GlobalWindows (count) window: each carries "
        "GlobalWindow.max_timestamp() (2**63 - 1, the largest watermark) as its event timestamp, as Flink stamps "
        "them, so no event-time window of theirs would ever fire. Give this operator the time each result holds "
        "(window(...).with_timestamp(fn or 'column')), or assign_timestamps_and_watermarks(...) after the count window"
    )


def _same_assigner(a: TimestampAssigner | None, b: TimestampAssigner | None) -> bool:
    if a is b:
        return True
    if a is None or b is None:
        return False
    return a.fn is None and b.fn is None and a.column == b.column


#: Flink stream methods raystream spells differently: what to write instead
_FLINK_STREAM_NAMES = {
    "shuffle": "rebalance() (round robin)",
    "rescale": "rebalance() (round robin)",
    "add_sink": "sink_to(sink) with a raystream Sink, or collect() / print() / write_parquet(dir) / write_jsonl(dir)",
    "assign_timestamps": "assign_timestamps_and_watermarks(WatermarkStrategy...with_timestamp_assigner(fn))",
    "set_max_parallelism": "StreamEnvironment(max_parallelism=m) (key groups are the job's)",
    "slot_sharing_group": "nothing: StreamEnvironment(slot_sharing=False) deploys one actor per task",
    "start_new_chain": "disable_chaining() (the operator then runs in a task of its own, chained to neither neighbour)",
    "force_non_parallel": "set_parallelism(1)",
    "partition_custom": "key_by(fn) (records go to the subtask owning fn's key's key group; a partitioner of your "
                        "own has no spelling)",
    "project": "map(lambda r: (r[i], r[j], ...)) (or a dict of the fields you keep)",
}


#: methods of a keyed stream only (``KeyedStream``): on a stream without a key they say to key it
#: first (a Bytewax port calls ``map_with_state`` where ``op.stateful_map`` took a keyed stream)
_KEYED_ONLY = frozenset({
    "reduce", "sum", "min", "max", "min_by", "max_by", "aggregate", "window", "count_window", "interval_join",
    "map_with_state", "flat_map_with_state",
})


class StreamBase(ABC, Generic[S]):
    """A handle on a graph node that operators can be appended to.

    Args:
        env: the environment whose graph holds ``node``.
        node: the node whose output this stream is.
        partitioner: how the next operator's subtasks read it (None: forward, or
            rebalance when the parallelism differs).
        side_tag: read this side output of ``node`` instead of its main output.
    """

    def __init__(self, env: StreamEnvironmentBase, node: Transformation, partitioner: Partitioner | None = None,
                 side_tag: str | None = None) -> None:
        self.env = env
        self.node = node
        self._partitioner = partitioner
        self._side_tag = side_tag

    def __reduce__(self):
        raise TypeError("DataStream lives in the driver and cannot be pickled")

    def __getattr__(self, name: str) -> Any:
        # (only for names not found: Flink's spelled differently here say what to write)
        remedy = _FLINK_STREAM_NAMES.get(name)
        if remedy is not None:
            raise AttributeError(f"{type(self).__name__} has no {name}() (Flink's {name}): write {remedy}")
        if name in _KEYED_ONLY and self._key_selector() is None:
            raise AttributeError(
                f"{name}() is a keyed stream's, and the stream of {self.node.name!r} has no key: key it first, "
                f"stream.key_by(k).{name}(...) (a field name, a tuple position or a function of the record)"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @abstractmethod
    def _stream(self, node: Transformation) -> S:
        """The plain stream of ``node``'s output (what an operator appended here returns)."""

    def _key_selector(self) -> KeySelector | None:
        """The key of a keyed stream (None: not keyed)."""
        return None

    def _edge(self, partitioner: Partitioner | None, input_index: int = 0) -> StreamEdge:
        return StreamEdge(self.node, partitioner, input_index, side_tag=self._side_tag)

    def _add(self, name: str, factory: Callable[[], StreamOperator], keyed: bool = False,
             schema_names: list[str] | None = None) -> Transformation:
        """Append a one-input operator node reading this stream."""
        return self.env.add_node(name, "operator", [self._edge(self._partitioner)], operator_factory=factory,
                                 keyed=keyed, schema_names=schema_names)


def add_two_input(first: StreamBase[S], second: StreamBase[Any], name: str, factory: Callable[[], StreamOperator],
                  keyed: bool, partitioners: tuple[Partitioner | None, Partitioner | None]) -> S:
    """Add a two-input operator node fed by ``first`` (input 0) and ``second`` (input 1)."""
    env = first.env
    if second.env is not env:
        raise GraphError(f"{name}: the two streams come from different StreamEnvironments")
    inputs = [first._edge(partitioners[0], 0), second._edge(partitioners[1], 1)]
    node = env.add_node(name, "operator", inputs, operator_factory=factory, keyed=keyed, num_inputs=2)
    return first._stream(node)
