"""The DataStream API: StreamEnvironment, DataStream and KeyedStream (PyFlink names).

Example:
    >>> import raystream as rs
    >>> env = rs.StreamEnvironment(parallelism=2)
    >>> words = env.from_collection(["a b", "b"]).flat_map(str.split)
    >>> counts = words.map(lambda w: (w, 1)).key_by(0).reduce(lambda a, b: (a[0], a[1] + b[1]))
    >>> sorted(dict(counts.execute_and_collect()).items())   # doctest: +SKIP
    [('a', 1), ('b', 2)]
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import pyarrow as pa

from engine.client import JobClient, JobResult, submit_job
from engine.config import JobConfig, TaskConfig
from engine.connectors import Sink, Source
from engine.errors import ConfigError, GraphError
from engine.graph import StreamEdge, StreamGraph, Transformation, build_job_graph
from engine.keygroups import DEFAULT_MAX_PARALLELISM
from engine.partitioners import (
    BroadcastPartitioner,
    ForwardPartitioner,
    KeyGroupPartitioner,
    KeySelector,
    Partitioner,
    RebalancePartitioner,
)
from engine.sink_operator import SinkOperator

from .basic import FilterOperator, FlatMapOperator, MapBatchesOperator, MapOperator
from .functions import KeyedProcessFunction
from .keyed import AggregateOperator, KeyedProcessOperator, LocalAggregateOperator, ReduceOperator
from .sinks import CollectSink, JsonLinesSink, ParquetSink, PrintSink, collected_records
from .sources import CollectionSource, GeneratorSource, ParquetSource, TextSource

__all__ = ["StreamEnvironment", "DataStream", "KeyedStream"]


def _check_callable(fn: Any, method: str) -> None:
    if not callable(fn):
        raise GraphError(f"{method}() expects a function, got {type(fn).__name__} {fn!r}")


class StreamEnvironment:
    """Builds and runs a streaming job.

    Args:
        parallelism: default number of parallel tasks per operator.
        max_parallelism: number of key groups (upper bound for rescaling keyed state).
        address: Ray address to connect to (None: an embedded local Ray unless one is connected).
        batch_size: rows per network batch; flush_ms: buffer timeout; credits: in-flight
            sends per channel (back-pressure window).
        task_num_cpus: Ray CPUs reserved per task executor actor.
        slot_sharing: True (default, as Flink's default slot sharing group): one Ray actor
            per subtask index hosts that subtask of every vertex, so a job deploys
            ``max(parallelism)`` worker processes instead of one per task, and data between
            co-located tasks is handed over in process. False: one actor per task.
        reuse_workers: True (default, like a Flink session cluster): the job master and the
            task executors of a finished job stay up and the driver's next job deploys onto
            them (no worker processes to start); see :mod:`engine.pool`. False: this job's
            actors are its own and end with it (nothing in user code's module state carries
            over between jobs). ``raystream.shutdown_workers()`` ends idle ones.

    Example:
        >>> env = StreamEnvironment(parallelism=2)
        >>> env.from_collection([1, 2, 3]).map(lambda x: x * 10).execute_and_collect()  # doctest: +SKIP
        [10, 20, 30]
    """

    def __init__(
        self,
        parallelism: int = 1,
        max_parallelism: int = DEFAULT_MAX_PARALLELISM,
        address: str | None = None,
        batch_size: int = 65536,
        flush_ms: int = 50,
        credits: int = 4,
        task_num_cpus: float = 0.0,
        slot_sharing: bool = True,
        reuse_workers: bool = True,
    ) -> None:
        if not isinstance(parallelism, int) or parallelism < 1:
            raise ConfigError(f"parallelism must be a positive int, got {parallelism!r}")
        if not isinstance(max_parallelism, int) or not parallelism <= max_parallelism <= 32768:
            raise ConfigError(f"max_parallelism must be between parallelism and 32768, got {max_parallelism!r}")
        if credits < 1:
            raise ConfigError(f"credits must be >= 1, got {credits!r}")
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        self.address = address
        self.task_config = TaskConfig(batch_size=batch_size, flush_ms=flush_ms, credits=credits)
        self.task_num_cpus = task_num_cpus
        self.slot_sharing = bool(slot_sharing)
        self.reuse_workers = bool(reuse_workers)
        self.graph = StreamGraph()
        self.clock = None
        self.checkpoint_config: Any = None
        self.restart_strategy: Any = None

    def __reduce__(self):
        raise TypeError("StreamEnvironment lives in the driver and cannot be pickled")

    # ------------------------------------------------------------------ sources
    def _source(self, source: Source, name: str, schema_names: list[str] | None = None) -> "DataStream":
        if not isinstance(source, Source):
            raise GraphError(f"from_source() expects an engine.connectors.Source, got {type(source).__name__}")
        node = Transformation(self.graph.next_id(), name, "source", self.parallelism, source=source)
        node.schema_names = schema_names
        self.graph.add(node)
        return DataStream(self, node)

    def from_collection(self, items: Iterable[Any], batch_size: int = 8192) -> "DataStream":
        """A bounded stream of the given items."""
        items = list(items)
        names = list(items[0].keys()) if items and isinstance(items[0], dict) else None
        return self._source(CollectionSource(items, batch_size), "from_collection", names)

    def read_parquet(self, path_or_glob: str, batch_size: int = 65536, columns: list[str] | None = None) -> "DataStream":
        """A bounded, columnar stream of Parquet files (path, directory, glob or URI)."""
        src = ParquetSource(path_or_glob, batch_size, columns)
        return self._source(src, "read_parquet", columns or src.schema.names)

    def read_text(self, path_or_glob: str, batch_size: int = 8192) -> "DataStream":
        """A bounded stream of the lines of text files."""
        return self._source(TextSource(path_or_glob, batch_size), "read_text")

    def generate(self, fn_or_count: Callable[[int], Any] | int | None = None, count: int | None = None,
                 rate: float | None = None, batch_size: int = 8192) -> "DataStream":
        """``generate(n)``: 0..n-1; ``generate(fn, count=n)``: fn(i); ``generate(fn)``: unbounded.
        ``rate`` limits records per second (over all subtasks)."""
        if isinstance(fn_or_count, bool):  # an int, but surely not meant as a count
            raise GraphError(f"generate() expects a count or a function, got {fn_or_count!r}")
        if isinstance(fn_or_count, int):
            fn, count = None, fn_or_count
        else:
            fn = fn_or_count
        return self._source(GeneratorSource(fn, count, rate, batch_size), "generate")

    def from_source(self, source: Source, name: str | None = None) -> "DataStream":
        """A stream from a user :class:`~engine.connectors.Source`."""
        return self._source(source, name or source.describe())

    # ------------------------------------------------------------------ execution
    def enable_checkpointing(
        self,
        interval_ms: int,
        mode: str = "exactly_once",
        checkpoint_dir: str | None = None,
        timeout_ms: int = 60_000,
        min_pause_ms: int = 0,
        max_concurrent: int = 1,
        retained: int = 3,
        tolerable_failures: int | None = None,
        secret: bytes | str | None = None,
    ) -> "StreamEnvironment":
        """Take a barrier-aligned checkpoint every ``interval_ms``; failed tasks then restart
        from the latest complete one and results stay exactly once.

        ``checkpoint_dir`` is a local directory or any ``pyarrow.fs`` URI (``s3://bucket/x``);
        a Ray cluster needs storage all nodes reach. ``mode="at_least_once"`` skips barrier
        alignment. Example: ``env.enable_checkpointing(1000, checkpoint_dir="/tmp/chk")``.

        Checkpoint and savepoint files are pickles, and restoring one runs code: restore only
        from storage you trust, or give a job ``secret`` (default: the environment variable
        ``RAYSTREAM_CHECKPOINT_SECRET`` of this process). Every file is then signed with
        HMAC-SHA256, and a file whose signature is missing or wrong is refused on restore.
        """
        from checkpoint.coordinator import CheckpointConfig
        from checkpoint.storage import resolve_storage, signing_key

        config = CheckpointConfig(
            interval_ms, mode, checkpoint_dir, timeout_ms, min_pause_ms, max_concurrent, retained, tolerable_failures,
            secret=secret,
        )
        key = signing_key(config.secret)  # read here, on the driver: the job master may not see its environment
        if key is not None:
            assert config.checkpoint_dir is not None  # CheckpointConfig fills in the default
            # the job master builds its storage from checkpoint_dir, which may be a storage
            signed: Any = resolve_storage(config.checkpoint_dir, secret=key)
            config.checkpoint_dir = signed
        self.checkpoint_config = config
        self.task_config.exactly_once = mode == "exactly_once"
        return self

    def set_restart_strategy(self, strategy: Any) -> "StreamEnvironment":
        """How failed jobs restart: ``RestartStrategy.none()``, ``.fixed_delay(attempts, delay_ms)``
        or ``.exponential_backoff(...)`` (default: fixed delay, 3 attempts, when checkpointing)."""
        from engine.restart import RestartStrategy

        if not isinstance(strategy, RestartStrategy):
            raise ConfigError(f"set_restart_strategy() expects a RestartStrategy, got {strategy!r}")
        self.restart_strategy = strategy
        return self

    def _job_config(self, name: str, from_savepoint: str | None = None, allow_non_restored_state: bool = False) -> JobConfig:
        return JobConfig(
            name=name,
            task=self.task_config,
            task_num_cpus=self.task_num_cpus,
            slot_sharing=self.slot_sharing,
            reuse_workers=self.reuse_workers,
            checkpoint=self.checkpoint_config,
            restart=self.restart_strategy,
            clock=self.clock,
            from_savepoint=from_savepoint,
            allow_non_restored_state=allow_non_restored_state,
        )

    def get_job_graph(self):
        """The chained job graph this environment would deploy (for inspection)."""
        return build_job_graph(self.graph, self.max_parallelism)

    def execute_async(self, job_name: str = "raystream-job", from_savepoint: str | None = None,
                      allow_non_restored_state: bool = False) -> JobClient:
        """Submit the job and return a :class:`JobClient` immediately (see :meth:`execute`)."""
        job_graph = self.get_job_graph()
        return submit_job(job_graph, self._job_config(job_name, from_savepoint, allow_non_restored_state), self.address)

    def execute(self, job_name: str = "raystream-job", from_savepoint: str | None = None,
                allow_non_restored_state: bool = False) -> JobResult:
        """Run the job to its end (blocking) and return its :class:`JobResult`.

        ``from_savepoint`` starts from a savepoint (operators matched by ``uid``, keyed state
        re-split if the parallelism changed); ``allow_non_restored_state`` drops savepoint
        state of operators the job no longer has instead of failing.
        """
        return self.execute_async(job_name, from_savepoint, allow_non_restored_state).wait()

    def execute_and_collect(self, job_name: str = "raystream-job", as_table: bool = False) -> list | pa.Table:
        """Run the job and return what its single ``collect()`` sink received.

        If no sink was added, the most recently created stream is collected.
        """
        collect_nodes = [n for n in self.graph.nodes if n.kind == "sink" and isinstance(n.sink, CollectSink)]
        if not collect_nodes:
            last = self.graph.nodes[-1] if self.graph.nodes else None
            if last is None or last.kind == "sink":
                raise GraphError("execute_and_collect() needs a stream to collect: call .collect() on one")
            DataStream(self, last).collect()
            collect_nodes = [self.graph.nodes[-1]]
        if len(collect_nodes) > 1:
            raise GraphError("execute_and_collect() needs exactly one collect() sink; use execute() and JobResult.sink_results")
        result = self.execute(job_name)
        uid = collect_nodes[0].stable_uid(self.graph)
        batches = result.sink_results.get(uid, [])
        if as_table:
            if not batches:
                return pa.table({})
            return pa.Table.from_batches([b.replace_schema_metadata(None) for b in batches])
        return collected_records(batches)


class DataStream:
    """A stream of records: chain transformations on it, then end it in a sink."""

    def __init__(self, env: StreamEnvironment, node: Transformation, partitioner: Partitioner | None = None,
                 side_tag: str | None = None) -> None:
        self.env = env
        self.node = node
        self._partitioner = partitioner
        self._side_tag = side_tag

    def __reduce__(self):
        raise TypeError("DataStream lives in the driver and cannot be pickled")

    # ------------------------------------------------------------------ plumbing
    def _add(self, name: str, factory: Callable[[], Any], kind: str = "operator", keyed: bool = False,
             sink: Sink | None = None, schema_names: list[str] | None = None) -> Transformation:
        env = self.env
        node = Transformation(
            env.graph.next_id(), name, kind, env.parallelism,
            operator_factory=factory, sink=sink, keyed=keyed,
            inputs=[StreamEdge(self.node, self._partitioner, 0, side_tag=self._side_tag)],
        )
        node.schema_names = schema_names
        env.graph.add(node)
        return node

    def transform(self, name: str, operator_factory: Callable[[], Any], keyed: bool = False) -> "DataStream":
        """Append a custom :class:`~engine.operator.StreamOperator` (``operator_factory()`` builds it per task)."""
        _check_callable(operator_factory, "transform")
        return DataStream(self.env, self._add(name, operator_factory, keyed=keyed))

    # ------------------------------------------------------------------ event time (operators/time.py ...)
    def assign_timestamps_and_watermarks(self, strategy: Any) -> "DataStream":
        """Event timestamps and watermarks from a :class:`~operators.time.WatermarkStrategy`.

        Applied directly to a source stream, watermarks are generated per source split inside
        the reader; elsewhere by an operator after each batch.

        Example:
            >>> from operators.time import WatermarkStrategy
            >>> s = WatermarkStrategy.for_bounded_out_of_orderness(500).with_timestamp_column("ts")
            >>> # env.read_parquet("events.parquet").assign_timestamps_and_watermarks(s)
        """
        from .time import TimestampsAndWatermarksOperator, WatermarkedSource, WatermarkStrategy

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

    def window_all(self, assigner: Any) -> Any:
        """Windows over the whole stream (every record goes to one subtask, via a constant key)."""
        keyed = self.key_by(_constant_key)
        return keyed.window(assigner)

    def connect(self, other: Any) -> Any:
        """Connect with another stream (or a ``broadcast(descriptor)`` stream) for a
        CoProcessFunction / KeyedCoProcessFunction / BroadcastProcessFunction."""
        from .connected import BroadcastStream, ConnectedStreams

        if not isinstance(other, (DataStream, BroadcastStream)):
            raise GraphError(f"connect() expects a DataStream or BroadcastStream, got {type(other).__name__}")
        return ConnectedStreams(self, other)

    def join(self, other: "DataStream") -> Any:
        """Window join: ``a.join(b).where(k1).equal_to(k2).window(assigner).apply(fn(l, r))``."""
        from .joins import JoinedStreams

        return JoinedStreams(self, other)

    def co_group(self, other: "DataStream") -> Any:
        """Window co-group: ``...apply(fn(key, lefts, rights))``."""
        from .joins import JoinedStreams

        return JoinedStreams(self, other, co_group=True)

    # ------------------------------------------------------------------ record API
    def map(self, fn: Callable[[Any], Any]) -> "DataStream":
        """Apply ``fn`` to every record."""
        _check_callable(fn, "map")
        return DataStream(self.env, self._add("map", lambda: MapOperator(fn)))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]]) -> "DataStream":
        """Emit every element of ``fn(record)``."""
        _check_callable(fn, "flat_map")
        return DataStream(self.env, self._add("flat_map", lambda: FlatMapOperator(fn)))

    def filter(self, fn: Callable[[Any], bool]) -> "DataStream":
        """Keep the records for which ``fn`` is true."""
        _check_callable(fn, "filter")
        return DataStream(self.env, self._add("filter", lambda: FilterOperator(fn), schema_names=self.node.schema_names))

    # ------------------------------------------------------------------ batch API
    def map_batches(self, fn: Callable[[Any], Any], batch_format: str = "pyarrow") -> "DataStream":
        """Apply ``fn`` to whole batches (``"pyarrow"``: a RecordBatch; ``"numpy"``: a dict of
        arrays); it returns a RecordBatch, Table or dict of columns."""
        _check_callable(fn, "map_batches")
        if batch_format not in ("pyarrow", "numpy"):
            raise GraphError(f"batch_format must be 'pyarrow' or 'numpy', got {batch_format!r}")
        return DataStream(self.env, self._add("map_batches", lambda: MapBatchesOperator(fn, batch_format)))

    # ------------------------------------------------------------------ partitioning
    def key_by(self, key: str | int | Callable[[Any], Any]) -> "KeyedStream":
        """Partition by key: a column name, a tuple index or a function of the record."""
        selector = KeySelector(key)
        names = self.node.schema_names
        if isinstance(key, str) and names is not None and key not in names:
            raise GraphError(f"key_by({key!r}): no such column after {self.node.name!r}; columns are {names}")
        return KeyedStream(self.env, self.node, selector)

    def _repartition(self, partitioner: Partitioner) -> "DataStream":
        return DataStream(self.env, self.node, partitioner, self._side_tag)

    def get_side_output(self, tag: Any) -> "DataStream":
        """The records this operator emitted to side output ``tag`` (a str or an
        :class:`~operators.functions.OutputTag`; ``output.emit_side``)."""
        tag = getattr(tag, "tag_id", tag)
        if not isinstance(tag, str) or not tag:
            raise GraphError(f"side output tags are non-empty strings, got {tag!r}")
        return DataStream(self.env, self.node, None, tag)

    def close_feedback(self, tag: str, key: str | int | Callable[[Any], Any]) -> "DataStream":
        """Close a loop: this operator's side output ``tag`` comes back to its own input,
        hash-partitioned by ``key``. The feedback edge never blocks (no credit window) and the
        loop ends once every regular input has ended and no record circulates any more."""
        self.node.inputs.append(
            StreamEdge(self.node, KeyGroupPartitioner(KeySelector(key)), 0, feedback=True, side_tag=tag)
        )
        return self

    def rebalance(self) -> "DataStream":
        """Distribute batches round robin over the next operator's subtasks."""
        return self._repartition(RebalancePartitioner())

    def broadcast(self, *state_descriptors: Any) -> Any:
        """Send every record to every subtask of the next operator. With descriptors
        (MapStateDescriptor or names), a BroadcastStream declaring broadcast state, for
        ``other.connect(stream.broadcast(desc)).process(BroadcastProcessFunction)``."""
        if state_descriptors:
            from .connected import BroadcastStream

            names = [d if isinstance(d, str) else d.name for d in state_descriptors]
            return BroadcastStream(self, names)
        return self._repartition(BroadcastPartitioner())

    def forward(self) -> "DataStream":
        """Keep records on the same subtask index (requires equal parallelism)."""
        return self._repartition(ForwardPartitioner())

    def union(self, *others: "DataStream") -> "DataStream":
        """Merge streams with the same record type into one."""
        from .basic import (
            MapOperator as _Identity,  # union is an identity operator with many inputs
        )

        env = self.env
        streams = [self, *others]
        for s in others:
            if s.env is not env:
                raise GraphError("union() of streams from different StreamEnvironments")
        node = Transformation(env.graph.next_id(), "union", "operator", env.parallelism,
                              operator_factory=lambda: _Identity(_identity))
        node.inputs = [StreamEdge(s.node, s._partitioner or RebalancePartitioner(), 0) for s in streams]
        env.graph.add(node)
        return DataStream(env, node)

    # ------------------------------------------------------------------ node settings
    def name(self, name: str) -> "DataStream":
        """Set the operator's display name."""
        self.node.name = name
        return self

    def uid(self, uid: str) -> "DataStream":
        """Set a stable id used to match state in savepoints."""
        self.node.uid = uid
        return self

    def set_parallelism(self, parallelism: int) -> "DataStream":
        """Set this operator's parallelism."""
        if not isinstance(parallelism, int) or parallelism < 1:
            raise ConfigError(f"parallelism must be a positive int, got {parallelism!r}")
        self.node.parallelism = parallelism
        return self

    def disable_chaining(self) -> "DataStream":
        """Run this operator in its own task (no fusion with neighbours)."""
        self.node.chaining = False
        return self

    # ------------------------------------------------------------------ sinks
    def sink_to(self, sink: Sink, name: str | None = None) -> "DataStreamSink":
        """Write the stream to a user :class:`~engine.connectors.Sink`."""
        if not isinstance(sink, Sink):
            raise GraphError(f"sink_to() expects an engine.connectors.Sink, got {type(sink).__name__}")
        node = self._add(name or sink.describe(), lambda: SinkOperator(sink), kind="sink", sink=sink)
        return DataStreamSink(node)

    def collect(self) -> "DataStreamSink":
        """Send every record back to the driver (see ``execute_and_collect``)."""
        return self.sink_to(CollectSink(), "collect")

    def print(self, prefix: str = "") -> "DataStreamSink":
        """Print every record to stdout."""
        return self.sink_to(PrintSink(prefix), "print")

    def write_parquet(self, path: str) -> "DataStreamSink":
        """Write Parquet files under ``path`` (exactly once with checkpointing)."""
        return self.sink_to(ParquetSink(path), "write_parquet")

    def write_jsonl(self, path: str) -> "DataStreamSink":
        """Write JSON-lines files under ``path`` (exactly once with checkpointing)."""
        return self.sink_to(JsonLinesSink(path), "write_jsonl")

    def execute_and_collect(self, job_name: str = "raystream-job", as_table: bool = False) -> list | pa.Table:
        """Collect this stream and run the job (shortcut for notebooks)."""
        self.collect()
        return self.env.execute_and_collect(job_name, as_table=as_table)


def _identity(x: Any) -> Any:
    return x


def _constant_key(x: Any) -> int:
    return 0


class DataStreamSink:
    """The end of a stream; lets you name the sink or give it a uid."""

    def __init__(self, node: Transformation) -> None:
        self.node = node

    def name(self, name: str) -> "DataStreamSink":
        self.node.name = name
        return self

    def uid(self, uid: str) -> "DataStreamSink":
        self.node.uid = uid
        return self

    def set_parallelism(self, parallelism: int) -> "DataStreamSink":
        if not isinstance(parallelism, int) or parallelism < 1:
            raise ConfigError(f"parallelism must be a positive int, got {parallelism!r}")
        self.node.parallelism = parallelism
        return self

    def disable_chaining(self) -> "DataStreamSink":
        self.node.chaining = False
        return self


class KeyedStream(DataStream):
    """A stream partitioned by key; keyed operators see all records of a key in one subtask."""

    def __init__(self, env: StreamEnvironment, node: Transformation, selector: KeySelector) -> None:
        super().__init__(env, node, KeyGroupPartitioner(selector))
        self.selector = selector

    def _keyed(self, name: str, factory: Callable[[], Any], schema_names: list[str] | None = None) -> DataStream:
        node = self._add(name, factory, keyed=True, schema_names=schema_names)
        return DataStream(self.env, node)

    def reduce(self, fn: Callable[[Any, Any], Any]) -> DataStream:
        """Rolling reduce per key: emits ``fn(previous, record)`` for every record."""
        _check_callable(fn, "reduce")
        selector = self.selector
        return self._keyed("reduce", lambda: ReduceOperator(selector, fn))

    def _field_reduce(self, column: str | int, how: str) -> DataStream:
        def combine(acc: Any, r: Any) -> Any:
            a, b = acc[column], r[column]
            v = a + b if how == "sum" else (min(a, b) if how == "min" else max(a, b))
            if isinstance(acc, dict):
                out = dict(acc)
                out[column] = v
                return out
            if isinstance(acc, tuple) and not isinstance(column, str):  # (acc[column] raised for str)
                return acc[:column] + (v,) + acc[column + 1 :]
            raise TypeError(f"{how}({column!r}) needs dict or tuple records, got {type(acc).__name__}")

        combine.__name__ = f"{how}({column})"
        return self.reduce(combine).name(how)

    def sum(self, column: str | int) -> DataStream:
        """Rolling sum of ``column`` per key (other fields from the key's first record)."""
        return self._field_reduce(column, "sum")

    def min(self, column: str | int) -> DataStream:
        """Rolling minimum of ``column`` per key."""
        return self._field_reduce(column, "min")

    def max(self, column: str | int) -> DataStream:
        """Rolling maximum of ``column`` per key."""
        return self._field_reduce(column, "max")

    def aggregate(self, aggregations: dict[str, tuple[str, str]] | None = None, emit: str = "updates", **named: tuple[str, str]) -> DataStream:
        """Vectorized per-key aggregates on Arrow columns (the fast path).

        ``aggregate(total=("value", "sum"), n=("value", "count"))`` emits rows
        ``{key, total, n}``: for every batch the updated rows of the keys it touched
        (``emit="updates"``), or only the final rows at end of input (``emit="final"``).
        Functions: sum, count, min, max, mean. Requires a column key. With ``emit="final"``
        the aggregation runs in two phases (as Flink SQL's local-global aggregation): an
        ``aggregate (local)`` operator chained before the shuffle groups every batch by key,
        and the keyed ``aggregate`` merges those partials, so the exchange carries one row
        per key and batch and a hot key does not overload its subtask.
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
        if emit != "final":
            return self._keyed("aggregate", lambda: AggregateOperator(key, specs, emit), [key, *specs])
        # Two-phase (local-global) aggregation: each upstream batch is grouped by key before
        # the shuffle (chained to the upstream operator), the keyed operator merges partials.
        partial_names = [key, *(name for name, _col, _fn in layout._acc_names())]
        local = DataStream(self.env, self.node, None, self._side_tag)._add(
            "aggregate (local)", lambda: LocalAggregateOperator(key, specs), schema_names=partial_names,
        )
        local.parallelism = self.node.parallelism  # chained to the upstream operator
        keyed = KeyedStream(self.env, local, self.selector)
        return keyed._keyed("aggregate", lambda: AggregateOperator(key, specs, emit, partials=True), [key, *specs])

    def process(self, function: KeyedProcessFunction) -> DataStream:
        """Run a :class:`KeyedProcessFunction` with per-key state."""
        if not isinstance(function, KeyedProcessFunction):
            raise GraphError(f"process() expects a KeyedProcessFunction instance, got {type(function).__name__}")
        from .windowed_stream import find_timestamp_assigner

        selector = self.selector
        ts = find_timestamp_assigner(self.node)
        return self._keyed("process", lambda: KeyedProcessOperator(selector, function, ts))

    def window(self, assigner: Any) -> Any:
        """Cut the keyed stream into windows (see :class:`~operators.windowed_stream.WindowedStream`).

        Example:
            >>> # keyed.window(TumblingEventTimeWindows.of(1000)).aggregate(n=("value", "count"))
        """
        from .windowed_stream import WindowedStream

        return WindowedStream(self, assigner)

    def count_window(self, size: int) -> Any:
        """Tumbling count windows of ``size`` records per key."""
        from .windowed_stream import count_window

        return count_window(self, size)

    def interval_join(self, other: "KeyedStream") -> Any:
        """Interval join with another keyed stream: ``.between(lo, hi).process(fn(l, r))``."""
        from .joins import IntervalJoin

        if not isinstance(other, KeyedStream):
            raise GraphError(f"interval_join() expects a KeyedStream (key_by first), got {type(other).__name__}")
        return IntervalJoin(self, other)
