"""Columnar state of the record API's ``sum/min/max(column, emit="final")``.

:class:`~operators.keyed_final.FieldAggregateOperator` folds the combiner's partials, which
arrive as Arrow batches (a key column, a numeric value column, the rest of each key's first
record). :class:`ColumnarFieldFold` folds such a batch without a Python step per row: keys
map to slots of one numpy accumulator through :class:`~operators.key_slots.KeySlots`, and
the rows of keys seen for the first time are kept as Arrow slices (the keys' first records,
turned into Python records only when the results are emitted or snapshotted).

It holds exactly what the dict fold (``_FieldFold``) would hold: per key, in order of first
appearance, the first record and the result of Python's ``+``/``min``/``max`` applied
row by row. It takes a batch only where numpy computes the same values and returns ``False``
otherwise, and the operator moves its state into the dict fold for good:

* ``sum`` over int64 (exact while the sum of every folded ``|value|`` stays below 2**62, so
  no accumulator can overflow) or float64 (accumulators start at ``-0.0``, the identity of
  IEEE addition, and ``np.add.at`` adds row by row in order, as the Python loop does);
* ``min``/``max`` over integers (no float: ``-0.0``/``0.0`` and NaN order-dependence);
* no nulls in the value column, and one value type for the life of the state (a sum that
  turns float, or a float column after an int one, goes to the dict fold).

Example:
    >>> import pyarrow as pa
    >>> fold = ColumnarFieldFold("v", "sum")
    >>> fold.fold(pa.RecordBatch.from_pydict({"k": ["a", "b", "a"], "v": [1, 2, 3]}), 0, 1)
    True
    >>> fold.results()
    [{'k': 'a', 'v': 4}, {'k': 'b', 'v': 2}]
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from raystream.engine.records import arrow_to_records

from .key_slots import KeySlots

__all__ = ["ColumnarFieldFold"]

#: the folded ``|value|`` total up to which an int64 sum cannot overflow
_INT_BOUND = float(2**62)


def _value_kind(t: pa.DataType, how: str) -> str | None:
    """``"int"``/``"float"``: the accumulator a value column of type ``t`` folds into; None: not columnar."""
    if pa.types.is_integer(t) and not pa.types.is_uint64(t):
        return "int"
    if how == "sum" and (pa.types.is_float64(t) or pa.types.is_float32(t)):
        return "float"
    return None


class ColumnarFieldFold:
    """Per-key ``sum``/``min``/``max`` of one column over Arrow batches, with each key's first
    record kept as an Arrow row (see the module docstring for which batches it takes)."""

    def __init__(self, column: str, how: str) -> None:
        self.column = column
        self.how = how
        self.slots = KeySlots()
        self.acc = np.empty(0, dtype=np.int64)
        self._kind: str | None = None
        self._total = 0.0  # sum of every folded |value| (int sums: the overflow bound)
        self._firsts: list[pa.RecordBatch] = []  # the first rows of the keys, in slot order

    def __len__(self) -> int:
        return len(self.slots)

    def fold(self, rb: pa.RecordBatch, key_index: int, value_index: int) -> bool:
        """Fold ``rb`` (key in column ``key_index``, value in ``value_index``); ``False`` when
        the batch needs Python's semantics (nothing folded then)."""
        col = rb.column(value_index)
        kind = _value_kind(col.type, self.how)
        if kind is None or col.null_count or (self._kind is not None and kind != self._kind):
            return False
        if kind == "int":
            values = col.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            total = self._total
            if self.how == "sum":
                total += float(np.abs(values.astype(np.float64)).sum())
                if total >= _INT_BOUND:
                    return False
        else:
            values = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            total = 0.0
        keys = rb.column(key_index)
        known = len(self.slots)
        slots = self.slots.slots_of(keys)  # (Python equality of keys, as a dict's, in every index mode)
        self._kind = kind
        self._total = total
        if len(self.slots) > known:
            self._grow(kind)
            # the first row of every new slot (known..len-1, numbered in order of first row)
            fresh = np.flatnonzero(slots >= known)
            rows = np.full(len(self.slots) - known, len(slots), dtype=np.int64)
            np.minimum.at(rows, slots[fresh] - known, fresh)
            self._firsts.append(rb.take(pa.array(rows, pa.int64())))
        if self.how == "sum":
            np.add.at(self.acc, slots, values)
        elif self.how == "min":
            np.minimum.at(self.acc, slots, values)
        else:
            np.maximum.at(self.acc, slots, values)
        return True

    def _grow(self, kind: str) -> None:
        n = len(self.slots)
        if kind == "float":
            fill: Any = -0.0  # x + -0.0 == x for every x, -0.0 included
            dtype: Any = np.float64
        else:
            info = np.iinfo(np.int64)
            fill = {"sum": 0, "min": info.max, "max": info.min}[self.how]
            dtype = np.int64
        grown = np.full(n, fill, dtype=dtype)
        grown[: len(self.acc)] = self.acc
        self.acc = grown

    def items(self) -> Iterator[tuple[Any, Any, Any]]:
        """``(key, first record, result)`` of every key in order of first appearance; the first
        record still holds the partial value of the row it came from."""
        values = self.acc.tolist()
        keys = self.slots.keys
        i = 0
        for chunk in self._firsts:
            for record in arrow_to_records(chunk):
                yield keys[i], record, values[i]
                i += 1

    def results(self) -> list[Any]:
        """Each key's first record with the column set to the key's result (as ``_FieldFold.results``)."""
        column = self.column
        out = []
        for _key, record, value in self.items():
            record[column] = value  # (a fresh dict of arrow_to_records)
            out.append(record)
        return out

