"""Source and sink contracts (the split-based Source model and two-phase-commit sinks).

Sources are split based, as in Flink's FLIP-27: the job master asks the :class:`Source`
for its splits once, assigns them to the parallel source tasks, and each task's
:class:`SourceReader` reads its splits and reports their positions at checkpoints. On
recovery (or rescaling) the saved split positions are re-assigned, so every record is
read again from exactly where the restored checkpoint left off. Both assignments balance
the work (:func:`assign_splits`): a split type may estimate the work left in it with a
``weight()`` method (rows or bytes; the built-in sources' splits do), so a reader is not
dealt all the large splits of uneven files.

Sinks write from the tasks through a :class:`SinkWriter` and make their output visible
through a :class:`Committer` that runs in the job master: ``prepare_commit`` hands over
committables at each checkpoint barrier, and the master commits them once the checkpoint
is complete (or once the whole job has finished). Commits must be idempotent, because a
restored checkpoint's committables are committed again after recovery.
"""

from __future__ import annotations

import heapq
import math
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any, Callable, Generic, TypeVar, Union

from .operator import OperatorContext
from .records import Batch

__all__ = [
    "Source",
    "SourceReader",
    "NOTHING_AVAILABLE",
    "END_OF_INPUT",
    "PollResult",
    "Sink",
    "SinkWriter",
    "Committer",
    "assign_splits",
    "assign_split_indices",
    "split_key",
    "split_kind",
    "split_weight",
]

#: a source's split type (what ``create_splits`` makes and a reader snapshots)
SplitT = TypeVar("SplitT")
#: a sink's committable type (what a writer prepares and the committer commits)
CommT = TypeVar("CommT")


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self) -> tuple[Callable[[str], _Sentinel], tuple[str]]:
        return (_sentinel, (self._name,))


def _sentinel(name: str) -> "_Sentinel":
    return NOTHING_AVAILABLE if name == "NOTHING_AVAILABLE" else END_OF_INPUT


#: returned by :meth:`SourceReader.poll_next` when no data is ready yet
NOTHING_AVAILABLE = _Sentinel("NOTHING_AVAILABLE")
#: returned by :meth:`SourceReader.poll_next` when every assigned split is exhausted
END_OF_INPUT = _Sentinel("END_OF_INPUT")
#: what :meth:`SourceReader.poll_next` returns: a batch, or one of the two sentinels above
PollResult = Union[Batch, _Sentinel]


