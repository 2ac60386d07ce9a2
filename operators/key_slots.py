"""Vectorized key -> slot index of the keyed aggregate's accumulator arrays.

:class:`KeySlots` maps a batch's key column to accumulator slots without a Python loop per
row: integer keys through a sorted numpy index (``np.searchsorted``), string and binary keys
through ``pyarrow.compute.index_in`` against the known keys (beyond ``_INDEX_IN_KEYS`` known
keys, whose hash table index_in would rebuild per batch, a dict lookup per *distinct* key of
the batch). Keys not seen before get the
next slots in the order of their first appearance in the batch (the order a dict filled row
by row would give them). A null key is a key of its own (``None``), as in a dict.

Keys of any other type (floats, booleans, dates, ...), or a batch whose key type does not
fit the index (ints after strings, floats after ints), switch the index for good to a plain
dict from Python key to slot, which has the semantics of Python equality
(``1 == 1.0 == True``, ``0.0 == -0.0``), except that every float NaN is one key (as Arrow's
group-by and Flink hold it; Python's ``nan != nan`` would make each NaN object a key).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["KeySlots"]

#: "str"/"bin" keys: ``pc.index_in`` against all known keys up to this many (plus twice the
#: batch's rows), a dict lookup per distinct key of the batch beyond (index_in rebuilds its
#: hash table of the known keys on every call: ~0.25 us a key)
_INDEX_IN_KEYS = 65_536


def _family(t: pa.DataType) -> str | None:
    """The index kind a key type belongs to (``None``: only the dict fallback takes it)."""
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "str"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "bin"
    return None


class KeySlots:
    """Key -> slot table of the accumulator arrays, looked up a whole Arrow key column at a time.

    ``keys`` holds the Python value of every slot's key, in slot order (slot ``i`` is
    ``keys[i]``); :meth:`slots_of` returns the slot of every element of a key column and adds
    the keys not seen before.

    Example:
        >>> import pyarrow as pa
        >>> ks = KeySlots()
        >>> ks.slots_of(pa.array(["b", "a", "b", None])).tolist()
        [0, 1, 0, 2]
        >>> ks.slots_of(pa.array(["c", "a"])).tolist(), ks.keys
        ([3, 1], ['b', 'a', None, 'c'])
    """

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self._family: str | None = None  # "int", "str", "bin"; None: no non-null key yet
        self._dict: dict[Any, int] | None = None  # the fallback, once switched to
        self._null_slot = -1
        # "int": known keys sorted, and their slots; "str"/"bin": known keys in slot order
        # (nulls apart) as one Arrow array of type _type, and their slots
        self._sorted = np.empty(0, dtype=np.int64)
        self._values: pa.Array | None = None
        self._type: pa.DataType | None = None
        self._value_slots = np.empty(0, dtype=np.int64)
        self._value_dict: dict[Any, int] | None = None  # "str"/"bin" with many known keys
        self._nan: float | None = None  # the one NaN key of the dict fallback (NaN != NaN)

    def __len__(self) -> int:
        return len(self.keys)

    def slots_of_list(self, keys: list[Any]) -> np.ndarray:
        """:meth:`slots_of` for keys given as Python values (a restored snapshot's)."""
        if self._dict is None:
            try:
                arr = pa.array(keys)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                self._to_dict()
            else:
                return self.slots_of(arr)
        return self._dict_slots(keys)

    def slots_of(self, arr: pa.Array) -> np.ndarray:
        """The slot of every element of ``arr`` (int64), new keys added in first-appearance order."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        fitted = self._fit(arr) if self._dict is None else None
        if fitted is None:  # the dict fallback
            return self._dict_slots(arr.to_pylist())
        arr = fitted
        n = len(arr)
        if arr.null_count == n:  # (empty, or nulls only)
            if n and self._null_slot < 0:
                self._null_slot = len(self.keys)
                self.keys.append(None)
            return np.full(n, self._null_slot, dtype=np.int64)
        out = np.empty(n, dtype=np.int64)
        valid = None if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
        if self._family == "int":
            found, new_values, first, inv = self._lookup_int(arr, valid, out)
        else:
            found, new_values, first, inv = self._lookup_arrow(arr, out)
        missing = ~found if valid is None else (~found & valid)
        null_first = -1
        if valid is not None and self._null_slot < 0:
            null_first = int(np.argmin(valid))  # the first null row
        m = 0 if new_values is None else len(new_values)
        if m == 0 and null_first < 0:
            if valid is not None:
                out[~valid] = self._null_slot
            return out
        # slots of the new keys (null among them) in order of their first row in the batch
        start = len(self.keys)
        firsts = first if null_first < 0 else np.append(first, null_first)
        order = np.argsort(firsts, kind="stable")
        rank = np.empty(len(firsts), dtype=np.int64)
        rank[order] = np.arange(len(firsts), dtype=np.int64)
        new_slots = start + rank
        py_values = [] if new_values is None else new_values.to_pylist()
        if null_first >= 0:
            py_values.append(None)
            self._null_slot = int(new_slots[-1])
        self.keys.extend(py_values[i] for i in order.tolist())
        if m:
            out[missing] = new_slots[inv]
            self._insert(new_values, new_slots[:m])
        if valid is not None:
            out[~valid] = self._null_slot
        return out

    # ------------------------------------------------------------------ the vectorized index
    def _fit(self, arr: pa.Array) -> pa.Array | None:
        """``arr`` in the index's key type; ``None`` (and the dict from now on) if it does not fit."""
        fam = _family(arr.type)
        if arr.null_count == len(arr):
            return arr
        if fam is None or (self._family is not None and fam != self._family):
            self._to_dict()
            return None
        if self._family is None:
            self._family = fam
            self._type = pa.int64() if fam == "int" else arr.type
        if arr.type != self._type:
            try:
                arr = arr.cast(self._type, safe=True)  # same family: equal values stay equal
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # (uint64 beyond int64, ...)
                self._to_dict()
                return None
        return arr

    def _lookup_int(self, arr: pa.Array, valid: np.ndarray | None,
                    out: np.ndarray) -> tuple[np.ndarray, pa.Array | None, np.ndarray, np.ndarray]:
        v = (arr if valid is None else pc.fill_null(arr, 0)).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        known = self._sorted
        if len(known):
            pos = np.searchsorted(known, v)
            np.minimum(pos, len(known) - 1, out=pos)
            found = known[pos] == v
            if valid is not None:
                found &= valid
            out[found] = self._value_slots[pos[found]]
        else:
            found = np.zeros(len(v), dtype=bool)
        missing = ~found if valid is None else (~found & valid)
        if not missing.any():
            return found, None, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        uniq, first, inv = np.unique(v[missing], return_index=True, return_inverse=True)
        rows = np.flatnonzero(missing)
        return found, pa.array(uniq, type=pa.int64()), rows[first], inv.reshape(-1)

    def _lookup_arrow(self, arr: pa.Array, out: np.ndarray) -> tuple[np.ndarray, pa.Array | None, np.ndarray, np.ndarray]:
        if self._values is not None and len(self._values) > _INDEX_IN_KEYS + 2 * len(arr):
            # index_in hashes its whole value set on every call: with many known keys, look
            # the batch's distinct keys up in a dict instead (one lookup per distinct key)
            if self._value_dict is None:
                self._value_dict = dict(zip(self._values.to_pylist(), self._value_slots.tolist()))
            get = self._value_dict.get
            distinct = pc.unique(arr)
            slot_of = np.fromiter((get(k, -1) for k in distinct.to_pylist()), dtype=np.int64, count=len(distinct))
            slots = slot_of[pc.index_in(arr, value_set=distinct).to_numpy(zero_copy_only=False)]
            found = slots >= 0  # (a null row: -1, the null slot is apart)
            out[found] = slots[found]
        elif self._values is not None and len(self._values):
            ix = pc.index_in(arr, value_set=self._values)
            found = ix.is_valid().to_numpy(zero_copy_only=False)
            pos = pc.fill_null(ix, 0).to_numpy(zero_copy_only=False)
            out[found] = self._value_slots[pos[found]]
        else:
            found = np.zeros(len(arr), dtype=bool)
        missing = ~found
        if arr.null_count:
            missing &= arr.is_valid().to_numpy(zero_copy_only=False)
        if not missing.any():
            return found, None, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        rows = np.flatnonzero(missing)
        miss = arr.take(pa.array(rows))
        uniq = pc.unique(miss)  # in order of first appearance
        inv = pc.index_in(miss, value_set=uniq).to_numpy(zero_copy_only=False).astype(np.int64)
        first = np.full(len(uniq), len(inv), dtype=np.int64)  # the first row of each new key
        np.minimum.at(first, inv, np.arange(len(inv), dtype=np.int64))  # (inv: 0..len(uniq)-1)
        return found, uniq, rows[first], inv

    def _insert(self, values: pa.Array, slots: np.ndarray) -> None:
        if self._family == "int":
            v = values.to_numpy(zero_copy_only=False)
            at = np.searchsorted(self._sorted, v)  # v is sorted and new: one insertion pass
            self._sorted = np.insert(self._sorted, at, v)
            self._value_slots = np.insert(self._value_slots, at, slots)
        else:
            self._values = values if self._values is None else pa.concat_arrays([self._values, values])
            self._value_slots = np.concatenate([self._value_slots, slots])
            if self._value_dict is not None:
                self._value_dict.update(zip(values.to_pylist(), slots.tolist()))

    # ------------------------------------------------------------------ the dict fallback
    def _to_dict(self) -> None:
        if self._dict is None:
            self._dict = {k: i for i, k in enumerate(self.keys)}
            self._sorted = self._value_slots = np.empty(0, dtype=np.int64)
            self._values = self._value_dict = None

    def _dict_slots(self, keys: list[Any]) -> np.ndarray:
        if self._dict is None:
            self._to_dict()
        assert self._dict is not None
        slots = self._dict
        get = slots.get
        found = [get(k) for k in keys]
        if None in found:  # keys met for the first time (or a NaN object not seen before)
            nan = self._nan
            for i, k in enumerate(keys):
                if found[i] is not None:
                    continue
                if k != k and type(k) is float:  # NaN: one key (as Arrow groups it), whatever its object
                    if nan is None:
                        nan = self._nan = k
                    k = nan
                slot = get(k)
                if slot is None:
                    slot = slots[k] = len(self.keys)
                    self.keys.append(k)
                found[i] = slot
        return np.fromiter(found, dtype=np.int64, count=len(found))

    @property
    def python_equality(self) -> bool:
        """True once keys map to slots by Python equality (the dict fallback): then keys
        that Arrow tells apart may share a slot (``0.0`` and ``-0.0``), so the rows of one
        Arrow group-by may get the same slot twice."""
        return self._dict is not None
