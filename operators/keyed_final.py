"""Final values of the record API's keyed ``reduce``, ``sum``, ``min`` and ``max``.

With ``emit="final"`` a keyed reduction emits nothing per record: each key's value is
emitted once, at end of input (Flink's BATCH execution mode). As no intermediate value is
observed, records can be combined *before* the shuffle: a **combiner** chained to the
upstream operator folds its input by key and sends one partial per key (Flink's combiner,
Flink SQL's local-global aggregation), holding the partials of consecutive batches until the
end of input, the next checkpoint barrier or a cap (a mini-batch: :mod:`operators.minibatch`),
so the exchange carries partials instead of every record and a hot key costs its subtask
one record per upstream send.

* :class:`LocalReduceOperator`: the combiner of ``reduce(fn, emit="final", combinable=True)``,
  one ``fn`` call per record (``fn`` must be associative and commutative). The keyed half is
  :class:`~operators.keyed.ReduceOperator`, which folds the partials with the same ``fn``.
* :class:`LocalFieldAggregateOperator`: the combiner of ``sum/min/max(column, emit="final")``.
  On an Arrow batch of dict records whose ``column`` is an integer or float column without
  nulls it is vectorized (one pyarrow hash aggregation per batch, no Python per record);
  otherwise it loops over the records in Python (no user function).
* :class:`FieldAggregateOperator`: the keyed half of sum/min/max. It folds values (or the
  combiner's partials: a partial is a record like any other) into per-key state and, at end
  of input, emits per key its **first record with** ``column`` **set to the result**, as
  Flink's ``sum``/``min``/``max`` do.

Semantics are Python's: ``+``, ``min`` and ``max`` over the values, ints stay exact (the
vectorized path falls back to Python when an int64 sum over a batch could overflow), a float
sum may differ from a sequential one in the last bits (the combiner adds in another order),
and NaN makes min/max depend on the order of the values, which the combiner changes.
A ``None`` value fails the job with an error naming the record (filter or fill nulls first;
``aggregate()`` skips nulls instead), as do values that cannot be added or compared.

Exactly once: the per-key values are operator state, snapshotted per key group (so a restore
may rescale) and emitted at end of input (on an off-heap keyed backend, RocksDB, they are
value states of the keyed backend instead, in its snapshot); the combiners are stateless (each batch is folded
and emitted at once, nothing is pending at a barrier). After emitting at end of input the
keyed operators clear their state: the final state of a finished task (FLIP-147), which
stands in for it in later checkpoints, then holds nothing that a restore would emit again.

Example:
    >>> from raystream.engine.partitioners import KeySelector
    >>> from raystream.operators.testing import OperatorHarness
    >>> h = OperatorHarness(FieldAggregateOperator(KeySelector("k"), "v", "sum"))
    >>> h.process([{"k": "a", "v": 1, "i": 0}, {"k": "a", "v": 2, "i": 1}]); _ = h.end_input()
    >>> h.records()
    [{'k': 'a', 'v': 3, 'i': 0}]
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raystream.checkpoint.descriptors import ValueStateDescriptor
from raystream.engine.errors import GraphError, StateError, UserCodeError, short_repr
from raystream.engine.keygroups import canonical_key, canonical_keys, key_groups_of_keys
from raystream.engine.operator import KeyGroupedState, OperatorContext, Output, StreamOperator
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch, arrow_to_records

from .field_columns import ColumnarFieldFold
from .keyed import OPERATOR_KIND, restored_keys, restored_states
from .minibatch import HELD_KEYS, HELD_ROWS, HoldingCombiner, MiniBatchCombiner
from .timers import backend_restored_state

__all__ = [
    "EMIT_MODES",
    "FIELD_AGGREGATIONS",
    "FieldAggregateOperator",
    "LocalFieldAggregateOperator",
    "LocalReduceOperator",
    "check_emit",
    "with_field",
]

#: what a keyed reduction emits: every update (Flink's default) or each key's final value
EMIT_MODES = ("updates", "final")
#: the field aggregations of the record API
FIELD_AGGREGATIONS = ("sum", "min", "max")

FieldAggregation = Literal["sum", "min", "max"]

_MISSING = object()
#: names of FieldAggregateOperator's state in an off-heap keyed backend: (value, first record)
FIELD_STATES = ("_field/value", "_field/first")
#: records per batch when an off-heap FieldAggregateOperator emits at end of input
_FINAL_CHUNK = 8192
_COMBINE: dict[str, Callable[[Any, Any], Any]] = {"sum": operator.add, "min": min, "max": max}
_INT64_LIMIT = 2**63


def check_emit(method: str, emit: object) -> None:
    """A :class:`GraphError` naming ``method`` unless ``emit`` is one of :data:`EMIT_MODES`."""
    if emit not in EMIT_MODES:
        raise GraphError(f"{method}(emit={emit!r}): emit must be 'updates' (every update) or 'final' "
                         "(each key's value once, at end of input)")


def key_getter(selector: KeySelector) -> Callable[[Any], Any]:
    """``selector``'s key of one record as one C-level call for a field or index key
    (``operator.itemgetter``), else the user's key function itself; not canonical (make a
    batch's keys canonical with ``canonical_keys``)."""
    return selector.getter


