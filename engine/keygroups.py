"""Key groups and the stable key hash used to route keyed records.

Keys map to key groups with ``kg = stable_hash(key) % max_parallelism`` and key groups map
to subtasks with ``subtask = kg * parallelism // max_parallelism`` (Flink's scheme). Keyed
state is stored per key group, so a snapshot can be re-split at another parallelism.

Python's ``hash()`` is salted per process and is never used here: strings and bytes are
hashed with CRC-32 of their UTF-8 bytes, integers with the SplitMix64 finalizer, and the
vectorized path (for Arrow columns) hashes each *distinct* value once.

Composite keys hash from the stable hashes of their parts, so keys that compare equal
hash equally in every process: tuples and lists in order; sets and frozensets (one hash for
``{1, 2}`` and ``frozenset([2, 1])``) and dicts over their *sorted* member hashes, never in
their iteration order, which depends on the string hash salt. Keys equal to values of
other types hash as those values: an ``IntEnum`` as its int, a ``str`` Enum as its str, a
namedtuple as its tuple, a ``Decimal`` or ``Fraction`` as the int or float it equals (else
by its ratio), a tz-aware datetime by its instant. Other objects hash by their ``repr()``
(naive datetime, date, Enum, user classes with a repr that holds no object id); a dataclass
or Enum whose repr would list a set or dict hashes by its fields instead. A key with no
deterministic value is refused with :class:`ConfigError`.

Example:
    >>> key_group_for("k00001", 128) == key_group_for("k00001", 128)
    True
    >>> key_group_for(frozenset({"a", "b"}), 128) == key_group_for(frozenset({"b", "a"}), 128)
    True
    >>> KeyGroupRange.for_subtask(0, 2, 128)
    KeyGroupRange(start=0, end=63)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import math
import operator
import struct
import zlib
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConfigError

__all__ = [
    "DEFAULT_MAX_PARALLELISM",
    "KeyGroupRange",
    "canonical_key",
    "canonical_keys",
    "nan_free_type",
    "stable_hash",
    "key_group_for",
    "subtask_for_key_group",
    "key_groups_of_array",
    "key_groups_of_keys",
    "key_groups_of_str_pairs",
    "key_groups_of_tuples",
    "holds_moved_number",
    "moved_float",
]

DEFAULT_MAX_PARALLELISM = 128
_M64 = (1 << 64) - 1
_TAG_STR = 0x5A17
_TAG_BYTES = 0xB17E
_TAG_FLOAT = 0xF10A
_TAG_TUPLE = 0x7475706C
_TAG_LIST = 0x6C697374
_TAG_SET = 0x73657473
_TAG_DICT = 0x64696374
_TAG_PAIR = 0x70616972
_TAG_FIELDS = 0x666C6473
_TAG_RATIO = 0x72617469
_TAG_INSTANT = 0x696E7374
_EPOCH = dt.datetime(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)


#: the one NaN key (quiet NaN, sign clear: 0x7ff8000000000000, Java's canonical NaN) that
#: every NaN key is made (see canonical_key); its stable hash is every NaN's
_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000000))[0]
#: types whose values are their own canonical key (checked first: the common keys)
_CANONICAL_TYPES = frozenset([str, int, bytes, bool, type(None)])


def canonical_key(key: Any) -> Any:
    """``key`` as keyed operators and state hold it: every NaN, which Python holds unequal to
    itself, is replaced by one float object (whatever its sign and payload bits: ``nan``,
    ``-nan``, numpy float NaNs; also inside tuples and frozensets), so that all NaN keys are
    one dict key (dicts compare by identity first), as in Flink (``Double.hashCode`` and its
    serializer go through ``doubleToLongBits``, which makes every NaN one). Any other key
    is returned as it is. The key selector
    (:class:`~engine.partitioners.KeySelector`) gives every keyed operator its keys
    through it.

    Example:
        >>> canonical_key(float("nan")) is canonical_key(-float("nan"))
        True
        >>> canonical_key(("a", 1.5))
        ('a', 1.5)
    """
    t = type(key)
    if t is float:
        return key if key == key else _NAN
    if t in _CANONICAL_TYPES:
        return key
    if t is tuple or t is frozenset:
        for x in key:
            if type(x) not in _CANONICAL_TYPES and canonical_key(x) is not x:
                return t(map(canonical_key, key))
        return key
    if isinstance(key, (float, np.floating)) and key != key:
        return _NAN
    return key


def nan_free_type(arrow_type: pa.DataType) -> bool:
    """True when no value of an Arrow column of ``arrow_type`` is or holds a NaN: its Python
    values (str, bytes, int, bool, or an enum column's members) are their own canonical keys.

    Example:
        >>> nan_free_type(pa.string()), nan_free_type(pa.int32()), nan_free_type(pa.float64())
        (True, True, False)
    """
    return arrow_type in _NAN_FREE_TYPES or pa.types.is_integer(arrow_type)


_NAN_FREE_TYPES = frozenset([pa.string(), pa.large_string(), pa.binary(), pa.large_binary(), pa.bool_()])


def canonical_keys(keys: list, arrow_type: pa.DataType | None = None) -> list:
    """:func:`canonical_key` of every key of ``keys``: ``keys`` itself when all are str,
    int, bytes, bool or None (one C-level pass over their types, skipped when ``keys`` are
    the values of an Arrow column of a :func:`nan_free_type`), else a new list.

    Example:
        >>> nan = float("nan")
        >>> a, b = canonical_keys([float("nan"), (1, float("nan"))]), canonical_keys([nan, (1, nan)])
        >>> a[0] is b[0], a[1] == b[1]
        (True, True)
    """
    if (arrow_type is not None and nan_free_type(arrow_type)) or set(map(type, keys)) <= _CANONICAL_TYPES:
        return keys
    return list(map(canonical_key, keys))


def _mix64(x: int) -> int:
    """SplitMix64 finalizer on a Python int (same bits as :func:`_mix64_np`)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _mix64_np(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def stable_hash(key: Any) -> int:
    """A 64-bit hash of ``key`` that is identical in every process and Python run.

    Keys that compare equal hash equally (``3 == 3.0 == Decimal(3)``, ``{1, 2} ==
    frozenset({2, 1})``, an ``IntEnum`` member and its int, one instant in two time zones),
    and every float NaN hashes as one (``nan``, ``-nan``, any payload: Flink's
    ``Double.hashCode``),
    so that a per-process cache serving equal keys from one entry is exact.
    Supports None, bool, int, float, str, bytes, numpy scalars, tuples and lists (in order),
    sets, frozensets and dicts (order-free), and objects whose ``repr()`` is deterministic.

    Raises:
        ConfigError: the key (or a part of it) has no deterministic value, e.g. an object
            whose repr shows its id.
    """
    t = type(key)
    if t is str:
        return _mix64(zlib.crc32(key.encode("utf-8")) ^ (_TAG_STR << 32))
    if t is int or t is bool:
        return _mix64(int(key) & _M64)
    if t is bytes:
        return _mix64(zlib.crc32(key) ^ (_TAG_BYTES << 32))
    if key is None:
        return _mix64(0x6E6F6E65)
    if t is float:
        if key.is_integer():  # 3.0 and 3 are the same key, as in Python (2.0**70 and 2**70 too)
            return _mix64(int(key) & _M64)
        if key != key:  # every NaN (-nan, other payloads) is one key: the canonical NaN's hash
            key = _NAN
        return _mix64(zlib.crc32(struct.pack("<d", key)) ^ (_TAG_FLOAT << 32))
    if t is tuple:
        return _fold(_TAG_TUPLE, map(stable_hash, key))
    if isinstance(key, (np.integer, np.bool_)):
        return _mix64(int(key) & _M64)
    if isinstance(key, np.floating):
        return stable_hash(float(key))
    if isinstance(key, np.str_):
        return stable_hash(str(key))
    if isinstance(key, (frozenset, set)):  # {1} == frozenset({1}): one hash for both
        return _fold(_TAG_SET, sorted(map(stable_hash, key)))
    if isinstance(key, dict):
        pairs = (_mix64(_mix64(_TAG_PAIR ^ stable_hash(k)) ^ stable_hash(v)) for k, v in key.items())
        return _fold(_TAG_DICT, sorted(pairs))
    if isinstance(key, list):
        return _fold(_TAG_LIST, map(stable_hash, key))
    return _equal_value_hash(key)


def moved_float(key: float) -> bool:
    """Whether float ``key`` is integral and at least 2**63 in magnitude (``2.0**70``,
    ``-2.0**63``): before 2026-12-07 :func:`stable_hash` hashed such a float by its bits, not as
    the int it equals, so snapshots written before hold it in another key group (restores
    re-file it).

    Example:
        >>> moved_float(2.0**70), moved_float(2.0**62), moved_float(1.5e300), moved_float(float("inf"))
        (True, False, True, False)
    """
    return key.is_integer() and abs(key) >= _TWO_63


_TWO_63 = 2.0**63
_TWO_63_INT = 2**63


def holds_moved_number(key: Any) -> bool:
    """Whether ``key`` is, or a tuple holds, an integral float of 2**63 or more in magnitude
    (:func:`moved_float`) or an int of that size, which RocksDB stores such a float as:
    what a snapshot written before 2026-12-07 may hold in another key group than
    :func:`key_group_for` gives it now (restores check these keys only).

    Example:
        >>> holds_moved_number(("a", 2.0**70)), holds_moved_number(-(2**63)), holds_moved_number(2**62)
        (True, True, False)
    """
    t = type(key)
    if t is float:
        return moved_float(key)
    if t is int:
        return not -_TWO_63_INT < key < _TWO_63_INT
    return t is tuple and any(map(holds_moved_number, key))


def _equal_value_hash(key: Any) -> int:
    """Hash of a key that equals values of other types, as those values hash: a subclass of
    int, str, float, bytes or tuple (an ``IntEnum``, a ``StrEnum`` or ``(str, Enum)``
    member, a namedtuple) as its plain value; a ``Decimal``, ``Fraction`` or ``complex`` as
    the int or float it equals, else by its exact ratio; a tz-aware ``datetime`` by its
    instant (one hash in every zone). Anything else: :func:`_object_hash`.

    Example:
        >>> import decimal, enum
        >>> class Level(enum.IntEnum):
        ...     LOW = 1
        >>> stable_hash(Level.LOW) == stable_hash(1) == stable_hash(decimal.Decimal("1.00"))
        True
        >>> stable_hash(decimal.Decimal("1.10")) == stable_hash(decimal.Decimal("1.1")) == stable_hash(1.1)
        False
        >>> stable_hash(decimal.Decimal("1.10")) == stable_hash(decimal.Decimal("1.1"))
        True
    """
    if isinstance(key, int):
        return _mix64(int.__index__(key) & _M64)
    if isinstance(key, str):
        return stable_hash(str.__str__(key))
    if isinstance(key, float):
        return stable_hash(float.__float__(key))
    if isinstance(key, bytes):
        return stable_hash(bytes(memoryview(key)))
    if isinstance(key, tuple):  # a namedtuple equals the plain tuple of its fields
        return stable_hash(tuple(key))
    if isinstance(key, (decimal.Decimal, fractions.Fraction)):
        return _number_hash(key)
    if isinstance(key, complex):
        return stable_hash(key.real) if key.imag == 0 else _object_hash(key)
    if isinstance(key, dt.datetime):
        offset = key.utcoffset()
        if offset is not None:  # aware: equal to the same instant in any zone
            micros = (key.replace(tzinfo=None) - offset - _EPOCH) // _MICROSECOND
            return _mix64(_mix64(_TAG_INSTANT) ^ (micros & _M64))
        if type(key) is not dt.datetime:  # a naive subclass (pandas.Timestamp): as the datetime it equals
            return stable_hash(dt.datetime(key.year, key.month, key.day, key.hour, key.minute, key.second, key.microsecond))
    return _object_hash(key)


def _number_hash(key: decimal.Decimal | fractions.Fraction) -> int:
    """A Decimal or Fraction as the int or float it equals, else by its ratio in lowest
    terms (``Decimal("1.10")`` and ``Fraction(11, 10)`` are one key)."""
    try:
        n, d = key.as_integer_ratio()
    except (ValueError, OverflowError):  # infinities equal float's; NaN equals nothing
        return stable_hash(float(key)) if not key.is_nan() else _object_hash(key)  # type: ignore[union-attr]
    if d == 1:
        return stable_hash(n)
    try:
        if (n / d).as_integer_ratio() == (n, d):
            return stable_hash(n / d)
    except OverflowError:  # (beyond any float: equal to none)
        pass
    return _fold(_TAG_RATIO, (stable_hash(n), stable_hash(d)))


def _fold(tag: int, hashes: Iterable[int]) -> int:
    h = tag
    for x in hashes:
        h = _mix64(h ^ x)
    return h


def _object_hash(key: Any) -> int:
    """Hash of a key that is not a builtin scalar or container: by ``repr()`` (the scheme
    savepoints were written with), or by fields when that repr would show a set or dict in
    its salted iteration order."""
    t = type(key)
    if not _repr_is_stable(key):
        if isinstance(key, enum.Enum):
            return stable_hash(f"{t.__qualname__}.{key.name}")
        fields = [getattr(key, f.name) for f in dataclasses.fields(key) if f.compare]
        return _fold(_TAG_FIELDS ^ stable_hash(t.__qualname__), map(stable_hash, fields))
    text = repr(key)
    if " at 0x" in text:
        raise ConfigError(
            f"key {text} of type {t.__qualname__} has no deterministic value to hash; use a str, "
            "int, bytes, float, tuple, frozenset or dataclass key (or give the class a repr "
            "without its id)"
        )
    return stable_hash(f"{t.__qualname__}:{text}")


def _repr_is_stable(value: Any) -> bool:
    """Whether ``repr(value)`` is free of set and dict iteration order, as far as the
    structure of builtin containers, dataclasses, namedtuples and Enums shows."""
    if isinstance(value, (set, frozenset, dict)):
        return False
    if isinstance(value, (tuple, list)):  # a namedtuple's repr lists its fields
        return all(map(_repr_is_stable, value))
    if isinstance(value, enum.Enum):
        return _repr_is_stable(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_repr_is_stable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr)
    return True


def key_group_for(key: Any, max_parallelism: int) -> int:
    """The key group (0..max_parallelism-1) that ``key`` belongs to."""
    return stable_hash(key) % max_parallelism


def subtask_for_key_group(key_group: int, parallelism: int, max_parallelism: int) -> int:
    """The subtask index owning ``key_group`` at ``parallelism``."""
    return key_group * parallelism // max_parallelism


@dataclass(frozen=True)
class KeyGroupRange:
    """An inclusive range of key groups owned by one subtask."""

    start: int
    end: int

    @staticmethod
    def for_subtask(index: int, parallelism: int, max_parallelism: int) -> "KeyGroupRange":
        """The range that subtask ``index`` owns (inverse of :func:`subtask_for_key_group`)."""
        if not 0 < parallelism <= max_parallelism:
            raise ConfigError(
                f"parallelism {parallelism!r} must be between 1 and max_parallelism {max_parallelism!r}"
            )
        start = math.ceil(index * max_parallelism / parallelism)
        end = math.ceil((index + 1) * max_parallelism / parallelism) - 1
        return KeyGroupRange(start, end)

    def __contains__(self, key_group: object) -> bool:
        return isinstance(key_group, int) and self.start <= key_group <= self.end

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end + 1))

    def __len__(self) -> int:
        return max(0, self.end - self.start + 1)


