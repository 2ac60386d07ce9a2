"""The operator contract: what the task runtime calls, in which order, on which thread.

A task runs a chain of operators on ONE thread (the task's mailbox thread), so operators
never need locks. For every operator of a chain the task calls, in order::

    open(ctx, output)                  once, before any data; restore_state() before it on recovery
    process_batch(batch, input_index)  for each batch, in channel order
    process_watermark(wm, input_index) when the task's combined watermark advances
    prepare_snapshot_pre_barrier(id)   at a barrier, first (may still emit: before the barrier)
    snapshot_state(checkpoint_id)      at a barrier, after every record before the barrier
    notify_checkpoint_complete(id)     after the checkpoint is globally complete
    end_input()                        when every input has ended (flush final results)
    close()                            once, on success, failure or cancel

Operators emit downstream through ``output`` (the next operator of the chain, or the
task's network writer) and never keep a reference to a batch they emitted.
"""

from __future__ import annotations

import operator as _op
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .events import Watermark
from .keygroups import KeyGroupRange
from .records import Batch

if TYPE_CHECKING:
    from .state_backend import KeyedBackend

__all__ = [
    "Output",
    "OperatorContext",
    "StreamOperator",
    "KeyGroupedState",
    "key_group_share",
    "key_group_sharer",
    "Clock",
    "SystemClock",
    "ManualClock",
    "Cancellable",
]


class Clock(Protocol):
    """Processing time source (ms). Injected so tests control time without sleeping."""

    def now_ms(self) -> int: ...


class SystemClock:
    """Wall-clock processing time."""

    def now_ms(self) -> int:
        import time

        return int(time.time() * 1000)

    def __reduce__(self) -> tuple[type[SystemClock], tuple[()]]:
        return (SystemClock, ())


class ManualClock:
    """A clock that only moves when told to (for tests).

    Example:
        >>> c = ManualClock(1000); c.advance(500); c.now_ms()
        1500
    """

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        self._now += ms

    def set(self, ms: int) -> None:
        self._now = ms


class Cancellable(Protocol):
    """A registration that can be undone (e.g. the task's handle of a processing-time
    callback, :class:`~engine.timer_queue.ScheduledTimer`)."""

    def cancel(self) -> None:
        """Forget the registration (no-op if it already fired or was cancelled)."""


class Output(Protocol):
    """Where an operator sends its results."""

    def emit(self, batch: Batch) -> None:
        """Send a batch of records downstream (empty batches may be dropped)."""

    def emit_watermark(self, watermark: Watermark) -> None:
        """Forward event time downstream."""

    def emit_side(self, tag: str, batch: Batch) -> None:
        """Send a batch to the side output named ``tag``."""


@dataclass
class OperatorContext:
    """Runtime facts an operator may need; built by the task for each operator of its chain."""

    operator_name: str
    operator_uid: str
    task_name: str
    subtask_index: int
    parallelism: int
    max_parallelism: int
    key_group_range: KeyGroupRange
    attempt: int = 0
    # whether the task started from a checkpoint or savepoint (a restart, a from_savepoint
    # restore), also for an operator of it that had no state there (a new one)
    restored: bool = False
    clock: Clock = field(default_factory=SystemClock)
    # the keyed state backend of a keyed operator (``checkpoint.KeyedStateBackend``, made by
    # the job's ``engine.state_backend.StateBackend``), else None; operators of the library
    # read it through ``operators.functions.keyed_state_backend(ctx)``, which narrows it
    keyed_backend: KeyedBackend | None = None
    metrics: dict[str, int] = field(default_factory=dict)
    # set by the task: current combined watermark, for operators that need it
    current_watermark: Callable[[], int] | None = None
    # processing-time timer registration with the task's mailbox: (time_ms, callback); the
    # task returns a handle whose cancel() frees the registration (engine.timer_queue), or None
    register_processing_timer: Callable[[int, Callable[[int], None]], Cancellable | None] | None = None
    # run a callable on the task's mailbox thread (thread-safe): for async I/O completions
    post: Callable[[Callable[[], None]], None] | None = None
    # whether the job takes checkpoints (env.enable_checkpointing): without, no
    # notify_checkpoint_complete ever comes, so output waiting for one is released at once
    checkpointing: bool = False
    # about the most bytes of records per network batch (TaskConfig.buffer_bytes): an operator
    # that makes many records from one call emits them in pieces of about this size
    buffer_bytes: int = 8 << 20
    #: ms between a user's WatermarkGenerator's periodic emits (TaskConfig.auto_watermark_interval_ms)
    auto_watermark_interval_ms: int = 200
    #: the id of the job the task runs in ("" outside a job): a sink that deletes what failed
    #: attempts of its job left behind (the file sinks) touches no other job's files
    job_id: str = ""


