"""Partitioners decide which downstream subtask receives each record of a batch.

``forward`` keeps a record on the same subtask index, ``rebalance`` rotates whole
batches round robin over the targets, ``broadcast`` sends every batch to every target,
and :class:`KeyGroupPartitioner` routes by the stable key hash through key groups.
"""

from __future__ import annotations

import copy
import operator
from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConfigError, GraphError, JobFailed, short_repr
from .keygroups import canonical_key, canonical_keys, key_groups_of_array, key_groups_of_keys
from .records import Batch

__all__ = [
    "KeySelector",
    "BatchKeyGroups",
    "RecordKeyGroups",
    "Partitioner",
    "ForwardPartitioner",
    "RebalancePartitioner",
    "BroadcastPartitioner",
    "KeyGroupPartitioner",
    "split_batch_by_targets",
]


BatchKeyGroups = Callable[[pa.RecordBatch, int], "np.ndarray | None"]
"""``fn(arrow_batch, max_parallelism)``: the key groups of every row of an Arrow batch
computed on its columns, equal to ``key_group_for(key_of(record), max_parallelism)`` row by
row; ``None`` when it cannot tell (the keys are then taken record by record)."""


RecordKeyGroups = Callable[[list, int], "np.ndarray | None"]
"""``fn(records, max_parallelism)``: the key groups of a list of Python records, equal to
``key_group_for(key_of(record), max_parallelism)`` record by record, computed faster than
key by key for records of a known form; ``None`` when it cannot tell."""


class KeySelector:
    """Extracts the key of each record: a column name (vectorized on Arrow), a tuple index,
    or a function of the record.

    Keys come out canonical (:func:`~engine.keygroups.canonical_key`): every NaN of a bit
    pattern, also inside a tuple, is one float object, so that the keyed operators that keep
    per-key state in dicts of their own (reduce, sum/min/max, heap timers, joins) find a NaN
    key's entry again (``nan != nan`` in Python; a dict compares by identity first). Keyed
    operators take their keys with :meth:`key_of` or :meth:`keys_of_records`, never from
    :attr:`key` themselves.

    ``batch_key_groups`` (:data:`BatchKeyGroups`) computes the key groups of an Arrow batch
    on its columns where the key is a function (e.g. of tuple records shipped as columns
    ``f0``.. ``fn``), without making its records; ``record_key_groups``
    (:data:`RecordKeyGroups`) those of Python records without making their keys.

    Example:
        >>> KeySelector("word").keys_of(Batch.of_records([{"word": "a"}, {"word": "b"}]))
        ['a', 'b']
    """

    def __init__(
        self,
        key: str | int | Callable[[Any], Any],
        *,
        stable_keys: bool = False,
        batch_key_groups: BatchKeyGroups | None = None,
        record_key_groups: RecordKeyGroups | None = None,
    ) -> None:
        if not (isinstance(key, (str, int)) or callable(key)):
            raise GraphError(f"key_by expects a column name, a tuple index, a function or an object with get_key() "
                             f"(Flink's KeySelector), got {key!r}")
        if batch_key_groups is not None and not callable(batch_key_groups):
            raise GraphError(f"batch_key_groups must be a function (arrow_batch, max_parallelism) -> key groups, got {batch_key_groups!r}")
        if record_key_groups is not None and not callable(record_key_groups):
            raise GraphError(f"record_key_groups must be a function (records, max_parallelism) -> key groups, got {record_key_groups!r}")
        self.key = key
        #: the keys always have a stable hash (e.g. the key function checks they are str):
        #: with a single target the partitioner computes no key
        self.stable_keys = stable_keys
        self.batch_key_groups = batch_key_groups
        self.record_key_groups = record_key_groups
        self.column = key if isinstance(key, str) else None
        #: the key of one record as it is (not canonical): the user's function, or an
        #: itemgetter of the column or index (one C-level call)
        self.getter: Callable[[Any], Any] = key if callable(key) else operator.itemgetter(key)
        self.description = key if isinstance(key, (str, int)) else getattr(key, "__name__", repr(key))

    def key_of(self, record: Any) -> Any:
        """The (canonical) key of one record."""
        k = self.getter(record)
        t = type(k)
        return k if t is str or t is int else canonical_key(k)

    def keys_of_records(self, records: list, batch: Batch | None = None) -> list:
        """The (canonical) keys of a list of records, in order; ``batch``, when given, is the
        batch whose :meth:`~engine.records.Batch.records` they are: a key column whose
        Arrow type holds no NaN (str, int, bytes, bool) needs no pass over the keys' types."""
        # (a C-level getter, e.g. an itemgetter, runs without a frame per record; the keys are
        # made canonical with one C-level pass over their types when all are str/int/bytes)
        return canonical_keys(list(map(self.getter, records)), self.column_type(batch))

    def column_type(self, batch: Batch | None) -> pa.DataType | None:
        """The Arrow type of the key column in ``batch``'s typed columns (None for a key
        function, a batch of Python records only or pickled ones, or a missing column)."""
        if self.column is None or batch is None or not batch.is_columnar:
            return None
        schema = batch.arrow().schema
        idx = schema.get_field_index(self.column)
        return schema.types[idx] if idx >= 0 else None

    def keys_of(self, batch: Batch) -> list | pa.Array:
        """Keys of a whole batch: an Arrow array on the columnar path, else a list of
        canonical keys."""
        if self.column is not None and batch.is_columnar:
            rb = batch.arrow()
            idx = rb.schema.get_field_index(self.column)
            if idx < 0:
                raise KeyError(self.column)
            return rb.column(idx)
        return self.keys_of_records(batch.records(), batch)

    def key_groups(self, batch: Batch, max_parallelism: int) -> np.ndarray:
        """Key group of every record of ``batch``."""
        if self.batch_key_groups is not None and batch.is_arrow:
            groups = self.batch_key_groups(batch.arrow(), max_parallelism)
            if groups is not None:
                return groups
        elif self.record_key_groups is not None and not batch.is_arrow:
            groups = self.record_key_groups(batch.records(), max_parallelism)
            if groups is not None:
                return groups
        if self.column is not None and batch.is_columnar:
            return key_groups_of_array(self.keys_of(batch), max_parallelism)  # type: ignore[arg-type]
        # (the hash of a key is that of its canonical key: the keys are taken as they are)
        return key_groups_of_keys(list(map(self.getter, batch.records())), max_parallelism)

    def __repr__(self) -> str:
        return f"KeySelector({self.description!r})"