#: per max_parallelism: key -> key group, kept across batches (a task sees the same keys
#: again and again); cleared when it grows past _CACHE_LIMIT entries. Keys that compare
#: equal (1, 1.0, True, an IntEnum of 1, Decimal(1)) have equal stable hashes, so sharing an
#: entry between them is exact. Keys are cached canonical (canonical_key): every NaN key
#: is one entry, not one per record.
_CACHE: dict[int, dict] = {}
_CACHE_LIMIT = 1 << 20
_STR = {str}
_INT = {int}
_TUPLE = {tuple}
_PAIR = {2}
_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)


def _cache_for(max_parallelism: int) -> dict:
    cache = _CACHE.get(max_parallelism)
    if cache is None or len(cache) > _CACHE_LIMIT:
        cache = _CACHE[max_parallelism] = {}
    return cache


#: lists of at least this many keys of one form are hashed as columns, without the cache
_VECTOR_MIN_KEYS = 1024
#: keys missing from the cache in one shorter list from which they are hashed as columns
_VECTOR_MIN_MISSES = 32


def key_groups_of_keys(keys: list, max_parallelism: int) -> np.ndarray:
    """Key groups of a list of Python keys. Keys of one form (all ``str``, all ``int``
    within 64 bits, or all pairs of ``str`` such as a message's address) are hashed as
    Arrow columns (:func:`key_groups_of_array`): a list of ``_VECTOR_MIN_KEYS`` or more (a
    batch of an exchange) entirely, ~50-120 ns a key whether or not it was seen before
    (ids seen once: orders, sessions); a shorter one goes through a per-process cache
    (~35-50 ns a key it holds, the columns' ~20-40 us of fixed cost saved), its misses as
    columns when there are ``_VECTOR_MIN_MISSES`` or more of one form. Other keys are hashed
    once with :func:`stable_hash` in Python (~0.6-2 us a key) and cached.

    Example:
        >>> keys = [f"user-{i}" for i in range(2000)]
        >>> key_groups_of_keys(keys, 128).tolist() == [key_group_for(k, 128) for k in keys]
        True
    """
    if len(keys) >= _VECTOR_MIN_KEYS:
        groups = _key_groups_as_columns(keys, max_parallelism)
        if groups is not None:
            return groups
    return _key_groups_cached(keys, max_parallelism, columns=True)