class SourceReader(ABC, Generic[SplitT]):
    """Reads the splits assigned to one source task. Called only from the task thread.

    Protocol: ``add_splits`` (any number of times), then ``poll_next`` repeatedly;
    ``snapshot_state`` may be called between two polls; ``close`` at the end.
    """

    @abstractmethod
    def add_splits(self, splits: list[SplitT]) -> None:
        """Take ownership of ``splits`` (fresh ones, or ones restored with a position)."""

    @abstractmethod
    def poll_next(self) -> PollResult:
        """Return the next batch, :data:`NOTHING_AVAILABLE` or :data:`END_OF_INPUT`."""

    @abstractmethod
    def snapshot_state(self, checkpoint_id: int) -> list[SplitT]:
        """The unfinished splits with their current positions (picklable copies)."""

    def poll_watermark(self) -> "int | None":
        """Event time reached by every split of this reader (min over splits), or None.

        Called by the task after each poll; a larger value than before is forwarded
        downstream as a Watermark. Readers that generate watermarks per split override it.
        """
        return None

    def is_idle(self) -> bool:
        """True while no split has data (so this reader must not hold watermarks back)."""
        return False

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` (and every earlier one) is complete: what this reader
        read before its snapshot is durable (e.g. acknowledge it to the system it came from,
        as Flink's ``SourceReader.notifyCheckpointComplete``). Not called without
        checkpointing (``ctx.checkpointing``), and may be skipped for a checkpoint when a
        later one completes first."""

    def close(self) -> None:
        """Release files, sockets..."""


def split_weight(split: Any) -> float:
    """The work left in ``split`` as its ``weight()`` method estimates it (rows, bytes: only
    the ratios between one source's splits matter; a number attribute ``weight`` counts as
    well); 1.0 for a split type without one.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class FileSplit:
        ...     path: str
        ...     length: int
        ...     def weight(self) -> float:
        ...         return self.length
        >>> split_weight(FileSplit("a.csv", 300)), split_weight("no weight() here")
        (300.0, 1.0)

    Raises:
        ValueError: ``weight()`` failed or gave a negative, infinite or NaN number.
    """
    weight = getattr(split, "weight", None)
    if weight is None:
        return 1.0
    try:
        value = float(weight() if callable(weight) else weight)  # (a method, or a number attribute)
    except Exception as exc:  # noqa: BLE001 - named with the split below
        raise ValueError(f"the weight() of source split {split!r} failed: {type(exc).__name__}: {exc}") from exc
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"the weight() of source split {split!r} must be a finite number >= 0, got {value!r}")
    return value


def assign_splits(splits: list[SplitT], parallelism: int) -> list[list[SplitT]]:
    """Deal ``splits`` out to ``parallelism`` readers with balanced work: the heaviest split
    first (:func:`split_weight`), each to the reader with the least work so far (ties: the
    fewest splits, then the lowest index); each reader gets its splits in their original order
    (files and row groups are read forward, which event-time sources with ordered timestamps
    rely on). Splits of equal weight, 0 included, are dealt round-robin. Deterministic: the master plans fresh
    splits and restored ones (rescaled or not) with it.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Part:
        ...     name: str
        ...     rows: int
        ...     def weight(self) -> float:
        ...         return self.rows
        >>> parts = [Part("a0", 100), Part("a1", 10), Part("b0", 100), Part("b1", 10)]
        >>> [[p.name for p in reader] for reader in assign_splits(parts, 2)]  # not a0,b0 / a1,b1
        [['a0', 'a1'], ['b0', 'b1']]
        >>> assign_splits(list("abcde"), 2)
        [['a', 'c', 'e'], ['b', 'd']]
    """
    return [[splits[i] for i in indices] for indices in assign_split_indices(splits, parallelism)]


def assign_split_indices(splits: list[Any], parallelism: int) -> list[list[int]]:
    """:func:`assign_splits` as the indices into ``splits`` each reader gets, ascending.

    Example:
        >>> assign_split_indices(["a", "b", "c"], 2)
        [[0, 2], [1]]
    """
    if parallelism < 1:
        raise ValueError(f"splits are assigned to at least 1 reader, got parallelism {parallelism}")
    weights = [split_weight(s) for s in splits]
    # (work so far, splits so far, reader): among readers of equal work the one with the fewest
    # splits, so that splits weighing 0 (nothing left, or a backlog estimate of 0 when a reader
    # of live partitions is caught up) are dealt round robin, not all to one reader
    heap = [(0.0, 0, reader) for reader in range(parallelism)]
    owned: list[list[int]] = [[] for _ in range(parallelism)]
    for i in sorted(range(len(splits)), key=lambda i: -weights[i]):  # (stable: equal weights in order)
        work, count, reader = heapq.heappop(heap)
        owned[reader].append(i)
        heapq.heappush(heap, (work + weights[i], count + 1, reader))
    return [sorted(indices) for indices in owned]


def split_kind(split: Any) -> str:
    """The class name of ``split`` for messages, with the split a wrapper holds in ``.split``
    (as the per-split watermark state does).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Wrapped:
        ...     split: object
        >>> split_kind(3), split_kind(Wrapped("a"))
        ('int', 'Wrapped(str)')
    """
    inner = getattr(split, "split", None)
    name = type(split).__qualname__
    return f"{name}({type(inner).__qualname__})" if inner is not None else name


def split_key(split: Any) -> Hashable | None:
    """The ``split_id`` of ``split`` (or of the split a wrapper holds in ``.split``, as the
    per-split watermark state does); None when it has none, or none usable as a key.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class S:
        ...     split_id: str
        >>> @dataclass
        ... class Wrapped:
        ...     split: S
        >>> split_key(S("a#0")), split_key(Wrapped(S("a#1"))), split_key("plain")
        ('a#0', 'a#1', None)
    """
    key = getattr(split, "split_id", None)
    if key is None:
        key = getattr(getattr(split, "split", None), "split_id", None)
    return key if isinstance(key, Hashable) else None


class Source(ABC, Generic[SplitT]):
    """A split-based source. Must be picklable: it is shipped to the job master and tasks.

    The job master deals the splits out with :func:`assign_splits`; give the split type a
    ``weight()`` method (work left: rows, bytes) when splits differ in size.
    """

    #: a bounded source ends (END_OF_INPUT); an unbounded one runs until cancelled
    bounded: bool = True
    #: at most this many parallel subtasks (None: any). A source that cannot be split (one
    #: server socket, one ordered file) says 1, as a Flink non-parallel source: its node gets
    #: the environment's parallelism capped to it, and a larger ``set_parallelism`` fails
    max_parallelism: int | None = None
    #: the class of the splits this source's readers read and snapshot (None: undeclared, and
    #: restored splits are not checked; see :meth:`accepts_restored_split`)
    split_type: type | None = None

    def accepts_restored_split(self, split: Any) -> bool:
        """Whether this source's readers can read ``split``, restored from a savepoint (or a
        retained checkpoint) under this source's uid.

        Called in the job master while it plans a restore, before any task starts: a split it
        refuses fails the restore once with a CheckpointError (the savepoint was taken of another
        kind of source under the same uid), instead of every attempt failing inside the reader.
        Default: an instance of :attr:`split_type` (any split when undeclared). A source that
        wraps another (and its splits) overrides it.

        Example:
            >>> class Lines(Source):
            ...     split_type = str
            ...     def create_splits(self, parallelism): return ["a.txt"]
            ...     def create_reader(self, ctx): raise NotImplementedError
            >>> Lines().accepts_restored_split("b.txt"), Lines().accepts_restored_split(3)
            (True, False)
        """
        return self.split_type is None or isinstance(split, self.split_type)

    def resolve_at_submit(self) -> Source[SplitT]:
        """This source as the driver ships the job (:func:`engine.graph.ship`): a source that
        resolves a position "at job start" (Kafka's ``latest``, Redis's ``"$"``, a bounded
        source's end) returns a copy holding what it resolved, so that every plan of the job,
        also a job master's that takes it over before its first checkpoint, starts and ends
        there. Called once per submission; the user's source object is never changed.
        Default: the source itself (nothing to resolve).

        Example:
            >>> class Latest(Source):
            ...     def __init__(self, at=None): self.at = at
            ...     def resolve_at_submit(self): return Latest(at=42)
            ...     def create_splits(self, parallelism): return [self.at]
            ...     def create_reader(self, ctx): raise NotImplementedError
            >>> Latest().resolve_at_submit().create_splits(1)
            [42]
        """
        return self

    @abstractmethod
    def create_splits(self, parallelism: int) -> list[SplitT]:
        """All splits of the source (called once per job, in the job master)."""

    @abstractmethod
    def create_reader(self, ctx: OperatorContext) -> SourceReader[SplitT]:
        """A reader for one parallel source task."""

    def describe(self) -> str:
        """A short description for the job graph."""
        return type(self).__name__


class SinkWriter(ABC, Generic[CommT]):
    """Writes records inside a task. Called only from the task thread."""

    @abstractmethod
    def write(self, batch: Batch) -> None:
        """Write (or buffer) one batch."""

    def prepare_commit(self, checkpoint_id: int | None) -> list[CommT]:
        """Pre-commit: return committables for all data written since the last call.

        Called at each checkpoint barrier (``checkpoint_id``) and once at end of input
        (``None``). Committables travel to the job master's :class:`Committer`. Always a list
        (empty when there is nothing to commit): anything else fails the job naming the sink.
        """
        return []

    def snapshot_state(self, checkpoint_id: int) -> Any:
        """Writer state to restore after failure (e.g. open file names), or None."""
        return None

    def restore_state(self, states: list[Any]) -> None:
        """Restore from the writer states of the previous run (every old subtask's)."""

    def accepts_input(self) -> bool:
        """False while the writer can take no more batches (back-pressure; consulted only for a
        sink with ``gates_input = True``); it then wakes its task through ``ctx.post`` once it
        can again."""
        return True

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` (and every earlier one) is complete: what this writer
        prepared up to its snapshot for it may become visible (a writer that publishes
        itself; committables go to the :class:`Committer`). May be skipped for a checkpoint
        when a later one completes first."""

    def close(self) -> None:
        """Release resources; uncommitted work is aborted by not committing it."""


class Committer(ABC, Generic[CommT]):
    """Makes committables visible. Runs in the job master, never concurrently with itself.

    Committables reach :meth:`commit` once a checkpoint that covers them completes (or with
    the job's final checkpoint); after a failure or a job master failover the same ones may
    come again, so ``commit`` must be idempotent.

    Set ``in_memory = True`` on a committer whose committed output lives only in the job
    master's memory (like ``collect``'s): the master then logs every commit to checkpoint
    storage first, so a master that takes over the job can rebuild it.
    """

    in_memory: bool = False

    @abstractmethod
    def commit(self, committables: list[CommT]) -> None:
        """Commit ``committables`` (idempotent: the same committable may come twice)."""

    def result(self) -> Any:
        """What the driver gets back for this sink (e.g. collected rows), or None."""
        return None


class Sink(ABC, Generic[CommT]):
    """A sink. Must be picklable; ``create_writer`` runs in each task."""

    #: True: its writers' ``accepts_input()`` can pause the sink task's input (back-pressure)
    gates_input: bool = False
    #: at most this many parallel subtasks (None: any); e.g. 1 for a sink that serves its
    #: records from one server (see :attr:`Source.max_parallelism`)
    max_parallelism: int | None = None

    @abstractmethod
    def create_writer(self, ctx: OperatorContext) -> SinkWriter[CommT]:
        """A writer for one parallel sink task."""

    def create_committer(self) -> Committer[CommT] | None:
        """A committer for the job master, or None if writes are visible immediately."""
        return None

    def describe(self) -> str:
        """A short description for the job graph."""
        return type(self).__name__
