"""The task: one parallel instance of a chain of operators, run by a single-thread mailbox loop.

A :class:`Task` is a plain Python object (no Ray): :mod:`engine.ray_runtime` wraps it in an
actor, and tests can run several tasks in one process with :class:`~engine.channels.LocalSender`.

Threading: ``deliver`` and ``post`` may be called from any thread; they only enqueue a
mail. Everything else (operators, state, outputs, barrier alignment) runs on the thread
that called :meth:`Task.run` — the mailbox thread.

Input channels are numbered; each send carries a sequence number so the task restores
the producer's order even if the transport reorders calls. A send is acknowledged when
every item in it has been processed (credit-based back-pressure), so a channel blocked
by barrier alignment stops its producer.
"""

from __future__ import annotations

import logging
import pickle
import queue
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, TypeVar

import cloudpickle
import pyarrow as pa

from .channels import (
    Cancelled,
    ChannelSender,
    InputChannel,
    InputInfo,
    NetworkOutput,
    OutputInfo,
    RecordWriter,
)
from .config import TaskConfig
from .connectors import END_OF_INPUT, NOTHING_AVAILABLE, Source, SourceReader, split_key
from .errors import (
    CheckpointError,
    ConfigError,
    JobFailed,
    UserCodeError,
    refuses_state,
    short_repr,
)
from .events import MAX_WATERMARK, MIN_WATERMARK, Barrier, EndOfInput, StreamStatus, Watermark
from .keygroups import KeyGroupRange
from .operator import OperatorContext, StreamOperator, SystemClock
from .records import Batch
from .serde import dumps
from .state_backend import StateBackend
from .timer_queue import ScheduledTimer, TimerQueue
from .watermark_valve import WatermarkValve