def _key_groups_cached(keys: list, max_parallelism: int, columns: bool = False) -> np.ndarray:
    """:func:`key_groups_of_keys`; without ``columns`` missing keys are hashed one by one
    (what the column paths fall back to for values they do not hash themselves)."""
    cache = _cache_for(max_parallelism)
    try:
        groups = list(map(cache.get, keys))  # one dict lookup per key; None: not seen yet
    except TypeError:  # an unhashable key: hash every key without the cache
        return np.fromiter((stable_hash(k) % max_parallelism for k in keys), dtype=np.int64, count=len(keys))
    if None in groups:
        if columns and groups.count(None) >= _VECTOR_MIN_MISSES:
            missing = list(compress(keys, map(operator.is_, groups, repeat(None))))
            found = _key_groups_as_columns(missing, max_parallelism)
            if found is not None:
                cache.update(zip(missing, found.tolist()))
                groups = list(map(cache.get, keys))
                if None not in groups:
                    return np.array(groups, dtype=np.int64)
        # new keys (a stream keeps meeting rare keys long after its hot ones are cached): hash
        # each missing one once, found with C-level scans rather than a pass over the batch
        index = groups.index
        i = index(None)
        while True:
            k = keys[i]
            kg = cache.get(k)
            if kg is None:
                # cached by the canonical key: a NaN (also in a tuple) is a new object per
                # record, which a dict never finds again; one entry serves them all
                k = canonical_key(k)
                kg = cache.get(k)
                if kg is None:
                    kg = cache[k] = stable_hash(k) % max_parallelism
            groups[i] = kg
            try:
                i = index(None, i + 1)
            except ValueError:
                break
    return np.array(groups, dtype=np.int64)


