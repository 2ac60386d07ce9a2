"""The keyed aggregate's vectorized key -> slot index (issue 15) == a dict filled row by row.

:class:`KeySlots` looks a whole key column up at once (sorted numpy index for integers,
``pc.index_in`` for strings, a dict fallback for other or mixed key types). For any sequence
of batches its slots must be those of a Python dict that gives every new key the next slot
in row order (nulls being the key ``None``), also after a restore from the keys in slot
order. The aggregate built on it must give each key exactly one row with the reference's
sums, in order of first appearance, after a snapshot and a restore at another parallelism.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from unittest import mock

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.engine.keygroups import key_groups_of_keys
from raystream.engine.records import Batch
from raystream.operators import key_slots
from raystream.operators.key_slots import KeySlots
from raystream.operators.keyed import AggregateOperator
from raystream.operators.testing import OperatorHarness


class DictSlots:
    """The reference: the dict of the operator before issue 15, filled row by row."""

    def __init__(self, keys: list[Any] | None = None) -> None:
        self.keys: list[Any] = []
        self.slots: dict[Any, int] = {}
        for k in keys or []:
            self.of([k])

    def of(self, keys: list[Any]) -> list[int]:
        for k in keys:
            if k not in self.slots:
                self.slots[k] = len(self.keys)
                self.keys.append(k)
        return [self.slots[k] for k in keys]


ints = st.one_of(st.none(), st.integers(-50, 50), st.integers(-2**62, 2**62))
strings = st.one_of(st.none(), st.sampled_from(["", "a", "b", "ab", "é", "1"]), st.text(max_size=4))
INT_TYPES = [pa.int64(), pa.int32(), pa.int16(), pa.uint32()]
STR_TYPES = [pa.string(), pa.large_string()]


@st.composite
def key_batch(draw: Any, kind: str) -> pa.Array:
    if kind == "int":
        typ = draw(st.sampled_from(INT_TYPES))
        lo, hi = (0, 2**32 - 1) if typ == pa.uint32() else (-(2**(typ.bit_width - 1)), 2**(typ.bit_width - 1) - 1)
        values = draw(st.lists(st.one_of(st.none(), st.integers(max(lo, -60), min(hi, 60)), st.integers(lo, hi)),
                               max_size=60))
        return pa.array(values, type=typ)
    if kind == "str":
        values = draw(st.lists(strings, max_size=60))
        return pa.array(values, type=draw(st.sampled_from(STR_TYPES)))
    if kind == "dict":  # dictionary-encoded strings
        return pa.array(draw(st.lists(strings, max_size=60)), type=pa.string()).dictionary_encode()
    if kind == "float":
        return pa.array(draw(st.lists(st.one_of(st.none(), st.sampled_from([0.5, 1.0, 2.0, -3.25])), max_size=20)),
                        type=pa.float64())
    if kind == "bool":
        return pa.array(draw(st.lists(st.one_of(st.none(), st.booleans()), max_size=20)), type=pa.bool_())
    return pa.array([None] * draw(st.integers(0, 5)))  # "null": a column of nulls only


def _check_batches(batches: list[pa.Array], restore_after: int) -> None:
    index, ref = KeySlots(), DictSlots()
    for i, arr in enumerate(batches):
        if i == restore_after:  # restored from a snapshot's keys (in slot order)
            keys = list(index.keys)
            index, ref = KeySlots(), DictSlots(keys)
            assert index.slots_of_list(keys).tolist() == list(range(len(keys)))
        got = index.slots_of(arr).tolist()
        assert got == ref.of(arr.to_pylist()), (i, arr)
        assert index.keys == ref.keys
        assert len(index) == len(ref.keys)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["int", "str", "dict"]), data=st.data(), restore_after=st.integers(0, 6),
       many_keys=st.booleans())
def test_one_key_type_matches_dict(kind: str, data: st.DataObject, restore_after: int, many_keys: bool) -> None:
    """``many_keys``: strings looked up as with more known keys than index_in is used for."""
    batches = data.draw(st.lists(key_batch(kind), min_size=1, max_size=6))
    with mock.patch.object(key_slots, "_INDEX_IN_KEYS", -1000 if many_keys else key_slots._INDEX_IN_KEYS):
        _check_batches(batches, restore_after)


@settings(max_examples=150, deadline=None)
@given(kinds=st.lists(st.sampled_from(["int", "str", "dict", "float", "bool", "null"]), min_size=1, max_size=6),
       data=st.data(), restore_after=st.integers(0, 6))
def test_mixed_key_types_match_dict(kinds: list[str], data: st.DataObject, restore_after: int) -> None:
    """Types that do not fit the index (ints then strings, floats, bools) fall back to a dict
    with Python's equality: ``1 == 1.0 == True``, ``"1" != 1``."""
    _check_batches([data.draw(key_batch(k)) for k in kinds], restore_after)


