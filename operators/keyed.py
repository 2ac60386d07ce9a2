"""Keyed operators: rolling reduce (record API), vectorized aggregate (batch API) and
KeyedProcessFunction. Their input is hash-partitioned by key group, so each subtask owns
its keys; state is snapshotted per key group and re-split on restore (rescaling).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raystream.checkpoint.descriptors import ReducingStateDescriptor
from raystream.engine.errors import CheckpointError, GraphError, UserCodeError, refusing_restore
from raystream.engine.events import Watermark
from raystream.engine.keygroups import (
    canonical_key,
    canonical_keys,
    key_group_for,
    key_groups_of_keys,
)
from raystream.engine.operator import KeyGroupedState, OperatorContext, Output, StreamOperator
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch

from .arrow_aggregate import group_aggregate
from .basic import emit_side_outputs, record_stamps, result_stamps, run_stamps, stamp_side
from .functions import (
    KeyedProcessFunction,
    OnTimerContext,
    ProcessContext,
    RuntimeContext,
    add_results,
    flink_hint,
    keyed_state_backend,
)
from .key_slots import KeySlots
from .minibatch import HELD_ROWS, MiniBatchCombiner
from .time import TimestampAssigner
from .timers import EVENT_TIMERS as EVENT_TIMERS  # (re-exported: the names of the timer queues)
from .timers import PROCESSING_TIMERS as PROCESSING_TIMERS
from .timers import (
    InternalTimerService,
    TimerService,
    backend_restored_timers,
    backend_timer_queues,
)

__all__ = ["ReduceOperator", "AggregateOperator", "KeyedProcessOperator", "AGGREGATIONS", "OPERATOR_KIND",
           "restored_states"]

#: the field of a keyed operator's snapshot naming the kind of operator that wrote it, so that
#: a state restored under a uid that now names another kind of operator is refused by name
#: (a ``reduce``'s snapshot names none: its format is the one older releases wrote and read)
OPERATOR_KIND = "operator_kind"


def restored_states(states: list[Any], ctx: OperatorContext, kind: str | None, fields: frozenset[str],
                    looks_like: Callable[[dict[str, Any]], bool] | None = None,
                    name: str | None = None) -> list[dict[str, Any]]:
    """The operator states restored under ``ctx``'s uid for an operator whose snapshots hold
    ``fields`` and name ``kind`` as :data:`OPERATOR_KIND` (None: name no kind); ``None``
    states (old subtasks without state) left out. A state naming no kind (written before
    2026-12-07, or by a ``reduce``) must hold only ``fields`` and satisfy ``looks_like``; the
    restored keyed state must hold no state that another kind of keyed operator keeps its
    values in off the heap (:data:`_OWN_STATES`: a ``reduce``'s, a ``sum``'s on RocksDB).

    Raises:
        CheckpointError: a state was written by another kind of operator (a ``reduce``'s uid
            now on a ``KeyedProcessFunction``, an aggregate's on a ``reduce``). The message
            names the operator, its uid, both kinds (``name``: this operator's, default
            ``kind``) and the remedies.
    """
    mine = name or kind
    out = []
    for st in states:
        if st is None:
            continue
        theirs = st.get(OPERATOR_KIND) if isinstance(st, dict) else None
        if isinstance(st, dict) and (theirs == kind if theirs is not None else
                                     set(st) <= fields and (looks_like is None or looks_like(st))):
            out.append(st)
            continue
        if theirs is not None:
            written = _a(theirs)
        elif isinstance(st, dict) and set(st) == {"by_key_group"}:  # (what a reduce writes)
            written = "a reduce (or, in a snapshot written before 2026-12-07, another operator of per-key values)"
        elif isinstance(st, dict):
            written = f"an operator whose state holds {sorted(map(str, st))!r}, not {sorted(fields)!r}"
        else:
            written = f"an operator whose state is a {type(st).__name__}"
        raise _written_by_another(ctx, mine, written)
    backend = ctx.keyed_backend
    for state_name in getattr(backend, "state_names", list)():
        theirs = _OWN_STATES.get(state_name)
        if theirs is not None and theirs != mine:
            raise _written_by_another(ctx, mine, f"{_a(theirs)} (its keyed state {state_name!r})")
    return out


def _a(kind: Any) -> str:
    return f"{'an' if str(kind)[:1].lower() in 'aeiou' else 'a'} {kind}"


def _written_by_another(ctx: OperatorContext, mine: str | None, written: str) -> CheckpointError:
    return refusing_restore(CheckpointError(
        f"operator {ctx.operator_name!r} (uid {ctx.operator_uid!r}) is {_a(mine)}, but the state restored under "
        f"its uid was written by {written}: a uid names one operator across versions of a job, and this "
        "state cannot be read as this operator's. Give this operator a new uid() and restore with "
        "allow_non_restored_state=True to drop the old operator's state, or put the uid back on an operator "
        "of the kind that wrote it"
    ))


#: the keyed states in which keyed operators keep their values in an off-heap backend, by the
#: kind of operator (REDUCE_STATE below; operators.keyed_final.FIELD_STATES)
_OWN_STATES = {"_reduce": "reduce", "_field/value": "field aggregate (sum/min/max)",
               "_field/first": "field aggregate (sum/min/max)"}


_REDUCE_FIELDS = frozenset({"by_key_group"})


def _aggregate_parts(state: dict[str, Any]) -> bool:
    """Whether an operator state naming no kind holds a vectorized aggregate's parts."""
    return all(isinstance(part, dict) and "keys" in part and "acc" in part
               for part in state.get("by_key_group", {}).values())


def _split_state_by_key_group(state: dict[Any, Any], max_parallelism: int) -> dict[int, dict[Any, Any]]:
    keys = list(state)
    groups = key_groups_of_keys(keys, max_parallelism)
    out: dict[int, dict[Any, Any]] = {}
    for k, g in zip(keys, groups.tolist()):
        out.setdefault(g, {})[k] = state[k]
    return out


def restored_keys(entries: dict[Any, Any], ctx: OperatorContext, what: str) -> list[Any]:
    """The keys of a restored key group's ``entries`` of an operator's own heap state, made
    canonical (an unpickled NaN is a new object); a NaN key of another bit pattern than the
    canonical one (``-nan``), which had a key group of its own before 2026-12-07, must belong
    to a key group of this subtask now (it is the one NaN key, routed by that group).

    Raises:
        CheckpointError: such a key's group belongs to another subtask.
    """
    raw_keys = list(entries)
    keys = canonical_keys(raw_keys)
    if keys is not raw_keys:  # (a NaN among them)
        for raw, k in zip(raw_keys, keys):
            if raw is not k and key_group_for(k, ctx.max_parallelism) not in ctx.key_group_range:
                raise CheckpointError(
                    f"{what} of operator {ctx.operator_name!r}: the restored state holds NaN key {raw!r} in the "
                    f"key group of its bit pattern, but every NaN is one key since 2026-12-07, in key group "
                    f"{key_group_for(k, ctx.max_parallelism)}, outside this subtask's range: restore at "
                    "parallelism 1 (every key group local), take a savepoint, and rescale from that"
                )
    return keys


#: names of the operators' own state in an off-heap keyed backend (timer queues:
#: EVENT_TIMERS, PROCESSING_TIMERS of operators.timers)
REDUCE_STATE = "_reduce"
#: records per batch when a final reduce emits its state from an off-heap backend
_FINAL_CHUNK = 8192


class ReduceOperator(StreamOperator):
    """Rolling reduce per key: emits the updated value for every input record (Flink semantics,
    ``emit="updates"``), or only the final value of every key at end of input
    (``emit="final"``, Flink's BATCH execution mode for bounded input).

    State: on the heap backend a dict key -> value of the operator, snapshotted per key
    group as operator state; on an off-heap backend (RocksDB, ``off_heap``) a
    :class:`~checkpoint.state.ReducingState` of the keyed backend (Flink's layout), so state
    may exceed memory. Values of a restored heap-format operator state (a heap job's
    savepoint) are moved into the backend.
    """

    keyed = True

    def __init__(self, key_selector: KeySelector, fn: Callable[[Any, Any], Any], emit: str = "updates") -> None:
        if emit not in ("updates", "final"):
            raise GraphError(f"emit must be 'updates' or 'final', got {emit!r}")
        self.key_selector = key_selector
        self.fn = fn
        self.emit_mode = emit
        self.state: dict[Any, Any] = {}  # key -> reduced value (heap backend)
        self._keyed: Any = None  # the off-heap keyed backend, if the job's keeps state off-heap
        self._reducing: Any = None  # its ReducingState

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        if self._reducing is not None:
            self._process_off_heap(batch)
            return
        state = self.state
        get = state.get
        fn = self.fn
        key_of = self.key_selector.getter
        records = batch.records()
        r = None
        # The state holds canonical keys (one float object per NaN: nan != nan); a key not
        # found as it is is looked up once more canonical, so a known key costs nothing more.
        try:
            if self.emit_mode == "final":
                for r in records:
                    k = key_of(r)
                    acc = get(k, _MISSING)
                    if acc is _MISSING:
                        k = canonical_key(k)
                        acc = get(k, _MISSING)
                    state[k] = r if acc is _MISSING else fn(acc, r)
                return
            out: list[Any] = []
            append = out.append
            for r in records:
                k = key_of(r)
                acc = get(k, _MISSING)
                if acc is _MISSING:
                    k = canonical_key(k)
                    acc = get(k, _MISSING)
                acc = r if acc is _MISSING else fn(acc, r)
                state[k] = acc
                append(acc)
        except UserCodeError:  # (the function named the record at fault itself)
            raise
        except Exception as exc:
            raise UserCodeError(r, exc) from exc
        self.output.emit(Batch.of_records(out, batch.timestamps))  # (a rolling result keeps its record's timestamp)

    def _process_off_heap(self, batch: Batch) -> None:
        """The reduce on the keyed backend's ReducingState (one per key)."""
        set_key = self._keyed.set_current_key
        reducing = self._reducing
        add = reducing.add
        add_and_get = getattr(reducing, "add_and_get", None)  # (one read instead of two, on RocksDB)
        if add_and_get is None:
            def add_and_get(value: Any) -> Any:
                add(value)
                return reducing.get()
        key_of = self.key_selector.getter  # (the backend makes its keys canonical itself)
        records = batch.records()
        r = None
        try:
            if self.emit_mode == "final":
                for r in records:
                    set_key(key_of(r))
                    add(r)
                return
            out: list[Any] = []
            append = out.append
            for r in records:
                set_key(key_of(r))
                append(add_and_get(r))
        except UserCodeError:  # (the function named the record at fault itself)
            raise
        except Exception as exc:
            raise UserCodeError(r, exc) from exc
        self.output.emit(Batch.of_records(out, batch.timestamps))  # (a rolling result keeps its record's timestamp)

    def end_input(self) -> None:
        if self._reducing is not None:
            self._end_input_off_heap()
            return
        if self.emit_mode == "final" and self.state:
            self.output.emit(Batch.of_records(list(self.state.values())))
        # Everything is emitted: the task's final state (FLIP-147), which stands in for it in
        # later checkpoints, must not hold values that a restore would emit once more.
        self.state = {}

    def _end_input_off_heap(self) -> None:
        """Emit (``emit="final"``) and clear every key's value, in key-group order and in
        chunks (the state may be larger than memory)."""
        backend, reducing = self._keyed, self._reducing
        keys = backend.keys(REDUCE_STATE)  # (reads a key group before yielding its keys)
        final = self.emit_mode == "final"
        chunk: list[Any] = []
        for k in keys:
            backend.set_current_key(k)
            if final:
                chunk.append(reducing.get())
                if len(chunk) >= _FINAL_CHUNK:
                    self.output.emit(Batch.of_records(chunk))
                    chunk = []
            reducing.clear()
        if chunk:
            self.output.emit(Batch.of_records(chunk))

    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any] | None:
        # off-heap: the values are in the keyed snapshot, the operator's part stays empty
        if not hasattr(self, "ctx"):
            return None
        return {"by_key_group": KeyGroupedState(_split_state_by_key_group(self.state, self.ctx.max_parallelism))}

    def restore_state(self, states: list[Any]) -> None:
        self._restored: list[Any] | None = states

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        self._restored = restored_states(getattr(self, "_restored", None) or [], ctx, None, _REDUCE_FIELDS,
                                         name="reduce")
        backend = ctx.keyed_backend
        if backend is not None and getattr(backend, "off_heap", False):
            keyed = self._keyed = keyed_state_backend(ctx)
            reducing = self._reducing = keyed.get_state(ReducingStateDescriptor(REDUCE_STATE, self.fn))
            for st in getattr(self, "_restored", []) or []:  # a heap job's savepoint: into the backend
                for kg, entries in (st or {}).get("by_key_group", {}).items():
                    if kg in ctx.key_group_range:
                        for k, v in entries.items():
                            keyed.set_current_key_with_group(k, kg)
                            reducing.clear()
                            reducing.add(v)
        else:
            for st in getattr(self, "_restored", []) or []:
                for kg, entries in (st or {}).get("by_key_group", {}).items():
                    if kg in ctx.key_group_range:  # (keys canonical: unpickled NaNs are new objects)
                        self.state.update(zip(restored_keys(entries, ctx, "reduce"), entries.values()))
            heap = keyed_state_backend(ctx) if backend is not None else None
            if heap is not None and REDUCE_STATE in heap.state_names():  # a RocksDB job's savepoint: out of it
                restored = heap.get_state(ReducingStateDescriptor(REDUCE_STATE, self.fn))
                for k in list(heap.keys(REDUCE_STATE)):
                    heap.set_current_key(k)
                    self.state[k] = restored.get()
                    restored.clear()
        self._restored = None