def _key_groups_as_columns(keys: list, max_parallelism: int) -> np.ndarray | None:
    """Key groups of ``keys`` hashed as Arrow columns when they are all ``str``, all ``int``
    within 64 bits or all pairs of ``str`` (equal to :func:`key_group_for` of each); ``None``
    for keys of another form."""
    types = set(map(type, keys))
    try:
        if types == _STR:
            return key_groups_of_array(pa.array(keys, pa.string()), max_parallelism)
        if types == _INT:
            values = np.array(keys, dtype=np.int64)
            return (_mix64_np(values.view(np.uint64)) % np.uint64(max_parallelism)).astype(np.int64)
        if types == _TUPLE and set(map(len, keys)) == _PAIR:
            return key_groups_of_str_pairs(list(map(_FIRST, keys)), list(map(_SECOND, keys)), max_parallelism)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError, OverflowError):  # (a lone surrogate, a huge int)
        pass
    return None


def key_groups_of_str_pairs(firsts: list, seconds: list, max_parallelism: int) -> np.ndarray | None:
    """Key groups of the pairs ``(firsts[i], seconds[i])`` hashed as two Arrow string
    columns (equal to :func:`key_group_for` of each pair); ``None`` unless every item is
    exactly a ``str`` that Arrow can hold (a str subclass has a hash of its own, by repr).

    Example:
        >>> key_key = [("a/f", "x"), ("a/f", "y")]
        >>> key_groups_of_str_pairs(["a/f", "a/f"], ["x", "y"], 128).tolist() == [key_group_for(k, 128) for k in key_key]
        True
    """
    if set(map(type, firsts)) != _STR or set(map(type, seconds)) != _STR:
        return None
    try:
        columns = [pa.array(firsts, pa.string()), pa.array(seconds, pa.string())]
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):  # (a lone surrogate)
        return None
    return key_groups_of_tuples(columns, max_parallelism)


