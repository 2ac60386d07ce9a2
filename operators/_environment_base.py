"""The ground floor of the DataStream API: the job being built and its one door into the engine.

:class:`StreamEnvironmentBase` is everything of a :class:`~operators.environment.StreamEnvironment`
that a stream needs to see: the logical graph under construction (every stream kind adds its
nodes through :meth:`~StreamEnvironmentBase.add_node`), the job's settings, and running the
job. It knows no stream class, so that every stream module can import it (and name its
type): the API modules import one way,

    _environment_base  <-  _stream_base  <-  connected, joins, windowed_stream
                       <-  datastream  <-  environment  <-  operators/__init__

and the source methods, which return a :class:`~operators.datastream.DataStream`, are added
on top by :class:`~operators.environment.StreamEnvironment`.

The only doors into the engine are plain data (:mod:`engine.config`), graph building
(:mod:`engine.graph`) and :func:`engine.client.submit`; the job master, the task runtime and
Ray stay behind :func:`~engine.client.submit`.

Example:
    >>> env = StreamEnvironmentBase(parallelism=2)
    >>> env.task_config.flush_ms, env.parallelism
    (50, 2)
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from typing import Any, Callable, TypeVar

import pyarrow as pa

import raystream.engine as engine_api  # JobClient/JobResult/submit load Ray on first use
from raystream.checkpoint.backends import state_backend_by_name
from raystream.checkpoint.coordinator import CheckpointConfig, ExternalizedCheckpointRetention
from raystream.checkpoint.storage import check_savepoint, resolve_storage, signing_key
from raystream.engine.collect import CloseableIterator, CollectServer
from raystream.engine.config import JobConfig, TaskConfig, check_channel_transport
from raystream.engine.connectors import Sink, SinkWriter, Source
from raystream.engine.errors import ConfigError, GraphError
from raystream.engine.graph import (
    JobGraph,
    StreamEdge,
    StreamGraph,
    Transformation,
    build_job_graph,
    connector_parallelism_limit,
)
from raystream.engine.keygroups import DEFAULT_MAX_PARALLELISM
from raystream.engine.operator import Clock, OperatorContext, StreamOperator
from raystream.engine.records import Batch
from raystream.engine.restart import RestartStrategy
from raystream.engine.sink_operator import GatedSinkOperator, SinkOperator
from raystream.engine.state_backend import StateBackend

from .sinks import CollectSink, PrintSink, StreamingCollectSink, collected_records, collected_table
from .time import duration_ms, shown_ms

log = logging.getLogger(__name__)

#: seconds an interrupted :meth:`StreamEnvironmentBase.execute` waits for its job's cancellation
_CANCEL_WAIT_S = 10.0

__all__ = ["StreamEnvironmentBase", "check_collect_args", "check_parallelism", "sink_operator_factory"]


E = TypeVar("E", bound="StreamEnvironmentBase")


def _end_status(client: engine_api.JobClient) -> str | None:
    """How ``client``'s job ended (``CANCELLED``...), or None if it has not or that cannot be told now."""
    try:
        status = client.status()
    except Exception:  # noqa: BLE001 - a master that does not answer: not known to have ended
        return None
    return status if status in ("FINISHED", "FAILED", "CANCELLED") else None


def _print_nodes(nodes: list[Transformation]) -> list[Transformation]:
    """The ``print()`` sink nodes among ``nodes``."""
    return [n for n in nodes if n.kind == "sink" and type(n.sink) is PrintSink]


class _RelayedPrintWriter(SinkWriter[object]):
    """Writes a print sink's lines (``"<prefix>k> record"``, as :class:`PrintSink` formats
    them) into the driver's :class:`~engine.client.OutputRelay` queue, one put per batch,
    waiting until the queue has them."""

    def __init__(self, ctx: OperatorContext, prefix: str, queue: Any) -> None:
        tag = f"{ctx.subtask_index + 1}> " if ctx.parallelism > 1 else ""
        self.prefix = f"{prefix}{tag}"
        self.queue = queue

    def write(self, batch: Batch) -> None:
        text = "".join(f"{self.prefix}{r}\n" for r in batch.records())
        if text:
            self.queue.put(text)