__all__ = ["TaskConfig", "TaskSpec", "InputInfo", "OutputInfo", "Task", "TaskResult", "TaskHooks", "CheckpointHooks"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


#: rows of the first call of a task's head operator, before what a row writes is known
PROBE_ROWS = 64
_UNSLICED = 1 << 62


@dataclass
class TaskSpec:
    """Everything one task needs (picklable; built by the job master)."""

    job_id: str
    vertex_id: int
    name: str
    subtask_index: int
    parallelism: int
    max_parallelism: int
    chain: list[dict]
    inputs: list[InputInfo]
    outputs: list[OutputInfo]
    config: TaskConfig
    source: Source | None = None
    splits: list = field(default_factory=list)
    # each split's ordinal in its source's order (parallel to ``splits``; kept in checkpoints
    # with the split positions, so that restored splits are read in the source's order)
    split_order: list = field(default_factory=list)
    attempt: int = 0
    restore: dict | None = None  # op uid -> restored states (see checkpoint coordinator)
    clock: Any = None
    state_backend: StateBackend | None = None  # creates keyed state backends (engine.state_backend)
    checkpointing: bool = False  # the job takes checkpoints (OperatorContext.checkpointing)
    # snapshots being written at once beyond which the task declines a checkpoint at its
    # barrier, taking none (storage slower than the checkpoints: they never pile up in memory)
    max_snapshots_in_flight: int = 2

    @property
    def task_name(self) -> str:
        return f"{self.name} ({self.subtask_index + 1}/{self.parallelism})"


@dataclass
class TaskResult:
    """What a finished task reports: per-operator metrics, final committables, and the state
    that stands in for the task in checkpoints taken after it finished (FLIP-147): per
    operator uid ``{"op": bytes}`` (source positions at their end, operator state); keyed
    state is not kept, the task emitted everything it had."""

    vertex_id: int
    subtask_index: int
    metrics: dict
    committables: dict  # op uid -> list of committables from end of input
    final_state: dict = field(default_factory=dict)


class TaskHooks:
    """How a task reports to its job master (implemented by the runtime; no-ops by default)."""

    def acknowledge(self, checkpoint_id: int, vertex_id: int, subtask: int, state: dict) -> None:
        """All operators of the task snapshotted ``checkpoint_id``; ``state`` holds the snapshot."""

    def decline(self, checkpoint_id: int, vertex_id: int, subtask: int, reason: str,
                committables: dict | None = None) -> None:
        """The task could not take ``checkpoint_id``. ``committables`` (sink uid -> list):
        what its sinks had already handed over at the barrier; the master retains them."""

    def report_idle(self, vertex_id: int, subtask: int) -> None:
        """A task on a feedback loop has no work left once its regular inputs ended; the
        master then probes all tasks of the loop to detect termination."""

    def snapshots_in_flight(self) -> int:
        """Snapshots of the task handed to :meth:`acknowledge` and not yet written to
        checkpoint storage (the task declines new checkpoints while too many are)."""
        return 0

    def wait_snapshots_written(self) -> None:
        """Block until every snapshot handed to :meth:`acknowledge` so far is written (or
        failed). The task calls this as it closes, before it closes its keyed state
        backends: a snapshot being written may still read a backend's local files (a
        RocksDB checkpoint's SST files, the directory of a delta's base)."""


CheckpointHooks = TaskHooks  # older name


#: the item types that carry records through a channel (Batch: handed over in process)
_DATA = (pa.RecordBatch, Batch)


def _control_behind(items: Any) -> bool:
    """Whether a barrier or the end of input waits in a channel's items."""
    return any(type(item) is Barrier or type(item) is EndOfInput for item in items)


class _Ack:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn


class _OperatorMetrics:
    __slots__ = ("records_in", "records_out", "batches_in", "busy_s")

    def __init__(self) -> None:
        self.records_in = 0
        self.records_out = 0
        self.batches_in = 0
        self.busy_s = 0.0

    def as_dict(self) -> dict:
        return {
            "records_in": self.records_in,
            "records_out": self.records_out,
            "batches_in": self.batches_in,
        }


class _ChainOutput:
    """Output of operator i: calls operator i+1 directly (no serialization)."""

    def __init__(self, task: "Task", index: int) -> None:
        self.task = task
        self.idle = False  # the stream status of operator ``index``'s output
        self.next_index = index + 1
        self.metrics = task.op_metrics[index]
        self.next_metrics = task.op_metrics[index + 1]

    def emit(self, batch: Batch) -> None:
        n = len(batch)
        if not n:
            return
        self.metrics.records_out += n
        self.next_metrics.records_in += n
        self.next_metrics.batches_in += 1
        self.task._call_operator(self.next_index, batch, 0)

    def emit_watermark(self, watermark: Watermark) -> None:
        if self.idle:  # (Flink: an idle output carries no watermark)
            return
        self.task.operators[self.next_index].process_watermark(watermark, 0)

    def emit_watermark_status(self, idle: bool) -> None:
        """The previous operator's output became idle or active again: the next operator
        sees it (``process_watermark_status(idle, 0)``, or it passes on)."""
        if idle != self.idle:
            self.idle = idle
            self.task._status_to(self.next_index, idle, 0)

    def emit_side(self, tag: str, batch: Batch) -> None:
        self.task.network.emit_side(tag, batch)  # side outputs never chain


class _TaskOutput:
    """Output of a chain's last operator (or of a source without one): the task's network
    output, plus the stream status the task announced downstream. A change of status goes
    to every output channel but the feedback edges (:class:`StreamStatus`); while the task
    is idle, no watermark leaves it (as Flink's ``RecordWriterOutput``)."""

    def __init__(self, network: NetworkOutput) -> None:
        self.network = network
        self.emit = network.emit  # (records and side outputs as they are: no extra call per batch)
        self.emit_side = network.emit_side
        self.idle = False

    def emit_watermark(self, watermark: Watermark) -> None:
        if not self.idle:
            self.network.emit_watermark(watermark)

    def emit_watermark_status(self, idle: bool) -> None:
        if idle == self.idle:
            return
        self.idle = idle
        own = getattr(self.network, "emit_watermark_status", None)
        if own is not None:  # (an output that takes statuses itself: a test's)
            own(idle)
            return
        for w in getattr(self.network, "writers", ()):
            if not w.info.feedback:  # event time of a loop is driven by its regular inputs
                w.send_event(StreamStatus(idle))


def _check_picklable(obj: Any) -> None:
    """Raise what pickling ``obj`` raises (pickle, then cloudpickle, as its way to the master
    goes), without copying its buffers: Arrow and numpy data go out of band to a callback
    that drops them (a collect sink's committables are its whole output; 4M ints: 18 ms and
    32 MB in band, 0.1 ms out of band)."""
    try:
        pickle.dumps(obj, protocol=5, buffer_callback=_drop)
        return
    except (pickle.PicklingError, TypeError, AttributeError):
        pass
    cloudpickle.dumps(obj, protocol=5, buffer_callback=_drop)


def _drop(_buffer: Any) -> None:
    """A pickle ``buffer_callback`` keeping nothing (the data is not needed, only whether it pickles)."""


class Task:
    """One parallel instance of a job vertex. See the module docstring."""

    def __init__(
        self,
        spec: TaskSpec,
        senders: list[list[ChannelSender]],
        hooks: TaskHooks | None = None,
        output: NetworkOutput | None = None,
    ) -> None:
        self.spec = spec
        self.senders = senders
        self.hooks = hooks or TaskHooks()
        self._output = output  # replaces the network output (the operator test harness collects there)
        self._mailbox: queue.SimpleQueue = queue.SimpleQueue()
        self._channels = [InputChannel(i, info) for i, info in enumerate(spec.inputs)]
        self._gated_start = 0  # where a paused operator's next round over the channels starts
        self._cancelled = False  # the mailbox loop ends (see cancel())
        self._cancel_asked = False  # cancel() was called: a wait for credit ends at once
        self._finished = False
        self.operators: list[StreamOperator] = []
        self.op_specs = [op for op in spec.chain if op.get("kind") != "source"]
        self.op_metrics = [_OperatorMetrics() for _ in range(len(self.op_specs) + 1)]
        self._source_reader: SourceReader | None = None
        self._keyed_backends: list[Any] = []  # created in _open, closed by _close
        self._source_metrics: dict[str, int] = {}  # the source reader's OperatorContext.metrics
        self._split_order: dict[Any, int] = {}  # split_key -> ordinal in the source's order
        self._aligning: int | None = None  # checkpoint id being aligned
        self._barriers_seen: set[int] = set()
        self._input_watermarks: dict[int, int] = {}
        # event time and stream status per input, from its regular channels (feedback edges
        # carry no event time)
        by_input: dict[int, list[int]] = {}
        for ch in self._channels:
            if not ch.info.feedback:
                by_input.setdefault(ch.info.input_index, []).append(ch.index)
        self._valves = {i: WatermarkValve(chs) for i, chs in by_input.items()}
        self._outputs: list[Any] = []  # per operator of the chain, its output (set in _open)
        # processing-time callbacks; cancelled ones are freed (engine.timer_queue)
        self._timers = TimerQueue()
        self._state_cleanup_at = 0.0  # monotonic time of the next background TTL sweep
        self._cleanup_backends: list | None = None  # keyed backends swept (found on first use)
        self.clock = spec.clock or SystemClock()
        self.last_checkpoint_id = 0
        self._regular = [c for c in self._channels if not c.info.feedback]
        self._feedback = [c for c in self._channels if c.info.feedback]
        self._feedback_done = not self._feedback
        self._reported_idle = False
        self.feedback_received = 0
        self._source_wm = MIN_WATERMARK
        self._source_idle = False
        self._head_rows: dict[int, int] = {}  # input index -> rows per call of the head operator (see _call_head)
        self._sliced_head = False  # whether _call_head slices: the chain writes to channels (set in _open)
        self._fb_barriers: dict[int, set] = {}  # checkpoint id -> feedback channels whose barrier came early
        self._fb_logging: tuple | None = None  # (checkpoint id, channels still logging, log, state)
        self._replay: list = []  # feedback records restored from a checkpoint, processed first
        self._stopped_at: int | None = None  # stop-with-savepoint: the barrier id the task stopped at
        self._deferred_trigger: Barrier | None = None  # a trigger that waits for the inputs' end (FLIP-147)

    # ------------------------------------------------------------------ thread-safe entry points
    def deliver(self, channel: int, seq: int, items: list, ack: Callable[[], None]) -> None:
        """Enqueue a send from upstream channel ``channel`` (any thread)."""
        self._mailbox.put(("data", channel, seq, items, ack))

    def post(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the mailbox thread (any thread)."""
        self._mailbox.put(("call", fn))

    def cancel(self) -> None:
        """Stop the task at the next mailbox step, also when blocked on back-pressure. A task
        stopped at a savepoint barrier stops in mailbox order instead: the savepoint's
        ``notify_checkpoint_complete``, which the master sends before the cancel, runs first
        (a loop that saw the flag before it took that mail out ended without it, and a sink
        that publishes on it lost the savepoint's output). A wait for credit ends at once
        either way (:attr:`cancelled`): a posted call of a stopped task may be sending."""
        self._cancel_asked = True
        if self._stopped_at is not None:
            self._mailbox.put(("call", self._set_cancelled))
            return
        self._set_cancelled()

    def _set_cancelled(self) -> None:
        self._cancelled = True
        self._mailbox.put(("call", lambda: None))

    @property
    def cancelled(self) -> bool:
        """Whether the task was cancelled (its senders stop waiting for credit)."""
        return self._cancelled or self._cancel_asked

    # ------------------------------------------------------------------ setup
    def _make_context(self, op: dict) -> OperatorContext:
        s = self.spec
        return OperatorContext(
            operator_name=op["name"],
            operator_uid=op["uid"],
            task_name=s.task_name,
            subtask_index=s.subtask_index,
            parallelism=s.parallelism,
            max_parallelism=s.max_parallelism,
            key_group_range=KeyGroupRange.for_subtask(s.subtask_index, s.parallelism, s.max_parallelism),
            attempt=s.attempt,
            restored=s.restore is not None,
            clock=self.clock,
            current_watermark=self.current_watermark,
            register_processing_timer=self.register_processing_timer,
            post=self.post,
            checkpointing=self.spec.checkpointing,
            buffer_bytes=self.spec.config.buffer_bytes,
            auto_watermark_interval_ms=self.spec.config.auto_watermark_interval_ms,
            job_id=s.job_id,
        )

    def _open(self) -> None:
        restore = self.spec.restore or {}
        n = len(self.op_specs)
        spec = self.spec
        writers = [RecordWriter(o, s, spec.subtask_index, spec.max_parallelism, spec.config.batch_size, spec.config.flush_ms,
                                spec.config.buffer_bytes)
                   for o, s in zip(spec.outputs, self.senders)]
        self.network = self._output or NetworkOutput(writers, self.op_metrics[n - 1] if n else None, spec.task_name)
        self._task_output = _TaskOutput(self.network)
        self._sliced_head = bool(getattr(self.network, "writers", ()))
        self.operators = []
        self._outputs = []
        contexts = []
        for index, op in enumerate(self.op_specs):
            try:
                operator = op["factory"]()
            except Exception as exc:
                raise JobFailed(
                    f"operator {op['name']!r} could not be created in task {self.spec.task_name!r}: {exc!r}",
                    operator=op["name"],
                    subtask=self.spec.subtask_index,
                    cause=traceback.format_exc(),
                ) from exc
            operator.name = op["name"]
            ctx = self._make_context(op)
            if op.get("keyed"):
                if self.spec.state_backend is None:
                    raise ConfigError(f"keyed operator {op['name']!r} needs a state backend: the job's "
                                      "JobConfig.state_backend is not set")
                ctx.keyed_backend = self._guard(index, None, partial(self.spec.state_backend.create_keyed_backend, ctx),
                                                "creating its keyed state backend")
                self._keyed_backends.append(ctx.keyed_backend)
            self.operators.append(operator)
            contexts.append(ctx)
        for i, (operator, ctx, op) in enumerate(zip(self.operators, contexts, self.op_specs)):
            state = restore.get(op["uid"])
            if state is not None:
                restored = "from a checkpoint or savepoint"
                if ctx.keyed_backend is not None and state.get("keyed"):
                    self._guard(i, None, partial(self._restore_keyed, ctx, state["keyed"],
                                                 bool(state.get("check_key_types"))),
                                f"restoring its keyed state {restored}")
                self._guard(i, None, partial(operator.restore_state, [st for st in state.get("operator", []) if st is not None]),
                            f"restore_state() of its state {restored}")
                if i == 0 and state.get("feedback_log"):
                    self._replay = list(state["feedback_log"])
            output = _ChainOutput(self, i) if i + 1 < n else self._task_output
            self._outputs.append(output)
            self._guard(i, None, partial(operator.open, ctx, output), "open()")
        if self.spec.source is not None:
            source = self.spec.source
            source_ctx = self._make_context(self.spec.chain[0])
            reader = self._source_call("create_reader()", partial(source.create_reader, source_ctx))
            missing = [m for m in ("add_splits", "poll_next", "snapshot_state") if not callable(getattr(reader, m, None))]
            if missing:
                raise self._source_failed("create_reader()", TypeError(
                    f"{type(source).__qualname__}.create_reader() must return a SourceReader "
                    f"(raystream.engine.connectors), got {type(reader).__name__} without "
                    f"{', '.join(m + '()' for m in missing)}: {short_repr(reader)}"))
            self._source_reader = reader
            self._source_metrics = source_ctx.metrics
            splits, order = self.spec.splits, self.spec.split_order
            src_state = restore.get(self.spec.chain[0]["uid"])
            call = "add_splits()"
            if src_state is not None:
                splits, order = src_state.get("splits", []), src_state.get("split_order") or []
                call = f"add_splits() of {len(splits)} split(s) restored from a checkpoint or savepoint"
            self._split_order = _ordinals(splits, order)
            self._source_call(call, partial(reader.add_splits, list(splits)))
        # the restored states are the operators' now: the task keeps no second copy of them
        # (its memory is its live state, not live state plus the checkpoint it started from)
        self.spec.restore = None
        for ch in self._channels:
            self._input_watermarks.setdefault(ch.info.input_index, MIN_WATERMARK)

    def _restore_keyed(self, ctx: OperatorContext, snapshots: list, check_key_types: bool) -> None:
        """Restore the keyed state backend of ``ctx`` from the serialized ``snapshots``;
        ``check_key_types``: they come from a savepoint or checkpoint the user gave (a job
        that may have changed its keys' type), not from the job's own restart or takeover."""
        backend = self.spec.state_backend
        assert backend is not None and ctx.keyed_backend is not None  # (a keyed backend exists only with one)
        ctx.keyed_backend.restore([backend.deserialize_snapshot(b, ctx.key_group_range) for b in snapshots])
        if not check_key_types:
            ctx.keyed_backend.trust_restored_key_types()

    # ------------------------------------------------------------------ error surface
    def _fail(self, index: int | None, batch: Batch | None, exc: BaseException, call: str | None = None) -> JobFailed:
        """The failure of operator ``index`` of the chain: ``exc`` raised while it processed
        ``batch``, or in ``call`` (``"open()"``, ``"snapshot_state() at checkpoint 3"``: an
        operator's calls other than its records', named in the message)."""
        if isinstance(exc, JobFailed):
            return exc
        name = self.op_specs[index]["name"] if index is not None and index < len(self.op_specs) else (
            self.spec.chain[0]["name"] if self.spec.chain else self.spec.name
        )
        record = None
        what = "record"
        original: BaseException = exc
        if isinstance(exc, UserCodeError):
            record = short_repr(exc.record)
            original = exc.original
            what = exc.what
        elif batch is not None and len(batch) == 1:
            record = short_repr(batch.records()[0])
        cause = "".join(traceback.format_exception(type(original), original, original.__traceback__))
        where = f"operator {name!r} (subtask {self.spec.subtask_index + 1}/{self.spec.parallelism})"
        msg = f"{where} failed{f' in {call}' if call else ''}: {type(original).__name__}: {original}"
        if record is not None:
            msg += f"\n  while processing {what}: {record}"
        elif batch is not None:
            msg += f"\n  while processing a batch of {len(batch)} records, first: {short_repr(batch.records()[0] if len(batch) else None)}"
        keyed = index is not None and index < len(self.operators) and getattr(self.operators[index], "keyed", False)
        if keyed and isinstance(original, TypeError) and str(original).startswith("unhashable type"):
            msg += ("\n  (the heap state backend keeps keyed state in dicts: a key_by that returns a list, dict "
                    "or set needs a hashable key instead, e.g. a tuple, a frozenset or tuple(sorted(d.items())); "
                    "the RocksDB backend takes any key)")
        return JobFailed(msg, operator=name, subtask=self.spec.subtask_index, record=record, cause=cause,
                         state_refused=refuses_state(original))

    def _source_call(self, call: str, fn: Callable[[], _T]) -> _T:
        """``fn()``, a call of the task's source or its reader, with what it raises turned
        into a :class:`JobFailed` naming the source, the subtask and ``call`` (e.g.
        ``"snapshot_state() at checkpoint 3"``), the original exception chained. Before,
        a source that raised in ``create_reader``, ``add_splits`` or ``snapshot_state`` was
        named by neither: ``task 'src -> sink (1/2)' failed: RuntimeError: ...``."""
        try:
            return fn()
        except (JobFailed, Cancelled):
            raise
        except Exception as exc:
            raise self._source_failed(call, exc) from exc

    def _source_failed(self, call: str, exc: BaseException, detail: str | None = None) -> JobFailed:
        """The failure of the task's source in ``call``: ``exc`` (a :class:`UserCodeError`
        names the record or index it was processing), or what ``detail`` says instead of
        ``exc``'s own text (``exc`` stays the cause)."""
        name = self.spec.chain[0]["name"] if self.spec.chain else self.spec.name
        try:
            described = self.spec.source.describe() if self.spec.source is not None else ""
        except Exception:  # noqa: BLE001 - a broken describe() must not hide the failure
            described = type(self.spec.source).__name__
        kind = f"{described}, " if described and described != name else ""
        record = None
        what = "record"
        original = exc
        if isinstance(exc, UserCodeError):
            record, original, what = short_repr(exc.record), exc.original, exc.what
        where = f"source operator {name!r} ({kind}subtask {self.spec.subtask_index + 1}/{self.spec.parallelism})"
        msg = f"{where} failed in {call}: {detail if detail is not None else f'{type(original).__name__}: {original}'}"
        if record is not None:
            msg += f"\n  while processing {what}: {record}"
        failed = JobFailed(msg, operator=name, subtask=self.spec.subtask_index, record=record,
                           cause="".join(traceback.format_exception(type(original), original, original.__traceback__)),
                           state_refused=refuses_state(original))
        failed.__cause__ = exc  # (also where it is raised later: a close() after the others)
        return failed

    def _guard(self, index: int, batch: Batch | None, fn: Callable[[], Any], call: str | None = None) -> Any:
        """``fn()``, a call of operator ``index``, with what it raises turned into the
        :class:`JobFailed` of :meth:`_fail` (naming ``call`` when given)."""
        try:
            return fn()
        except (JobFailed, Cancelled):
            raise
        except Exception as exc:
            raise self._fail(index, batch, exc, call) from exc

    def _call_operator(self, index: int, batch: Batch, input_index: int) -> None:
        try:
            self.operators[index].process_batch(batch, input_index)
        except (JobFailed, Cancelled):
            raise
        except Exception as exc:
            raise self._fail(index, batch, exc) from exc

    def _call_head(self, batch: Batch, input_index: int) -> None:
        """The head operator's call for an input batch, in slices of rows when the chain
        writes more than about ``buffer_bytes`` per call: records the chain makes large (a
        map from ids to images) go out a buffer at a time, so that the task holds about one
        buffer of them, not the whole batch's output, and back-pressure applies between the
        slices. The rows of a slice are learned per input from the bytes the previous call
        wrote per row (the first call takes at most :data:`PROBE_ROWS`); after a call that
        wrote nothing (a filter, a window not firing) the next takes twice its rows, so a
        stretch of input that writes nothing costs few calls, and where it ends (a filter
        that dropped the first records of a map to 1 MB blobs) one call writes at most about
        twice the rows of the one before (before, the rest of the batch went in one call:
        2,000 blobs at once, 2 GB in a task)."""
        n = len(batch)
        if not self._sliced_head:  # (nothing of the chain's output is sent: a sink, a collect)
            self._call_operator(0, batch, input_index)
            return
        head_rows = self._head_rows
        start = 0
        while True:
            rows = head_rows.get(input_index, PROBE_ROWS)
            stop = n if n - start <= rows else start + rows
            before = self._bytes_written()
            self._call_operator(0, batch if stop - start == n else batch.slice(start, stop), input_index)
            written = self._bytes_written() - before
            if written:
                head_rows[input_index] = max(1, self.spec.config.buffer_bytes * (stop - start) // written)
            else:
                head_rows[input_index] = min(_UNSLICED, 2 * rows)  # (a cap no batch reaches)
            if stop >= n:
                return
            start = stop

    def _bytes_written(self) -> int:
        return sum(w.bytes_written for w in getattr(self.network, "writers", ()))

    # ------------------------------------------------------------------ time
    def current_watermark(self) -> int:
        """The task's event time: the source's watermark, or the minimum over the inputs
        that are not idle (all idle: the largest)."""
        if self.spec.source is not None:
            return self._source_wm
        if not self._input_watermarks:
            return MIN_WATERMARK
        live = [wm for i, wm in self._input_watermarks.items() if i not in self._valves or not self._valves[i].idle]
        return min(live) if live else max(self._input_watermarks.values())

    #: background TTL cleanup of keyed state: every this many seconds the mailbox loop...
    state_cleanup_interval_s = 0.1
    #: ...spends at most this long in the keyed backends' ``cleanup(budget)``
    state_cleanup_slice_s = 0.002
    #: entries per ``cleanup`` call (the slice is checked between calls)
    state_cleanup_budget = 1024

    def register_processing_timer(self, time_ms: int, callback: Callable[[int], None]) -> ScheduledTimer:
        """Call ``callback(time_ms)`` on the mailbox thread once the clock reaches ``time_ms``.

        Returns a handle whose ``cancel()`` forgets the callback; a cancelled registration
        is freed (never kept until its time), so memory follows the live registrations.
        """
        return self._timers.push(time_ms, callback)

    def processing_timer_stats(self) -> dict[str, int]:
        """Processing-time registrations, for metrics: ``{"live": pending callbacks,
        "entries": heap entries held, cancelled ones not yet dropped included}``."""
        return {"live": len(self._timers), "entries": self._timers.entries}

    def _fire_timers(self) -> None:
        if time.monotonic() >= self._state_cleanup_at:
            self._cleanup_state()
        timers = self._timers
        if not timers:
            return
        now = self.clock.now_ms()
        while True:
            due = timers.pop_due(now)
            if due is None:
                return
            self._guard(0, None, partial(due[1], due[0]), f"a processing-time timer at {due[0]}")

    def _cleanup_state(self) -> None:
        """Background TTL cleanup: give the keyed backends a slice of the mailbox thread, so
        expired state leaves memory even when nothing reads it and no checkpoint is taken."""
        self._state_cleanup_at = time.monotonic() + self.state_cleanup_interval_s
        backends = self._cleanup_backends
        if backends is None:  # (operator index, backend) of the keyed operators
            found = [(i, getattr(getattr(op, "ctx", None), "keyed_backend", None)) for i, op in enumerate(self.operators)]
            backends = self._cleanup_backends = [(i, b) for i, b in found if hasattr(b, "cleanup")]
        if not backends:
            return
        budget = self.state_cleanup_budget
        deadline = time.perf_counter() + self.state_cleanup_slice_s
        for i, backend in backends:
            while self._guard(i, None, partial(backend.cleanup, budget), "the TTL cleanup of its keyed state") >= budget:
                if time.perf_counter() >= deadline:
                    return

    def _timer_wait(self, longest: float) -> float:
        """Seconds until the next processing-time callback is due, at most ``longest``."""
        due = self._timers.peek_time()
        if due is None:
            return longest
        return min(longest, max(0.0, (due - self.clock.now_ms()) / 1000.0))

    def _next_wait(self) -> float:
        wait = self.spec.config.flush_ms / 1000.0
        due = self._timers.peek_time()
        if due is not None:
            wait = min(wait, max(0.0, (due - self.clock.now_ms()) / 1000.0))
        return max(wait, 0.001)

    # ------------------------------------------------------------------ main loop
    def run(self) -> TaskResult:
        """Run the task to completion on the calling thread (raises JobFailed on failure)."""
        try:
            self._open()
            if self._source_reader is not None:
                self._run_source()
            else:
                self._run_inputs()
            if self._cancelled:
                raise Cancelled()
            result = self._finish()
        except BaseException:
            self._close()  # (its errors are logged: the original failure is the one to see)
            raise
        self._close(finished=True)
        return result

    # ------------------------------------------------------------------ driven step by step
    # (as Flink's mailbox test harness drives a real StreamTask: operators/testing.py)
    def open(self) -> None:
        """Create, restore and open the operators (the first thing :meth:`run` does)."""
        self._open()

    def step(self, wait_s: float | None = None) -> None:
        """One mailbox step on the calling thread: handle the mail already there (waiting up
        to ``wait_s`` for the first if there is none), process what the inputs hold, fire the
        due processing-time callbacks, flush due output. :meth:`run` is a loop over such
        steps."""
        self._drain_mailbox(wait_s)
        self._process_inputs()
        if self._stopped_at is None:
            self._fire_timers()
            self.network.flush_due(time.monotonic())

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        """Hand ``batch`` to the head operator as if it came from input ``input_index`` (its
        records stay Python objects: no channel, no Arrow conversion)."""
        m = self.op_metrics[0]
        m.records_in += len(batch)
        m.batches_in += 1
        self._call_operator(0, batch, input_index)

    def finish(self) -> TaskResult:
        """Every input ended: end the operators, take their final committables and state
        (what :meth:`run` returns), and close them."""
        try:
            result = self._finish()
        except BaseException:
            self._close()
            raise
        self._close(finished=True)
        return result

    def pending_processing_timers(self) -> list[int]:
        """Times of the live processing-time callbacks, ascending."""
        return self._timers.times()

    def next_processing_timer(self) -> int | None:
        """Time of the earliest live processing-time callback (None: there is none)."""
        return self._timers.peek_time()

    def has_mail(self) -> bool:
        """Mail (deliveries, posted calls) waits for the next step (any thread)."""
        return not self._mailbox.empty()

    def _handle_mail(self, mail: tuple) -> None:
        if mail[0] == "data":
            _, channel, seq, items, ack = mail
            ch = self._channels[channel]
            if seq != ch.next_seq:
                ch.early[seq] = (items, ack)
                return
            ch.items.extend(items)
            ch.items.append(_Ack(ack))
            ch.next_seq += 1
            while ch.next_seq in ch.early:
                items, ack = ch.early.pop(ch.next_seq)
                ch.items.extend(items)
                ch.items.append(_Ack(ack))
                ch.next_seq += 1
        else:
            mail[1]()

    def _drain_mailbox(self, timeout: float | None) -> None:
        try:
            mail = self._mailbox.get(timeout=timeout) if timeout else self._mailbox.get_nowait()
        except queue.Empty:
            return
        self._handle_mail(mail)
        # Only the mail that is here now (Flink's mailbox batch): a call that posts itself
        # again (an operator continuing a long piece of work step by step) runs once per
        # loop, so inputs, barriers and timers are served in between.
        for _ in range(self._mailbox.qsize()):
            try:
                mail = self._mailbox.get_nowait()
            except queue.Empty:
                return
            self._handle_mail(mail)

    def _run_inputs(self) -> None:
        if not self._channels:
            return
        if self._replay:
            self._replay_feedback_log()
        while not self._cancelled:
            self._drain_mailbox(self._next_wait())
            self._process_inputs()
            if self._stopped_at is not None:
                continue  # stopped with a savepoint: nothing more happens until cancel (or abort)
            self._fire_timers()
            if self._mailbox.empty():
                # nothing to do until mail arrives: what is buffered goes now (batches form
                # while the task is busy; waiting for the buffer timeout while idle only adds
                # latency, on every hop)
                self.network.flush_all()
            else:
                self.network.flush_due(time.monotonic())
            if self._feedback:
                self._flush_feedback()
                if self._feedback_done:
                    if all(ch.ended for ch in self._regular):
                        return
                elif all(ch.ended for ch in self._regular):
                    if self._is_idle():
                        if not self._reported_idle:
                            self._reported_idle = True
                            self.hooks.report_idle(self.spec.vertex_id, self.spec.subtask_index)
                    else:
                        self._reported_idle = False
            elif all(ch.ended for ch in self._channels):
                return

    # ------------------------------------------------------------------ feedback loops
    def _replay_feedback_log(self) -> None:
        """Process the restored in-flight feedback records that belong to this subtask
        (the log may come from other subtasks when the job was rescaled)."""
        writer = next((w for w in self.network.writers if w.info.feedback), None)
        batches, self._replay = self._replay, []
        for rb in batches:
            batch = Batch.of_arrow(rb)
            if writer is not None:
                mine = [b for t, b in writer.partitioner.select(batch) if t == self.spec.subtask_index]
            else:
                mine = [batch]
            for b in mine:
                self._call_operator(0, b, 0)

    def _flush_feedback(self) -> None:
        for w in self.network.writers:
            if w.info.feedback:
                w.flush_all()

    def _is_idle(self) -> bool:
        if self._timers or any(ch.items or ch.early for ch in self._channels):
            return False
        return all(op.is_idle() for op in self.operators)

    def feedback_sent(self) -> int:
        return sum(s.metrics.rows for w in self.network.writers if w.info.feedback for s in w.senders)

    def probe(self) -> tuple[bool, int, int]:
        """(idle, records sent on feedback edges, records received from them); mailbox thread."""
        self._flush_feedback()
        idle = all(ch.ended for ch in self._regular) and self._is_idle()
        return idle, self.feedback_sent(), self.feedback_received

    def end_feedback(self) -> None:
        """The loop is quiescent everywhere: no record will arrive on feedback channels."""
        self._feedback_done = True
        for ch in self._feedback:
            ch.ended = True
        logging_ = self._fb_logging
        if logging_ is not None:
            # a snapshot still waiting for its barrier to come back on a feedback edge: no
            # record is in flight on the loop any more, so its log is complete (ended here,
            # it was neither acknowledged nor declined, and what its sinks prepared at the
            # barrier went nowhere)
            self._fb_logging = None
            cid, _, log_batches, state = logging_
            state[self.op_specs[0]["uid"]]["log"] = dumps(log_batches, what="feedback log")
            self.hooks.acknowledge(cid, self.spec.vertex_id, self.spec.subtask_index, state)

    def _process_inputs(self) -> None:
        if self._stopped_at is not None:
            self._process_stopped()
            return
        head = self.operators[0] if self.operators else None
        # only an operator that overrides accepts_input() can pause its task's input
        gate = head.accepts_input if head is not None and type(head).accepts_input is not StreamOperator.accepts_input else None
        progress = True
        while progress and not self._cancelled:
            progress = False
            channels = self._channels
            if gate is not None and self._gated_start:
                # a paused operator takes data again from the channel after the one it took
                # data from last: the first channel would otherwise win every time the gate
                # opens and starve the others (their producers blocked on credit, while the
                # first one's producer runs ahead)
                start = self._gated_start % len(channels)  # (the fixed list rotated, not a copy per pass otherwise)
                channels = channels[start:] + channels[:start]
            for ch in channels:
                items = ch.items
                while items and not ch.blocked:
                    if (gate is not None and type(items[0]) in _DATA and not ch.info.feedback and not gate()
                            and not _control_behind(items)):
                        # paused: data waits (acks and events of processed data go on); a
                        # feedback edge is never paused, since a paused loop can deadlock; nor
                        # is data ahead of a barrier or end of input (at most the channel's
                        # credit window), so back-pressure never holds up a checkpoint
                        break
                    item = items.popleft()
                    progress = True
                    if gate is not None and type(item) in _DATA and not ch.info.feedback:
                        self._gated_start = ch.index + 1
                    if type(item) is Batch:  # records handed over by a task in this process
                        m = self.op_metrics[0]
                        m.records_in += len(item)
                        m.batches_in += 1
                        self._call_head(item, ch.info.input_index)
                    elif type(item) is pa.RecordBatch:
                        m = self.op_metrics[0]
                        m.records_in += item.num_rows
                        m.batches_in += 1
                        if ch.info.feedback:
                            self.feedback_received += item.num_rows
                            self._reported_idle = False
                            if self._fb_logging is not None and ch.index in self._fb_logging[1]:
                                self._fb_logging[2].append(item)
                        self._call_head(Batch.of_arrow(item), ch.info.input_index)
                    elif type(item) is _Ack:
                        item.fn()
                    else:
                        self._on_event(ch, item)
                        if self._stopped_at is not None:  # a stop-with-savepoint barrier: process nothing after it
                            self._process_stopped()  # (but acknowledge what was processed)
                            return

    def _process_stopped(self) -> None:
        """Stopped at a savepoint barrier: only the feedback log of that savepoint goes on
        (records still in flight on feedback edges are logged, not processed), and the
        acknowledgements of sends processed in full still go upstream. (The event that
        completed the alignment may be an upstream task's end of input whose send is
        acknowledged only after it: that task waits for the ack before it reports itself
        finished, which stands in for its part of this very savepoint.)"""
        for ch in self._regular:
            items = ch.items
            while items and type(items[0]) is _Ack:
                items.popleft().fn()
        logging_ = self._fb_logging
        if logging_ is None:
            return
        for ch in self._feedback:
            items = ch.items
            while items and self._fb_logging is not None and ch.index in self._fb_logging[1]:
                item = items.popleft()
                if type(item) is pa.RecordBatch:
                    self.feedback_received += item.num_rows
                    self._fb_logging[2].append(item)
                elif type(item) is _Ack:
                    item.fn()
                elif type(item) is Barrier:
                    self._on_feedback_barrier(ch, item)

    def _on_event(self, ch: InputChannel, event: Any) -> None:
        if type(event) is Watermark:
            ch.watermark = max(ch.watermark, event.timestamp)
            if not ch.info.feedback:
                self._hand_on(ch.info.input_index, self._valves[ch.info.input_index].on_watermark(ch.index, event.timestamp))
        elif type(event) is Barrier:
            self._on_barrier(ch, event)
        elif type(event) is EndOfInput:
            ch.ended = True
            ch.watermark = MAX_WATERMARK
            ch.idle = False
            if not ch.info.feedback:
                self._hand_on(ch.info.input_index, self._valves[ch.info.input_index].on_end(ch.index))
            self._check_alignment()
            if self._deferred_trigger is not None:
                self._take_deferred_trigger()
        elif type(event) is StreamStatus:
            if not ch.info.feedback and not ch.ended:
                ch.idle = event.idle
                self._hand_on(ch.info.input_index, self._valves[ch.info.input_index].on_status(ch.index, event.idle))
        else:
            raise JobFailed(f"task {self.spec.task_name!r} received an unknown item {short_repr(event)}")

    def _hand_on(self, input_index: int, events: list[Watermark | StreamStatus]) -> None:
        """What input ``input_index``'s valve let through goes to the head operator, in order:
        ``process_watermark(wm, input_index)``, and ``process_watermark_status(idle,
        input_index)`` if the operator has it (a two-input operator leaves an idle input out
        of its event time). A head without it passes on the status of the whole task: idle
        when every input is (Flink's ``processWatermarkStatus``)."""
        for event in events:
            if isinstance(event, Watermark):
                self._input_watermarks[input_index] = event.timestamp
                if self.operators:
                    self._guard(0, None, partial(self.operators[0].process_watermark, event, input_index))
                else:
                    self._task_output.emit_watermark(Watermark(self.current_watermark()))
            elif self.operators and hasattr(self.operators[0], "process_watermark_status"):
                self._status_to(0, event.idle, input_index)
            else:
                valves = self._valves.values()
                idle = any(v.idle for v in valves) and all(v.idle or v.ended for v in valves)
                (self._outputs[0] if self.operators else self._task_output).emit_watermark_status(idle)

    def _status_to(self, index: int, idle: bool, input_index: int) -> None:
        """Operator ``index`` of the chain learns that its input ``input_index`` became idle
        or active again; one without ``process_watermark_status`` passes it on."""
        handler = getattr(self.operators[index], "process_watermark_status", None)
        if handler is not None:
            self._guard(index, None, partial(handler, idle, input_index))
        else:
            self._outputs[index].emit_watermark_status(idle)

    # ------------------------------------------------------------------ barriers
    def _on_barrier(self, ch: InputChannel, barrier: Barrier) -> None:
        cid = barrier.checkpoint_id
        if ch.info.feedback:
            self._on_feedback_barrier(ch, barrier)
            return
        if self._aligning is not None and cid < self._aligning:
            return  # stale barrier of an aborted checkpoint
        if self._aligning is not None and cid > self._aligning:
            # a newer checkpoint overtook the one being aligned: abandon the old one
            self.hooks.decline(self._aligning, self.spec.vertex_id, self.spec.subtask_index, "superseded")
            self._end_alignment()
        if self._aligning is None:
            if cid <= self.last_checkpoint_id:
                return
            self._aligning = cid
            self._pending_barrier = barrier
            self._barriers_seen = set()
        self._barriers_seen.add(ch.index)
        if self.spec.config.exactly_once:
            ch.blocked = True
        self._check_alignment()

    def _check_alignment(self) -> None:
        if self._aligning is None:
            return
        for c in self._channels:
            if not c.info.feedback and not c.ended and c.index not in self._barriers_seen:
                return
        barrier = self._pending_barrier
        self._end_alignment()
        self._checkpoint(barrier)

    def _end_alignment(self) -> None:
        self._aligning = None
        self._barriers_seen = set()
        for c in self._channels:
            c.blocked = False

    def trigger_checkpoint(self, barrier: Barrier) -> None:
        """Snapshot now and emit the barrier (called on the mailbox thread). The master
        triggers source tasks, and tasks whose every upstream task has finished (FLIP-147:
        no barrier can reach them through their channels)."""
        if self._finished or self._stopped_at is not None or barrier.checkpoint_id <= self.last_checkpoint_id:
            return  # (a finished task is represented by its final state)
        if self._source_reader is None and not all(ch.ended for ch in self._regular):
            # The master saw every upstream task finish, but their end of input is still
            # queued here: the snapshot follows it (every record before it is in the state).
            # (A barrier that comes through an input first takes the checkpoint instead.)
            if self._deferred_trigger is None or barrier.checkpoint_id > self._deferred_trigger.checkpoint_id:
                self._deferred_trigger = barrier
            return
        self._checkpoint(barrier)

    def _take_deferred_trigger(self) -> None:
        barrier = self._deferred_trigger
        if barrier is not None and all(ch.ended for ch in self._regular):
            self._deferred_trigger = None
            if barrier.checkpoint_id > self.last_checkpoint_id and self._stopped_at is None and not self._finished:
                self._checkpoint(barrier)

    def _checkpoint(self, barrier: Barrier) -> None:
        cid = barrier.checkpoint_id
        self.last_checkpoint_id = max(self.last_checkpoint_id, cid)
        behind = self.hooks.snapshots_in_flight()
        if behind >= self.spec.max_snapshots_in_flight and not barrier.savepoint:
            # Checkpoint storage is slower than the checkpoints (e.g. snapshots of checkpoints
            # that timed out are still being written): decline at the barrier, taking no
            # snapshot, so unwritten snapshots never pile up in memory. The operators see
            # nothing of this checkpoint (what a sink holds goes with the next one), and the
            # barrier goes on, so downstream alignment is not held up.
            self.network.broadcast_event(barrier)
            self.hooks.decline(
                cid, self.spec.vertex_id, self.spec.subtask_index,
                f"{behind} snapshots of task {self.spec.task_name!r} are still being written to checkpoint storage "
                f"(slower than the checkpoints): declined at the barrier without taking a snapshot",
            )
            return
        # Everything is copied (serialized) here, on the task thread, so processing can go
        # on while the bytes are written to checkpoint storage by the runtime's writer.
        state: dict[str, Any] = {}
        if self._source_reader is not None:
            src_uid = self.spec.chain[0]["uid"]
            state[src_uid] = {"op": self._source_state(src_uid, cid)}
        for i, (op, spec) in enumerate(zip(self.operators, self.op_specs)):
            entry: dict[str, Any] = {}
            pre_barrier = getattr(op, "prepare_snapshot_pre_barrier", None)
            if pre_barrier is not None:  # (what it emits goes down the chain now, out before the barrier)
                self._guard(i, None, partial(pre_barrier, cid), f"prepare_snapshot_pre_barrier() at checkpoint {cid}")
            prepare = getattr(op, "prepare_commit", None)
            if prepare is not None:  # pre-commit first: the snapshot must see its effects
                entry["committables"] = self._prepare_commit(i, prepare, cid)
            op_state = self._guard(i, None, partial(op.snapshot_state, cid), f"snapshot_state() at checkpoint {cid}")
            entry["op"] = dumps({"operator": op_state}, what=f"state of operator {spec['name']!r}")
            backend = getattr(op, "ctx", None) and op.ctx.keyed_backend
            if backend is not None and not self._finished:
                # (a finished task emitted everything it held and closed its backends: its
                # snapshot is its final state, without keyed state, as _final_state's)
                entry["keyed"] = self._guard(i, None, partial(backend.snapshot, cid),
                                             f"the snapshot of its keyed state at checkpoint {cid}")
            state[spec["uid"]] = entry
        self.network.broadcast_event(barrier)
        if barrier.stop:
            self._stopped_at = cid  # stop with savepoint: nothing is processed after the barrier
        if self._feedback and self.operators:
            # ABS for cycles: records that reach us on a feedback edge after this snapshot and
            # before Barrier(cid) comes back on that edge were in flight; log them as state.
            early = self._fb_barriers.pop(cid, set())
            for ch in self._feedback:
                if ch.index in early:
                    ch.blocked = False
            waiting = {ch.index for ch in self._feedback if ch.index not in early and not ch.ended}
            if waiting:
                if self._fb_logging is not None:  # (an older checkpoint's; its abort has not arrived yet)
                    older, _, _, older_state = self._fb_logging
                    self._discard_taken(older, older_state)
                self._fb_logging = (cid, waiting, [], state)
                return
            state[self.op_specs[0]["uid"]]["log"] = dumps([], what="feedback log")
        self.hooks.acknowledge(cid, self.spec.vertex_id, self.spec.subtask_index, state)

    def _prepare_commit(self, index: int, prepare: Callable[[Any], Any], checkpoint_id: int | None) -> Any:
        """The committables sink operator ``index`` hands over at checkpoint ``checkpoint_id``
        (None: at the end of input), checked to pickle here: they go to the job master (a Ray
        call) and into checkpoints, where one that does not pickle (a lock, an open file, a
        client) failed inside Ray with a bare ``cannot pickle ...``, naming neither the sink
        nor the call. It is a :class:`JobFailed` naming both now."""
        at = "at the end of input" if checkpoint_id is None else f"at checkpoint {checkpoint_id}"
        committables = self._guard(index, None, partial(prepare, checkpoint_id), f"prepare_commit() {at}")
        name = self.op_specs[index]["name"]
        try:
            _check_picklable(committables)
        except Exception as exc:  # noqa: BLE001 - whatever pickling raised, named below
            cause = exc
            where = f"operator {name!r} (subtask {self.spec.subtask_index + 1}/{self.spec.parallelism})"
            raise JobFailed(
                f"{where} failed: the committables its prepare_commit() returned {at} cannot be pickled "
                f"({type(cause).__name__}: {cause}): {short_repr(committables)}\n  (committables travel to the job "
                "master's committer and into checkpoints: return picklable values, such as file names, ids or "
                "offsets, not open files, locks or clients)",
                operator=name, subtask=self.spec.subtask_index, record=short_repr(committables),
                cause="".join(traceback.format_exception(type(cause), cause, cause.__traceback__)),
            ) from exc
        return committables

    def _discard_taken(self, checkpoint_id: int, state: dict[str, Any]) -> None:
        """A snapshot taken at a barrier will never be written (its checkpoint was aborted
        while the feedback edges were still being logged): committables prepared at the
        barrier go to the master (retained, as with a decline), and the keyed backends that
        build on their snapshots (RocksDB delta chains) are told, so the next snapshot does
        not build on it."""
        committables = {uid: list(e["committables"]) for uid, e in state.items() if e.get("committables")}
        if committables:
            self.hooks.decline(checkpoint_id, self.spec.vertex_id, self.spec.subtask_index,
                               "aborted while its feedback edges were logged", committables)
        for i, (op, spec) in enumerate(zip(self.operators, self.op_specs)):
            snap = state.get(spec["uid"], {}).get("keyed")
            backend = getattr(op, "ctx", None) and op.ctx.keyed_backend
            discard = getattr(backend, "discard_snapshot", None)
            if snap is not None and discard is not None:
                self._guard(i, None, partial(discard, snap))

    def _on_feedback_barrier(self, ch: InputChannel, barrier: Barrier) -> None:
        cid = barrier.checkpoint_id
        logging_ = self._fb_logging
        if logging_ is not None and logging_[0] == cid:
            logging_[1].discard(ch.index)
            if not logging_[1]:
                self._fb_logging = None
                _, _, log_batches, state = logging_
                state[self.op_specs[0]["uid"]]["log"] = dumps(log_batches, what="feedback log")
                self.hooks.acknowledge(cid, self.spec.vertex_id, self.spec.subtask_index, state)
        elif cid > self.last_checkpoint_id:
            # the sender already snapshotted cid and we have not: hold its later records back
            ch.blocked = True
            self._fb_barriers.setdefault(cid, set()).add(ch.index)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        if self._source_reader is not None:
            self._source_call(f"notify_checkpoint_complete({checkpoint_id})",
                              partial(self._source_reader.notify_checkpoint_complete, checkpoint_id))
        for i, op in enumerate(self.operators):
            self._guard(i, None, partial(op.notify_checkpoint_complete, checkpoint_id),
                        f"notify_checkpoint_complete({checkpoint_id})")

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        # barriers of an aborted checkpoint that are still on their way are ignored
        self.last_checkpoint_id = max(self.last_checkpoint_id, checkpoint_id)
        if self._stopped_at == checkpoint_id:
            self._stopped_at = None  # the stop-with-savepoint failed: the job goes on
        if self._aligning == checkpoint_id:
            self._end_alignment()
        if self._fb_logging is not None and self._fb_logging[0] == checkpoint_id:
            self._discard_taken(checkpoint_id, self._fb_logging[3])
            self._fb_logging = None
        for idx in self._fb_barriers.pop(checkpoint_id, set()):
            self._channels[idx].blocked = False
        for i, op in enumerate(self.operators):
            self._guard(i, None, partial(op.notify_checkpoint_aborted, checkpoint_id),
                        f"notify_checkpoint_aborted({checkpoint_id})")

    # ------------------------------------------------------------------ sources
    def _run_source(self) -> None:
        reader = self._source_reader
        assert reader is not None  # run() calls this only for a source task
        config = self.spec.config
        idle_s = config.idle_poll_ms / 1000.0
        # An idle reader is polled after idle_s, then after twice as long each time it still
        # has nothing, up to idle_max_s; records start it over. (Before, every 5 ms for ever:
        # an idle RedisStreamSource without block_ms sent Redis 200 XREADs a second, 3 % of a
        # core.) The wait is on the mailbox, so mail ends it at once: a checkpoint trigger,
        # cancel, a posted call (a reader whose data arrives on another thread wakes its task
        # with ctx.post); and it ends when the next processing-time timer is due.
        idle_max_s = max(idle_s, config.idle_poll_max_ms / 1000.0)
        wait_s = idle_s
        emit = self.operators[0] if self.operators else None
        head_metrics = self.op_metrics[0]
        while not self._cancelled:
            self._drain_mailbox(None)
            if self._cancelled:
                return
            if self._stopped_at is not None:  # stopped with a savepoint: emit nothing more
                self._drain_mailbox(idle_max_s)
                continue
            polled = time.monotonic()
            result = self._source_call("poll_next()", reader.poll_next)
            if result is END_OF_INPUT:
                return
            if result is NOTHING_AVAILABLE:
                self._source_watermark(reader)
                self._fire_timers()
                self.network.flush_all()  # idle until the next poll: no reason to hold output back
                self._drain_mailbox(self._timer_wait(wait_s))
                wait_s = min(idle_max_s, max(2 * wait_s, 0.001))
                continue
            wait_s = idle_s
            if not isinstance(result, Batch):
                bad = TypeError(
                    f"the source's reader {type(reader).__name__}.poll_next() must return a Batch, NOTHING_AVAILABLE or "
                    f"END_OF_INPUT (raystream.engine.connectors), got {type(result).__name__}: {short_repr(result)}"
                )
                raise self._source_failed("poll_next()", bad)
            n = len(result)
            if self._source_idle:  # records again: ACTIVE goes before them
                self._source_status(self._source_call("is_idle()", reader.is_idle))
            if emit is not None:
                head_metrics.records_in += n
                head_metrics.batches_in += 1
                self._call_head(result, 0)
            else:
                self.network.emit(result)
            self._source_watermark(reader)
            self._fire_timers()
            # what would be older than flush_ms by the time the next poll returns, if it takes
            # as long as this one, goes now: a reader that blocks until its next record (a
            # blocking XREAD, a generator waiting for a sensor) held each record until the
            # next one came
            now = time.monotonic()
            self.network.flush_due(now + (now - polled))

    def _source_status(self, idle: bool) -> None:
        """The source became idle (it must not hold back the watermark of downstream
        tasks) or active again: the chain sees it and the task announces it downstream."""
        if idle == self._source_idle:
            return
        self._source_idle = idle
        if self.operators:
            self._status_to(0, idle, 0)
        else:
            self._task_output.emit_watermark_status(idle)

    def _source_watermark(self, reader: Any) -> None:
        idle = self._source_call("is_idle()", reader.is_idle)
        self._source_status(idle)
        if idle:
            return
        wm = self._source_call("poll_watermark()", reader.poll_watermark)
        if wm is not None and wm > self._source_wm:
            self._source_wm = wm
            if self.operators:
                self._guard(0, None, lambda: self.operators[0].process_watermark(Watermark(wm), 0))
            else:
                self.network.emit_watermark(Watermark(wm))

    # ------------------------------------------------------------------ end
    def _finish(self) -> TaskResult:
        if self._source_reader is not None:
            self._source_status(False)  # (an idle chain would not pass the final watermark on)
            if self.operators:
                self._guard(0, None, lambda: self.operators[0].process_watermark(Watermark(MAX_WATERMARK), 0))
        for i, op in enumerate(self.operators):
            self._guard(i, None, op.end_input, "end_input()")
        committables: dict[str, list] = {}
        for i, (op, spec) in enumerate(zip(self.operators, self.op_specs)):
            prepare = getattr(op, "prepare_commit", None)
            if prepare is not None:
                committables[spec["uid"]] = self._prepare_commit(i, prepare, None)
        final_state = self._final_state()
        self.network.emit_watermark(Watermark(MAX_WATERMARK))
        # The loop is over: nothing more goes to (or is awaited from) feedback edges, whose
        # consumer may be this very task.
        for writer in self.network.writers:
            if not writer.info.feedback:
                writer.send_event(EndOfInput())
        for writer in self.network.writers:
            if not writer.info.feedback:
                for sender in writer.senders:
                    sender.drain()
        self._finished = True
        return TaskResult(self.spec.vertex_id, self.spec.subtask_index, self.metrics(), committables, final_state)

    def _source_state(self, src_uid: str, checkpoint_id: int, at_end: bool = False) -> bytes:
        """The reader's splits with their positions and their ordinals in the source's order
        (``None`` for a split without a ``split_id``), serialized; at checkpoint
        ``checkpoint_id``, or as the task's final state (``at_end``). ``snapshot_state`` must
        return a list of picklable splits: anything else fails the task naming the source
        and the call (before, None failed with a bare ``'NoneType' object is not iterable``
        and an unpicklable split with a ``CheckpointError`` naming neither)."""
        reader = self._source_reader
        assert reader is not None
        call = "snapshot_state() " + ("at the end of input" if at_end else f"at checkpoint {checkpoint_id}")
        splits = self._source_call(call, partial(reader.snapshot_state, checkpoint_id))
        if isinstance(splits, tuple):
            splits = list(splits)
        if not isinstance(splits, list):
            raise self._source_failed(call, TypeError(
                f"{type(reader).__qualname__}.snapshot_state() must return a list of the reader's unfinished splits "
                f"with their positions (an empty list when it has none), got {type(splits).__name__}: {short_repr(splits)}"))
        order = [self._split_order.get(split_key(s)) for s in splits]  # (no key: None)
        try:
            return dumps({"splits": splits, "order": order}, what=f"source splits of {src_uid!r}")
        except CheckpointError as exc:  # (the order holds ints: the splits did not pickle)
            cause = exc.__cause__ or exc
            raise self._source_failed(call, cause, detail=(
                f"the splits it returned cannot be pickled ({type(cause).__name__}: {cause}): {short_repr(splits)}\n  "
                "(splits go into checkpoints and are handed to the readers of a restored job: keep positions in "
                "them, such as file names, offsets or ids, not open files, locks or clients)")) from exc

    def _final_state(self) -> dict:
        """The state that represents this finished task in later checkpoints (FLIP-147):
        source positions (all consumed) and operator state; no keyed state (everything it
        held was emitted at the end of input)."""
        cid = self.last_checkpoint_id
        state: dict[str, Any] = {}
        if self._source_reader is not None:
            src_uid = self.spec.chain[0]["uid"]
            state[src_uid] = {"op": self._source_state(src_uid, cid, at_end=True)}
        for i, (op, spec) in enumerate(zip(self.operators, self.op_specs)):
            op_state = self._guard(i, None, partial(op.snapshot_state, cid), "snapshot_state() at the end of input")
            state[spec["uid"]] = {"op": dumps({"operator": op_state}, what=f"state of operator {spec['name']!r}")}
        return state

    def _close(self, finished: bool = False) -> None:
        """Close every operator and the source reader, then the keyed state backends
        (:meth:`_close_backends`). After a failure (or a cancel) an error in a ``close()`` is
        logged, so that it does not hide the original failure; after the task ``finished``
        the first one fails the task (as in Flink: a ``close()`` that could not flush or
        release what it holds is a failure, not a log line), once all are closed."""
        first: JobFailed | None = None
        for i, op in enumerate(self.operators):
            try:
                backend = getattr(getattr(op, "ctx", None), "keyed_backend", None)
                if backend is not None:  # close() comes after the last key (as in Flink)
                    backend.clear_current_key()
                op.close()
            except Exception as exc:
                if finished and first is None:
                    first = self._close_failed(getattr(op, "name", None) or self.op_specs[i]["name"], exc)
                else:  # closing must not hide the original failure
                    log.exception("closing operator %r failed", getattr(op, "name", op))
        if self._source_reader is not None:
            try:
                self._source_reader.close()
            except Exception as exc:
                if finished and first is None:
                    first = self._source_failed("close()", exc)
                else:
                    log.exception("closing source reader failed")
        self._close_backends()
        if first is not None:
            raise first

    def _close_backends(self) -> None:
        """Close the keyed state backends of the operators (RocksDB closes its database and
        deletes its working directory ``<local_dir>/pid<N>-<token>``; the heap backend drops
        its tables), once every snapshot the task handed over is written
        (:meth:`TaskHooks.wait_snapshots_written`): a snapshot being written may still read
        the backend's local files. Before, no backend was closed: each job left its RocksDB
        directories, the whole state, on a pooled executor until the process ended. Errors
        are logged (the job's output does not depend on the task's scratch files)."""
        backends, self._keyed_backends = self._keyed_backends, []
        if not backends:
            return
        try:
            self.hooks.wait_snapshots_written()
        except Exception:
            log.exception("waiting for the snapshots of task %r to be written failed", self.spec.task_name)
        for backend in backends:
            close = getattr(backend, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception:
                log.exception("closing a keyed state backend of task %r failed", self.spec.task_name)

    def _close_failed(self, name: str, exc: BaseException) -> JobFailed:
        """The failure of a task whose ``name`` operator (or source) raised ``exc`` in close()."""
        where = f"operator {name!r} (subtask {self.spec.subtask_index + 1}/{self.spec.parallelism})"
        return JobFailed(f"{where} failed in close(): {type(exc).__name__}: {exc}", operator=name,
                         subtask=self.spec.subtask_index,
                         cause="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    def metrics(self) -> dict:
        """Per-operator and per-channel counters (safe to read from any thread)."""
        ops = {}
        names = [s["name"] for s in self.op_specs]
        for i, (name, m) in enumerate(zip(names, self.op_metrics)):
            ops[name] = m.as_dict()
            # the operator's own counters and gauges (OperatorContext.metrics: ints)
            own = getattr(getattr(self.operators[i], "ctx", None), "metrics", None) if i < len(self.operators) else None
            if own:
                try:
                    ops[name].update(own)
                except RuntimeError:  # a key was added meanwhile (mailbox thread): next time
                    pass
        if self._source_metrics:  # a source reader's own counters, under the source's name
            try:
                ops.setdefault(self.spec.chain[0]["name"], {}).update(self._source_metrics)
            except RuntimeError:
                pass
        channels = []
        for out_senders in self.senders:
            for s in out_senders:
                cm = s.metrics
                channels.append(
                    {
                        "sends": cm.sends,
                        "rows": cm.rows,
                        "bytes": cm.bytes,
                        "max_in_flight": cm.max_in_flight,
                        "window": s.window,
                        "blocked_s": round(cm.blocked_s, 4),
                        "send_rows": cm.send_rows,
                        "transport": s.transport,
                    }
                )
        return {"task": self.spec.task_name, "operators": ops, "channels": channels}


def _ordinals(splits: list, order: list) -> dict[Any, int]:
    """``{split_key: ordinal}`` of the splits a source task starts with (those without a
    ``split_id`` or an ordinal are left out: their checkpoints carry ``None``)."""
    return {key: ordinal for split, ordinal in zip(splits, order)
            if (key := split_key(split)) is not None and ordinal is not None}