def key_groups_of_array(column: pa.Array | pa.ChunkedArray, max_parallelism: int) -> np.ndarray:
    """Key groups of every value of an Arrow column, vectorized.

    Integers are hashed with numpy; strings/binaries are dictionary encoded so that each
    distinct value is hashed once. Results equal :func:`key_group_for` value by value.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if column.null_count:
        return _key_groups_cached(column.to_pylist(), max_parallelism)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        values = column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False).view(np.uint64)
        return (_mix64_np(values) % np.uint64(max_parallelism)).astype(np.int64)
    if pa.types.is_dictionary(t):
        indices = column.indices.to_numpy(zero_copy_only=False)
        return _groups_of_distinct(column.dictionary, max_parallelism)[indices]
    if _is_stringlike(t):
        # short strings: a CRC step per byte position over every value costs less than
        # dictionary-encoding them first (~50-70 ns a value), and partials after a combiner
        # hold few repeats to save on anyway
        crc = _crc32_of_binary(column, _DIRECT_CRC_MAX_LEN)
        if crc is not None:
            return _groups_of_crc(crc, t, max_parallelism)
        encoded = pc.dictionary_encode(column)
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        return _groups_of_distinct(encoded.dictionary, max_parallelism)[indices]
    return _key_groups_cached(column.to_pylist(), max_parallelism)


def key_groups_of_tuples(columns: Sequence[pa.Array | pa.ChunkedArray], max_parallelism: int) -> np.ndarray | None:
    """Key groups of the tuples formed row by row from ``columns`` (row ``i``'s key is
    ``tuple(c[i] for c in columns)``), vectorized; equal to :func:`key_group_for` of each
    tuple. Columns of strings, binaries, integers and bools without nulls are hashed with
    numpy (a string column of repeated values: each distinct value once); ``None`` when a
    column has another type or nulls (the caller then hashes the tuples one by one).

    Example:
        >>> names, ids = pa.array(["a/f", "a/f"]), pa.array(["x", "y"])
        >>> key_groups_of_tuples([names, ids], 128).tolist() == [key_group_for(("a/f", "x"), 128), key_group_for(("a/f", "y"), 128)]
        True
    """
    n = len(columns[0]) if columns else 0
    if not n:
        return np.empty(0, dtype=np.int64) if columns else None
    # _fold(_TAG_TUPLE, map(stable_hash, row)) of every row; a Python int while the columns so
    # far hold one value throughout (a message's target typename), then one per row
    hashes: int | np.ndarray = _TAG_TUPLE
    for column in columns:
        if len(column) != n:
            return None
        part = _hashes_of_array(column)
        if part is None:
            return None
        if isinstance(hashes, int) and isinstance(part, int):
            hashes = _mix64(hashes ^ part)
        elif isinstance(hashes, int):
            hashes = _mix64_np(np.uint64(hashes) ^ part)
        else:
            hashes = _mix64_np(hashes ^ (np.uint64(part) if isinstance(part, int) else part))
    if isinstance(hashes, int):
        return np.full(n, hashes % max_parallelism, dtype=np.int64)
    return (hashes % np.uint64(max_parallelism)).astype(np.int64)


def _hashes_of_array(column: pa.Array | pa.ChunkedArray) -> int | np.ndarray | None:
    """:func:`stable_hash` of every value of an Arrow column (uint64), one int for a string
    column that holds one value throughout, or ``None`` for a column with nulls or of a type
    hashed only value by value here."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        return None
    t = column.type
    if _is_stringlike(t) and len(column):
        first = column[0].as_py()
        if column[len(column) - 1].as_py() == first and pc.all(pc.equal(column, column[0])).as_py():
            return stable_hash(first)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return _mix64_np(column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False).view(np.uint64))
    if pa.types.is_dictionary(t):
        distinct = _hashes_of_array(column.dictionary)
        if distinct is None:
            return None
        indices = column.indices.to_numpy(zero_copy_only=False)
        return np.full(len(indices), distinct, dtype=np.uint64) if isinstance(distinct, int) else distinct[indices]
    if _is_stringlike(t):
        crc = _crc32_of_binary(column, _DIRECT_CRC_MAX_LEN)  # short values: no encoding first
        if crc is not None:
            return _hashes_of_crc(crc, t)
        encoded = pc.dictionary_encode(column)
        return _hashes_of_distinct(encoded.dictionary)[encoded.indices.to_numpy(zero_copy_only=False)]
    return None