class StreamOperator(ABC):
    """Base class of every operator. See the module docstring for the calling protocol."""

    #: the operator's display name (set by the graph builder)
    name: str = "operator"
    #: True if the operator needs the keyed state backend (input is keyed)
    keyed: bool = False
    #: how many inputs the operator reads (2: co-process, broadcast and join operators)
    num_inputs: int = 1

    def open(self, ctx: OperatorContext, output: Output) -> None:
        """Prepare for processing; keep ``output`` to emit results."""
        self.ctx = ctx
        self.output = output

    @abstractmethod
    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        """Process one batch of records from input ``input_index`` (0 for one-input operators)."""

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        """Event time advanced; the default forwards the watermark."""
        self.output.emit_watermark(watermark)

    def end_input(self) -> None:
        """Every input has ended; emit final results. Default: nothing."""

    def prepare_snapshot_pre_barrier(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id``'s barrier reached the task: the last chance to emit
        before it (Flink's ``prepareSnapshotPreBarrier``), e.g. a combiner sends what it
        holds so that it has no state to snapshot. Called on every operator of the chain,
        head first, each before its :meth:`snapshot_state` (records emitted here reach the
        next operator before that one snapshots). Default: nothing."""

    def snapshot_state(self, checkpoint_id: int) -> Any:
        """Return this operator's own state for checkpoint ``checkpoint_id`` (or None).

        Must be a copy (or immutable): the task keeps processing while it is written.
        Keyed state in ``ctx.keyed_backend`` is snapshotted by the task itself. Per-key
        state the operator keeps itself goes into a :class:`KeyGroupedState` (key group
        -> that group's part), so that on restore each subtask receives only its own key
        groups of it; every other value is handed to every new subtask.
        """
        return None

    def restore_state(self, states: list[Any]) -> None:
        """Restore from the operator states of the previous run's subtasks (one per old
        subtask, in old-subtask order).

        Called before :meth:`open` on recovery. ``states`` holds every old subtask's
        snapshot (a union list) so a rescaled operator can pick its share, except that
        each :class:`KeyGroupedState` in them (at the top or inside plain dicts) holds only
        the key groups of this subtask's ``ctx.key_group_range``: per-key state kept outside
        the keyed backend is re-split by key group like the backend's own. A snapshot
        written before the marker existed holds plain dicts of every key group: keep
        filtering them by ``ctx.key_group_range``.
        """

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` is complete everywhere (sinks commit here)."""

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` was aborted; discard what was prepared for it."""

    def accepts_input(self) -> bool:
        """False to stop the task from taking input for a while (back-pressure): while the
        head operator of a task returns False, no data batch is taken from its input
        channels (their sends stay unacknowledged, so producers wait; events and acks
        before the next batch still go through). The operator must make progress
        on its own meanwhile (timers, ``ctx.post`` callbacks) and return True again.
        Default: always True."""
        return True

    def is_idle(self) -> bool:
        """False while the operator still has work that will emit (pending async calls,
        delayed messages...). Only consulted for tasks on a feedback loop, to detect the
        loop's termination after every regular input has ended."""
        return True

    def close(self) -> None:
        """Release resources. Called once, also after a failure."""


class KeyGroupedState(dict[int, Any]):
    """Part of a :meth:`StreamOperator.snapshot_state` value split by key group: maps a key
    group (an int) to the state of that group's keys.

    On restore (also at another parallelism) each new subtask receives a copy of every old
    subtask's operator state in which each ``KeyGroupedState`` holds only the key groups of
    the subtask's ``ctx.key_group_range``, as keyed-backend state is re-split: a subtask
    receives (and its task unpickles) its share, not the whole job's. The marker may be the
    whole snapshot or sit inside plain ``dict`` values, at any depth (its parts are never
    looked into); every other value is handed to every subtask unchanged (a union). Keys
    are stored as ``int`` (numpy integers are converted; anything else is a ``TypeError``).

    Example:
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> class Counts(StreamOperator):
        ...     def process_batch(self, batch, input_index=0): ...
        ...     def snapshot_state(self, checkpoint_id):
        ...         return {"counts": KeyGroupedState({3: {"a": 1}, 90: {"b": 2}}), "watermark": 7}
        >>> snap = Counts().snapshot_state(1)
        >>> key_group_share(snap, KeyGroupRange(0, 63))      # what subtask 0 of 2 gets
        {'counts': KeyGroupedState({3: {'a': 1}}), 'watermark': 7}
        >>> key_group_share(snap, KeyGroupRange(64, 127))    # subtask 1 of 2
        {'counts': KeyGroupedState({90: {'b': 2}}), 'watermark': 7}
    """

    __slots__ = ()

    def __init__(self, parts: Any = (), /) -> None:
        super().__init__()
        items = parts.items() if hasattr(parts, "items") else parts
        for kg, part in items:
            self[kg] = part

    def __setitem__(self, key_group: Any, part: Any) -> None:
        super().__setitem__(_key_group(key_group), part)

    def __repr__(self) -> str:
        return f"KeyGroupedState({dict.__repr__(self)})"

    def only(self, key_groups: KeyGroupRange) -> KeyGroupedState:
        """A marker holding the parts of ``key_groups`` only (the parts are not copied)."""
        out = KeyGroupedState()
        put, start, end = dict.__setitem__, key_groups.start, key_groups.end
        for kg, part in self.items():
            g = _key_group(kg)  # (a key put in by dict.setdefault or update is checked here)
            if start <= g <= end:
                put(out, g, part)
        return out


def _key_group(key_group: Any) -> int:
    try:
        return _op.index(key_group)  # (an int, a numpy integer; not a float, str or None)
    except TypeError:
        raise TypeError(
            f"a KeyGroupedState is keyed by key group (an int from key_group_for), got {key_group!r} "
            f"of type {type(key_group).__name__}"
        ) from None


_LEAF = object()


def key_group_sharer(state: Any) -> Callable[[KeyGroupRange], Any]:
    """A function giving, for a subtask's key groups, its share of an old subtask's operator
    ``state``: ``state`` with each :class:`KeyGroupedState` (at the top or inside plain
    dicts) holding only those key groups. ``state`` is walked once (plain dicts only,
    never a marker's parts), so giving p subtasks their shares costs one walk; a state
    without a marker is returned itself (shared, not copied).

    Example:
        >>> from raystream.engine.keygroups import KeyGroupRange
        >>> share = key_group_sharer({"t": {"event": KeyGroupedState({0: [1], 9: [2]}), "w": 5}})
        >>> share(KeyGroupRange(5, 9))
        {'t': {'event': KeyGroupedState({9: [2]}), 'w': 5}}
    """
    trie = _marker_trie(state)
    if trie is None:
        return lambda _key_groups: state
    return lambda key_groups: _take(state, trie, key_groups)


def key_group_share(state: Any, key_groups: KeyGroupRange) -> Any:
    """``state`` with each :class:`KeyGroupedState` in it holding only ``key_groups`` (see
    :func:`key_group_sharer`, which is cheaper for several subtasks of one state)."""
    return key_group_sharer(state)(key_groups)


def _marker_trie(state: Any) -> Any:
    """The paths to the markers in ``state`` as nested dicts (a marker: ``_LEAF``), or None."""
    if isinstance(state, KeyGroupedState):
        return _LEAF
    if type(state) is not dict:
        return None
    paths: list[tuple[Any, ...]] = []
    seen = {id(state)}  # (a dict met twice, or a cycle, is walked once)
    stack: list[tuple[dict[Any, Any], tuple[Any, ...]]] = [(state, ())]
    while stack:
        node, path = stack.pop()
        for k, v in node.items():
            if isinstance(v, KeyGroupedState):
                paths.append((*path, k))
            elif type(v) is dict and v and id(v) not in seen:
                seen.add(id(v))
                stack.append((v, (*path, k)))
    if not paths:
        return None
    trie: dict[Any, Any] = {}
    for path in paths:
        node_trie = trie
        for k in path[:-1]:
            node_trie = node_trie.setdefault(k, {})
        node_trie[path[-1]] = _LEAF
    return trie


def _take(state: Any, trie: Any, key_groups: KeyGroupRange) -> Any:
    if trie is _LEAF:
        return state.only(key_groups)
    out = dict(state)
    for k, sub in trie.items():
        out[k] = _take(state[k], sub, key_groups)
    return out
