"""The windowing API: ``keyed.window(assigner)`` returns a :class:`WindowedStream`.

A graph builder: ending a windowed stream adds one keyed window node (a
:class:`~operators.window_operator.WindowOperator`, or the vectorized
:class:`~operators.window_fast.VectorWindowAggregateOperator`). It imports only the stream
base, so :mod:`operators.datastream` can import it.

Example:
    >>> from raystream.operators.windows import TumblingEventTimeWindows
    >>> # events.assign_timestamps_and_watermarks(
    >>> #     WatermarkStrategy.for_bounded_out_of_orderness(500).with_timestamp_column("ts"))
    >>> #   .key_by("key").window(TumblingEventTimeWindows.of(1000))
    >>> #   .aggregate(n=("value", "count"), total=("value", "sum"))      # vectorized

Window aggregates can pre-aggregate before the shuffle (a combiner chained to the upstream
operator, :mod:`operators.window_combiner`): the vectorized ``aggregate(n=...)`` does by
default when the window runs at parallelism > 1; ``aggregate(AggregateFunction)`` on tumbling
event-time windows with the default trigger with ``combine=True``. ``combine=False`` turns
it off.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Generic, Iterable, TypeVar

from raystream.engine.config import as_int
from raystream.engine.errors import GraphError
from raystream.engine.graph import StreamEdge, Transformation
from raystream.engine.partitioners import KeyGroupPartitioner, KeySelector

from ._stream_base import (
    GLOBAL_WINDOW_NODES,
    WINDOW_NODES,
    StreamBase,
    UnstampedAfterWindow,
    event_time_assigner,
    find_timestamp_assigner,
    global_window_error,
    lost_timestamps_error,
)
from .evictors import CountEvictor, Evictor
from .flink_functions import user_function
from .functions import OutputTag, tag_name
from .time import TimestampAssigner, as_timestamp_assigner, duration_ms, shown_ms
from .window_combiner import CombinedWindowOperator, VectorWindowCombiner, WindowAggregateCombiner
from .window_fast import (
    EMISSION_COLUMN,
    PANE_COLUMN,
    WINDOW_AGGREGATIONS,
    VectorWindowAggregateOperator,
    base_aggregations,
)
from .window_operator import AGGREGATE, LIST, REDUCE, WindowOperator
from .windows import (
    AllWindowFunction,
    CountTrigger,
    GlobalWindows,
    ProcessAllWindowFunction,
    ProcessWindowFunction,
    PurgingTrigger,
    SlidingEventTimeWindows,
    Trigger,
    TumblingEventTimeWindows,
    WindowAssigner,
    WindowFunction,
)

# find_timestamp_assigner: re-exported from where it lived before operators._stream_base
__all__ = ["WindowedStream", "count_window", "find_timestamp_assigner"]

S = TypeVar("S")


class _SpecsWindowFunction(ProcessWindowFunction):
    """Computes ``{out: (column, fn)}`` over a window's records (record-API fallback of
    the vectorized path, with the same output rows)."""

    def __init__(self, key_name: str, specs: dict[str, tuple[str, str]]) -> None:
        self.key_name = key_name
        self.specs = specs

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Iterable[Any]:
        rows = list(elements)
        window = context.window  # a GlobalWindow (count windows) has no bounds: None, None
        out: dict[str, Any] = {self.key_name: key, "window_start": getattr(window, "start", None),
                               "window_end": getattr(window, "end", None)}
        for name, (col, fn) in self.specs.items():
            vals = [r[col] for r in rows if r[col] is not None]
            if fn == "count":
                out[name] = len(vals)
            elif fn == "sum":
                out[name] = sum(vals) if vals else None  # (SQL: no value, no sum; as the vectorized path)
            elif fn == "min":
                out[name] = min(vals) if vals else None
            elif fn == "max":
                out[name] = max(vals) if vals else None
            else:
                out[name] = sum(vals) / len(vals) if vals else None
        yield out


class _ApplyFunction(ProcessWindowFunction):
    def __init__(self, fn: Callable[[Any, Any, list], Iterable[Any] | None]) -> None:
        self.fn = fn

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Iterable[Any] | None:
        return self.fn(key, context.window, list(elements))


class _AllWindowApply(ProcessWindowFunction):
    """``window_all(...).apply(fn(window, records))`` (or an :class:`AllWindowFunction`)."""

    def __init__(self, fn: Callable[[Any, list], Iterable[Any] | None]) -> None:
        self.fn = fn

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Iterable[Any] | None:
        return self.fn(context.window, list(elements))


class _AllWindowProcess(ProcessWindowFunction):
    """A :class:`ProcessAllWindowFunction` under the keyed window operator of ``window_all``
    (whose one key it does not see)."""

    def __init__(self, function: ProcessAllWindowFunction) -> None:
        self.function = function
        #: how errors name the function (the user's, not this adapter)
        self.described = f"{type(function).__name__}.process()"

    def open(self, runtime_context: Any) -> None:
        self.function.open(runtime_context)

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Iterable[Any] | None:
        return self.function.process(context, elements)

    def clear(self, context: Any) -> None:
        self.function.clear(context)

    def close(self) -> None:
        self.function.close()


class WindowedStream(Generic[S]):
    """A keyed stream cut into windows; end it with reduce/aggregate/process/apply.

    Example:
        >>> # keyed.window(EventTimeSessionWindows.with_gap(30_000)).allowed_lateness(5_000)
        >>> #      .side_output_late_data(OutputTag("late")).process(MySessionFunction())
    """

    def __init__(self, stream: StreamBase[S], assigner: WindowAssigner) -> None:
        if not isinstance(assigner, WindowAssigner):
            raise GraphError(f"window() expects a WindowAssigner (e.g. TumblingEventTimeWindows.of(1000)), got {assigner!r}")
        selector = stream._key_selector()
        if selector is None:
            raise GraphError(f"window() needs a keyed stream (key_by first), got {type(stream).__name__}")
        self.stream = stream
        self._selector: KeySelector = selector
        self.assigner = assigner
        self._trigger: Trigger | None = None
        self._lateness = 0
        self._late_tag: str | None = None
        self._ts: TimestampAssigner | None = None
        self._evictor: Evictor | None = None
        #: window_all(): the window operator runs at parallelism 1
        self._all = False

    def __getattr__(self, name: str) -> Any:
        # (only for names not found: Flink's window sum/min/max say what to write)
        if name in ("sum", "min", "max"):
            raise AttributeError(
                f"WindowedStream has no {name}() (Flink's {name}): write aggregate(result=(field, {name!r})), "
                f"e.g. .aggregate(total=('value', {name!r}))"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ settings
    def trigger(self, trigger: Trigger) -> WindowedStream[S]:
        """Replace the assigner's default trigger."""
        if not isinstance(trigger, Trigger):
            raise GraphError(f"trigger() expects a Trigger, got {trigger!r}")
        self._trigger = trigger
        return self

    def evictor(self, evictor: Evictor) -> WindowedStream[S]:
        """Evict elements before and/or after the window function (Flink's ``evictor``):
        the window keeps its elements instead of folding them, and ``reduce`` /
        ``aggregate`` fold what the evictor leaves at each firing.

        Example:
            >>> # keyed.window(GlobalWindows.create()).trigger(CountTrigger.of(1))
            >>> #      .evictor(CountEvictor.of(3)).reduce(max)      # max of the last 3 records
        """
        if not isinstance(evictor, Evictor):
            raise GraphError(
                f"evictor() expects an Evictor (CountEvictor.of(n), TimeEvictor.of(ms), DeltaEvictor.of(threshold, fn) "
                f"or a subclass of Evictor), got {evictor!r}"
            )
        self._evictor = evictor
        return self

    def allowed_lateness(self, ms: int | dt.timedelta) -> WindowedStream[S]:
        """Keep windows ``ms`` (an int of ms or a ``timedelta``) after they fired; later
        records re-fire them (event time)."""
        lateness = duration_ms(ms, "allowed_lateness")
        if lateness is None or lateness < 0:
            raise GraphError(f"allowed_lateness must be a non-negative int (ms) or timedelta, got {shown_ms(ms)}")
        self._lateness = lateness
        return self

    def side_output_late_data(self, tag: OutputTag | str) -> WindowedStream[S]:
        """Send late records to side output ``tag`` (read it with ``get_side_output(tag)``)."""
        self._late_tag = tag_name(tag)
        return self

    def with_timestamp(self, column_or_fn: str | int | Callable[[Any], int]) -> WindowedStream[S]:
        """Read event timestamps from this column/function instead of the upstream assigner."""
        if isinstance(column_or_fn, (str, int)) and not isinstance(column_or_fn, bool):
            self._ts = TimestampAssigner(column=column_or_fn)
        else:  # a function, a TimestampAssigner or an object with Flink's extract_timestamp
            self._ts = as_timestamp_assigner(column_or_fn, "with_timestamp()")
        return self

    # ------------------------------------------------------------------ build
    def _timestamps(self) -> TimestampAssigner | None:
        if not self.assigner.is_event_time:
            return None
        ts = self._ts or find_timestamp_assigner(self.stream.node)
        if ts is None:
            raise GraphError(
                f"event-time window {self.assigner!r} needs timestamps: call "
                "assign_timestamps_and_watermarks(...) upstream or .with_timestamp('ts')"
            )
        # A window after a window reads the timestamps its records carry (each result its
        # window's max_timestamp(), as Flink's cascaded windows): refused only where an operator
        # in between dropped them (map_batches...), as the upstream assigner would read a field
        if self._ts is not None:
            return ts
        what = f"event-time window {self.assigner!r}"
        lost = lost_timestamps_error(what, self.stream.node, ts) or global_window_error(what, self.stream.node)
        if lost is not None:
            raise lost
        # (downstream of a window a record without a timestamp is refused, not read with ts)
        return event_time_assigner(what, self.stream.node, ts)

    def _operator(self, name: str, kind: str, fn: Any, window_function: ProcessWindowFunction | None) -> S:
        selector = self._selector
        assigner, trigger, lateness, late_tag = self.assigner, self._trigger, self._lateness, self._late_tag
        ts = self._timestamps()
        key_of, evictor = selector.key_of, self._evictor
        WindowOperator(key_of, assigner, kind, fn, window_function, trigger, lateness, late_tag, ts, evictor)  # validate
        node = self.stream._add(
            name,
            lambda: WindowOperator(key_of, assigner, kind, fn, window_function, trigger, lateness, late_tag, ts, evictor),
            keyed=True,
        )
        return self._output(node)

    def _window_function(self, method: str, function: Any) -> ProcessWindowFunction | None:
        """``function`` as the window operator runs it: a :class:`ProcessWindowFunction`, or
        on :meth:`~operators.datastream.DataStream.window_all` a
        :class:`ProcessAllWindowFunction` (Flink's, without the key)."""
        if function is None or isinstance(function, ProcessWindowFunction):
            return function
        if isinstance(function, ProcessAllWindowFunction):
            if not self._all:
                raise GraphError(
                    f"{method}(): {type(function).__name__} is a ProcessAllWindowFunction, for window_all(); "
                    "a keyed window takes a ProcessWindowFunction (process(key, context, elements))"
                )
            return _AllWindowProcess(function)
        expected = "ProcessAllWindowFunction or ProcessWindowFunction" if self._all else "ProcessWindowFunction"
        raise GraphError(f"{method}() expects a {expected}, got {type(function).__name__}")

    def reduce(self, fn: Callable[[Any, Any], Any],
               window_function: ProcessWindowFunction | ProcessAllWindowFunction | None = None) -> S:
        """Fold each window's records with ``fn(a, b)``; emits the reduced value (or what
        ``window_function`` makes of it)."""
        fn, owner = user_function(fn, "reduce", "reduce")  # (or a Flink ReduceFunction)
        if owner is not None:
            raise GraphError(f"reduce({type(owner).__name__}): a ReduceFunction's open()/close() are not run here; "
                             "use process(ProcessWindowFunction) for what needs them")
        return self._operator("window_reduce", REDUCE, fn, self._window_function("reduce", window_function))

    def aggregate(self, aggregate_function: Any = None,
                  window_function: ProcessWindowFunction | ProcessAllWindowFunction | None = None, *,
                  combine: bool | None = None, **specs: tuple[str, str]) -> S:
        """``aggregate(AggregateFunction)``: incremental aggregation per window; or
        ``aggregate(n=("value", "count"), total=("value", "sum"))``: rows
        ``{key, window_start, window_end, n, total}`` (vectorized on Arrow when the key and
        timestamps are columns, the windows tumbling/sliding in event time, with the default
        trigger and no allowed lateness; the record path otherwise).

        ``combine``: pre-aggregate before the shuffle where that gives the same output (the
        vectorized path; an AggregateFunction on tumbling event-time windows with the default
        trigger, whose ``merge()`` must agree with ``add()``), so a hot key costs its subtask
        one partial per upstream batch and window instead of every record. ``None`` (the
        default): the vectorized path combines when the window runs at parallelism > 1 (the
        environment's parallelism when ``aggregate`` is called; at 1 its combiner passes batches
        through), an AggregateFunction does
        not (measured: its per-record ``add()`` upstream plus the merge of the partials cost
        more than the exchange they save, 0.92x at p=2 on the benchmark's count per key and
        window; it pays where partials are few, e.g. a hot key or ``window_all``);
        ``True``: always; ``False``: never, every record crosses the shuffle (see
        ``docs/event_time.md``).
        """
        if combine is not None and not isinstance(combine, bool):
            raise GraphError(f"aggregate(combine={combine!r}): combine must be None (auto), True or False")
        window_function = self._window_function("aggregate", window_function)
        if aggregate_function is not None:
            combine = bool(combine)  # auto: off for the record API (see above)
            missing = [m for m in ("create_accumulator", "add", "get_result", "merge") if not callable(getattr(aggregate_function, m, None))]
            if missing:
                raise GraphError(f"aggregate() expects an AggregateFunction (missing {missing}), got {aggregate_function!r}")
            if specs:
                raise GraphError("aggregate(): pass either an AggregateFunction or named (column, fn) specs, not both")
            if combine and self._combinable():
                return self._combined_aggregate(aggregate_function, window_function)
            return self._operator("window_aggregate", AGGREGATE, aggregate_function, window_function)
        if not specs:
            raise GraphError("aggregate() needs an AggregateFunction or specs like n=('value', 'count')")
        # auto: a combiner only pays where records cross to other subtasks; at parallelism 1 its
        # node passes batches through (there either way: the same automatic uids at every parallelism)
        passing = combine is None and self.stream.env.parallelism == 1
        combine = combine is not False
        for out, spec in specs.items():
            if not (isinstance(spec, tuple) and len(spec) == 2 and spec[1] in WINDOW_AGGREGATIONS):
                raise GraphError(f"aggregate({out}={spec!r}): expected (column, one of {WINDOW_AGGREGATIONS})")
        selector = self._selector
        key_name = selector.column if selector.column is not None else "key"
        ts = self._timestamps()
        key, tcol = selector.column, ts.column if ts is not None else None
        if not (  # the vectorized operator: a key column, a timestamp column, time windows
            key is not None
            and isinstance(self.assigner, (TumblingEventTimeWindows, SlidingEventTimeWindows))
            and self.assigner.is_event_time
            and self._trigger is None
            and self._lateness == 0
            and self._evictor is None
            and isinstance(tcol, str)
        ):
            return self._operator("window_aggregate", LIST, None, _SpecsWindowFunction(key_name, dict(specs)))
        assigner, late_tag, sp = self.assigner, self._late_tag, dict(specs)
        carried = self._ts is None  # (with_timestamp(column): that column wins over the records' timestamps)
        unstamped = ts if isinstance(ts, UnstampedAfterWindow) else None
        schema_names = [key, "window_start", "window_end", *sp]
        if not combine:
            node = self.stream._add(
                "window_aggregate", lambda: VectorWindowAggregateOperator(key, tcol, assigner, sp, late_tag, carried, unstamped),
                keyed=True,
                schema_names=schema_names,
            )
            return self._output(node)
        acc_names = [f"{c}_{f}" for c, f in base_aggregations(sp)]
        local = self._combiner("window_aggregate (local)",
                               lambda: VectorWindowCombiner(key, tcol, assigner, sp, passing, carried, unstamped),
                               [key, PANE_COLUMN, *acc_names, EMISSION_COLUMN])
        node = self.stream.env.add_node(
            "window_aggregate", "operator", [StreamEdge(local, KeyGroupPartitioner(selector))],
            operator_factory=lambda: VectorWindowAggregateOperator(key, tcol, assigner, sp, late_tag, carried, unstamped),
            keyed=True,
            schema_names=schema_names,
        )
        return self._output(node)

    def _output(self, node: Transformation) -> S:
        """The stream of the window's operator ``node``: at parallelism 1 for
        :meth:`~operators.datastream.DataStream.window_all` (Flink's non-parallel
        ``windowAll``: its one key would leave every other subtask idle; a combiner before
        it still runs at the upstream parallelism). Its results carry their window's
        ``max_timestamp()`` (:data:`WINDOW_NODES`)."""
        if self._all:
            node.parallelism = 1
        WINDOW_NODES.add(node)
        if isinstance(self.assigner, GlobalWindows):
            GLOBAL_WINDOW_NODES.add(node)
        return self.stream._stream(node)

    def _combiner(self, name: str, factory: Callable[[], Any], schema_names: list[str] | None) -> Transformation:
        """A combiner node chained to the upstream operator (forward edge, same parallelism)."""
        node = self.stream.env.add_node(name, "operator", [self.stream._edge(None)], operator_factory=factory,
                                        schema_names=schema_names)
        node.parallelism = self.stream.node.parallelism
        return node

    def _combinable(self) -> bool:
        """Whether an AggregateFunction window can pre-aggregate before the shuffle with the
        same output: tumbling event-time windows with the default trigger."""
        return type(self.assigner) is TumblingEventTimeWindows and self._trigger is None and self._evictor is None

    def _combined_aggregate(self, fn: Any, window_function: ProcessWindowFunction | None) -> S:
        """``aggregate(AggregateFunction)`` as a combiner chained before the shuffle (keyed by
        the partials' field 0) and the keyed :class:`CombinedWindowOperator`."""
        selector = self._selector
        assigner, lateness, late_tag = self.assigner, self._lateness, self._late_tag
        assert isinstance(assigner, TumblingEventTimeWindows)  # _combinable
        ts = self._timestamps()
        assert ts is not None  # event-time windows
        key_of = selector.key_of
        CombinedWindowOperator(key_of, assigner, fn, window_function, lateness, late_tag, ts)  # validate now
        local = self._combiner("window_aggregate (local)", lambda: WindowAggregateCombiner(selector, assigner, fn, ts),
                               None)
        node = self.stream.env.add_node(
            "window_aggregate", "operator", [StreamEdge(local, KeyGroupPartitioner(KeySelector(0)))],
            operator_factory=lambda: CombinedWindowOperator(key_of, assigner, fn, window_function, lateness, late_tag, ts),
            keyed=True,
        )
        return self._output(node)

    def process(self, function: ProcessWindowFunction | ProcessAllWindowFunction) -> S:
        """Evaluate each window with a :class:`ProcessWindowFunction` (all its records); on
        :meth:`~operators.datastream.DataStream.window_all` also a
        :class:`ProcessAllWindowFunction` (``process(context, elements)``, as in Flink)."""
        if function is None:
            raise GraphError("process() expects a ProcessWindowFunction, got None")
        return self._operator("window_process", LIST, None, self._window_function("process", function))

    def apply(self, fn: Any) -> S:
        """Evaluate each window with ``fn(key, window, records) -> iterable`` or a
        :class:`WindowFunction` (Flink's, its ``apply(key, window, inputs)``); on
        :meth:`~operators.datastream.DataStream.window_all` with ``fn(window, records)`` or an
        :class:`AllWindowFunction` (``apply(window, inputs)``), as Flink's ``AllWindowedStream``."""
        if self._all:
            if isinstance(fn, AllWindowFunction):
                return self._operator("window_apply", LIST, None, _AllWindowApply(fn.apply))
            if isinstance(fn, WindowFunction):
                raise GraphError(f"apply(): {type(fn).__name__} is a WindowFunction (apply(key, window, inputs)); "
                                 "window_all() takes an AllWindowFunction (apply(window, inputs)) or fn(window, records)")
            if not callable(fn):
                raise GraphError(f"apply() expects an AllWindowFunction or a function (window, records), got {fn!r}")
            return self._operator("window_apply", LIST, None, _AllWindowApply(fn))
        if isinstance(fn, AllWindowFunction):
            raise GraphError(f"apply(): {type(fn).__name__} is an AllWindowFunction, for window_all(); a keyed window "
                             "takes a WindowFunction (apply(key, window, inputs)) or fn(key, window, records)")
        if isinstance(fn, WindowFunction):
            return self._operator("window_apply", LIST, None, _ApplyFunction(fn.apply))
        if not callable(fn):
            raise GraphError(f"apply() expects a WindowFunction or a function (key, window, records), got {fn!r}")
        return self._operator("window_apply", LIST, None, _ApplyFunction(fn))


def count_window(stream: StreamBase[S], size: int, slide: int | None = None) -> WindowedStream[S]:
    """Count windows, as Flink's ``countWindow``: without ``slide`` every ``size`` records of
    a key form a window (tumbling); with it, every ``slide`` records fire a window of the
    key's last ``size`` records (sliding: ``GlobalWindows`` with ``CountTrigger.of(slide)``
    and ``CountEvictor.of(size)``)."""
    n = as_int(size)
    if n is None or n <= 0:
        raise GraphError(f"count_window({size!r}): size is the number of records per window and key, a positive int")
    if slide is None:
        return WindowedStream(stream, GlobalWindows.create()).trigger(PurgingTrigger.of(CountTrigger.of(n)))
    step = as_int(slide)
    if step is None or step <= 0:
        raise GraphError(f"count_window({size!r}, {slide!r}): slide is the number of records between windows, a positive int")
    return WindowedStream(stream, GlobalWindows.create()).trigger(CountTrigger.of(step)).evictor(CountEvictor.of(n))