def _hashes_of_distinct(values: pa.Array) -> np.ndarray:
    """:func:`stable_hash` of the (distinct, non-null) strings or binaries of a dictionary:
    a vectorized CRC-32 up to :data:`_VECTOR_CRC_MAX_LEN` bytes, else value by value."""
    crc = _crc32_of_binary(values)
    if crc is not None:
        return _hashes_of_crc(crc, values.type)
    return np.fromiter(map(stable_hash, values.to_pylist()), dtype=np.uint64, count=len(values))


def _hashes_of_crc(crc: np.ndarray, t: pa.DataType) -> np.ndarray:
    """:func:`stable_hash` of string (or binary, by ``t``) values from their CRC-32."""
    tag = _TAG_STR if pa.types.is_string(t) or pa.types.is_large_string(t) else _TAG_BYTES
    return _mix64_np(crc.astype(np.uint64) ^ np.uint64(tag << 32))


def _is_stringlike(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _groups_of_distinct(values: pa.Array, max_parallelism: int) -> np.ndarray:
    """Key groups of the (distinct) values of a dictionary: strings and binaries of up to
    :data:`_VECTOR_CRC_MAX_LEN` bytes hashed with a vectorized CRC-32, others key by key."""
    if not values.null_count and _is_stringlike(values.type):
        crc = _crc32_of_binary(values)
        if crc is not None:
            return _groups_of_crc(crc, values.type, max_parallelism)
    return _key_groups_cached(values.to_pylist(), max_parallelism)


def _groups_of_crc(crc: np.ndarray, t: pa.DataType, max_parallelism: int) -> np.ndarray:
    """Key groups from the CRC-32 of string (or binary, by ``t``) keys, as :func:`stable_hash`."""
    return (_hashes_of_crc(crc, t) % np.uint64(max_parallelism)).astype(np.int64)


#: longest string (bytes) hashed by the vectorized CRC-32 (one numpy step per byte position);
#: a dictionary holding a longer one is hashed value by value (zlib, cached)
_VECTOR_CRC_MAX_LEN = 48
#: longest string (bytes) for which a whole column is hashed value by value without
#: dictionary-encoding it first (8 CRC steps cost about what the encoding costs per value)
_DIRECT_CRC_MAX_LEN = 8


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> np.uint32(1)) ^ np.uint32(0xEDB88320), table >> np.uint32(1))
    return table.astype(np.uint32)