def with_field(record: Any, column: str | int, value: Any) -> Any:
    """A copy of ``record`` (a dict, tuple or named tuple) with ``column`` set to ``value``.

    Example:
        >>> with_field({"k": "a", "v": 1}, "v", 5), with_field(("a", 1), 1, 5), with_field(("a", 1), -1, 5)
        ({'k': 'a', 'v': 5}, ('a', 5), ('a', 5))
    """
    if isinstance(record, dict):
        out = dict(record)
        out[column] = value
        return out
    if isinstance(record, tuple) and isinstance(column, int) and not isinstance(column, bool):
        i = column % len(record) if record else column
        fields, replace = getattr(record, "_fields", None), getattr(record, "_replace", None)
        if fields is not None and replace is not None:  # a named tuple keeps its type
            return replace(**{fields[i]: value})
        return record[:i] + (value,) + record[i + 1:]
    raise TypeError(f"a field aggregation over column {column!r} needs dict records (or tuples with an "
                    f"int column), got {type(record).__name__} {short_repr(record, 80)}")


class _FieldFold:
    """Per-key ``+``/``min``/``max`` of one field, keeping each key's first record.

    ``values[key]`` is the running result, ``first[key]`` the first record of the key.
    """

    __slots__ = ("column", "how", "combine", "values", "first")

    def __init__(self, column: str | int, how: FieldAggregation) -> None:
        self.column = column
        self.how = how
        self.combine = _COMBINE[how]
        self.values: dict[Any, Any] = {}
        self.first: dict[Any, Any] = {}

    def fold(self, keys: list[Any], values: list[Any], record_at: Callable[[int], Any]) -> list[int]:
        """Fold ``values[i]`` into key ``keys[i]``; returns the positions of keys seen for the
        first time (the caller stores their records in ``first``). ``record_at(i)`` gives the
        record at position ``i`` for an error message."""
        acc = self.values
        get = acc.get
        combine = self.combine
        new: list[int] = []
        i = -1
        try:
            for i, (k, v) in enumerate(zip(keys, values)):
                a = get(k, _MISSING)
                if a is _MISSING:
                    if v is None:
                        raise TypeError("None")
                    acc[k] = v
                    new.append(i)
                else:
                    acc[k] = combine(a, v)
        except Exception as exc:
            raise self._error(keys[i], values[i], record_at(i), exc) from exc
        return new

    def _error(self, key: Any, value: Any, record: Any, exc: Exception) -> UserCodeError:
        what = f"{self.how}({self.column!r}) of key {short_repr(key, 60)}"
        if value is None:
            msg = f"{what}: the record has no value (None) in {self.column!r}; filter or fill nulls first"
        else:
            msg = (f"{what}: cannot fold {short_repr(value, 60)} ({type(value).__name__}) into "
                   f"{short_repr(self.values.get(key), 60)} ({type(self.values.get(key)).__name__}): {exc}")
        return UserCodeError(record, TypeError(msg))

    def fold_records(self, records: list[Any], key_of: Callable[[Any], Any]) -> None:
        """Fold Python records (any record kind ``with_field`` accepts)."""
        column = self.column
        try:
            keys = canonical_keys([key_of(r) for r in records])  # (one object per NaN: the dicts find it again)
            values = [r[column] for r in records]
        except Exception:
            self._raise_for_bad_record(records, key_of)
            raise
        first = self.first
        for i in self.fold(keys, values, records.__getitem__):
            r = records[i]
            try:
                with_field(r, column, None)  # fails now, not at end of input, for records it cannot update
            except TypeError as exc:
                raise UserCodeError(r, exc) from exc
            first[keys[i]] = r

    def _raise_for_bad_record(self, records: list[Any], key_of: Callable[[Any], Any]) -> None:
        """Raise for the first record whose key or field cannot be read."""
        for r in records:
            try:
                key_of(r)
            except Exception as exc:
                raise UserCodeError(r, exc) from exc
            try:
                r[self.column]
            except Exception as exc:
                raise UserCodeError(r, TypeError(
                    f"{self.how}({self.column!r}): the record has no field {self.column!r} "
                    f"({type(exc).__name__}: {exc})"
                )) from exc

    def results(self) -> list[Any]:
        """Each key's first record with ``column`` set to the key's result."""
        column, first = self.column, self.first
        return [with_field(first[k], column, v) for k, v in self.values.items()]

    def clear(self) -> None:
        self.values = {}
        self.first = {}