def split_batch_by_targets(batch: Batch, targets: np.ndarray, n: int) -> list[tuple[int, Batch]]:
    """Split ``batch`` into one sub-batch per target index (order within a target kept),
    each with its records' event timestamps when ``batch`` carries them."""
    if n == 1 or len(targets) == 0:
        return [(0, batch)] if len(batch) else []
    counts = np.bincount(targets, minlength=n)
    nonzero = np.flatnonzero(counts)
    if len(nonzero) == 1:
        return [(int(nonzero[0]), batch)]
    out: list[tuple[int, Batch]] = []
    if len(nonzero) <= _SCAN_TARGETS:
        # a pass per target (rows in order): cheaper than a stable sort for a few targets
        rows = [(int(t), np.flatnonzero(targets == t)) for t in nonzero]
    else:
        order = np.argsort(targets, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(counts)))
        rows = [(int(t), order[bounds[t] : bounds[t + 1]]) for t in nonzero]
    if batch.timestamps is not None:  # (each part with its records' event timestamps)
        return [(t, batch.take(idx)) for t, idx in rows]
    if batch.is_arrow:
        rb = batch.arrow()
        for t, idx in rows:  # (row numbers of the batch: no bounds to check)
            out.append((t, Batch.of_arrow(pc.take(rb, pa.array(idx), boundscheck=False))))
    else:
        records = batch.records()
        for t, idx in rows:
            out.append((t, Batch.of_records([records[i] for i in idx.tolist()])))
    return out


#: up to this many receiving targets a batch is split with one pass per target, beyond with one stable sort
_SCAN_TARGETS = 8


class Partitioner(ABC):
    """Routes the records of a batch to downstream subtasks."""

    name = "partitioner"

    def setup(self, subtask_index: int, num_targets: int, max_parallelism: int) -> None:
        """Called once per producing subtask before any :meth:`select`."""
        self.subtask_index = subtask_index
        self.num_targets = num_targets
        self.max_parallelism = max_parallelism

    @abstractmethod
    def select(self, batch: Batch) -> list[tuple[int, Batch]]:
        """Return ``(target_index, sub_batch)`` pairs covering every record exactly once
        (or once per target for broadcast)."""

    def __repr__(self) -> str:
        return self.name