_CRC_TABLE = _crc_table()


def _crc_table16() -> np.ndarray:
    """The CRC-32 step of two bytes at once (reflected: the low byte first):
    ``crc = T16[(crc ^ b0 ^ b1 << 8) & 0xFFFF] ^ (crc >> 16)``."""
    x = np.arange(1 << 16, dtype=np.uint32)
    low = _CRC_TABLE[x & np.uint32(0xFF)] ^ (x >> np.uint32(8))
    return (_CRC_TABLE[low & np.uint32(0xFF)] ^ (low >> np.uint32(8))).astype(np.uint32)


_CRC_TABLE16 = _crc_table16()


def _crc32_of_binary(values: pa.Array, max_len: int = _VECTOR_CRC_MAX_LEN) -> np.ndarray | None:
    """``zlib.crc32`` of every value of a string/binary array without nulls (UTF-8 bytes, as
    Arrow stores them), one numpy step per byte position; None when a value is longer than
    ``max_len`` bytes."""
    n = len(values)
    large = pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type)
    _validity, offsets_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64 if large else np.int32, count=n + 1,
                            offset=values.offset * (8 if large else 4)).astype(np.int64)
    lengths = np.diff(offsets)
    longest = int(lengths.max()) if n else 0
    if longest > max_len:
        return None
    crc = np.full(n, 0xFFFFFFFF, dtype=np.uint32)
    if longest == 0:
        return crc ^ np.uint32(0xFFFFFFFF)
    data = np.frombuffer(data_buf, dtype=np.uint8)
    table, low, eight = _CRC_TABLE, np.uint32(0xFF), np.uint32(8)
    if int(lengths.min()) == longest:
        # values of one length lie back to back: byte i of each is column i of an (n, longest)
        # view, no gather (keys such as "k00042"; ``take`` of the table: a lighter gather
        # than fancy indexing)
        start = int(offsets[0])
        rows = data[start : start + n * longest].reshape(n, longest)
        pairs = longest // 2
        if pairs:  # two bytes a step (a 256 KiB table)
            words = np.ascontiguousarray(rows[:, : 2 * pairs]).view("<u2")
            table16, low16, sixteen = _CRC_TABLE16, np.uint32(0xFFFF), np.uint32(16)
            for i in range(pairs):
                crc = table16.take((crc ^ words[:, i]) & low16) ^ (crc >> sixteen)
        if longest % 2:
            crc = table.take((crc ^ rows[:, longest - 1]) & low) ^ (crc >> eight)
        return crc ^ np.uint32(0xFFFFFFFF)
    pos = offsets[:-1]
    last = len(data) - 1
    for i in range(longest):
        byte = data[np.minimum(pos + i, last)]
        crc = np.where(lengths > i, table.take((crc ^ byte) & low) ^ (crc >> eight), crc)
    return crc ^ np.uint32(0xFFFFFFFF)