class _RelayedPrintSink(PrintSink):
    """A :class:`PrintSink` whose lines go to the driver's stdout through its job's
    :class:`~engine.client.OutputRelay`."""

    def __init__(self, prefix: str, queue: Any) -> None:
        super().__init__(prefix)
        self.queue = queue

    def create_writer(self, ctx: OperatorContext) -> SinkWriter[object]:
        return _RelayedPrintWriter(ctx, self.prefix, self.queue)


def check_parallelism(parallelism: object) -> int:
    """``parallelism`` if it is a positive int, else a :class:`ConfigError` quoting it."""
    if not isinstance(parallelism, int) or parallelism < 1:
        raise ConfigError(f"parallelism must be a positive int, got {parallelism!r}")
    return parallelism


def check_collect_args(as_table: bool, limit: int | None, stream: bool) -> None:
    """A :class:`ConfigError` (a ``ValueError``) for arguments of ``execute_and_collect`` that
    do not go together, or a ``limit`` that is not a number of records > 0."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ConfigError(f"execute_and_collect(limit=...) takes a number of records > 0, got {limit!r}")
    if stream and limit is not None:
        raise ConfigError("execute_and_collect(): give limit=N (a list of the first N records) or stream=True "
                          "(an iterator: take what you want from it, then close it), not both")
    if stream and as_table:
        raise ConfigError("execute_and_collect(stream=True) yields records; as_table=True goes with the "
                          "default or with limit=N")


def sink_operator_factory(sink: Sink) -> Callable[[], SinkOperator]:
    """The operator factory of a sink node (builds one :class:`SinkOperator` per task, or a
    :class:`GatedSinkOperator` for a sink whose writers may pause their input)."""
    if getattr(sink, "gates_input", False):
        return lambda: GatedSinkOperator(sink)
    return lambda: SinkOperator(sink)


class StreamEnvironmentBase:
    """The job being built: its logical graph, its settings, and how to run it.

    The constructor arguments are those of :class:`~operators.environment.StreamEnvironment`,
    which adds the sources; streams hold this part of it as their ``env``.
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
        channel_transport: str = "auto",
        buffer_bytes: int = 8 << 20,
    ) -> None:
        check_parallelism(parallelism)
        if not isinstance(max_parallelism, int) or not parallelism <= max_parallelism <= 32768:
            raise ConfigError(f"max_parallelism must be between parallelism and 32768, got {max_parallelism!r}")
        # (batch_size, buffer_bytes, flush_ms and credits: checked by TaskConfig, below)
        if isinstance(task_num_cpus, bool) or not isinstance(task_num_cpus, (int, float)) or task_num_cpus < 0:
            raise ConfigError(f"task_num_cpus must be a number >= 0 (CPUs Ray reserves per task executor), got {task_num_cpus!r}")
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        self.address = address
        self.task_config = TaskConfig(batch_size=batch_size, flush_ms=flush_ms, credits=credits,
                                      channel_transport=check_channel_transport(channel_transport),
                                      buffer_bytes=buffer_bytes)
        self.task_num_cpus = task_num_cpus
        self.slot_sharing = bool(slot_sharing)
        self.reuse_workers = bool(reuse_workers)
        self.graph = StreamGraph()
        # graph.nodes[:_ran] were part of a submitted job, the last one made of _last_job
        # (see _job_nodes: as Flink's execute(), a job runs what was added since the last one);
        # of the nodes that ran, the graph keeps only those a later job can take in without
        # reading from them (see _retire): node ids come from a counter of their own
        self._ran = 0
        self._next_id = 0
        self._last_job: list[Transformation] = []
        self.clock: Clock | None = None
        self.checkpoint_config: CheckpointConfig | None = None
        self.restart_strategy: RestartStrategy | None = None
        self.state_backend: StateBackend | None = None  # None: the registered default (heap)

    def __reduce__(self):
        raise TypeError("StreamEnvironment lives in the driver and cannot be pickled")

    # ------------------------------------------------------------------ graph building
    def add_node(
        self,
        name: str,
        kind: str,
        inputs: list[StreamEdge],
        *,
        operator_factory: Callable[[], StreamOperator] | None = None,
        keyed: bool = False,
        sink: Sink | None = None,
        source: Source | None = None,
        schema_names: list[str] | None = None,
        num_inputs: int = 1,
    ) -> Transformation:
        """Append a node (at the environment's default parallelism, capped to what its source
        or sink can run) fed by ``inputs``: the one place where the API adds source, operator
        and sink nodes to the graph."""
        node = Transformation(
            self._next_id, name, kind, self.parallelism,
            operator_factory=operator_factory, source=source, sink=sink, keyed=keyed, inputs=inputs,
        )
        limit = connector_parallelism_limit(node)
        if limit is not None:  # (a non-parallel source or sink: the default is capped)
            node.parallelism = min(node.parallelism, limit)
        node.num_inputs = num_inputs
        node.schema_names = schema_names
        self.graph.add(node)
        self._next_id += 1
        return node

    def add_sink(self, edge: StreamEdge, sink: Sink, name: str) -> Transformation:
        """Append a sink node writing what ``edge`` carries to ``sink``."""
        return self.add_node(name, "sink", [edge], operator_factory=sink_operator_factory(sink), sink=sink)

    def set_auto_watermark_interval(self: E, interval: int | dt.timedelta) -> E:
        """How often a user's ``WatermarkGenerator`` gets ``on_periodic_emit`` whether records
        came or not (Flink's ``ExecutionConfig.setAutoWatermarkInterval``; default 200 ms; 0:
        only after each batch). Takes ms or a ``timedelta``.

        Example:
            >>> import raystream as rs
            >>> rs.StreamEnvironment().set_auto_watermark_interval(50).get_auto_watermark_interval()
            50
        """
        ms = duration_ms(interval, "auto_watermark_interval")
        if ms is None or ms < 0:
            raise ConfigError(f"set_auto_watermark_interval() takes ms >= 0 or a timedelta, got {shown_ms(interval)}")
        self.task_config.auto_watermark_interval_ms = ms
        return self

    def get_auto_watermark_interval(self) -> int:
        """The ms between periodic watermark emits (:meth:`set_auto_watermark_interval`)."""
        return self.task_config.auto_watermark_interval_ms

    # ------------------------------------------------------------------ execution
    def enable_checkpointing(
        self: E,
        interval_ms: int,
        mode: str = "exactly_once",
        checkpoint_dir: str | None = None,
        timeout_ms: int = 60_000,
        min_pause_ms: int = 0,
        max_concurrent: int = 1,
        retained: int = 3,
        tolerable_failures: int | None = None,
        secret: bytes | str | None = None,
        externalized_checkpoint_retention: ExternalizedCheckpointRetention | str | None = None,
    ) -> E:
        """Take a barrier-aligned checkpoint every ``interval_ms``; failed tasks then restart
        from the latest complete one and results stay exactly once.

        ``checkpoint_dir`` is a local directory or any ``pyarrow.fs`` URI (``s3://bucket/x``);
        a Ray cluster needs storage all nodes reach. ``mode="at_least_once"`` skips barrier
        alignment. Example: ``env.enable_checkpointing(1000, checkpoint_dir="/tmp/chk")``.

        Checkpoint and savepoint files are pickles, and restoring one runs code: restore only
        from storage you trust, or give a job ``secret`` (default: the environment variable
        ``RAYSTREAM_CHECKPOINT_SECRET`` of this process). Every file is then signed with
        HMAC-SHA256, and a file whose signature is missing or wrong is refused on restore.

        ``externalized_checkpoint_retention``: what becomes of the job's checkpoints when it is
        cancelled or fails (a finished job deletes them): ``"RETAIN_ON_CANCELLATION"`` (the
        default: kept), ``"DELETE_ON_CANCELLATION"`` (kept only when it fails) or
        ``"NO_EXTERNALIZED_CHECKPOINTS"`` (never kept), as Flink's
        ``execution.checkpointing.externalized-checkpoint-retention``.
        """
        config = CheckpointConfig(
            interval_ms, mode, checkpoint_dir, timeout_ms, min_pause_ms, max_concurrent, retained, tolerable_failures,
            secret=secret,
        )
        if externalized_checkpoint_retention is not None:
            config.set_externalized_checkpoint_retention(externalized_checkpoint_retention)
        key = signing_key(config.secret)  # read here, on the driver: the job master may not see its environment
        if key is not None:
            assert config.checkpoint_dir is not None  # CheckpointConfig fills in the default
            # the job master builds its storage from checkpoint_dir, which may be a storage
            signed: Any = resolve_storage(config.checkpoint_dir, secret=key)
            config.checkpoint_dir = signed
        self.checkpoint_config = config
        self.task_config.exactly_once = mode == "exactly_once"
        return self

    def set_restart_strategy(self: E, strategy: RestartStrategy) -> E:
        """How failed jobs restart: ``RestartStrategy.none()``, ``.fixed_delay(attempts, delay_ms)``
        or ``.exponential_backoff(...)`` (default: fixed delay, 3 attempts, when checkpointing)."""
        if not isinstance(strategy, RestartStrategy):
            raise ConfigError(f"set_restart_strategy() expects a RestartStrategy, got {strategy!r}")
        self.restart_strategy = strategy
        return self

    def set_state_backend(self: E, backend: str | StateBackend) -> E:
        """Where keyed state lives: ``"heap"`` (the default: Python dicts, fastest while the
        state fits in memory) or ``"rocksdb"`` (an embedded RocksDB per keyed operator
        subtask: state larger than memory, incremental checkpoints; needs
        ``pip install raystream[rocksdb]``), or a configured backend object such as
        ``checkpoint.RocksDBStateBackend(cache_size=100_000)``. See docs/state.md.

        Example:
            >>> from raystream.operators import StreamEnvironment
            >>> env = StreamEnvironment().set_state_backend("heap")
            >>> env.state_backend
            HeapStateBackend()
        """
        if isinstance(backend, str):
            backend = state_backend_by_name(backend)
        elif not all(callable(getattr(backend, m, None)) for m in ("create_keyed_backend", "write_snapshot", "restore_plan")):
            raise ConfigError(f"set_state_backend() expects 'heap', 'rocksdb' or a StateBackend object, got {backend!r}")
        self.state_backend = backend
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
            state_backend=self.state_backend,
        )

    def _job_nodes(self) -> list[Transformation]:
        """The nodes of the job that the next :meth:`execute` runs, in creation order.

        As Flink's ``execute()``, which runs the transformations added since the last
        execution, a job runs the nodes added since the last submitted job of this
        environment (and old nodes that were given an input from one, e.g. a stateful
        functions dispatcher given a new ingress, with what they feed), together with every
        node they read from: a sink runs in one job, so a notebook cell that builds a
        pipeline on an environment of an earlier cell, run again, or a second pipeline, does
        not run the earlier pipelines and their sinks again. With nothing added since, the
        last job runs again (``env.execute()`` twice reruns a job; a restore
        ``env.execute(from_savepoint=sp)`` after ``stop_with_savepoint``).
        """
        nodes = self.graph.nodes
        if len(nodes) <= self._ran:
            return list(self._last_job)
        fresh = {n.id for n in nodes[self._ran:]}
        changed = True
        while changed:  # old nodes that read from a fresh one are fresh too
            changed = False
            for n in nodes[:self._ran]:
                if n.id not in fresh and any(e.source.id in fresh for e in n.inputs if e.source is not n):
                    fresh.add(n.id)
                    changed = True
        keep: dict[int, Transformation] = {}
        stack = [n for n in nodes if n.id in fresh]
        while stack:  # with everything they read from (also nodes the graph let go, see _retire)
            node = stack.pop()
            if node.id not in keep:
                keep[node.id] = node
                stack.extend(e.source for e in node.inputs)
        return [keep[i] for i in sorted(keep)]  # (ids count up in creation order)

    def _retire(self) -> None:
        """Let go of the nodes that ran which no later job can take in unless a new node reads
        from them (then it holds them, through its inputs).

        A node that ran joins a later job without being read from only when it reads from a
        node of that job (:meth:`_job_nodes`), and its inputs are fixed once it is built, but
        for the nodes a loop goes into (a feedback edge; a stateful functions dispatcher is
        given each new ingress): the graph keeps those and every node downstream of them. The
        others (a collection source with its records, a map with what its function captured,
        the sinks) stay as long as the user's streams do, so that an environment serving many
        notebook cells holds what its live streams and its last job need, not every pipeline
        it ever ran (Flink's ``execute()`` likewise clears the environment's transformations).
        """
        kept: set[int] = set()
        for node in self.graph.nodes:  # (creation order: a node's inputs come before it)
            if any(e.feedback or e.source.id in kept for e in node.inputs):
                kept.add(node.id)
        self.graph.nodes[:] = [n for n in self.graph.nodes if n.id in kept]
        self._ran = len(self.graph.nodes)

    def get_job_graph(self) -> JobGraph:
        """The chained job graph that the next :meth:`execute` deploys (for inspection): the
        operators added since the last job with what they read from, or the last job's
        (see :meth:`_job_nodes`)."""
        return self._job_graph(self._job_nodes())

    def _job_graph(self, nodes: list[Transformation], relay_queue: Any = None) -> JobGraph:
        """The job graph of ``nodes``; with ``relay_queue``, its ``print()`` sinks write into
        that queue (an :class:`~engine.client.OutputRelay`'s) instead of their tasks' stdout
        (the nodes themselves keep their sinks)."""
        graph = StreamGraph()
        for node in nodes:
            graph.add(node)
        printing = _print_nodes(nodes) if relay_queue is not None else []
        kept = [(n, n.sink, n.operator_factory) for n in printing]
        try:
            for node in printing:  # (the node's operator factory holds its sink too)
                assert isinstance(node.sink, PrintSink)
                node.sink = _RelayedPrintSink(node.sink.prefix, relay_queue)
                node.operator_factory = sink_operator_factory(node.sink)
            return build_job_graph(graph, self.max_parallelism)
        finally:
            for node, sink, factory in kept:
                node.sink, node.operator_factory = sink, factory

    def execute_async(self, job_name: str = "raystream-job", from_savepoint: str | None = None,
                      allow_non_restored_state: bool = False) -> engine_api.JobClient:
        """Submit the job and return a :class:`JobClient` immediately (see :meth:`execute`)."""
        if from_savepoint is not None:
            check_savepoint(from_savepoint)  # a wrong path fails now, before Ray starts
        nodes = self._job_nodes()
        # what print() sinks write comes to this process's stdout, all of it before the job's
        # end is reported (Ray's forwarding of the tasks' stdout lost or delayed it)
        relay = (lambda queue: self._job_graph(nodes, queue)) if _print_nodes(nodes) else None
        client = engine_api.submit(self._job_graph(nodes), self._job_config(job_name, from_savepoint,
                                                                            allow_non_restored_state),
                                   self.address, relay_output=relay)
        self._last_job = nodes
        self._retire()
        return client

    def execute(self, job_name: str = "raystream-job", from_savepoint: str | None = None,
                allow_non_restored_state: bool = False) -> engine_api.JobResult:
        """Run the job to its end (blocking) and return its :class:`JobResult`.

        ``from_savepoint`` starts from a savepoint (operators matched by ``uid``, keyed state
        re-split if the parallelism changed); ``allow_non_restored_state`` drops savepoint
        state of operators the job no longer has instead of failing.

        The job belongs to this call: interrupting it (Ctrl-C, a notebook's stop button)
        cancels the job, waits up to ``_CANCEL_WAIT_S`` for it to end (a second interrupt
        stops waiting), and raises ``KeyboardInterrupt`` saying so, raised here (not from
        inside Ray's ``ray.get``, whose frames are not the user's concern): an unbounded job
        is never left running unseen. :meth:`execute_async` returns a :class:`JobClient`
        instead, whose job runs on when its ``wait()`` is interrupted.
        """
        client = self.execute_async(job_name, from_savepoint, allow_non_restored_state)
        try:
            return client.wait()
        except KeyboardInterrupt:
            log.warning("interrupted: cancelling job %r", job_name)
        try:
            client.cancel()
            client.wait(timeout=_CANCEL_WAIT_S)
        except KeyboardInterrupt:  # a second interrupt: stop waiting
            pass
        except Exception:  # noqa: BLE001 - its JobCancelled (or how else it ended), or the wait's timeout
            pass
        status = _end_status(client)
        if status is not None:
            raise KeyboardInterrupt(f"job {job_name!r} interrupted: it ended ({status}), nothing of it runs") from None
        raise KeyboardInterrupt(
            f"job {job_name!r} interrupted: cancel requested, but it had not ended after {_CANCEL_WAIT_S:g} s; "
            "JobClient.list_running() shows it if it still runs") from None

    def execute_and_collect(self, job_name: str = "raystream-job", as_table: bool = False,
                            limit: int | None = None, stream: bool = False) -> Any:
        """Run the job and return what its single ``collect()`` sink received.

        If no sink was added, the most recently created stream is collected.

        * default: run the job to its end and return every record (a list, or one Arrow
          table with ``as_table=True``); an unbounded job never returns.
        * ``limit=N`` (Flink's ``executeAndCollect(jobName, limit)``): return the first ``N``
          records as soon as they have arrived, then cancel the job and wait for it to end
          (also for an unbounded source); a job that ends before returns all it wrote.
        * ``stream=True`` (Flink's ``executeAndCollect()`` ``CloseableIterator``): return a
          :class:`~engine.collect.CloseableIterator` at once, whose iteration yields the
          records as the sink writes them; ``close()``, the end of a ``with`` block or of a
          ``for`` loop over it cancels the job; a failed job raises from it.

        With ``limit`` or ``stream``, records reach the driver while the job runs, over a
        bounded path (a slow consumer holds the job back); with checkpointing, each
        checkpoint's records once it completes (exactly once across restarts), without,
        each record as it is written (a restart, with a restart strategy set, replays the
        job: at least once). See docs/fault_tolerance.md#collecting-a-running-job.

        Example:
            >>> env.generate(lambda i: i * i).execute_and_collect(limit=3)   # doctest: +SKIP
            [0, 1, 4]
        """
        check_collect_args(as_table, limit, stream)
        node = self._collect_node()
        if stream:
            return self._collect_stream(job_name, node)
        if limit is not None:
            with self._collect_stream(job_name, node) as records:
                if not as_table:
                    return list(itertools.islice(records, limit))
                batches: list[pa.RecordBatch] = []
                rows = 0
                while rows < limit:
                    batch = records.next_batch()
                    if batch is None:
                        break
                    batch = batch.slice(0, limit - rows)
                    batches.append(batch)
                    rows += batch.num_rows
                return collected_table(batches)
        result = self.execute(job_name)
        uid = node.stable_uid(self.graph)
        batches = result.sink_results.get(uid, [])
        return collected_table(batches) if as_table else collected_records(batches)

    def _collect_node(self) -> Transformation:
        """The job's single ``collect()`` sink node (added to the newest stream if it has none)."""
        collect_nodes = [n for n in self._job_nodes() if n.kind == "sink" and isinstance(n.sink, CollectSink)]
        if not collect_nodes:
            last = self.graph.nodes[-1] if len(self.graph.nodes) > self._ran else None
            if last is None or last.kind == "sink":
                raise GraphError("execute_and_collect() needs a stream to collect: call .collect() on one")
            collect_nodes = [self.add_sink(StreamEdge(last, None, 0), CollectSink(), "collect")]
        if len(collect_nodes) > 1:
            uids = [n.stable_uid(self.graph) for n in collect_nodes]
            raise GraphError(
                f"execute_and_collect() needs exactly one collect() sink, this job has {len(collect_nodes)} "
                f"(uids {uids}); run it with result = env.execute() and read each sink's records with "
                "raystream.operators.sinks.collected_records(result.sink_results[uid]) (name them: .collect().uid(...))"
            )
        return collect_nodes[0]

    def _collect_stream(self, job_name: str, node: Transformation) -> CloseableIterator:
        """Submit the job with ``node``'s collect sink sending to a new driver-side server, and
        return the iterator over what arrives. The sink runs as a task of its own (its input
        can then be paused while the driver does not keep up: ``GatedSinkOperator``)."""
        server = CollectServer(self.address)
        sink = StreamingCollectSink(server.endpoint, max_bytes=self.task_config.buffer_bytes)
        kept = node.sink, node.operator_factory, node.chaining
        node.sink, node.operator_factory, node.chaining = sink, sink_operator_factory(sink), False
        try:
            client = self.execute_async(job_name)
        except BaseException:
            server.close()
            raise
        finally:
            node.sink, node.operator_factory, node.chaining = kept
        return CloseableIterator(client, server, node.stable_uid(self.graph))