def test_equal_keys_of_other_python_types_share_a_slot() -> None:
    index = KeySlots()
    assert index.slots_of(pa.array([1, 2, None], pa.int64())).tolist() == [0, 1, 2]
    assert index.slots_of(pa.array([2.0, 3.5, 1.0])).tolist() == [1, 3, 0]
    assert index.slots_of(pa.array([True, None])).tolist() == [0, 2]
    assert index.slots_of(pa.array(["1"])).tolist() == [4]
    assert index.keys == [1, 2, None, 3.5, "1"]


def test_uint64_beyond_int64_keeps_exact_keys() -> None:
    index = KeySlots()
    big = 2**64 - 1
    assert index.slots_of(pa.array([5, big, 5], pa.uint64())).tolist() == [0, 1, 0]
    assert index.slots_of(pa.array([big - 1, big], pa.uint64())).tolist() == [2, 1]
    assert index.keys == [5, big, big - 1]


# ---------------------------------------------------------------------------- the aggregate
rows = st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 30)), st.integers(-100, 100)), min_size=1, max_size=150)


def _record_batches(data: list, cuts: list[int], as_str: bool) -> list[pa.RecordBatch]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    out = []
    for lo, hi in zip(bounds, bounds[1:]):
        part = data[lo:hi]
        keys = [None if k is None else (f"k{k}" if as_str else k) for k, _ in part]
        out.append(pa.RecordBatch.from_pydict({
            "key": pa.array(keys, pa.string() if as_str else pa.int64()),
            "value": pa.array([v for _, v in part], pa.int64()),
        }))
    return out


@settings(max_examples=60, deadline=None)
@given(data=rows, cuts=st.lists(st.integers(0, 200), max_size=6), as_str=st.booleans(),
       partials=st.booleans(), restore_after=st.integers(0, 6), parallelism=st.integers(1, 3))
def test_aggregate_sums_each_key_once_across_a_restore(data, cuts, as_str, partials, restore_after, parallelism):
    """Final rows: one per key (null included), the reference sum, first-appearance order at
    p=1; a snapshot restored at ``parallelism`` re-splits the keys by key group."""
    batches = _record_batches(data, cuts, as_str)
    spec = {"total": ("value", "sum")}
    if partials:  # rows of partials, a key repeated within a batch (several upstream batches)
        batches = [pa.RecordBatch.from_pydict({"key": b.column(0), "total": b.column(1)}) for b in batches]
        spec = {"total": ("total", "sum")}
    expected: Counter = Counter()
    for k, v in data:
        expected[None if k is None else (f"k{k}" if as_str else k)] += v

    def make() -> AggregateOperator:
        return AggregateOperator("key", spec, "final", partials=partials)

    harnesses = [OperatorHarness(make())]
    for i, b in enumerate(batches):
        if i == restore_after:
            snaps = [h.snapshot() for h in harnesses]
            harnesses = [OperatorHarness(make(), subtask_index=s, parallelism=parallelism, restore=snaps)
                         for s in range(parallelism)]
        for h in harnesses:  # (a subtask takes the rows of its own key groups)
            h.process(Batch.of_arrow(_own_rows(b, h)))
    got: list[tuple[Any, int]] = []
    for h in harnesses:
        h.end_input()
        got.extend((r["key"], r["total"]) for r in h.table().to_pylist())
    assert len(got) == len({k for k, _ in got}), got  # one row per key
    assert dict(got) == dict(expected)
    if len(harnesses) == 1 and restore_after >= len(batches):
        assert [k for k, _ in got] == list(expected)  # first appearance (Counter keeps insertion order)


def _own_rows(b: pa.RecordBatch, h: OperatorHarness) -> pa.RecordBatch:
    groups = key_groups_of_keys(b.column(0).to_pylist(), h.ctx.max_parallelism).tolist()
    rng = h.ctx.key_group_range
    return b.filter(pa.array([g in rng for g in groups], pa.bool_()))