class _BackendValues:
    """``key -> value`` in a value state of the keyed backend, with the part of the dict API
    :class:`_FieldFold` uses (``get``, item assignment); values are never None."""

    __slots__ = ("_set_key", "_state")

    def __init__(self, backend: Any, name: str) -> None:
        self._set_key = backend.set_current_key
        self._state = backend.get_state(ValueStateDescriptor(name))

    def get(self, key: Any, default: Any = None) -> Any:
        self._set_key(key)
        value = self._state.value()
        return default if value is None else value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._set_key(key)
        self._state.update(value)


def _column_index(batch: Batch, name: str | int | None) -> int:
    """The index of column ``name`` in a batch of dict rows held as Arrow (-1 otherwise)."""
    if not isinstance(name, str) or not batch.is_columnar:
        return -1
    return batch.arrow().schema.get_field_index(name)


class LocalReduceOperator(HoldingCombiner):
    """The combiner of ``reduce(fn, emit="final", combinable=True)``, chained before the
    shuffle: reduces its input by key with ``fn`` into one partial (a record) per key, held
    across batches (a mini-batch, as the vectorized combiners: :mod:`operators.minibatch`)
    and sent at the end of input, before every checkpoint barrier (nothing is held in a
    snapshot) and whenever more than ``max_held_keys`` keys are held.

    Example:
        >>> from raystream.engine.partitioners import KeySelector
        >>> class Out:
        ...     def emit(self, batch): print(batch.records())
        >>> op = LocalReduceOperator(KeySelector(0), lambda a, b: (a[0], a[1] + b[1]))
        >>> op.open(None, Out())
        >>> op.process_batch(Batch.of_records([("a", 1), ("b", 2), ("a", 3)]))
        >>> op.process_batch(Batch.of_records([("a", 10)]))
        >>> op.end_input()
        [('a', 14), ('b', 2)]
    """

    def __init__(self, key_selector: KeySelector, fn: Callable[[Any, Any], Any],
                 max_held_keys: int = HELD_KEYS) -> None:
        if max_held_keys < 1:
            raise ValueError(f"max_held_keys must be at least 1, got {max_held_keys}")
        self.key_selector = key_selector
        self.fn = fn
        self.max_held_keys = max_held_keys
        self._partial: dict[Any, Any] = {}

    @property
    def held_keys(self) -> int:
        """Keys whose partial is held right now."""
        return len(self._partial)

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        partial = self._partial
        get = partial.get
        fn = self.fn
        key_of = key_getter(self.key_selector)
        r = None
        try:
            for r in batch.records():
                k = key_of(r)
                acc = get(k, _MISSING)
                if acc is _MISSING:  # (held by canonical key: a NaN is found once made canonical)
                    k = canonical_key(k)
                    acc = get(k, _MISSING)
                partial[k] = r if acc is _MISSING else fn(acc, r)
        except Exception as exc:
            raise UserCodeError(r, exc) from exc
        if len(partial) > self.max_held_keys:
            self.send_held()

    def send_held(self) -> None:
        if self._partial:
            held, self._partial = self._partial, {}
            key_of = key_getter(self.key_selector)
            for k, v in held.items():  # (once per key and send: the shuffle re-keys the partials)
                if (changed := canonical_key(key_of(v))) != k and changed is not k:
                    raise UserCodeError(v, ValueError(
                        f"reduce(..., combinable=True): the function turned a partial of key {short_repr(k, 60)} into "
                        f"one of key {short_repr(changed, 60)}; a reduce must keep its records' key (T x T -> T), "
                        "else keys would merge after the shuffle"
                    ))
            self.output.emit(Batch.of_records(list(held.values())))

    def close(self) -> None:
        self._partial = {}


