"""The DataStream API's one-input streams: DataStream, KeyedStream and DataStreamSink (PyFlink names).

A :class:`DataStream` is a graph builder: every method appends a node to its environment's
logical graph (through :class:`~operators._stream_base.StreamBase`) and returns the stream of
that node. The multi-input and windowed kinds it hands out (``connect``, ``join``,
``co_group``, ``window``, ``interval_join``) are built by the modules below it, which return
streams made by :meth:`DataStream._stream`; :class:`~operators.environment.StreamEnvironment`
(the sources) sits above it. Imports therefore go one way:

    _environment_base  <-  _stream_base  <-  connected, joins, windowed_stream
                       <-  datastream  <-  environment

Example:
    >>> import raystream as rs
    >>> env = rs.StreamEnvironment(parallelism=2)
    >>> words = env.from_collection(["a b", "b"]).flat_map(str.split)
    >>> counts = words.map(lambda w: (w, 1)).key_by(0).reduce(lambda a, b: (a[0], a[1] + b[1]))
    >>> sorted(dict(counts.execute_and_collect()).items())
    [('a', 1), ('b', 2)]
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, overload

from raystream.checkpoint.descriptors import StateDescriptor
from raystream.engine.connectors import Sink
from raystream.engine.errors import GraphError, UserCodeError, short_repr
from raystream.engine.graph import StreamEdge, Transformation, check_node_parallelism
from raystream.engine.operator import StreamOperator
from raystream.engine.partitioners import (
    BroadcastPartitioner,
    ForwardPartitioner,
    KeyGroupPartitioner,
    KeySelector,
    Partitioner,
    RebalancePartitioner,
)
from raystream.engine.records import Batch

from ._environment_base import StreamEnvironmentBase, check_collect_args, check_parallelism
from ._stream_base import (
    DROPS_TIMESTAMPS,
    Key,
    StreamBase,
    check_callable,
    record_timestamps,
)
from .arrow_aggregate import require_fields
from .basic import FilterOperator, FlatMapOperator, MapBatchesOperator, MapOperator, ProcessOperator
from .connected import BroadcastStream, ConnectedStreams
from .flink_functions import (
    FilterFunction,
    FlatMapFunction,
    MapFunction,
    RichFunctionProcess,
    user_function,
)
from .functions import (
    BroadcastProcessFunction,
    CoProcessFunction,
    KeyedProcessFunction,
    OnTimerContext,
    OutputTag,
    ProcessContext,
    ProcessFunction,
    RuntimeContext,
)
from .joins import IntervalJoin, JoinedStreams
from .keyed import AggregateOperator, KeyedProcessOperator, LocalAggregateOperator, ReduceOperator
from .keyed_final import (
    FieldAggregateOperator,
    FieldAggregation,
    LocalFieldAggregateOperator,
    LocalReduceOperator,
    check_emit,
    with_field,
)
from .sinks import CollectSink, JsonLinesSink, ParquetSink, PrintSink
from .time import (
    TimestampsAndWatermarksOperator,
    WatermarkedSource,
    WatermarkStrategy,
)
from .windowed_stream import WindowedStream, count_window
from .windows import WindowAssigner
from .with_state import WithStateFunction

__all__ = ["DataStream", "DataStreamSink", "KeyedStream"]


class DataStream(StreamBase["DataStream"]):
    """A stream of records: chain transformations on it, then end it in a sink.

    Args:
        env: the environment whose graph holds ``node``.
        node: the node whose output this stream is.
        partitioner: how the next operator's subtasks read it (None: forward, or
            rebalance when the parallelism differs).
        side_tag: read this side output of ``node`` instead of its main output.
    """

    def __init__(self, env: StreamEnvironmentBase, node: Transformation, partitioner: Partitioner | None = None,
                 side_tag: str | None = None) -> None:
        super().__init__(env, node, partitioner, side_tag)

    def _stream(self, node: Transformation) -> DataStream:
        return DataStream(self.env, node)

    def transform(self, name: str, operator_factory: Callable[[], StreamOperator], keyed: bool = False) -> DataStream:
        """Append a custom :class:`~engine.operator.StreamOperator` (``operator_factory()`` builds it per task)."""
        check_callable(operator_factory, "transform")
        return DataStream(self.env, _dropping(self._add(name, operator_factory, keyed=keyed)))

    # ------------------------------------------------------------------ event time (operators/time.py ...)
    def assign_timestamps_and_watermarks(self, strategy: WatermarkStrategy) -> DataStream:
        """Event timestamps and watermarks from a :class:`~operators.time.WatermarkStrategy`.

        Applied directly to a source stream, watermarks are generated per source split inside
        the reader; elsewhere by an operator after each batch.

        Example:
            >>> import raystream as rs
            >>> from raystream.operators.time import WatermarkStrategy
            >>> s = WatermarkStrategy.for_bounded_out_of_orderness(500).with_timestamp_column("ts")
            >>> env = rs.StreamEnvironment(parallelism=2)
            >>> events = env.from_collection([{"ts": 1_000, "v": 1}, {"ts": 400, "v": 2}])
            >>> sorted(events.assign_timestamps_and_watermarks(s).map(lambda r: r["v"]).execute_and_collect())
            [1, 2]
        """
        if not isinstance(strategy, WatermarkStrategy):
            raise GraphError(f"assign_timestamps_and_watermarks() expects a WatermarkStrategy, got {strategy!r}")
        assigner = strategy.require_assigner("assign_timestamps_and_watermarks")
        node = self.node
        if node.kind == "source" and self._partitioner is None and self._side_tag is None and not isinstance(node.source, WatermarkedSource):
            assert node.source is not None  # a source node has its source
            node.source = WatermarkedSource(node.source, strategy)
            node.timestamp_assigner = assigner
            return self
        out = DataStream(self.env, self._add("timestamps_watermarks", lambda: TimestampsAndWatermarksOperator(strategy),
                                             schema_names=node.schema_names))
        out.node.timestamp_assigner = assigner
        return out

    def window_all(self, assigner: WindowAssigner) -> WindowedStream[DataStream]:
        """Windows over the whole stream, as Flink's ``windowAll``: every record goes to one
        window operator at parallelism 1 (via a constant key); what follows it runs at the
        environment's parallelism again.

        Example:
            >>> import raystream as rs
            >>> env = rs.StreamEnvironment(parallelism=2)
            >>> stamped = env.from_collection([{"ts": t, "v": 1} for t in range(6)]).assign_timestamps_and_watermarks(
            ...     rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts"))
            >>> total = stamped.window_all(rs.TumblingEventTimeWindows.of(4)).reduce(lambda a, b: {**a, "v": a["v"] + b["v"]})
            >>> [r["v"] for r in total.execute_and_collect()], total.node.parallelism
            ([4, 2], 1)
        """
        windowed = self.key_by(_constant_key).window(assigner)
        windowed._all = True
        return windowed

    def count_window_all(self, size: int, slide: int | None = None) -> WindowedStream[DataStream]:
        """Count windows over the whole stream (Flink's ``countWindowAll``): every ``size``
        records (sliding: every ``slide`` records, the last ``size``) at parallelism 1, as
        :meth:`window_all`. Which records a window holds follows their arrival order."""
        windowed = count_window(self.key_by(_constant_key), size, slide)
        windowed._all = True
        return windowed

    def connect(self, other: DataStream | BroadcastStream[DataStream]) -> ConnectedStreams[DataStream]:
        """Connect with another stream (or a ``broadcast(descriptor)`` stream) for a
        CoProcessFunction / KeyedCoProcessFunction / BroadcastProcessFunction."""
        if not isinstance(other, (DataStream, BroadcastStream)):
            raise GraphError(f"connect() expects a DataStream or BroadcastStream, got {type(other).__name__}")
        return ConnectedStreams(self, other)

    def join(self, other: DataStream) -> JoinedStreams[DataStream]:
        """Window join: ``a.join(b).where(k1).equal_to(k2).window(assigner).apply(fn(l, r))``."""
        return JoinedStreams(self, other)

    def co_group(self, other: DataStream) -> JoinedStreams[DataStream]:
        """Window co-group: ``...apply(fn(key, lefts, rights))``."""
        return JoinedStreams(self, other, co_group=True)

    # ------------------------------------------------------------------ record API
    def map(self, fn: Callable[[Any], Any] | MapFunction) -> DataStream:
        """Apply ``fn`` to every record (a function, or a Flink ``MapFunction``: see
        :mod:`~operators.flink_functions`)."""
        call, owner = user_function(fn, "map", "map")
        if owner is not None:
            return self._rich("map", owner, call)
        return DataStream(self.env, self._add("map", lambda: MapOperator(call)))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]] | FlatMapFunction) -> DataStream:
        """Emit every element of ``fn(record)`` (a function, or a Flink ``FlatMapFunction``)."""
        call, owner = user_function(fn, "flat_map", "flat_map")
        if owner is not None:
            return self._rich("flat_map", owner, call)
        return DataStream(self.env, self._add("flat_map", lambda: FlatMapOperator(call)))

    def filter(self, fn: Callable[[Any], bool] | FilterFunction) -> DataStream:
        """Keep the records for which ``fn`` is true (a function, or a Flink ``FilterFunction``)."""
        call, owner = user_function(fn, "filter", "filter")
        if owner is not None:
            return self._rich("filter", owner, call, schema_names=self.node.schema_names)
        return DataStream(self.env, self._add("filter", lambda: FilterOperator(call), schema_names=self.node.schema_names))

    def _rich(self, api: str, owner: Any, call: Callable[[Any], Any], schema_names: list[str] | None = None) -> DataStream:
        """``map``/``flat_map``/``filter`` of a function object with ``open``/``close``: run as
        a process function, which calls them once per subtask (Flink's rich functions)."""
        return DataStream(self.env, self._add(api, lambda: ProcessOperator(RichFunctionProcess(owner, call, api)),
                                              schema_names=schema_names))

    def process(self, function: ProcessFunction | KeyedProcessFunction) -> DataStream:
        """Run a :class:`~operators.functions.ProcessFunction` on every record (Flink's
        ``DataStream.process``): at this stream's parallelism, chained like ``map``, with
        ``ctx.timestamp``, side outputs (``ctx.output(tag, value)``, read with
        :meth:`get_side_output`) and ``ctx.timer_service()``'s watermark and processing time.
        Timers and keyed state need a key: ``key_by(k).process(KeyedProcessFunction)``.

        Example:
            >>> import raystream as rs
            >>> class Words(rs.ProcessFunction):
            ...     def process_element(self, value, ctx):
            ...         yield from value.split()
            >>> env = rs.StreamEnvironment(parallelism=2)
            >>> sorted(env.from_collection(["a b", "c"]).process(Words()).execute_and_collect())
            ['a', 'b', 'c']
        """
        if isinstance(function, KeyedProcessFunction):
            raise GraphError(
                f"process({type(function).__name__}) after {self.node.name!r}: a KeyedProcessFunction needs a keyed "
                "stream: key_by first (stream.key_by(k).process(fn)), or subclass ProcessFunction"
            )
        if not isinstance(function, ProcessFunction):
            hint = ""
            if isinstance(function, (CoProcessFunction, BroadcastProcessFunction)):
                hint = " (a function of two inputs runs on a.connect(b).process(fn))"
            raise GraphError(
                f"process() after {self.node.name!r} expects a ProcessFunction instance, got "
                f"{type(function).__name__}{hint}"
            )
        ts = record_timestamps(self.node)
        return DataStream(self.env, self._add("process", lambda: ProcessOperator(function, ts)))

    # ------------------------------------------------------------------ batch API
    def map_batches(self, fn: Callable[[Any], Any], batch_format: str = "pyarrow") -> DataStream:
        """Apply ``fn`` to whole batches (``"pyarrow"``: a RecordBatch; ``"numpy"``: a dict of
        arrays); it returns a RecordBatch, Table or dict of columns."""
        check_callable(fn, "map_batches")
        if batch_format not in ("pyarrow", "numpy"):
            raise GraphError(f"batch_format must be 'pyarrow' or 'numpy', got {batch_format!r}")
        return DataStream(self.env, _dropping(self._add("map_batches", lambda: MapBatchesOperator(fn, batch_format))))

    # ------------------------------------------------------------------ partitioning
    def key_by(self, key: Key) -> KeyedStream:
        """Partition by key: a column name, a tuple index, a function of the record, or an
        object with ``get_key(record)`` (Flink's ``KeySelector``)."""
        if hasattr(key, "get_key") and not isinstance(key, (str, int)):  # (else KeySelector names what a key is)
            key, owner = user_function(key, "key_by", "get_key")
            if owner is not None:
                raise GraphError(f"key_by({type(owner).__name__}): a key selector's open()/close() are not run; "
                                 "compute the key without them")
        selector = KeySelector(key)
        names = self.node.schema_names
        if isinstance(key, str) and names is not None and key not in names:
            raise GraphError(f"key_by({key!r}): no such column after {self.node.name!r}; columns are {names}")
        return KeyedStream(self.env, self.node, selector, self._side_tag)

    def _repartition(self, partitioner: Partitioner) -> DataStream:
        return DataStream(self.env, self.node, partitioner, self._side_tag)

    def get_side_output(self, tag: OutputTag | str) -> DataStream:
        """The records this operator emitted to side output ``tag`` (a str or an
        :class:`~operators.functions.OutputTag`; ``output.emit_side``)."""
        tag_id = getattr(tag, "tag_id", tag)
        if not isinstance(tag_id, str) or not tag_id:
            raise GraphError(f"side output tags are non-empty strings, got {tag_id!r}")
        return DataStream(self.env, self.node, None, tag_id)

    def close_feedback(self, tag: str | OutputTag, key: Key | KeySelector) -> DataStream:
        """Close a loop: this operator's side output ``tag`` comes back to its own input,
        hash-partitioned by ``key`` (or a :class:`~engine.partitioners.KeySelector`). The
        feedback edge never blocks (no credit window) and the loop ends once every regular
        input has ended and no record circulates any more. ``tag`` must name a side output
        (a non-empty str or an :class:`~operators.functions.OutputTag`): the main output fed
        back to its own operator would circulate every record forever. On a keyed operator
        ``key`` is the operator's own key (a different column is a :class:`GraphError`)."""
        tag_id = getattr(tag, "tag_id", tag)
        if not isinstance(tag_id, str) or not tag_id:
            raise GraphError(
                f"close_feedback() on {self.node.name!r}: the loop's records come from a side output, "
                f"so the tag is a non-empty str or OutputTag (emit them with output.emit_side(tag, ...)), got {tag!r}"
            )
        if any(e.feedback and e.side_tag == tag_id for e in self.node.inputs):
            raise GraphError(
                f"close_feedback({tag_id!r}) on {self.node.name!r}: that loop is already closed; a second "
                "feedback edge would bring every record back twice on each round"
            )
        selector = key if isinstance(key, KeySelector) else KeySelector(key)
        if self.node.keyed:  # the records come back to keyed state: the same key, or a wrong subtask's state
            head_keys = {e.partitioner.key_selector.key for e in self.node.inputs
                         if not e.feedback and isinstance(e.partitioner, KeyGroupPartitioner)}
            if (len(head_keys) == 1 and isinstance(selector.key, (str, int))
                    and all(isinstance(k, (str, int)) and k != selector.key for k in head_keys)):
                raise GraphError(
                    f"close_feedback({tag_id!r}, key={selector.key!r}) on keyed {self.node.name!r}, whose input is keyed "
                    f"by {head_keys.pop()!r}: a record fed back by another key reaches a subtask that does not hold "
                    "its key's state; feed back by the operator's own key"
                )
        self.node.inputs.append(StreamEdge(self.node, KeyGroupPartitioner(selector), 0, feedback=True, side_tag=tag_id))
        return self

    def rebalance(self) -> DataStream:
        """Distribute batches round robin over the next operator's subtasks."""
        return self._repartition(RebalancePartitioner())

    @overload
    def broadcast(self) -> DataStream: ...

    @overload
    def broadcast(self, descriptor: str | StateDescriptor, /,
                  *more: str | StateDescriptor) -> BroadcastStream[DataStream]: ...

    def broadcast(self, *state_descriptors: str | StateDescriptor) -> DataStream | BroadcastStream[DataStream]:
        """Send every record to every subtask of the next operator. With descriptors
        (MapStateDescriptor or names), a BroadcastStream declaring broadcast state, for
        ``other.connect(stream.broadcast(desc)).process(BroadcastProcessFunction)``."""
        if state_descriptors:
            names = [d if isinstance(d, str) else d.name for d in state_descriptors]
            return BroadcastStream(self, names)
        return self._repartition(BroadcastPartitioner())

    def forward(self) -> DataStream:
        """Keep records on the same subtask index (requires equal parallelism)."""
        return self._repartition(ForwardPartitioner())

    def union(self, *others: DataStream) -> DataStream:
        """Merge streams with the same record type into one."""
        env = self.env
        streams = [self, *others]
        for s in others:
            if s.env is not env:
                raise GraphError("union() of streams from different StreamEnvironments")
        inputs = [s._edge(s._partitioner or RebalancePartitioner()) for s in streams]  # side outputs stay side outputs
        # union is an identity operator with many inputs
        return DataStream(env, env.add_node("union", "operator", inputs, operator_factory=lambda: MapOperator(_identity)))

    # ------------------------------------------------------------------ node settings
    def name(self, name: str) -> DataStream:
        """Set the operator's display name."""
        self.node.name = name
        return self

    def uid(self, uid: str) -> DataStream:
        """Set a stable id used to match state in savepoints."""
        self.node.uid = uid
        return self

    def set_parallelism(self, parallelism: int) -> DataStream:
        """Set this operator's parallelism (a source's at most its ``max_parallelism``)."""
        self.node.parallelism = check_node_parallelism(self.node, check_parallelism(parallelism))
        return self

    def disable_chaining(self) -> DataStream:
        """Run this operator in its own task (no fusion with neighbours)."""
        self.node.chaining = False
        return self

    # ------------------------------------------------------------------ sinks
    def sink_to(self, sink: Sink, name: str | None = None) -> DataStreamSink:
        """Write the stream to a user :class:`~engine.connectors.Sink`.

        Example:
            >>> import raystream as rs
            >>> class Lines(rs.Sink):
            ...     def create_writer(self, ctx): return LinesWriter()
            >>> class LinesWriter(rs.SinkWriter):
            ...     def write(self, batch): print(batch.to_pylist())
            >>> rs.StreamEnvironment().from_collection([1, 2]).sink_to(Lines()).name("lines").node.name
            'lines'
        """
        if not isinstance(sink, Sink):
            what = short_repr(sink, 80)
            remedy = (
                "a function is not a sink: subclass raystream.Sink, whose create_writer(ctx) returns a raystream.SinkWriter with "
                "write(batch) (and prepare_commit/Committer for exactly once), or use collect() / print() / "
                "write_parquet(dir) / write_jsonl(dir)"
                if callable(sink) else
                "subclass raystream.Sink: create_writer(ctx) returns a raystream.SinkWriter with write(batch)"
            )
            raise GraphError(f"sink_to() of stream {self.node.name!r} takes a raystream.Sink, got {what}; {remedy}")
        return DataStreamSink(self.env.add_sink(self._edge(self._partitioner), sink, name or sink.describe()))

    def collect(self) -> DataStreamSink:
        """Send every record back to the driver (see ``execute_and_collect``)."""
        return self.sink_to(CollectSink(), "collect")

    def print(self, prefix: str = "") -> DataStreamSink:
        """Print every record to stdout."""
        return self.sink_to(PrintSink(prefix), "print")

    def write_parquet(self, path: str) -> DataStreamSink:
        """Write Parquet files under ``path`` (exactly once with checkpointing)."""
        return self.sink_to(ParquetSink(path), "write_parquet")

    def write_jsonl(self, path: str) -> DataStreamSink:
        """Write JSON-lines files under ``path`` (exactly once with checkpointing)."""
        return self.sink_to(JsonLinesSink(path), "write_jsonl")

    def execute_and_collect(self, job_name: str = "raystream-job", as_table: bool = False,
                            limit: int | None = None, stream: bool = False) -> Any:
        """Collect this stream and run the job (shortcut for notebooks): every record (a list,
        or a table with ``as_table=True``), the first ``limit`` of them (then the job is
        cancelled: also for an unbounded stream), or with ``stream=True`` an iterator over
        the records as they come, which cancels the job when closed (Flink's
        ``executeAndCollect``); see :meth:`StreamEnvironment.execute_and_collect`.

        Example:
            >>> env.generate(lambda i: i).filter(lambda x: x % 7 == 0).execute_and_collect(limit=3)  # doctest: +SKIP
            [0, 7, 14]
        """
        check_collect_args(as_table, limit, stream)
        self.collect()
        return self.env.execute_and_collect(job_name, as_table=as_table, limit=limit, stream=stream)


class _Aggregate(AggregateOperator):
    """The keyed ``aggregate``: a batch of records without a field it reads is refused naming
    a record and the remedy (:func:`~operators.arrow_aggregate.require_fields`), however the
    batch was cut or shuffled."""

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        if not self.partials:  # (partials come from the local aggregate, which checked the records)
            require_fields(batch, self._describe, self._fields())
        super().process_batch(batch, input_index)


class _LocalAggregate(LocalAggregateOperator):
    """``aggregate (local)`` before the shuffle, with the records checked as :class:`_Aggregate`'s."""

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        require_fields(batch, self.layout._describe, self.layout._fields())
        super().process_batch(batch, input_index)


class _FieldCheck:
    """Checks that a record has a value in ``field`` (a dict's key, a tuple's position):
    raises a ``TypeError`` saying ``what`` needs it."""

    def __init__(self, what: str, field: str | int) -> None:
        self.what = what
        self.field = field

    def __call__(self, record: Any) -> None:
        what, field = self.what, self.field
        try:
            value = record[field]
        except (KeyError, IndexError, TypeError) as exc:
            raise TypeError(f"{what}: the record has no field {field!r} ({exc!r}); the field is a column name of "
                            "dict records or a position of tuples") from exc
        if value is None:
            raise TypeError(f"{what}: the record has no value (None) in {field!r}; filter or fill nulls first")


class _CheckedReduceOperator(ReduceOperator):
    """A rolling reduce (``emit="updates"``) that checks every record with ``check`` before
    reducing it: also a key's first record, which the reduce emits as it is without calling
    ``fn`` (a key's only record without the field came out unchecked)."""

    def __init__(self, key_selector: KeySelector, fn: Callable[[Any, Any], Any], check: Callable[[Any], None]) -> None:
        super().__init__(key_selector, fn, "updates")
        self.check = check

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        check = self.check
        for r in batch.records():
            try:
                check(r)
            except Exception as exc:
                raise UserCodeError(r, exc) from exc
        super().process_batch(batch, input_index)


class _KeyedProcessFunctionOf(KeyedProcessFunction):
    """A :class:`ProcessFunction` on a keyed stream: it gets the key's state and timers
    (Flink runs a ``ProcessFunction`` on a ``KeyedStream`` with a keyed context); a timer it
    registers calls its ``on_timer`` if it has one."""

    def __init__(self, function: ProcessFunction) -> None:
        self.function = function

    def open(self, runtime_context: RuntimeContext) -> None:
        self.function.open(runtime_context)

    def process_element(self, value: Any, ctx: ProcessContext[Any]) -> Iterable[Any] | None:
        return self.function.process_element(value, ctx)

    def on_timer(self, timestamp: int, ctx: OnTimerContext[Any]) -> Iterable[Any] | None:
        on_timer = getattr(self.function, "on_timer", None)
        if on_timer is None:
            raise GraphError(
                f"{type(self.function).__name__} registered a timer (at {timestamp!r}) but has no "
                "on_timer(timestamp, ctx) method to receive it: subclass KeyedProcessFunction"
            )
        result: Iterable[Any] | None = on_timer(timestamp, ctx)
        return result

    def close(self) -> None:
        self.function.close()


def _identity(x: Any) -> Any:
    return x


def _constant_key(x: Any) -> int:
    return 0


class DataStreamSink:
    """The end of a stream; lets you name the sink or give it a uid."""

    def __init__(self, node: Transformation) -> None:
        self.node = node

    def name(self, name: str) -> DataStreamSink:
        """Set the sink's display name."""
        self.node.name = name
        return self

    def uid(self, uid: str) -> DataStreamSink:
        """Set a stable id used to match state in savepoints."""
        self.node.uid = uid
        return self

    def set_parallelism(self, parallelism: int) -> DataStreamSink:
        """Set the sink's parallelism (at most the sink's ``max_parallelism``)."""
        self.node.parallelism = check_node_parallelism(self.node, check_parallelism(parallelism))
        return self

    def disable_chaining(self) -> DataStreamSink:
        """Run the sink in its own task (no fusion with its upstream operator)."""
        self.node.chaining = False
        return self


def _dropping(node: Transformation) -> Transformation:
    """``node``, whose output carries no event timestamps of its records (see
    :data:`~operators._stream_base.DROPS_TIMESTAMPS`)."""
    DROPS_TIMESTAMPS.add(node)
    return node


def _dropped(stream: DataStream) -> DataStream:
    """``stream``, whose node's output carries no event timestamps of its records."""
    _dropping(stream.node)
    return stream


class KeyedStream(DataStream):
    """A stream partitioned by key; keyed operators see all records of a key in one subtask."""

    def __init__(self, env: StreamEnvironmentBase, node: Transformation, selector: KeySelector,
                 side_tag: str | None = None) -> None:
        super().__init__(env, node, KeyGroupPartitioner(selector), side_tag)
        self.selector = selector

    def _key_selector(self) -> KeySelector:
        return self.selector

    def _keyed(self, name: str, factory: Callable[[], StreamOperator], schema_names: list[str] | None = None) -> DataStream:
        node = self._add(name, factory, keyed=True, schema_names=schema_names)
        return DataStream(self.env, node)

    def reduce(self, fn: Callable[[Any, Any], Any], emit: str = "updates", combinable: bool = False) -> DataStream:
        """Reduce per key with ``fn(accumulated, record)``, one call per record.

        ``emit="updates"`` (the default, Flink semantics): a rolling reduce, every record
        emits its key's updated value. ``emit="final"``: nothing per record; each key's
        reduced value is emitted once, at end of input (a bounded input; on an unbounded
        one the graph is refused, see ``docs/keyed.md``). With ``emit="final"``,
        ``combinable=True`` declares ``fn`` **associative and commutative**: a combiner
        chained before the shuffle (``reduce (local)``) reduces each batch by key, the
        shuffle carries one partial per key and batch, and ``fn`` also merges partials.

        Example:
            >>> import raystream as rs
            >>> pairs = rs.StreamEnvironment(parallelism=2).from_collection([("a", 1), ("b", 2), ("a", 3)])
            >>> totals = pairs.key_by(0).reduce(lambda a, b: (a[0], a[1] + b[1]), emit="final", combinable=True)
            >>> sorted(totals.execute_and_collect())
            [('a', 4), ('b', 2)]
        """
        fn, owner = user_function(fn, "reduce", "reduce")
        if owner is not None:
            raise GraphError(f"reduce({type(owner).__name__}): a ReduceFunction's open()/close() are not run here; "
                             "keep state in a KeyedProcessFunction (key_by(k).process(fn)) instead")
        check_emit("reduce", emit)
        if combinable and emit != "final":
            raise GraphError("reduce(combinable=True) needs emit='final': a combiner folds records "
                             "before the shuffle, so no per-record update is left to emit")
        selector = self.selector
        if emit == "final":
            self._check_bounded("reduce")
        if not combinable:
            out = self._keyed("reduce", lambda: ReduceOperator(selector, fn, emit))
            if emit == "final":  # (each key's value at the end: no record's timestamp)
                _dropping(out.node)
            return out
        local = self._combiner("reduce (local)", lambda: LocalReduceOperator(selector, fn), None)
        return _dropped(local._keyed("reduce", lambda: ReduceOperator(selector, fn, "final")))

    def _field_reduce(self, column: str | int, how: FieldAggregation, emit: str) -> DataStream:
        check_emit(how, emit)
        names = self.node.schema_names
        if isinstance(column, str) and names is not None and column not in names:
            raise GraphError(f"{how}({column!r}): no column {column!r} after {self.node.name!r}; columns are {names}")
        selector = self.selector
        FieldAggregateOperator(selector, column, how)  # validate now, at graph build time
        if emit == "final":
            self._check_bounded(how)
            local = self._combiner(f"{how} (local)", lambda: LocalFieldAggregateOperator(selector, column, how), names)
            return _dropped(local._keyed(how, lambda: FieldAggregateOperator(selector, column, how), names))

        def combine(acc: Any, r: Any) -> Any:
            what = f"{how}({column!r})"
            try:
                a = acc[column]
            except (KeyError, IndexError, TypeError) as exc:  # the key's first record (folded into as it is)
                raise UserCodeError(acc, TypeError(f"{what}: the record has no field {column!r} ({exc!r})")) from exc
            try:
                b = r[column]
            except (KeyError, IndexError, TypeError) as exc:
                raise UserCodeError(r, TypeError(f"{what}: the record has no field {column!r} ({exc!r})")) from exc
            if a is None or b is None:
                raise UserCodeError(acc if a is None else r, TypeError(
                    f"{what}: the record has no value (None) in {column!r}; filter or fill nulls first"))
            try:
                v = a + b if how == "sum" else (min(a, b) if how == "min" else max(a, b))
            except TypeError as exc:
                raise UserCodeError(r, TypeError(
                    f"{what}: cannot fold {short_repr(b, 60)} ({type(b).__name__}) into {short_repr(a, 60)} "
                    f"({type(a).__name__}): {exc}")) from exc
            return with_field(acc, column, v)

        combine.__name__ = f"{how}({column})"
        check = _FieldCheck(f"{how}({column!r})", column)
        return self._keyed(how, lambda: _CheckedReduceOperator(selector, combine, check), names)

    def sum(self, column: str | int, emit: str = "updates") -> DataStream:
        """Sum of ``column`` per key; the other fields are the key's first record's (Flink).

        ``emit="updates"``: the running sum for every record. ``emit="final"``: each key's
        sum once, at end of input, with a combiner before the shuffle that is vectorized
        (pyarrow) for numeric columns of dict records, so the record API runs at batch
        speed. Python semantics (ints exact); a None value fails the job (see ``docs/keyed.md``).

        Example:
            >>> import raystream as rs
            >>> env = rs.StreamEnvironment(parallelism=2)
            >>> events = env.from_collection([{"key": "a", "value": 1}, {"key": "a", "value": 2}])
            >>> events.key_by("key").sum("value", emit="final").execute_and_collect()
            [{'key': 'a', 'value': 3}]
        """
        return self._field_reduce(column, "sum", emit)

    def min(self, column: str | int, emit: str = "updates") -> DataStream:
        """Minimum of ``column`` per key (other fields from the key's first record);
        ``emit`` as for :meth:`sum`."""
        return self._field_reduce(column, "min", emit)

    def max(self, column: str | int, emit: str = "updates") -> DataStream:
        """Maximum of ``column`` per key (other fields from the key's first record);
        ``emit`` as for :meth:`sum`."""
        return self._field_reduce(column, "max", emit)

    def min_by(self, field: str | int, first: bool = True) -> DataStream:
        """The record with the smallest ``field`` per key, rolling (Flink's ``minBy``): every
        record emits, whole, the record of its key holding the minimum so far; on ties the
        first one (``first=False``: the last one). ``field`` is a column name (dict records)
        or a position (tuples). A record without the field, or with None in it, fails the job
        naming the operator and the record; so do values that do not compare.

        Unlike :meth:`min`, which emits the running minimum in ``field`` with the other fields
        of the key's first record, ``min_by`` emits a record as it came.

        Example:
            >>> import raystream as rs
            >>> env = rs.StreamEnvironment(parallelism=2)
            >>> bids = env.from_collection([("a", 5, "x"), ("a", 3, "y"), ("a", 3, "z"), ("b", 1, "w")])
            >>> sorted(bids.key_by(0).min_by(1).execute_and_collect())
            [('a', 3, 'y'), ('a', 3, 'y'), ('a', 5, 'x'), ('b', 1, 'w')]
        """
        return self._by_field(field, "min_by", first)

    def max_by(self, field: str | int, first: bool = True) -> DataStream:
        """The record with the largest ``field`` per key, rolling (Flink's ``maxBy``); as
        :meth:`min_by` (on ties the first record, ``first=False``: the last one).

        Example:
            >>> import raystream as rs
            >>> env = rs.StreamEnvironment(parallelism=1)
            >>> temps = env.from_collection([{"room": "a", "t": 20}, {"room": "a", "t": 25}, {"room": "a", "t": 22}])
            >>> [r["t"] for r in temps.key_by("room").max_by("t").execute_and_collect()]
            [20, 25, 25]
        """
        return self._by_field(field, "max_by", first)

    def _by_field(self, field: str | int, how: str, first: bool) -> DataStream:
        if isinstance(field, bool) or not isinstance(field, (str, int)):
            raise GraphError(f"{how}({field!r}): the field is a column name (dict records) or a position (tuples)")
        names = self.node.schema_names
        if isinstance(field, str) and names is not None and field not in names:
            raise GraphError(f"{how}({field!r}): no column {field!r} after {self.node.name!r}; columns are {names}")
        what = f"{how}({field!r})"
        smaller = how == "min_by"

        def pick(acc: Any, record: Any) -> Any:
            a, b = acc[field], record[field]
            try:
                if first:
                    better = b < a if smaller else b > a
                else:
                    better = b <= a if smaller else b >= a
            except TypeError as exc:
                raise TypeError(f"{what}: cannot compare {short_repr(b, 60)} ({type(b).__name__}) with "
                                f"{short_repr(a, 60)} ({type(a).__name__}): {exc}") from exc
            return record if better else acc

        pick.__name__ = f"{how}({field})"
        selector, check = self.selector, _FieldCheck(what, field)
        return self._keyed(how, lambda: _CheckedReduceOperator(selector, pick, check), names)

    def _combiner(self, name: str, factory: Callable[[], StreamOperator], schema_names: list[str] | None) -> KeyedStream:
        """A combiner chained to the upstream operator (forward edge, same parallelism),
        keyed like this stream: the keyed operator after it reads its partials."""
        node = self.env.add_node(name, "operator", [self._edge(None)], operator_factory=factory,
                                 schema_names=schema_names)
        node.parallelism = self.node.parallelism
        return KeyedStream(self.env, node, self.selector)

    def _check_bounded(self, method: str) -> None:
        """``emit="final"`` emits at end of input: refuse an input that never ends."""
        seen: set[int] = set()
        todo = [self.node]
        while todo:
            node = todo.pop()
            if node.id in seen:
                continue
            seen.add(node.id)
            if node.source is not None and not getattr(node.source, "bounded", True):
                raise GraphError(
                    f"{method}(emit='final') emits each key's value at end of input, but source "
                    f"{node.name!r} ({node.source.describe()}) is unbounded and never ends; use "
                    "emit='updates', a window, or a bounded source (e.g. generate(fn, count=n))"
                )
            todo.extend(e.source for e in node.inputs if not e.feedback)

    def aggregate(self, aggregations: dict[str, tuple[str, str]] | None = None, emit: str = "updates", **named: tuple[str, str]) -> DataStream:
        """Vectorized per-key aggregates on Arrow columns (the fast path).

        ``aggregate(total=("value", "sum"), n=("value", "count"))`` emits rows
        ``{key, total, n}``: for every batch the updated rows of the keys it touched
        (``emit="updates"``), or only the final rows at end of input (``emit="final"``).
        Functions: sum, count, min, max, mean. Requires a column key. With ``emit="final"``
        the aggregation runs in two phases (as Flink SQL's local-global aggregation): an
        ``aggregate (local)`` operator chained before the shuffle groups every batch by key
        and holds the partials of consecutive batches, merged (a mini-batch, sent at the end
        of input and before every checkpoint barrier, capped in rows), and the keyed
        ``aggregate`` merges those partials, so the exchange carries about one row per key
        and send and a hot key does not overload its subtask.
        """
        specs = dict(aggregations or {})
        specs.update(named)
        if not specs:
            raise GraphError("aggregate() needs at least one aggregation, e.g. total=('value', 'sum')")
        if self.selector.column is None:
            raise GraphError("aggregate() needs key_by(<column name>); use reduce() for function keys")
        names = self.node.schema_names
        if names is not None:
            for out, spec in specs.items():
                if isinstance(spec, tuple) and spec and spec[0] not in names:
                    raise GraphError(f"aggregate({out}={spec!r}): no column {spec[0]!r}; columns are {names}")
        key = self.selector.column
        layout = AggregateOperator(key, specs, emit)  # validate now, at graph build time
        if emit == "final":
            self._check_bounded("aggregate")
        if emit != "final":  # (a key's row carries its last record's timestamp)
            return self._keyed("aggregate", lambda: _Aggregate(key, specs, emit), [key, *specs])
        # Two-phase (local-global) aggregation: each upstream batch is grouped by key before
        # the shuffle (chained to the upstream operator), the keyed operator merges partials.
        partial_names = [key, *(name for name, _col, _fn in layout._acc_names())]
        local = self.env.add_node(
            "aggregate (local)", "operator", [self._edge(None)], operator_factory=lambda: _LocalAggregate(key, specs),
            schema_names=partial_names,
        )
        local.parallelism = self.node.parallelism  # chained to the upstream operator
        keyed = KeyedStream(self.env, local, self.selector)
        return _dropped(keyed._keyed("aggregate", lambda: _Aggregate(key, specs, emit, partials=True), [key, *specs]))

    def process(self, function: ProcessFunction | KeyedProcessFunction) -> DataStream:
        """Run a :class:`KeyedProcessFunction` with per-key state (a
        :class:`~operators.functions.ProcessFunction` runs with the key's state too, as in
        Flink)."""
        if isinstance(function, ProcessFunction):
            function = _KeyedProcessFunctionOf(function)
        if not isinstance(function, KeyedProcessFunction):
            raise GraphError(f"process() expects a KeyedProcessFunction instance, got {type(function).__name__}")
        selector = self.selector
        ts = record_timestamps(self.node)
        return self._keyed("process", lambda: KeyedProcessOperator(selector, function, ts))

    def map_with_state(self, fn: Callable[[Any, Any], tuple[Any, Any]]) -> DataStream:
        """Map every record with its key's state (Flink Scala's ``mapWithState``, Bytewax's
        ``stateful_map``): ``fn(record, state) -> (output, new_state)``, ``state`` None for a
        key without state; ``new_state`` None clears the key's state. The state is keyed
        state (checkpointed, rescaled by key group); see :mod:`~operators.with_state`.

        Example:
            >>> import raystream as rs
            >>> def count(word, n):
            ...     n = (n or 0) + 1
            ...     return (word, n), (None if word == "reset" else n)
            >>> words = rs.StreamEnvironment(parallelism=1).from_collection(["a", "b", "a", "reset", "reset"])
            >>> words.key_by(lambda w: w).map_with_state(count).execute_and_collect()
            [('a', 1), ('b', 1), ('a', 2), ('reset', 1), ('reset', 1)]
        """
        return self._with_state(fn, flat=False)

    def flat_map_with_state(self, fn: Callable[[Any, Any], tuple[Iterable[Any] | None, Any]]) -> DataStream:
        """As :meth:`map_with_state`, emitting every element of ``output`` (Flink Scala's
        ``flatMapWithState``, Bytewax's ``stateful_flat_map``): ``fn(record, state) ->
        (records, new_state)``, ``records`` an iterable (or None for none).

        Example:
            >>> import raystream as rs
            >>> def pairs(x, prev):          # each record with the key's one before it
            ...     return ([] if prev is None else [(prev, x)]), x
            >>> s = rs.StreamEnvironment(parallelism=1).from_collection([1, 2, 3])
            >>> s.key_by(lambda x: 0).flat_map_with_state(pairs).execute_and_collect()
            [(1, 2), (2, 3)]
        """
        return self._with_state(fn, flat=True)

    def _with_state(self, fn: Callable[[Any, Any], Any], flat: bool) -> DataStream:
        method = "flat_map_with_state" if flat else "map_with_state"
        check_callable(fn, method)
        function = WithStateFunction(fn, flat)
        selector = self.selector
        ts = record_timestamps(self.node)
        return self._keyed(method, lambda: KeyedProcessOperator(selector, function, ts))

    def window(self, assigner: WindowAssigner) -> WindowedStream[DataStream]:
        """Cut the keyed stream into windows (see :class:`~operators.windowed_stream.WindowedStream`).

        Example:
            >>> import raystream as rs
            >>> from raystream.operators.time import WatermarkStrategy
            >>> from raystream.operators.windows import TumblingEventTimeWindows
            >>> env = rs.StreamEnvironment(parallelism=2)
            >>> events = env.from_collection([{"key": "a", "ts": 1_000}, {"key": "a", "ts": 400}, {"key": "a", "ts": 1_500}])
            >>> keyed = events.assign_timestamps_and_watermarks(
            ...     WatermarkStrategy.for_bounded_out_of_orderness(500).with_timestamp_column("ts")).key_by("key")
            >>> counts = keyed.window(TumblingEventTimeWindows.of(1000)).aggregate(n=("ts", "count"))
            >>> sorted(counts.execute_and_collect(), key=lambda r: r["window_start"])  # doctest: +NORMALIZE_WHITESPACE
            [{'key': 'a', 'window_start': 0, 'window_end': 1000, 'n': 1},
             {'key': 'a', 'window_start': 1000, 'window_end': 2000, 'n': 2}]
        """
        return WindowedStream(self, assigner)

    def count_window(self, size: int, slide: int | None = None) -> WindowedStream[DataStream]:
        """Count windows of ``size`` records per key: tumbling, or sliding by ``slide``
        records (Flink's ``countWindow(size, slide)``: every ``slide`` records of a key fire
        a window of its last ``size``)."""
        return count_window(self, size, slide)

    def interval_join(self, other: KeyedStream) -> IntervalJoin[DataStream]:
        """Interval join with another keyed stream: ``.between(lo, hi).process(fn(l, r))``."""
        if not isinstance(other, KeyedStream):
            raise GraphError(f"interval_join() expects a KeyedStream (key_by first), got {type(other).__name__}")
        return IntervalJoin(self, other)