_INT64_MAX = 2**63 - 1
#: an accumulator's partial: (values, valid mask or None: all valid, Arrow type)
_Column = tuple[np.ndarray, "np.ndarray | None", pa.DataType]


def _numpy(col: pa.Array) -> _Column:
    """An Arrow partial as :meth:`AggregateOperator._merge` takes it (nulls masked, their
    values arbitrary; ints stay ints)."""
    valid = None
    if col.null_count:
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        if pa.types.is_null(col.type):
            return np.full(len(col), None, dtype=object), valid, col.type
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
            col = pc.fill_null(col, pa.scalar(0, col.type) if not pa.types.is_boolean(col.type) else False)
    return col.to_numpy(zero_copy_only=False), valid, col.type


def _occurrences(idx: np.ndarray) -> np.ndarray:
    """For every element of ``idx``, how many equal elements come before it (0: its first).

    Example:
        >>> _occurrences(np.array([4, 1, 4, 4, 1])).tolist()
        [0, 0, 1, 2, 1]
    """
    order = np.argsort(idx, kind="stable")
    ordered = idx[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run = np.repeat(starts, np.diff(np.r_[starts, len(idx)]))
    out = np.empty(len(idx), dtype=np.int64)
    out[order] = np.arange(len(idx)) - run
    return out


def _take_rows(keys: pa.Array | list[Any], rows: np.ndarray) -> pa.Array | list[Any]:
    return [keys[i] for i in rows.tolist()] if isinstance(keys, list) else keys.take(pa.array(rows))


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _name_fn(op: "AggregateOperator", name: str) -> str:
    return next(fn for n, _c, fn in op._acc_names() if n == name)


_MISSING = object()

#: supported vectorized aggregations and their (partial, merge) kernels
AGGREGATIONS = ("sum", "count", "min", "max", "mean")


class AggregateOperator(StreamOperator):
    """Vectorized per-key aggregates over Arrow columns.

    Each batch is grouped with pyarrow's hash aggregation, partial results are merged into
    numpy accumulators indexed by a vectorized key -> slot table (:class:`KeySlots`: a
    batch's key column is looked up without a Python loop per key), and the updated rows of the keys seen
    in the batch are emitted (``emit="updates"``, an upsert stream) or only the final rows at
    end of input (``emit="final"``).
    """

    keyed = True

    def __init__(self, key_column: str, aggregations: dict[str, tuple[str, str]], emit: str = "updates",
                 partials: bool = False) -> None:
        for out_name, spec in aggregations.items():
            if not (isinstance(spec, tuple) and len(spec) == 2 and spec[1] in AGGREGATIONS):
                raise GraphError(
                    f"aggregation {out_name!r}: expected (column, one of {AGGREGATIONS}), got {spec!r}"
                )
        if emit not in ("updates", "final"):
            raise GraphError(f"emit must be 'updates' or 'final', got {emit!r}")
        if partials and emit != "final":
            raise GraphError("an aggregate over partials (two-phase) emits only final rows")
        # partials: the input holds rows of LocalAggregateOperator (one column per accumulator)
        self.partials = partials
        self.key_column = key_column
        self.aggregations = aggregations
        self.emit_mode = emit
        self.slots = KeySlots()  # key -> its index in the accumulator arrays; .keys in slot order
        self.acc: dict[str, np.ndarray] = {}
        #: min/max: which slots hold a value, and the Arrow type of the values
        self.seen: dict[str, np.ndarray] = {}
        self.types: dict[str, pa.DataType] = {}
        self._restored: list[Any] = []

    # accumulator layout: for each output: sum->sum, count->count, min->min, max->max, mean->(sum,count)
    def _acc_names(self) -> list[tuple[str, str, str]]:
        names = []
        for out, (col, fn) in self.aggregations.items():
            if fn == "mean":
                names.append((f"{out}#sum", col, "sum"))
                names.append((f"{out}#count", col, "count"))
            else:
                names.append((out, col, fn))
        return names

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        for st in restored_states(self._restored or [], ctx, "aggregate", _REDUCE_FIELDS, _aggregate_parts):
            for kg, part in st.get("by_key_group", {}).items():
                if kg in ctx.key_group_range:
                    self._merge(part["keys"], self._snapshot_columns(part))
        self._restored = []

    @property
    def keys(self) -> list[Any]:
        """The Python value of every accumulator slot's key, in slot order."""
        return self.slots.keys

    def _grow(self) -> None:
        """Extend the accumulator arrays (and the min/max ``seen`` masks) to the slots of the
        keys added to ``self.slots``."""
        n = len(self.slots)
        for name, _col, _fn in self._acc_names():
            old = self.acc.get(name)
            if old is None:  # sums and counts start as exact int64; min/max take the type of their first values
                old = self.acc[name] = np.zeros(0, dtype=np.int64)
            grown = np.full(n, None, dtype=object) if old.dtype == object else np.zeros(n, dtype=old.dtype)
            grown[: len(old)] = old
            self.acc[name] = grown
            seen = self.seen.get(name)
            if seen is not None or _name_fn(self, name) in ("sum", "min", "max"):
                mask = np.zeros(n, dtype=bool)
                if seen is not None:
                    mask[: len(seen)] = seen
                self.seen[name] = mask

    def _slots_for(self, keys: pa.Array | list[Any]) -> np.ndarray:
        """The accumulator slot of every key (an Arrow key column, or a snapshot's Python keys)."""
        idx = self.slots.slots_of_list(keys) if isinstance(keys, list) else self.slots.slots_of(keys)
        if not self.acc or len(next(iter(self.acc.values()))) != len(self.slots):
            self._grow()
        return idx

    def _merge(self, keys: pa.Array | list[Any], partial: dict[str, _Column]) -> np.ndarray:
        """Fold per-key partials (each key once; ``(values, valid mask or None, Arrow type)``
        per accumulator) into the accumulators. Sums stay int64 while their values are
        integers (an addition beyond int64 fails, naming the key), and widen to float64 when
        a float arrives; min and max keep their values' type (ints stay exact ints, strings,
        dates, timestamps with their zone), with a mask of the keys that have a value."""
        idx = self._slots_for(keys)
        if self.slots.python_equality and len(idx) > 1:
            occurrence = _occurrences(idx)
            if occurrence.any():  # keys Arrow grouped apart, one for Python (0.0 and -0.0): fold them in turn
                for level in range(int(occurrence.max()) + 1):
                    rows = np.flatnonzero(occurrence == level)
                    self._fold(idx[rows], _take_rows(keys, rows), {
                        name: (vals[rows], None if valid is None else valid[rows], typ)
                        for name, (vals, valid, typ) in partial.items()})
                return idx
        self._fold(idx, keys, partial)
        return idx

    def _fold(self, idx: np.ndarray, keys: pa.Array | list[Any], partial: dict[str, _Column]) -> None:
        """:meth:`_merge` of partials whose slots ``idx`` are distinct."""
        for name, _col, fn in self._acc_names():
            vals, valid, typ = partial[name]
            if pa.types.is_null(typ):  # no values at all
                continue
            if fn in ("sum", "count"):
                self._add(name, idx, vals, keys)
                if fn == "sum":
                    seen = self.seen[name]
                    seen[idx] = True if valid is None else seen[idx] | valid
                continue
            acc = self._minmax_acc(name, vals, typ)
            vals = vals.astype(acc.dtype, copy=False) if acc.dtype != object else vals
            seen = self.seen[name]
            had = seen[idx]
            cur = acc[idx]
            new = vals.copy() if valid is None else np.where(valid, vals, cur)  # (vals may be Arrow's read-only buffer)
            both = had if valid is None else had & valid
            if both.any():
                pick = (np.fmin if fn == "min" else np.fmax) if acc.dtype.kind == "f" else (np.minimum if fn == "min" else np.maximum)
                new[both] = pick(cur[both], vals[both])
            acc[idx] = new
            seen[idx] = True if valid is None else had | valid

    def _add(self, name: str, idx: np.ndarray, vals: np.ndarray, keys: pa.Array | list[Any]) -> None:
        acc = self.acc[name]
        if vals.dtype.kind == "u":
            if len(vals) and int(vals.max()) > _INT64_MAX:
                self._overflow(name, idx, keys, int(np.argmax(vals)), int(vals.max()))
            vals = vals.astype(np.int64)
        elif vals.dtype.kind == "b":
            vals = vals.astype(np.int64)
        elif vals.dtype.kind == "f" and acc.dtype.kind != "f":
            acc = self.acc[name] = acc.astype(np.float64)
        elif vals.dtype == object:  # (a restored snapshot's values)
            vals = vals.astype(acc.dtype)
        if acc.dtype.kind == "f":
            acc[idx] += vals
            return
        cur = acc[idx]
        total = cur + vals  # wraps around on overflow: caught below
        over = ((cur ^ total) & (vals ^ total)) < 0
        if over.any():
            i = int(np.flatnonzero(over)[0])
            self._overflow(name, idx, keys, i, int(cur[i]) + int(vals[i]))
        acc[idx] = total

    def _overflow(self, name: str, idx: np.ndarray, keys: pa.Array | list[Any], i: int, value: int) -> None:
        key = keys[i] if isinstance(keys, list) else keys[i].as_py()
        raise OverflowError(
            f"{self._describe()}: the sum {name!r} of key {key!r} would be {value}, beyond a 64-bit integer "
            "(Arrow columns hold int64); cast the column to float64 first, or use sum(column) of the record API "
            "(exact Python ints)"
        )

    def _minmax_acc(self, name: str, vals: np.ndarray, typ: pa.DataType) -> np.ndarray:
        """The min/max accumulator of ``name`` able to hold ``vals`` (of Arrow type ``typ``):
        its type is the first values' type; ints and floats together become float64."""
        acc = self.acc[name]
        old = self.types.get(name)
        if _is_number(typ):  # every int width as int64 (an unsigned one beyond it as float64), floats as float64
            huge = vals.dtype == np.uint64 and len(vals) and int(vals.max()) > _INT64_MAX
            typ = pa.float64() if pa.types.is_floating(typ) or huge else pa.int64()
        if old is None or not self.seen[name].any():
            self.types[name] = typ
            dtype: np.dtype[Any]
            if _is_number(typ):  # (int64 or float64 here; DataType.to_pandas_dtype would need pandas)
                dtype = np.dtype(np.float64) if pa.types.is_floating(typ) else np.dtype(np.int64)
            else:
                dtype = vals.dtype if vals.dtype.kind in "bmM" else np.dtype(object)
            if acc.dtype != dtype:
                acc = self.acc[name] = acc.astype(dtype) if np.dtype(dtype).kind != "O" else np.full(len(acc), None, dtype=object)
            return acc
        if typ == old:
            return acc
        if _is_number(old) and _is_number(typ):  # ints and floats: floats
            if pa.types.is_floating(old):
                return acc
            self.types[name] = pa.float64()
            acc = self.acc[name] = acc.astype(np.float64)
            return acc
        raise GraphError(f"{self._describe()}: {name!r} takes the {_name_fn(self, name)} of {old} values and now {typ} values; "
                         "give the column one type")

    def _snapshot_columns(self, part: dict[str, Any]) -> dict[str, _Column]:
        """A snapshot part's accumulators as :meth:`_merge` takes them (snapshots before the
        ``seen`` masks held min/max as float64 filled with +-inf where a key had no value)."""
        out: dict[str, _Column] = {}
        seen = part.get("seen", {})
        types = part.get("types", {})
        for name, _col, fn in self._acc_names():
            vals = np.asarray(part["acc"][name])
            if fn in ("min", "max"):
                valid = np.asarray(seen[name]) if name in seen else ~np.isinf(vals)
                typ = types.get(name) or pa.float64()
                out[name] = (vals, valid, typ)
            else:  # (a sum without its mask: a snapshot of when a key's sum started at 0)
                out[name] = (vals, np.asarray(seen[name]) if name in seen else None, pa.from_numpy_dtype(vals.dtype))
        return out

    def _fields(self) -> list[str]:
        """The fields of its input this operator reads: the key and the aggregated columns (or,
        merging partials, the accumulators)."""
        read = [name if self.partials else col for name, col, _fn in self._acc_names()]
        return list(dict.fromkeys([self.key_column, *read]))

    def _describe(self) -> str:
        """How an error names this operator: ``aggregate(total=('value', 'sum'))``."""
        return "aggregate(" + ", ".join(f"{out}={spec!r}" for out, spec in self.aggregations.items()) + ")"

    def batch_partials(self, rb: pa.RecordBatch) -> tuple[pa.Array, dict[str, pa.Array]]:
        """Group one batch by key: ``(keys, {accumulator name: per-key partial})``; the sum,
        min and max of a key with only nulls in the batch are null."""
        if rb.schema.get_field_index(self.key_column) < 0:
            raise GraphError(
                f"{self._describe()}: key column {self.key_column!r} is not in the batch (columns: {rb.schema.names})"
            )
        missing = [col for _n, col, _f in self._acc_names() if rb.schema.get_field_index(col) < 0]
        if missing:
            raise GraphError(f"{self._describe()}: column {missing[0]!r} is not in the batch (columns: {rb.schema.names})")
        table = pa.Table.from_batches([rb])
        specs = list(dict.fromkeys((col, fn) for _name, col, fn in self._acc_names()))
        grouped = group_aggregate(table, self.key_column, specs, self._describe)
        partial = {}
        for name, col, fn in self._acc_names():
            # nulls are skipped (SQL semantics): the sum, min or max of a key with only nulls
            # in this batch is null (a column of nulls only is of Arrow's null type)
            partial[name] = grouped.column(f"{col}_{fn}").combine_chunks()
        return grouped.column(self.key_column).combine_chunks(), partial

    def _unique_partials(self, rb: pa.RecordBatch) -> tuple[pa.Array, dict[str, pa.Array]]:
        """Partial rows (several per key: partials of several upstream sends) merged into one
        per key."""
        names = [name for name, _col, _fn in self._acc_names()]
        missing = [c for c in (self.key_column, *names) if rb.schema.get_field_index(c) < 0]
        if missing:
            raise GraphError(f"{self._describe()}: partial aggregate rows lack columns {missing} (columns: {rb.schema.names})")
        specs = list(dict.fromkeys((name, _MERGE_PARTIALS[fn]) for name, _col, fn in self._acc_names()))
        grouped = group_aggregate(pa.Table.from_batches([rb]), self.key_column, specs, self._describe)
        return grouped.column(self.key_column).combine_chunks(), {
            name: grouped.column(f"{name}_{_MERGE_PARTIALS[fn]}").combine_chunks() for name, _col, fn in self._acc_names()}

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        rb = batch.typed_columns(self._describe(), self._fields())
        if not rb.num_rows:
            return
        key_values, columns = self._unique_partials(rb) if self.partials else self.batch_partials(rb)
        idx = self._merge(key_values, {name: _numpy(col) for name, col in columns.items()})
        if self.emit_mode == "updates":
            if self.slots.python_equality and len(idx) > 1:
                first = _occurrences(idx) == 0  # (a key's row once, though Arrow grouped 0.0 and -0.0 apart)
                if not first.all():
                    idx, key_values = idx[first], key_values.filter(pa.array(first))
            out = Batch.of_arrow(self._rows(idx, key_values))
            stamps = batch.timestamps
            if stamps is not None and not self.partials and len(stamps) == rb.num_rows:
                out.timestamps = _last_stamps(rb.column(self.key_column), key_values, stamps)
            self.output.emit(out)

    def _rows(self, idx: np.ndarray, key_values: pa.Array) -> pa.RecordBatch:
        cols: dict[str, pa.Array] = {self.key_column: key_values}
        for out, (_col, fn) in self.aggregations.items():
            if fn == "mean":
                total, count = self.acc[f"{out}#sum"][idx], self.acc[f"{out}#count"][idx]
                mean = np.divide(total, count, out=np.zeros(len(idx)), where=count > 0)
                cols[out] = pa.array(mean, mask=count == 0)  # no non-null value: null
            elif fn in ("min", "max"):
                vals, seen = self.acc[out][idx], self.seen[out][idx]
                typ = self.types.get(out)
                if typ is None or not seen.any():
                    cols[out] = pa.nulls(len(idx), typ or pa.null())
                else:
                    cols[out] = pa.array(vals, mask=~seen, type=typ)
            elif fn == "sum":  # no non-null value: null (SQL)
                cols[out] = pa.array(self.acc[out][idx], mask=~self.seen[out][idx])
            else:
                cols[out] = pa.array(self.acc[out][idx])
        return pa.RecordBatch.from_pydict(cols)

    def end_input(self) -> None:
        if self.emit_mode == "final" and self.keys:
            idx = np.arange(len(self.keys))
            self.output.emit(Batch.of_arrow(self._rows(idx, pa.array(self.keys))))
        # emitted: a restore from a checkpoint taken after this task finished emits nothing again
        self.slots, self.acc, self.seen, self.types = KeySlots(), {}, {}, {}

    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        if not self.keys:
            return {"by_key_group": KeyGroupedState(), OPERATOR_KIND: "aggregate"}
        groups = key_groups_of_keys(self.keys, self.ctx.max_parallelism)
        out = KeyGroupedState()
        for g in np.unique(groups).tolist():
            sel = np.flatnonzero(groups == g)
            out[g] = {
                "keys": [self.keys[i] for i in sel.tolist()],
                "acc": {name: arr[sel].copy() for name, arr in self.acc.items()},
                "seen": {name: arr[sel].copy() for name, arr in self.seen.items()},
                "types": dict(self.types),
            }
        return {"by_key_group": out, OPERATOR_KIND: "aggregate"}

    def restore_state(self, states: list[Any]) -> None:
        self._restored = states


#: how the partials of an accumulator merge (count: the partial counts add up)
_MERGE_PARTIALS = {"sum": "sum", "count": "sum", "min": "min", "max": "max"}


class LocalAggregateOperator(MiniBatchCombiner):
    """The local half of a two-phase aggregate (Flink SQL's local-global aggregation): groups
    each batch by key *before* the shuffle into one partial row per key (a column per
    accumulator), so the exchange carries partials instead of every row and a hot key
    costs its subtask one row per upstream send instead of one per record.
    ``KeyedStream.aggregate(..., emit="final")`` chains it to the upstream operator and
    merges the partials in an :class:`AggregateOperator` with ``partials=True``.

    The partials of consecutive batches are held and merged into one row per key before
    they are sent (a mini-batch: :mod:`operators.minibatch`), at the latest at the end of
    input and before every checkpoint barrier; nothing is held in a snapshot.

    Example:
        >>> import pyarrow as pa
        >>> from raystream.engine.records import Batch
        >>> class Out:
        ...     def emit(self, batch): print(batch.arrow().to_pydict())
        >>> op = LocalAggregateOperator("k", {"total": ("v", "sum")})
        >>> op.open(None, Out())
        >>> op.process_batch(Batch.of_arrow(pa.record_batch({"k": ["a", "b", "a"], "v": [1, 2, 3]})))
        >>> op.process_batch(Batch.of_arrow(pa.record_batch({"k": ["a"], "v": [10]})))
        >>> op.end_input()
        {'k': ['a', 'b'], 'total': [14, 2]}
    """

    def __init__(self, key_column: str, aggregations: dict[str, tuple[str, str]],
                 max_held_rows: int = HELD_ROWS) -> None:
        super().__init__(max_held_rows)
        self.layout = AggregateOperator(key_column, aggregations, "final")
        self._merges = [(name, _MERGE_PARTIALS[fn]) for name, _col, fn in self.layout._acc_names()]

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        key_values, partial = self.layout.batch_partials(batch.typed_columns(self.layout._describe(), self.layout._fields()))
        self.hold(pa.RecordBatch.from_pydict({self.layout.key_column: key_values, **partial}))

    def merge(self, partials: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        """One row per key (keys in order of first appearance)."""
        key = self.layout.key_column
        # (a partial column of nulls only is of Arrow's null type: promoted to the others')
        table = pa.concat_tables([pa.Table.from_batches([b]) for b in partials], promote_options="default")
        grouped = group_aggregate(table, key, self._merges, self.layout._describe)
        cols = {key: grouped.column(key).combine_chunks()}
        for name, fn in self._merges:
            cols[name] = grouped.column(f"{name}_{fn}").combine_chunks()
        return [pa.RecordBatch.from_pydict(cols)]


_KPF_FIELDS = frozenset({"timers"})


def _last_stamps(column: pa.Array, keys: pa.Array, stamps: np.ndarray) -> np.ndarray | None:
    """The timestamp of each of ``keys``' update rows, for a batch whose key ``column`` rows
    carry ``stamps``: its key's last record's (Flink's rolling aggregate emits an update per
    record with that record's timestamp; a key's row here is the update of its last record in
    the batch). None when a key's rows cannot be told apart (no timestamps then).

    Example:
        >>> _last_stamps(pa.array(["a", "b", "a"]), pa.array(["a", "b"]), np.array([5, 6, 7])).tolist()
        [7, 6]
    """
    pos = pc.index_in(column, value_set=keys, skip_nulls=False).to_numpy(zero_copy_only=False)
    rows = np.arange(len(pos), dtype=np.int64)
    matched = ~np.isnan(pos) if pos.dtype.kind == "f" else np.ones(len(pos), dtype=bool)
    last = np.full(len(keys), -1, dtype=np.int64)
    np.maximum.at(last, pos[matched].astype(np.int64), rows[matched])
    return None if (last < 0).any() else stamps[last]


class KeyedProcessOperator(StreamOperator):
    """Runs a :class:`KeyedProcessFunction` with the keyed state backend set to each record's
    key, event-time and processing-time timers (``ctx.timer_service()``) and side outputs
    (``ctx.output(tag, value)``).

    Timers are checkpointed per key group: on the heap backend with the operator (its
    snapshot's ``"timers"``), on an off-heap backend (RocksDB) in the backend's timer
    queues, so they are in the keyed snapshot and do not grow the heap. Timers of the heap
    format in a restored operator state (a heap job's savepoint) are moved into the queues.

    ``timestamp_assigner`` (from ``assign_timestamps_and_watermarks`` upstream) sets
    ``ctx.timestamp`` for every record.
    """

    keyed = True

    def __init__(self, key_selector: KeySelector, function: KeyedProcessFunction,
                 timestamp_assigner: TimestampAssigner | None = None) -> None:
        if not isinstance(function, KeyedProcessFunction):
            raise GraphError(
                f"process() expects a KeyedProcessFunction instance, got {type(function).__name__}"
            )
        self.key_selector = key_selector
        self.function = function
        self.timestamp_assigner = timestamp_assigner
        self._restored: list[Any] = []

    def open(self, ctx: OperatorContext, output: Output) -> None:
        super().open(ctx, output)
        self.backend = keyed_state_backend(ctx)
        self.pctx = ProcessContext()
        self.tctx = OnTimerContext()
        queues = backend_timer_queues(self.backend)  # RocksDB: timers in the backend, part of the keyed snapshot
        self.timers = InternalTimerService(
            ctx.max_parallelism, self._on_event_timer, self._on_processing_timer,
            ctx.register_processing_timer, ctx.clock, queues,
        )
        self.pctx._timer_service = TimerService(self.timers, self.pctx.get_current_key)
        self.tctx._timer_service = TimerService(self.timers, self.tctx.get_current_key)
        restored = [st.get("timers") for st in restored_states(self._restored, ctx, "KeyedProcessFunction", _KPF_FIELDS)]
        self._restored = []
        self.timers.restore(restored + backend_restored_timers(self.backend), ctx.key_group_range,
                            f"operator {ctx.operator_name!r} (uid {ctx.operator_uid!r})")
        self._out: list[Any] = []
        #: (end in _out, timestamp) of the output held, when it carries timestamps
        self._runs: list[tuple[int, int]] = []
        self._side_ts: dict[str, list[int]] = {}  # the side outputs' timestamps, likewise
        self.function.open(RuntimeContext(ctx))

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        out = self._out
        backend = self.backend
        pctx = self.pctx
        fn = self.function.process_element
        records = batch.records()
        key_of = self.key_selector.key_of
        try:
            keys: list[Any] | None = self.key_selector.keys_of_records(records, batch)  # (canonical: timers' keys too)
        except Exception:  # noqa: BLE001 - a record without a key: the loop below names it
            keys = None
        carried, stamps = record_stamps(batch, len(records), self.timestamp_assigner)
        if out:  # (output held from before: goes first, with its own timestamps or none)
            self._flush(pctx)
            out = self._out
        if stamps is None:  # (records without timestamps: ctx.timestamp is None, not the last batch's)
            pctx.timestamp = None
            for i, r in enumerate(records):
                try:
                    k = keys[i] if keys is not None else key_of(r)
                    backend.set_current_key(k)
                    pctx._key = k
                    result = fn(r, pctx)
                    if result is not None:
                        add_results(out, result, self.function, "process_element", pctx)
                except Exception as exc:
                    raise UserCodeError(r, flink_hint(exc)) from exc
            self._flush(pctx)
            return
        ends = [0] * len(records)  # (results after each record: their timestamps per batch, result_stamps)
        side_ts = self._side_ts
        side = pctx._side  # (the same dict until _take_side)
        for i, r in enumerate(records):
            try:
                k = keys[i] if keys is not None else key_of(r)
                backend.set_current_key(k)
                pctx._key = k
                pctx.timestamp = stamps[i]
                result = fn(r, pctx)
                if result is not None:
                    add_results(out, result, self.function, "process_element", pctx)
                ends[i] = len(out)
                if side:
                    stamp_side(side, side_ts, stamps[i])
            except Exception as exc:
                raise UserCodeError(r, flink_hint(exc)) from exc
        if out:  # (every result carries its record's timestamp)
            arr = carried if carried is not None else np.array(stamps, dtype=np.int64)
            self._runs = []
            self._out = []
            self.output.emit(Batch.of_records(out, result_stamps(arr, ends)))
        self._flush(pctx)

    def _covered(self) -> int:
        """How many records of ``_out`` have a timestamp in ``_runs``."""
        return self._runs[-1][0] if self._runs else 0

    def _flush(self, ctx: ProcessContext) -> None:
        """Emit the output held: with the timestamps of ``_runs`` (``(end, timestamp)`` runs
        of ``_out``: each record's results carry its timestamp, an event-time timer's its
        time) when they cover it, else none (a processing-time timer's, records without)."""
        if self._out:
            out, self._out = self._out, []
            runs, self._runs = self._runs, []
            self.output.emit(Batch.of_records(out, run_stamps(runs, len(out))))
        else:
            self._runs = []
        side_ts, self._side_ts = self._side_ts, {}
        emit_side_outputs(self.output, ctx._take_side(), side_ts)

    def _fire(self, key: Any, time: int, domain: str) -> None:
        tctx = self.tctx
        self.backend.set_current_key(key)
        tctx._key = key
        tctx.timestamp = time
        tctx._domain = domain
        event_time = domain == "event_time"
        if self._out and event_time != (self._covered() == len(self._out)):
            self._flush(tctx)  # (output of another kind, stamped or not, goes first)
        try:
            result = self.function.on_timer(time, tctx)
            if result is not None:
                add_results(self._out, result, self.function, "on_timer", tctx)
                if event_time:  # (Flink: an event-time timer's output carries the timer's time)
                    self._runs.append((len(self._out), time))
            if tctx._side:  # (Flink: its side outputs carry the timer's time in either domain)
                stamp_side(tctx._side, self._side_ts, time)
        except Exception as exc:
            raise UserCodeError(f"on_timer(key={key!r}, time={time!r})", flink_hint(exc)) from exc

    def _on_event_timer(self, key: Any, ns: None, time: int) -> None:
        self._fire(key, time, "event_time")

    def _on_processing_timer(self, key: Any, ns: None, time: int) -> None:
        self._fire(key, time, "processing_time")
        self._flush(self.tctx)

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        self.timers.advance_watermark(watermark.timestamp)
        self._flush(self.tctx)
        self.output.emit_watermark(watermark)

    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        return {"timers": self.timers.snapshot(), OPERATOR_KIND: "KeyedProcessFunction"}

    def restore_state(self, states: list[Any]) -> None:
        self._restored = states

    def close(self) -> None:
        self.function.close()