class LocalFieldAggregateOperator(MiniBatchCombiner):
    """The combiner of ``sum/min/max(column, emit="final")``, chained before the shuffle:
    one partial record per key (the key's first record, ``column`` set to the result over
    its records). Vectorized on Arrow batches of dict records with a numeric ``column`` and
    a column key; a Python loop otherwise. Both kinds of partials are held across batches
    (a mini-batch: :mod:`operators.minibatch`; at the latest at the end of input and before
    every checkpoint barrier, so nothing is held in a snapshot): Arrow ones merged, record
    ones folded on (up to 65,536 keys); one kind at a time, the other sent first (the order
    of a key's partials decides its first record)."""

    def __init__(self, key_selector: KeySelector, column: str | int, how: FieldAggregation,
                 max_held_rows: int = HELD_ROWS) -> None:
        super().__init__(max_held_rows)
        self.key_selector = key_selector
        self.column = column
        self.how = how
        self._fold: _FieldFold | None = None  # the held partials of record batches

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        partial = self._vectorized(batch)
        if partial is not None:
            self._send_fold()  # (a key's partials go out in the order of its records)
            self.hold(partial)
            return
        super().send_held()
        fold = self._fold
        if fold is None:
            fold = self._fold = _FieldFold(self.column, self.how)
        fold.fold_records(batch.records(), key_getter(self.key_selector))
        if len(fold.values) > HELD_KEYS:
            self._send_fold()

    @property
    def held_keys(self) -> int:
        """Keys whose record partial is held right now."""
        return 0 if self._fold is None else len(self._fold.values)

    def _send_fold(self) -> None:
        fold, self._fold = self._fold, None
        if fold is not None and fold.values:
            self.output.emit(Batch.of_records(fold.results()))

    def send_held(self) -> None:
        """Send what is held: merged Arrow partials, or the records' partials (one kind at a
        time is held)."""
        super().send_held()
        self._send_fold()

    def close(self) -> None:
        super().close()
        self._fold = None

    def merge(self, partials: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        """One partial per key: its first record (over ``partials`` in order), ``column``
        set to the result; the partials as they are when an int sum could overflow int64."""
        rb = pa.Table.from_batches(partials).combine_chunks().to_batches()[0]
        schema = rb.schema
        merged = self._partials(rb, schema.get_field_index(self.key_selector.column), schema.get_field_index(self.column))
        return partials if merged is None else [merged]

    def _vectorized(self, batch: Batch) -> pa.RecordBatch | None:
        """The partial rows of ``batch`` computed by pyarrow, or None when Python's semantics
        need the record loop (not Arrow rows, nulls, NaN in a min/max, a non-numeric column,
        or an int sum that could overflow int64)."""
        ki = _column_index(batch, self.key_selector.column)
        vi = _column_index(batch, self.column)
        if ki < 0 or vi < 0 or not len(batch):
            return None
        rb = batch.arrow()
        col = rb.column(vi)
        t = col.type
        if col.null_count:
            return None
        if pa.types.is_floating(t) and not pa.types.is_float16(t):
            if self.how != "sum" and pc.any(pc.is_nan(col)).as_py():
                return None  # Python's min/max with NaN depend on the order of the values
        elif not pa.types.is_integer(t):
            return None
        return self._partials(rb, ki, vi)

    def _partials(self, rb: pa.RecordBatch, ki: int, vi: int) -> pa.RecordBatch | None:
        """One row per key of ``rb``: its first row, column ``vi`` set to the key's result
        (None: an int sum that could overflow int64)."""
        col = rb.column(vi)
        if self.how == "sum" and pa.types.is_integer(col.type):
            lo, hi = pc.min_max(col).values()
            if max(abs(lo.as_py()), abs(hi.as_py())) * len(col) >= _INT64_LIMIT:
                return None
        n = rb.num_rows
        table = pa.Table.from_arrays([rb.column(ki), col, pa.array(np.arange(n, dtype=np.int64))],
                                     names=["k", "v", "i"])
        grouped = table.group_by("k", use_threads=False).aggregate([("v", self.how), ("i", "min")])
        if grouped.num_rows == n:
            return rb  # every key once: the batch is its own partial
        first_rows = rb.take(grouped.column("i_min").combine_chunks())
        return first_rows.set_column(vi, rb.schema.field(vi).with_type(grouped.column(1).type),
                                     grouped.column(1).combine_chunks())


#: the kind a field aggregate's snapshot names (sum, min and max keep the same state), and its fields
_KIND = "field aggregate (sum/min/max)"
_FIELDS = frozenset({"by_key_group"})


def _field_entries(state: dict[str, Any]) -> bool:
    """Whether an operator state naming no kind holds a field aggregate's (first, value) entries."""
    return all(isinstance(entries, dict) and all(isinstance(e, tuple) and len(e) == 2 for e in entries.values())
               for entries in state.get("by_key_group", {}).values())


class FieldAggregateOperator(StreamOperator):
    """Each key's ``sum``/``min``/``max`` of ``column``, emitted once at end of input as the
    key's first record with ``column`` set to the result (the keyed half of
    ``sum/min/max(column, emit="final")``; its input may be raw records or the combiner's
    partials). State is snapshotted per key group and cleared once emitted: on the heap
    backend dicts of the operator (a :class:`~operators.field_columns.ColumnarFieldFold`
    while only numeric Arrow partials came), on an off-heap backend (RocksDB) value states
    of the keyed backend (:data:`FIELD_STATES`; a heap job's savepoint is moved in)."""

    keyed = True

    def __init__(self, key_selector: KeySelector, column: str | int, how: FieldAggregation) -> None:
        if how not in FIELD_AGGREGATIONS:
            raise GraphError(f"field aggregation must be one of {FIELD_AGGREGATIONS}, got {how!r}")
        if isinstance(column, bool) or not isinstance(column, (str, int)):
            raise GraphError(f"{how}() expects a field name (str) or a tuple index (int), got {column!r}")
        self.key_selector = key_selector
        self.column = column
        self.how = how
        self.state = _FieldFold(column, how)
        #: the state while every batch has been a columnar one numpy folds exactly (the
        #: combiner's partials); moved into ``state`` for good at the first other batch
        self._columns: ColumnarFieldFold | None = None
        self._restored: list[Any] = []
        self._keyed: Any = None  # the off-heap keyed backend holding the state, if the job's does

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        state = self.state
        backend = ctx.keyed_backend
        if backend is not None and getattr(backend, "off_heap", False):
            self._keyed = backend
            state.values, state.first = (_BackendValues(backend, n) for n in FIELD_STATES)  # type: ignore[assignment]
        for snapshot in restored_states(self._restored, ctx, _KIND, _FIELDS, _field_entries):
            for kg, entries in snapshot.get("by_key_group", {}).items():
                if kg in ctx.key_group_range:  # (keys canonical: an unpickled NaN is a new object)
                    for k, (first, value) in zip(restored_keys(entries, ctx, f"{self.how}({self.column!r})"),
                                                 entries.values()):
                        state.first[k] = first
                        state.values[k] = value
        if self._keyed is None and backend is not None:  # heap: a RocksDB job's snapshot keeps them in the backend
            values, firsts = (backend_restored_state(backend, n) for n in FIELD_STATES)
            for kg in sorted(values):
                group_firsts = firsts.get(kg, {})
                for k, value in values[kg].items():
                    first = group_firsts.get(k, _MISSING)
                    if first is _MISSING:
                        raise StateError(
                            f"{self.how}({self.column!r}) of operator {ctx.operator_name!r}: the restored keyed "
                            f"state has a value for key {short_repr(k, 60)} but no first record ({FIELD_STATES[1]!r})"
                        )
                    state.first[k] = first
                    state.values[k] = value
        self._restored = []
        if self._keyed is None and not state.values and isinstance(self.column, str):
            self._columns = ColumnarFieldFold(self.column, self.how)

    def _to_dicts(self) -> None:
        """Move the columnar state into the dict fold (for good: a batch it does not take came)."""
        columns, self._columns = self._columns, None
        if columns is not None:
            state = self.state
            for key, first, value in columns.items():
                state.first[key] = first
                state.values[key] = value

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        state = self.state
        ki = _column_index(batch, self.key_selector.column)
        vi = _column_index(batch, self.column)
        if ki < 0 or vi < 0:
            self._to_dicts()
            state.fold_records(batch.records(), key_getter(self.key_selector))
            return
        # Arrow rows (the combiner's partials): keys and values as columns, records only for
        # the keys seen for the first time
        rb = batch.arrow()
        if self._columns is not None:
            if self._columns.fold(rb, ki, vi):
                return
            self._to_dicts()
        column = rb.column(ki)
        keys = canonical_keys(column.to_pylist(), column.type)
        new = state.fold(keys, rb.column(vi).to_pylist(), lambda i: arrow_to_records(rb.slice(i, 1))[0])
        if new:
            first = state.first
            for i, r in zip(new, arrow_to_records(rb.take(pa.array(new, pa.int64())))):
                first[keys[i]] = r

    def end_input(self) -> None:
        if self._keyed is not None:
            self._end_input_off_heap()
            return
        if self._columns is not None:
            if len(self._columns):
                self.output.emit(Batch.of_records(self._columns.results()))
            self._columns = ColumnarFieldFold(self._columns.column, self.how)  # emitted: cleared
            return
        if self.state.values:
            self.output.emit(Batch.of_records(self.state.results()))
        self.state.clear()  # emitted: a restore from a later checkpoint must not emit it again

    def _end_input_off_heap(self) -> None:
        """Emit and clear every key's result from the keyed backend, in key-group order and
        in chunks (the state may be larger than memory)."""
        backend = self._keyed
        value_state, first_state = (backend.get_state(ValueStateDescriptor(n)) for n in FIELD_STATES)
        column = self.column
        chunk: list[Any] = []
        for k in backend.keys(FIELD_STATES[0]):  # (reads a key group before yielding its keys)
            backend.set_current_key(k)
            chunk.append(with_field(first_state.value(), column, value_state.value()))
            value_state.clear()
            first_state.clear()
            if len(chunk) >= _FINAL_CHUNK:
                self.output.emit(Batch.of_records(chunk))
                chunk = []
        if chunk:
            self.output.emit(Batch.of_records(chunk))

    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        if self._keyed is not None:  # off-heap: the values are in the keyed snapshot
            return {"by_key_group": KeyGroupedState(), OPERATOR_KIND: _KIND}
        if self._columns is not None:
            entries = [(k, (first, value)) for k, first, value in self._columns.items()]
        else:
            values, firsts = self.state.values, self.state.first
            entries = [(k, (firsts[k], v)) for k, v in values.items()]
        out: KeyGroupedState = KeyGroupedState()
        if entries:
            groups = key_groups_of_keys([k for k, _ in entries], self.ctx.max_parallelism).tolist()
            for (k, entry), g in zip(entries, groups):
                out.setdefault(g, {})[k] = entry
        return {"by_key_group": out, OPERATOR_KIND: _KIND}

    def restore_state(self, states: list[Any]) -> None:
        self._restored = list(states)
