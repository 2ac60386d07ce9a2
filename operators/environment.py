"""StreamEnvironment: where a job starts (its sources) and how it runs.

The top of the DataStream API: the sources return a :class:`~operators.datastream.DataStream`,
so this module imports the stream kinds and nothing imports it but the package's
``__init__``. The graph, the job's settings and execution come from
:class:`~operators._environment_base.StreamEnvironmentBase`, the part of the environment that
the streams see (and can import, with no cycle).

Example:
    >>> env = StreamEnvironment(parallelism=2)
    >>> env.from_collection([1, 2, 3]).map(lambda x: x * 10).execute_and_collect()  # doctest: +SKIP
    [10, 20, 30]
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from raystream.engine.connectors import Source
from raystream.engine.errors import GraphError, short_repr

from ._environment_base import StreamEnvironmentBase
from .datastream import DataStream
from .sources import DEFAULT_LINGER_MS, CollectionSource, GeneratorSource, ParquetSource, TextSource
from .time import WatermarkStrategy

__all__ = ["StreamEnvironment", "StreamExecutionEnvironment"]

#: Flink environment methods raystream spells differently: what to write instead
_FLINK_ENV_NAMES = {
    "set_parallelism": "StreamEnvironment(parallelism=n) (or StreamExecutionEnvironment.get_execution_environment("
                       "parallelism=n)); per operator: stream.set_parallelism(n)",
    "set_max_parallelism": "StreamEnvironment(max_parallelism=m)",
    "add_source": "env.from_source(source) with a raystream Source",
    "from_elements": "env.from_collection([...])",
    "get_checkpoint_config": "the arguments of env.enable_checkpointing(interval_ms, checkpoint_dir=, timeout_ms=, "
                             "min_pause_ms=, max_concurrent=, retained=, tolerable_failures=)",
    "set_runtime_mode": "nothing: a bounded input runs to its end and the job finishes; for each key's final value "
                        "once (BATCH mode's output) give keyed sum/min/max/reduce/aggregate emit='final'",
    "set_stream_time_characteristic": "nothing: event time comes with stream.assign_timestamps_and_watermarks(strategy)",
    "get_config": "the environment's own settings: env.set_auto_watermark_interval(ms) for ExecutionConfig's "
                  "set_auto_watermark_interval, StreamEnvironment(parallelism=, max_parallelism=) for the others",
    "set_buffer_timeout": "StreamEnvironment(flush_ms=ms): how long a partly filled output buffer may wait (0: flush "
                          "after every batch; Flink's -1, flush only when full, has no spelling: a large flush_ms)",
    "get_parallelism": "env.parallelism (an attribute; set it with StreamEnvironment(parallelism=n))",
    "get_max_parallelism": "env.max_parallelism (an attribute)",
    "read_text_file": "env.read_text(path_or_glob, encoding=...) (a file, a directory or a glob)",
    "from_sequence": "env.from_collection(range(start, end + 1)) (Flink's bounds are inclusive), or env.generate(n) for "
                     "0..n-1 read in parallel",
    "disable_operator_chaining": "stream.disable_chaining() on each operator that must run in a task of its own "
                                 "(there is no environment-wide switch)",
    "get_execution_plan": "env.get_job_graph().describe() (the chained tasks and each network edge's partitioner)",
    "add_python_file": "ray.init(runtime_env={'py_modules': [...]}) before the first job (or raystream submit "
                       "--working-dir / --runtime-env), or cloudpickle.register_pickle_by_value(module) before the job is built",
    "set_python_requirements": "ray.init(runtime_env={'pip': [...]}) before the first job (or raystream submit "
                               "--runtime-env '{\"pip\": [...]}')",
    "add_jars": "nothing: there is no JVM; connectors are Python Sources and Sinks (env.from_source, stream.sink_to)",
    "close": "nothing: a job's actors end with it; raystream.shutdown_workers() ends the idle pooled workers now",
}


class StreamEnvironment(StreamEnvironmentBase):
    """Builds and runs a streaming job.

    Args:
        parallelism: default number of parallel tasks per operator.
        max_parallelism: number of key groups (upper bound for rescaling keyed state).
        address: Ray address to connect to (None: an embedded local Ray unless one is connected).
        batch_size: rows per network batch; flush_ms: buffer timeout; credits: in-flight
            sends per channel (back-pressure window).
        buffer_bytes: about the most bytes of records per network batch (default 8 MiB):
            large records go a few at a time, and a task calls its chain on slices of an
            input batch when the chain writes more than that per call (a map from ids to
            images), so it holds about one buffer of them.
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
        channel_transport: how data travels between tasks of different executors: ``"auto"``
            (default) over a Unix domain socket between executors on the same node and
            through Ray actor calls otherwise; ``"ray"``: always Ray actor calls.

    Example:
        >>> env = StreamEnvironment(parallelism=2)
        >>> env.from_collection([1, 2, 3]).map(lambda x: x * 10).execute_and_collect()  # doctest: +SKIP
        [10, 20, 30]
    """

    @classmethod
    def get_execution_environment(cls, **settings: Any) -> StreamEnvironment:
        """A new environment, as PyFlink's ``StreamExecutionEnvironment.get_execution_environment()``
        (``settings``: this class's arguments, e.g. ``parallelism=2``; default parallelism 1).

        Example:
            >>> StreamExecutionEnvironment.get_execution_environment(parallelism=2).parallelism
            2
        """
        return cls(**settings)

    def __getattr__(self, name: str) -> Any:
        # (only for names not found: Flink's spelled differently here say what to write)
        remedy = _FLINK_ENV_NAMES.get(name)
        if remedy is not None:
            raise AttributeError(f"StreamEnvironment has no {name}() (Flink's {name}): write {remedy}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ sources
    def _source(self, source: Source, name: str | None, schema_names: list[str] | None = None) -> DataStream:
        """A source node for ``source``, named ``name`` (None: the source's own description)."""
        if not isinstance(source, Source):
            raise GraphError(f"from_source() expects an engine.connectors.Source, got {type(source).__name__}")
        return DataStream(self, self.add_node(name or source.describe(), "source", [], source=source,
                                              schema_names=schema_names))

    def from_collection(self, collection: Iterable[Any], batch_size: int = 8192, type_info: Any = None) -> DataStream:
        """A bounded stream of the records of ``collection`` (PyFlink's ``from_collection(collection=...)``).

        ``type_info`` (PyFlink's ``Types``) is refused with what to write instead: records
        keep their Python types here (tuples stay tuples, dicts give named fields)."""
        if type_info is not None:
            raise GraphError(
                f"from_collection(type_info={type_info!r}): raystream takes no type information, records keep their "
                "Python types; drop type_info= (for named fields, as PyFlink's Types.ROW_NAMED, give dicts)"
            )
        _positive("from_collection", "batch_size", batch_size)
        try:
            items = list(collection)
        except TypeError as exc:
            raise GraphError(f"from_collection() expects an iterable of records, got {type(collection).__name__}: {exc}") from exc
        return self._source(CollectionSource(items, batch_size), "from_collection", _shared_fields(items))

    def read_parquet(self, path_or_glob: str, batch_size: int = 65536, columns: list[str] | None = None) -> DataStream:
        """A bounded, columnar stream of Parquet files (path, directory, glob or URI)."""
        _positive("read_parquet", "batch_size", batch_size)
        src = ParquetSource(path_or_glob, batch_size, columns)
        return self._source(src, "read_parquet", columns or src.schema.names)

    def read_text(self, path_or_glob: str, batch_size: int = 8192, encoding: str = "utf-8") -> DataStream:
        """A bounded stream of the lines of text files (split at ``\\n``; a ``\\r`` before it
        is dropped), decoded with ``encoding`` (UTF-8 and the like, or UTF-16/32; see docs/connectors.md)."""
        _positive("read_text", "batch_size", batch_size)
        return self._source(TextSource(path_or_glob, batch_size, encoding=encoding), "read_text")

    def generate(self, fn_or_count: Callable[[int], Any] | int | None = None, count: int | None = None,
                 rate: float | None = None, batch_size: int = 8192,
                 batch_fn: Callable[[range], Any] | None = None, linger_ms: float = DEFAULT_LINGER_MS) -> DataStream:
        """``generate(n)``: 0..n-1; ``generate(fn, count=n)``: fn(i); ``generate(fn)``: unbounded.
        ``rate`` limits records per second (over all subtasks). ``batch_fn`` instead of ``fn``:
        one call per source batch with the subtask's range of indices, returning a list of
        records or an Arrow RecordBatch/Table (a columnar stream). ``linger_ms``: a batch of
        ``fn`` calls goes out once making it took that long (see
        :class:`~operators.sources.GeneratorSource`); a large value cuts batches by
        ``batch_size`` alone, so where a watermark falls (after each batch) does not depend on
        how fast ``fn`` ran, e.g. for out-of-order data whose late records must be the same
        in every run.

        Example:
            >>> env = StreamEnvironment()
            >>> squares = env.generate(batch_fn=lambda idx: [i * i for i in idx], count=4)
        """
        if isinstance(fn_or_count, bool):  # an int, but surely not meant as a count
            raise GraphError(f"generate() expects a count or a function, got {fn_or_count!r}")
        _positive("generate", "batch_size", batch_size)
        fn: Callable[[int], Any] | None
        if isinstance(fn_or_count, int):
            if count is not None:
                raise GraphError(f"generate({fn_or_count!r}, count={count!r}): give the count once, as "
                                 "generate(n) or generate(fn, count=n)")
            fn, count = None, fn_or_count
        else:
            fn = fn_or_count
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise GraphError(f"generate(): count must be an int >= 0 (None: unbounded), got {count!r}")
        return self._source(GeneratorSource(fn, count, rate, batch_size, batch_fn=batch_fn, linger_ms=linger_ms), "generate")

    def from_source(self, source: Source, watermark_strategy: WatermarkStrategy | str | None = None,
                    source_name: str | None = None, type_info: Any = None, *, name: str | None = None) -> DataStream:
        """A stream from a user :class:`~engine.connectors.Source`, named ``name`` (or PyFlink's
        ``source_name``; default: the source's description).

        As PyFlink's ``env.from_source(source, watermark_strategy, source_name)``: a
        ``watermark_strategy`` is applied to the source stream
        (``assign_timestamps_and_watermarks``: timestamps and watermarks per source split);
        None or ``WatermarkStrategy.no_watermarks()`` gives records without event timestamps. A str in
        its place is the name (``from_source(source, "orders")``). ``type_info`` is refused,
        as in :meth:`from_collection`.

        Example:
            >>> from raystream.operators.sources import CollectionSource
            >>> from raystream.operators.time import WatermarkStrategy
            >>> env = StreamEnvironment()
            >>> ws = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[0])
            >>> env.from_source(CollectionSource([(5, "a")]), ws, "events").node.name
            'events'
        """
        if isinstance(watermark_strategy, str):
            if source_name is not None or name is not None:
                raise GraphError(
                    f"from_source(): the second argument {watermark_strategy!r} is a name, and a name is given as "
                    f"well ({source_name or name!r}); pass a WatermarkStrategy (or None) second, the name third"
                )
            watermark_strategy, name = None, watermark_strategy
        if watermark_strategy is not None and not isinstance(watermark_strategy, WatermarkStrategy):
            raise GraphError(
                f"from_source(): watermark_strategy must be a raystream WatermarkStrategy or None (records without "
                f"event timestamps), got {short_repr(watermark_strategy, 80)}"
            )
        if source_name is not None and name is not None and source_name != name:
            raise GraphError(f"from_source(): source_name={source_name!r} and name={name!r}: give one")
        if type_info is not None:
            raise GraphError(
                f"from_source(type_info={short_repr(type_info, 60)}): raystream takes no type information, records "
                "keep their Python types; drop type_info"
            )
        stream = self._source(source, name if name is not None else source_name)
        if watermark_strategy is not None and not watermark_strategy.emits_nothing:  # (no_watermarks(): as None)
            stream = stream.assign_timestamps_and_watermarks(watermark_strategy)
        return stream


#: PyFlink's name of the environment (``StreamExecutionEnvironment.get_execution_environment()``)
StreamExecutionEnvironment = StreamEnvironment


def _positive(method: str, name: str, value: Any) -> None:
    """``value`` must be an int >= 1 (a batch size of 0 would never advance a reader)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GraphError(f"{method}(): {name} must be an int >= 1, got {value!r}")


def _shared_fields(items: list[Any]) -> list[str] | None:
    """The fields of ``items`` when they are dicts that all have the same keys (the graph then
    checks the columns a key, an aggregate or a timestamp names when it is built), else None
    (checked per record as the job runs). Taken from the first record alone, a field only later
    records have was refused when the graph was built ("no column 'v'; columns are [...]").

    >>> _shared_fields([{"k": 1, "v": 2}, {"v": 3, "k": 4}]), _shared_fields([{"k": 1}, {"k": 2, "v": 3}])
    (['k', 'v'], None)
    """
    if not items or type(items[0]) is not dict:
        return None
    first = items[0].keys()
    if all(type(r) is dict and r.keys() == first for r in items):
        return list(first)
    return None