class ForwardPartitioner(Partitioner):
    """Subtask i sends to subtask i (requires equal parallelism)."""

    name = "forward"

    def select(self, batch: Batch) -> list[tuple[int, Batch]]:
        return [(self.subtask_index, batch)]


class RebalancePartitioner(Partitioner):
    """Whole batches rotate round robin over the targets (starting at the producer's index)."""

    name = "rebalance"

    def setup(self, subtask_index: int, num_targets: int, max_parallelism: int) -> None:
        super().setup(subtask_index, num_targets, max_parallelism)
        self._next = subtask_index % num_targets

    def select(self, batch: Batch) -> list[tuple[int, Batch]]:
        target = self._next
        self._next = (target + 1) % self.num_targets
        return [(target, batch)]


class BroadcastPartitioner(Partitioner):
    """Every target gets every batch."""

    name = "broadcast"

    def select(self, batch: Batch) -> list[tuple[int, Batch]]:
        return [(t, batch) for t in range(self.num_targets)]


class KeyGroupPartitioner(Partitioner):
    """Hash-by-key: key -> key group -> owning subtask (stable across processes).

    ``consumer`` names the keyed operator the edge feeds, for error messages (set when the
    job graph is built: :meth:`feeding`).
    """

    name = "hash"

    def __init__(self, key_selector: KeySelector, consumer: str | None = None) -> None:
        self.key_selector = key_selector
        self.consumer = consumer

    def feeding(self, consumer: str) -> "KeyGroupPartitioner":
        """A copy that names ``consumer`` in its errors (one stream may feed several)."""
        named = copy.copy(self)
        named.consumer = consumer
        return named

    def select(self, batch: Batch) -> list[tuple[int, Batch]]:
        if self.num_targets == 1 and (self.key_selector.stable_keys or self._key_column_present(batch)):
            # one target owns every key group: no key to hash (an Arrow column's values always
            # have a stable hash, so no error is skipped either)
            return [(0, batch)] if len(batch) else []
        try:
            groups = self.key_selector.key_groups(batch, self.max_parallelism)
        except ConfigError as exc:  # a key with no deterministic hash
            into = f" into operator {self.consumer!r}" if self.consumer else ""
            raise ConfigError(f"key_by({self.key_selector.description!r}){into}: {exc}") from exc
        except Exception as exc:  # the key cannot be taken from a record: blame the key_by, not upstream
            raise self._key_error(batch, exc) from exc
        targets = groups * self.num_targets // self.max_parallelism
        return split_batch_by_targets(batch, targets, self.num_targets)

    def _key_column_present(self, batch: Batch) -> bool:
        """Whether the key is a column of ``batch``'s Arrow form (checked without per-record work)."""
        column = self.key_selector.column
        return column is not None and batch.is_columnar and batch.arrow().schema.get_field_index(column) >= 0

    def _key_error(self, batch: Batch, exc: Exception) -> JobFailed:
        """A JobFailed naming the key_by, its consumer and the first record without a key."""
        into = f" into operator {self.consumer!r}" if self.consumer else ""
        record: Any = None
        found = False
        fields = ""
        if batch.is_columnar and self.key_selector.column is not None:
            fields = f"; the stream's columns are {batch.arrow().schema.names}"
        else:
            for r in batch.records():
                try:
                    self.key_selector.key_of(r)
                except Exception:  # noqa: BLE001 - this is the record to show
                    record, found = r, True
                    if isinstance(r, dict):
                        fields = f"; the record's fields are {sorted(map(str, r))}"
                    elif r is None:
                        fields = ("; the record is None: an operator before it made None a record (a map function "
                                  "without a return?); drop records with filter() or flat_map()")
                    break
        where = f"key_by({self.key_selector.description!r}){into}"
        of = f" of record {short_repr(record)}" if found else ""
        return JobFailed(f"{where} cannot take the key{of}: {type(exc).__name__}: {exc}{fields}",
                         operator=where, record=short_repr(record) if found else None)

    def __repr__(self) -> str:
        return f"hash({self.key_selector.description})"
