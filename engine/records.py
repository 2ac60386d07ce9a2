"""Batches: the unit of data inside a task and across channels.

A :class:`Batch` holds either a list of Python records or a ``pyarrow.RecordBatch`` and
converts lazily, so chained operators pass Python lists with no serialization, while a
channel always ships Arrow. Conversion of Python records to Arrow is typed when the
records are uniform (dicts with the same keys and scalar values, tuples of scalars, or
plain scalars; a None among them is a null, wherever it falls in the batch); anything else
becomes one binary column of pickled values. The chosen
encoding is stored in the schema metadata so the receiver restores the same records.

Example:
    >>> b = Batch.of_records([{"word": "a", "n": 1}, {"word": "b", "n": 2}])
    >>> b.arrow().schema.names
    ['word', 'n']
    >>> Batch.of_arrow(b.arrow()).records()
    [{'word': 'a', 'n': 1}, {'word': 'b', 'n': 2}]
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import pickle
import sys
from itertools import islice, repeat
from operator import countOf, itemgetter
from typing import Any, Callable, Iterable, Sequence

import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import GraphError, short_repr

__all__ = ["Batch", "concat_timestamps", "records_to_arrow", "arrow_to_records", "batch_kind", "equal_value", "tuple_columns", "concat_runs", "why_not_columns",
           "KIND_KEY", "with_timestamp_column"]

KIND_KEY = b"raystream.kind"
#: schema metadata of an Arrow batch whose last column holds its rows' event timestamps
#: (:func:`with_timestamp_column`; what a feedback edge sends and logs in checkpoints)
TIMESTAMPS_KEY = b"raystream.timestamps"
_ROW = b"row"  # dict records, typed columns
_SCALAR = b"scalar"  # one column named "value"
_TUPLE = b"tuple"  # columns f0..fn
_PICKLE = b"pickle"  # one binary column of pickled records
_SCALAR_TYPES = (int, float, str, bytes, bool)


def _is_flat(schema: pa.Schema, allow_null: bool = False) -> bool:
    """No nested or dictionary column; no column of nulls only (Arrow's null type) unless
    ``allow_null`` (an operator computing on columns skips nulls; a channel keeps such
    batches as records: a null column takes no type from later batches)."""
    for field in schema:
        t = field.type
        if pa.types.is_nested(t) or (pa.types.is_null(t) and not allow_null) or pa.types.is_dictionary(t):
            return False
    return True


def _with_kind(batch: pa.RecordBatch, kind: bytes) -> pa.RecordBatch:
    return batch.replace_schema_metadata({KIND_KEY: kind})


def batch_kind(schema: pa.Schema) -> bytes:
    """How the rows of a batch of this schema are records: the kind :func:`records_to_arrow`
    wrote in its metadata while the columns still have that kind's shape (one ``value``
    column; ``f0``..``fn``; one binary ``record`` column), else dict rows. A batch function
    that keeps a batch's metadata but changes its columns (``batch.append_column(...)`` in
    ``map_batches``) makes rows of its columns, none dropped.

    Example:
        >>> rb = records_to_arrow([1, 2])
        >>> batch_kind(rb.schema), batch_kind(rb.append_column("sq", pa.array([1, 4])).schema)
        (b'scalar', b'row')
    """
    meta = schema.metadata
    kind = meta.get(KIND_KEY, _ROW) if meta else _ROW
    if kind == _ROW:
        return _ROW
    names = schema.names
    if kind == _SCALAR:
        shaped = names == ["value"]
    elif kind == _PICKLE:
        shaped = names == ["record"] and pa.types.is_binary(schema.field(0).type)
    elif kind == _TUPLE:
        shaped = bool(names) and names == [f"f{i}" for i in range(len(names))]
    else:
        shaped = False
    return kind if shaped else _ROW


def _pickled(records: Sequence[Any]) -> pa.RecordBatch:
    try:
        payload = [pickle.dumps(r, protocol=5) for r in records]
    except Exception:  # lambdas, local classes: cloudpickle handles them
        payload = []
        for r in records:
            try:
                payload.append(cloudpickle.dumps(r))
            except Exception as exc:
                raise TypeError(
                    f"a record cannot be pickled ({type(exc).__name__}: {exc}), so it cannot cross a shuffle or "
                    f"reach another task or a sink: keep locks, connections and open files out of records. "
                    f"The record: {short_repr(r)}"
                ) from exc
    return _with_kind(pa.RecordBatch.from_arrays([pa.array(payload, pa.binary())], ["record"]), _PICKLE)


_NONE_TYPE = type(None)
_SCALAR_SET = frozenset(_SCALAR_TYPES)
#: the first non-None value of a tuple column has one of these types (None: a column of nulls)
_SCALAR_TYPES_OR_NONE = frozenset([*_SCALAR_TYPES, _NONE_TYPE])


def _first_type(values: Sequence[Any]) -> type:
    """The type of the first value of ``values`` that is not None (``NoneType`` if none is)."""
    for v in values:
        if v is not None:
            return type(v)
    return _NONE_TYPE


def _uniform(values: Sequence[Any]) -> bool:
    """All non-None values have one Python type (so Arrow typing cannot coerce, e.g. str/bytes
    or int/float, and the records come back exactly as they were)."""
    types = set(map(type, values))
    types.discard(_NONE_TYPE)
    return len(types) <= 1


#: the Python type that the values of a column of these Arrow types come back as (what
#: ``pa.array`` infers from values of that type alone); a column whose values all have that
#: exact type comes back as it was, checked with one C-level count (~9 ns per value)
_PYTHON_TYPE = {
    pa.int64(): int,
    pa.bool_(): bool,
    pa.string(): str,
    pa.float64(): float,
    pa.binary(): bytes,
    pa.date32(): dt.date,
    pa.timestamp("us"): dt.datetime,
    pa.time64("us"): dt.time,
    pa.duration("us"): dt.timedelta,
}
#: numpy scalars that come back as the Python scalar of their kind, as from a numpy column
#: (:func:`~engine.keygroups.stable_hash` hashes them alike, so their key groups stay)
_NUMPY_KIN = {int: np.integer, float: np.floating, bool: np.bool_, str: np.str_}
#: numpy scalar records of one type that travel as a typed column (and come back as Python
#: scalars, as inside dicts and tuples)
_NUMPY_SCALARS = frozenset(
    [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.float32, np.float64,
     np.bool_, np.str_]
)


def _exact(array: pa.Array, values: Sequence[Any]) -> bool:
    """``array`` (``pa.array(values)``) gives back ``values`` with their own Python types and
    representations (numpy scalars as the Python scalars of their kind).

    Exact with what :func:`_restorers` keeps in the schema's metadata: aware datetimes of one
    zone object (:func:`_exact_datetimes`), members of one int or str Enum (:func:`_one_enum`).

    Not exact, so pickled: values of another type than the column's (pyarrow coerces ints in a
    double column, str in a binary one); other subclasses (a ``str`` subclass comes back as a
    str, a ``pandas.Timestamp`` as a datetime, an IntEnum among ints as an int); aware
    datetimes of several zone objects, or among naive ones (Arrow gives them back in one zone,
    or drops it); times with a ``tzinfo``; Decimals of other exponents than the column's scale
    (``1.1`` would come back as ``1.10``).
    A changed type or repr is a changed record, and changed the hash of a key by its repr
    between the sender, which routed the record, and the receiver, which keeps its state.
    """
    t = array.type
    if pa.types.is_decimal(t):
        return _uniform(values) and all(v is None or v.as_tuple().exponent == -t.scale for v in values)
    if pa.types.is_timestamp(t):
        return _exact_datetimes(t, values)
    python = _PYTHON_TYPE.get(t)
    if python is None:
        if pa.types.is_integer(t):  # numpy integers alone: int32, uint64...
            python = int
        elif pa.types.is_floating(t):
            python = float
        else:
            return False
    if countOf(map(type, values), python) != len(values) - array.null_count:
        kin = _NUMPY_KIN.get(python)
        if kin is None or not all(v is None or type(v) is python or isinstance(v, kin) for v in values):
            return (python is int or python is str) and _one_enum(values, python) is not None
    if python is dt.time:
        return all(v is None or v.tzinfo is None for v in values)
    return True


def _exact_datetimes(t: pa.TimestampType, values: Sequence[Any]) -> bool:
    """Datetimes (no subclass) that come back as they were: all naive, or all aware with one
    ``tzinfo`` object, which :func:`records_to_arrow` keeps in the column's metadata for
    :func:`arrow_to_records` to give them back in (Arrow alone would give ``timezone.utc`` back
    as ``ZoneInfo('UTC')``)."""
    if countOf(map(type, values), dt.datetime) != len(values) - values.count(None):
        return False
    tz = next((v.tzinfo for v in values if v is not None), None)
    if (t.tz is None) != (tz is None):
        return False
    return all(v is None or v.tzinfo is tz for v in values)


def _one_enum(values: Sequence[Any], base: type) -> type | None:
    """The Enum class of ``values`` when every non-None value is a member of that one class,
    an ``int`` or ``str`` mix-in (``IntEnum``, ``IntFlag``, ``StrEnum``, ``(str, Enum)``) whose
    members Arrow holds as their values, else None."""
    first = next((v for v in values if v is not None), None)
    if not isinstance(first, enum.Enum):
        return None
    cls = type(first)
    if not (issubclass(cls, base) and _values_are_data(cls, base)):
        return None
    return cls if countOf(map(type, values), cls) == len(values) - values.count(None) else None


@functools.lru_cache(maxsize=256)
def _values_are_data(cls: type, base: type) -> bool:
    """Whether each member's value is the int or str that Arrow holds of it (not so for an
    Enum whose ``__new__`` gives members another value than their data)."""
    data = int.__index__ if base is int else str.__str__
    return all(m._value_ == data(m) and type(m._value_) is base for m in cls)  # type: ignore[attr-defined]


#: schema metadata of a row batch: the pickled ``tzinfo`` of its aware datetime column NAME,
#: the pickled Enum class of its enum column NAME
_ZONE_KEY = b"raystream.zone."
_ENUM_KEY = b"raystream.enum."


def _restorers(arrays: list[pa.Array], columns: list[list[Any]], names: list[str]) -> dict[bytes, bytes]:
    """The metadata entries that give back the ``tzinfo`` of each aware datetime column and
    the Enum class of each enum column (pickled by reference, or by value for a class the
    receiver cannot import, as records are)."""
    out = {}
    for a, c, name in zip(arrays, columns, names):
        t = a.type
        if pa.types.is_timestamp(t) and t.tz is not None:
            out[_ZONE_KEY + name.encode()] = _pickle_one(next(v.tzinfo for v in c if v is not None))
        elif t == pa.int64() or t == pa.string():
            first = next((v for v in c if v is not None), None)
            if isinstance(first, enum.Enum):
                out[_ENUM_KEY + name.encode()] = _pickle_one(type(first))
    return out


def _pickle_one(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:  # a class of a driver's __main__, a local class: by value
        return cloudpickle.dumps(obj, protocol=5)


def _as_members(column: pa.Array, pickled_class: bytes) -> list:
    """The members of an enum column's Enum class, from the values Arrow holds."""
    cls = pickle.loads(pickled_class)
    member = cls._value2member_map_.get
    out = [None if v is None else member(v, _NOT_A_MEMBER) for v in _pylist(column)]
    if _NOT_A_MEMBER in out:  # (a flag combination: no member of its own until made)
        out = [cls(v) if m is _NOT_A_MEMBER else m for v, m in zip(_pylist(column), out)]
    return out


_NOT_A_MEMBER = object()


def _restored(column: pa.Array, meta: dict, name: bytes) -> list:
    """The values of ``column`` as :func:`records_to_arrow` took them (see :func:`_restorers`)."""
    t = column.type
    zone = meta.get(_ZONE_KEY + name)
    if zone is not None and pa.types.is_timestamp(t) and t.tz is not None:  # (not a column a batch function replaced)
        return _in_zone(column, zone)
    members = meta.get(_ENUM_KEY + name)
    if members is not None and (t == pa.int64() or t == pa.string()):
        return _as_members(column, members)
    return _pylist(column)


def _in_zone(column: pa.Array, zone: bytes) -> list:
    """The datetimes of an aware timestamp column in the ``tzinfo`` they were sent with: read
    as naive UTC datetimes (~1 us a value), then given the zone (~0.5 us for ``timezone.utc``,
    a conversion for others); Arrow's own conversion through ``ZoneInfo`` costs ~2.6 us."""
    tz = pickle.loads(zone)
    utc = _pylist(column.cast(pa.timestamp(column.type.unit)))
    if tz is dt.timezone.utc:
        return [None if v is None else v.replace(tzinfo=tz) for v in utc]
    return [None if v is None else v.replace(tzinfo=dt.timezone.utc).astimezone(tz) for v in utc]


def _equal(array: pa.Array, values: Sequence[Any]) -> bool:
    """``array`` (``pa.array(values)``) gives back values equal to ``values``, of one Python
    type each, if not always their own (an IntEnum as an int, ``timezone.utc`` as
    ``ZoneInfo('UTC')``): enough to compute on, not to send (see :meth:`Batch.columns`)."""
    t = array.type
    if not (t in _EXACT_ANYWAY or _uniform(values)):
        return False
    if pa.types.is_timestamp(t):  # naive and aware datetimes are never equal: Arrow would mix them
        naive = t.tz is None
        return all(v is None or (v.tzinfo is None) == naive for v in values)
    return True


#: Arrow types inferred only from values of one Python type (and its subclasses)
_EXACT_ANYWAY = frozenset([pa.int64(), pa.bool_(), pa.string()])


def tuple_columns(records: Sequence[tuple], n: int) -> list[list[Any]]:
    """The ``n`` columns of tuple records (each of length ``n`` or more), as lists.

    One ``map(itemgetter(i))`` per column makes no object per record; ``zip(*records)`` makes
    one tuple iterator per record, a burst of GC-tracked allocations that triggers young
    collections in a task whose young generation holds its large batch lists (in a task
    actor the transpose line of the message exchange had 321 py-spy samples; in a small
    process with the collector off, 4096 records of 7 fields: zip 0.30 ms, this 0.48 ms).

    Example:
        >>> tuple_columns([("a", 1), ("b", 2)], 2)
        [['a', 'b'], [1, 2]]
    """
    return [list(map(itemgetter(i), records)) for i in range(n)]


def records_to_arrow(records: Sequence[Any], exact: bool = True) -> pa.RecordBatch:
    """Convert Python records to a RecordBatch: typed when uniform, else pickled.

    ``exact``: typed only where the records come back exactly as they were (see
    :func:`_exact`; what a channel needs); without it, typed where they come back equal
    (see :func:`_equal`; what a vectorized operator needs to compute on them)."""
    check = _exact if exact else _equal
    if not records:
        return _with_kind(pa.RecordBatch.from_arrays([pa.array([], pa.binary())], ["record"]), _PICKLE)
    first = records[0]
    t0 = type(first)
    try:
        if t0 is dict:
            dict_columns = _dict_columns(records, exact)
            if dict_columns is not None:
                names, columns = dict_columns
                arrays = [pa.array(c) for c in columns]
                if all(check(a, c) for a, c in zip(arrays, columns)):
                    rb = pa.RecordBatch.from_arrays(arrays, names)
                    if _is_flat(rb.schema, allow_null=not exact) and rb.num_columns == len(names):
                        restore = _restorers(arrays, columns, names) if exact else {}
                        return rb.replace_schema_metadata({KIND_KEY: _ROW, **restore}) if restore else _with_kind(rb, _ROW)
        elif t0 in _SCALAR_TYPES or t0 in _NUMPY_SCALARS or t0 is _NONE_TYPE:
            # scalars of one type, None among them a null (as in a dict's or a tuple's column:
            # whether a batch has a typed "value" column must not depend on where a None falls)
            types = set(map(type, records))
            types.discard(_NONE_TYPE)
            if len(types) == 1 and (types <= _SCALAR_SET or types <= _NUMPY_SCALARS):
                arr = pa.array(records)
                if not (pa.types.is_nested(arr.type) or pa.types.is_null(arr.type)):
                    return _with_kind(pa.RecordBatch.from_arrays([arr], ["value"]), _SCALAR)
        elif t0 is tuple:
            n = len(first)
            if n and len(set(map(type, records))) == 1 and len(set(map(len, records))) == 1:
                cols = tuple_columns(records, n)
                if all(_first_type(col) in _SCALAR_TYPES_OR_NONE for col in cols):
                    arrays = [pa.array(c) for c in cols]
                    if not any(pa.types.is_nested(a.type) for a in arrays) and all(
                        check(a, c) for a, c in zip(arrays, cols)
                    ):
                        return _with_kind(
                            pa.RecordBatch.from_arrays(arrays, [f"f{i}" for i in range(n)]), _TUPLE
                        )
    except (ValueError, pa.ArrowTypeError, OverflowError, TypeError, KeyError, pickle.PicklingError):
        pass  # mixed types, huge ints, str with surrogates, a zone or Enum class that does not pickle...
    return _pickled(records)


def _dict_columns(records: Sequence[Any], exact: bool) -> tuple[list[Any], list[list[Any]]] | None:
    """The column names and columns (lists of values) of dict records, or None.

    ``exact`` (what a channel sends): every record a dict with the first one's keys, in
    columns of the first record's key order (another key set: None, the records travel
    pickled, as they were). Without it (columns to compute on, :meth:`Batch.columns`): a
    column for every key of every record, in the order they are first seen, None where a
    record lacks the key, as in a batch of only the records without it (so a field that
    some records have does not make the columns of a batch depend on where it was cut)."""
    if len(set(map(type, records))) != 1:
        return None
    first = records[0]
    n = len(first)
    # every record a dict with the first one's keys: all of length n (checked in C), and each
    # of the n names present in each (a KeyError below otherwise)
    if n and len(set(map(len, records))) == 1:
        names = list(first)
        try:
            # column by column: ~1.4x faster than RecordBatch.from_pylist on 64k rows
            return names, [[r[k] for r in records] for k in names]
        except KeyError:
            if exact:
                return None
    if exact:
        return None
    names = list(dict.fromkeys(k for r in records for k in r))
    return (names, [[r.get(k) for r in records] for k in names]) if names else None


def why_not_columns(records: Sequence[Any]) -> tuple[int, str]:
    """Why :func:`records_to_arrow` pickles ``records`` instead of making typed columns: the
    index of the first record at fault and the reason (for errors of sinks that need columns).

    Example:
        >>> why_not_columns([{"a": 1}, {"a": 2.5}])
        (1, "column 'a' mixes int and float")
        >>> why_not_columns([{"a": 1, "tags": ["x"]}])
        (0, "column 'tags' holds list values (nested)")
    """
    if not records:
        return 0, "no records"
    first: Any = next((r for r in records if r is not None), None)
    t0 = type(first)
    scalars = t0 in _SCALAR_TYPES  # (None among scalars is a null)
    for i, r in enumerate(records):
        if type(r) is not t0 and not (scalars and r is None):
            return i, f"records of different types ({t0.__name__} and {type(r).__name__})"
    if t0 is dict:
        names = list(first)
        for i, r in enumerate(records):
            if list(r) != names and set(r) != set(names):
                return i, f"the record's keys {sorted(r)} differ from the first record's {sorted(names)}"
        columns: dict[str, list[Any]] = {k: [r[k] for r in records] for k in names}
    elif t0 is tuple:
        n = len(first)
        for i, r in enumerate(records):
            if len(r) != n:
                return i, f"tuples of different lengths ({n} and {len(r)})"
        columns = {f"field {j}": [r[j] for r in records] for j in range(n)}
    elif scalars:
        columns = {"value": list(records)}
    elif first is None:
        return 0, "records that are all None (a column of no type)"
    else:
        return 0, f"records of type {t0.__name__} (not dicts, tuples or scalars)"
    for name, values in columns.items():
        label = f"column {name!r}" if t0 is dict else name
        kinds = [type(v) for v in values if v is not None]
        for i, v in enumerate(values):
            if isinstance(v, (list, dict, set, tuple)):
                return i, f"{label} holds {type(v).__name__} values (nested)"
        if kinds and any(k is not kinds[0] for k in kinds):
            i = next(i for i, v in enumerate(values) if v is not None and type(v) is not kinds[0])
            return i, f"{label} mixes {kinds[0].__name__} and {type(values[i]).__name__}"
        if kinds and kinds[0] not in _SCALAR_TYPES:
            i = next(i for i, v in enumerate(values) if v is not None)
            return i, f"{label} holds {kinds[0].__name__} values"
    return 0, "values Arrow cannot hold as typed columns (e.g. integers beyond 64 bits)"


def concat_runs(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """``batches`` in order, each run of consecutive batches of one schema (metadata
    included: the record kind) concatenated into one batch (``pa.concat_batches``, one copy
    of the rows). Fewer, larger batches cost less to pickle, send and process than many
    small ones with a schema each.

    Example:
        >>> b = pa.record_batch([pa.array([1, 2])], ["v"])
        >>> [x.num_rows for x in concat_runs([b, b, b.rename_columns(["w"]), b])]
        [4, 2, 2]
    """
    out: list[pa.RecordBatch] = []
    run: list[pa.RecordBatch] = []
    for b in batches:
        if run and not b.schema.equals(run[0].schema, check_metadata=True):
            out.append(run[0] if len(run) == 1 else pa.concat_batches(run))
            run = []
        run.append(b)
    if run:
        out.append(run[0] if len(run) == 1 else pa.concat_batches(run))
    return out


def record_bytes(record: Any, _depth: int = 0) -> int:
    """About how many bytes ``record`` holds: strings and bytes by their length, numbers as 8,
    numpy arrays by their buffer, containers by their elements (the first 16 of each, scaled
    to the container's length; three levels deep), anything else by ``sys.getsizeof``. A few
    microseconds for the records of a stream, and never exact: it sizes output buffers.

    Example:
        >>> record_bytes(("user-1", 42)), record_bytes({"img": b"x" * 10_000}) > 10_000
        (54, True)
    """
    t = type(record)
    if t is str or t is bytes or t is bytearray:
        return 8 + len(record)
    if t is int or t is float or t is bool or record is None:
        return 8
    if t is tuple or t is list or t is dict:
        n = len(record)
        if not n or _depth >= 3:
            return 16 + 8 * n
        items = list(islice(record.items(), 16)) if t is dict else record[:16]
        sampled = sum(record_bytes(x, _depth + 1) for x in items)
        return 16 + 8 * n + sampled * n // len(items)
    if t is np.ndarray:
        return 16 + int(record.nbytes)
    try:
        return sys.getsizeof(record)
    except Exception:  # noqa: BLE001 - a type whose __sizeof__ fails: a guess is enough
        return 64


def arrow_to_records(batch: pa.RecordBatch) -> list:
    """Inverse of :func:`records_to_arrow`; plain Arrow batches become lists of dicts."""
    meta = batch.schema.metadata or {}
    kind = batch_kind(batch.schema)
    if kind == _SCALAR:
        return _pylist(batch.column(0))
    if kind == _PICKLE:
        return [pickle.loads(b) for b in batch.column(0).to_pylist()]
    if kind == _TUPLE:
        return list(zip(*(_tuple_column(c) for c in batch.columns))) if batch.num_rows else []
    names = tuple(batch.schema.names)
    if len(set(names)) != len(names) or not names:
        return batch.to_pylist()
    if len(meta) > 1:  # aware datetime columns given back in their zones, enum columns as members
        columns = [_restored(c, meta, n.encode()) for n, c in zip(names, batch.columns)]
        return _row_builder(names)(columns)
    return _row_builder(names)([_pylist(c) for c in batch.columns])


def _pylist(column: pa.Array) -> list:
    """``column.to_pylist()``; integer, float32/64 and bool columns without nulls through
    numpy's ``tolist()`` (the same Python ints, floats and bools, ~2x faster); a string or
    bool column of one value throughout as that one value repeated (~5x faster, and one
    object shared by every row instead of a new str per row: less to allocate and collect).

    Example:
        >>> _pylist(pa.array(["ab", "ab"])), _pylist(pa.array([True, True])), _pylist(pa.array(["a", "b"]))
        (['ab', 'ab'], [True, True], ['a', 'b'])
    """
    t = column.type
    if not column.null_count:
        n = len(column)
        if pa.types.is_boolean(t):
            trues = column.true_count
            if trues == n or trues == 0:
                return [trues != 0] * n
            return column.to_numpy(zero_copy_only=False).tolist()  # type: ignore[no-any-return]
        if pa.types.is_integer(t) or pa.types.is_float32(t) or pa.types.is_float64(t):
            return column.to_numpy(zero_copy_only=False).tolist()  # type: ignore[no-any-return]
        if n > 1 and pa.types.is_string(t):
            first = _constant_string(column, n)
            if first is not None:
                return [first] * n
    try:
        return column.to_pylist()  # type: ignore[no-any-return]
    except ValueError:  # nanoseconds off the microsecond, without pandas to hold them
        if getattr(t, "unit", None) != "ns":
            raise
        return _to_microseconds(column).to_pylist()  # type: ignore[no-any-return]


def _tuple_column(column: pa.Array) -> Iterable[Any]:
    """The values of ``column`` to zip into tuples: :func:`_pylist`, except that a string or
    bool column of one value throughout comes as that one value repeated (``itertools.repeat``:
    no list of one reference per row made, walked by the zip and freed). A statefun message
    batch has four or five such columns (target typename, caller columns, value typename,
    has value): with :func:`_constant_string`'s copy-free check, 1,166 -> 1,066 instructions
    a row of an 8,192-row message batch (cachegrind).

    Example:
        >>> list(_tuple_column(pa.array(["ab", "ab"]))), list(_tuple_column(pa.array([True, False])))
        (['ab', 'ab'], [True, False])
    """
    n = len(column)
    if n > 1 and not column.null_count:
        t = column.type
        if pa.types.is_boolean(t):
            trues = column.true_count
            if trues == n or trues == 0:
                return repeat(trues != 0, n)
        elif pa.types.is_string(t):
            first = _constant_string(column, n)
            if first is not None:
                return repeat(first, n)
    return _pylist(column)


def _to_microseconds(column: pa.Array) -> pa.Array:
    """A nanosecond timestamp, time or duration column at the microsecond, the finest unit of
    Python's ``datetime``, ``time`` and ``timedelta`` (times floored, durations truncated).

    Example:
        >>> _to_microseconds(pa.array([1_001, -1], pa.timestamp("ns"))).to_pylist()
        [datetime.datetime(1970, 1, 1, 0, 0, 0, 1), datetime.datetime(1969, 12, 31, 23, 59, 59, 999999)]
    """
    t = column.type
    if pa.types.is_duration(t):
        return column.cast(pa.duration("us"), safe=False)
    floored = pc.floor_temporal(column, unit="microsecond")
    return floored.cast(pa.timestamp("us", tz=t.tz) if pa.types.is_timestamp(t) else pa.time64("us"))


def _constant_string(column: pa.StringArray, n: int) -> str | None:
    """The one value of a string ``column`` of ``n`` > 1 rows without nulls when every row
    holds it, else None: read on the buffers (offsets in arithmetic progression, the data
    that value repeated), ~3x faster than comparing with Arrow compute and O(1) for "". The
    data is that value repeated when it is periodic with the value's size: compared with
    itself shifted by one value (one ``memcmp`` of two views of the buffer, nothing copied)."""
    offsets = np.frombuffer(column.buffers()[1], np.int32, n + 1, column.offset * 4)  # type: ignore[union-attr]
    start = int(offsets[0])
    size = int(offsets[1]) - start
    total = int(offsets[n]) - start
    if total != n * size:
        return None
    if size == 0:
        return ""
    if not (offsets == np.arange(start, start + total + 1, size, dtype=np.int32)).all():
        return None
    data = column.buffers()[2]
    if not data.slice(start + size, total - size).equals(data.slice(start, total - size)):  # type: ignore[union-attr]
        return None
    return data[start : start + size].to_pybytes().decode()  # type: ignore[index,no-any-return]


#: builds dict rows from columns (lists of values, one per column name)
_RowBuilder = Callable[[list[list[Any]]], list[dict[str, Any]]]
_BUILDERS: dict[tuple[str, ...], _RowBuilder] = {}


def _row_builder(names: tuple[str, ...]) -> _RowBuilder:
    """``f(columns) -> [dict rows]`` for these column names: a generated comprehension with a
    dict literal, ~10-25% faster than ``RecordBatch.to_pylist()`` (same dicts, same order)."""
    fn = _BUILDERS.get(names)
    if fn is None:
        if len(_BUILDERS) > 256:
            _BUILDERS.clear()
        args = ", ".join(f"v{i}" for i in range(len(names)))
        items = ", ".join(f"{n!r}: v{i}" for i, n in enumerate(names))
        ns: dict[str, Any] = {}
        exec(f"def build(cols):\n    return [{{{items}}} for {args}, in zip(*cols)]", ns)  # noqa: S102
        fn = _BUILDERS[names] = ns["build"]
    return fn


def _is_view(t: pa.DataType) -> bool:
    return pa.types.is_string_view(t) or pa.types.is_binary_view(t)


def _without_views(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with its string and binary view columns as string and binary columns (same
    values; Arrow's take, filter and hash kernels have no view kernels in every version).

    Example:
        >>> rb = pa.record_batch([pa.array(["a", "b"], pa.string_view())], ["k"])
        >>> _without_views(rb).schema.types
        [DataType(string)]
    """
    columns = [c.cast(pa.string() if pa.types.is_string_view(c.type) else pa.binary()) if _is_view(c.type) else c
               for c in batch.columns]
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(
        [pa.field(f.name, columns[i].type, f.nullable, f.metadata) for i, f in enumerate(batch.schema)],
        metadata=batch.schema.metadata))


def _nested_rows(records: list) -> pa.RecordBatch | None:
    """Dict records as Arrow columns, nested values included (lists, tuples and 1-d numpy
    arrays as list columns, dicts as struct columns), a column for every key (null where a
    record lacks it), when every value comes back equal; else None.

    Example:
        >>> _nested_rows([{"id": 1, "tags": ["a"]}, {"id": 2, "tags": []}]).to_pylist()
        [{'id': 1, 'tags': ['a']}, {'id': 2, 'tags': []}]
        >>> _nested_rows([{"id": 1, "tags": {1, 2}}]) is None
        True
    """
    if not records or any(type(r) is not dict for r in records):
        return None
    names = list(dict.fromkeys(k for r in records for k in r))
    if not names or not all(type(k) is str for k in names):
        return None
    rows = [{k: r.get(k) for k in names} for r in records]
    try:
        rb = pa.RecordBatch.from_pylist(rows)
        back = rb.to_pylist()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError, ValueError):
        return None
    if not all(equal_value(b, r) for b, r in zip(back, rows)):
        return None
    return rb.replace_schema_metadata({KIND_KEY: _ROW})


def equal_value(back: Any, value: Any, same_kind: Callable[[Any, Any], bool] | None = None) -> bool:
    """Whether ``back`` (what Arrow gave back of ``value``) equals ``value``, nested values
    walked (a tuple or a 1-d numpy array came back as a list of its elements); NaN equals
    NaN. ``same_kind(back, value)``: a further test of every scalar (e.g. that a str did not
    come back as bytes, which Python holds unequal anyway, or a bool as an int, which it
    holds equal).

    Example:
        >>> equal_value([1, [2.0]], (1, [2])), equal_value(1, True, lambda b, v: type(b) is type(v))
        (True, False)
    """
    if isinstance(value, dict):
        return type(back) is dict and back.keys() == value.keys() and all(
            equal_value(back[k], v, same_kind) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(back) is list and len(back) == len(value) and all(
            equal_value(b, v, same_kind) for b, v in zip(back, value))
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and type(back) is list and len(back) == len(value) and all(
            equal_value(b, v, same_kind) for b, v in zip(back, value.tolist()))
    if value is None or back is None:
        return value is back
    if same_kind is not None and not same_kind(back, value):
        return False
    try:
        return bool(back == value) or (back != back and value != value)  # (NaN is NaN)
    except (TypeError, ValueError):
        return False


class Batch:
    """A batch of records, held as a Python list, an Arrow RecordBatch, or both.

    Operators call :meth:`records` (record API) or :meth:`arrow` (batch API); each
    conversion happens at most once per batch.
    """

    __slots__ = ("_records", "_arrow", "timestamps")

    def __init__(self, records: list | None = None, arrow: pa.RecordBatch | None = None) -> None:
        self._records = records
        self._arrow = arrow
        self.timestamps: np.ndarray | None = None  # optional int64 event timestamps, one per record

    @classmethod
    def of_records(cls, records: Iterable[Any], timestamps: np.ndarray | None = None) -> "Batch":
        """A batch holding Python records (kept as they are until Arrow is needed), with
        ``timestamps`` (int64, one per record: their event timestamps) or none."""
        b = cls(records=records if isinstance(records, list) else list(records))
        if timestamps is not None:
            b.timestamps = timestamps
        return b

    @classmethod
    def stamped(cls, records: list, stamps: list[int] | None) -> "Batch":
        """A batch of ``records`` carrying ``stamps`` (their event timestamps, one per
        record) as Flink's ``StreamRecord`` timestamps; None: records without timestamps.

        Example:
            >>> Batch.stamped(["a", "b"], [5, 9]).timestamps.tolist()
            [5, 9]
        """
        b = cls(records=records)
        if stamps is not None:
            b.timestamps = np.array(stamps, dtype=np.int64)
        return b

    @classmethod
    def of_arrow(cls, batch: pa.RecordBatch | pa.Table) -> "Batch":
        """A batch holding Arrow data (a Table is combined into one RecordBatch; string and
        binary view columns, as Polars makes them, as string and binary columns, which every
        Arrow kernel the engine uses takes). A batch of :func:`with_timestamp_column` gives
        its rows' event timestamps back as the batch's ``timestamps``."""
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else pa.RecordBatch.from_pylist([], schema=batch.schema)
        meta = batch.schema.metadata
        if meta and TIMESTAMPS_KEY in meta:
            return _without_timestamp_column(batch, meta)
        if any(_is_view(t) for t in batch.schema.types):
            batch = _without_views(batch)
        return cls(arrow=batch)

    @property
    def is_arrow(self) -> bool:
        """True when the batch currently holds Arrow data (the columnar fast path)."""
        return self._arrow is not None

    @property
    def is_columnar(self) -> bool:
        """True for Arrow data that is not a wrapped pickled/scalar record stream."""
        if self._arrow is None:
            return False
        return batch_kind(self._arrow.schema) == _ROW

    def records(self) -> list:
        """The records as a Python list."""
        if self._records is None:
            self._records = arrow_to_records(self._arrow)
        return self._records

    def arrow(self) -> pa.RecordBatch:
        """The records as an Arrow RecordBatch."""
        if self._arrow is None:
            # (a Batch() holding neither converts to an empty batch)
            self._arrow = records_to_arrow(self._records if self._records is not None else [])
        return self._arrow

    def columns(self, nested: bool = False) -> pa.RecordBatch:
        """The batch as Arrow columns to compute on (``map_batches``, vectorized aggregates and
        windows): :meth:`arrow`, except for records that it pickles only because Arrow would
        give them back changed (IntEnums, ``str`` subclasses, Decimals of several exponents,
        datetimes of several zones) or because dict records have different keys (a column for
        every key, null where a record lacks it): typed columns of equal values here (not
        kept: :meth:`arrow`, what a channel sends, stays exact). ``nested`` (``map_batches``):
        dict records with lists, dicts or 1-d numpy arrays as values get list and struct
        columns of equal values too (tuples as lists); records Arrow cannot hold so stay a
        ``record`` column of pickled values.

        Example:
            >>> from decimal import Decimal
            >>> b = Batch.of_records([{"price": Decimal("1.1")}, {"price": Decimal("1.25")}])
            >>> b.arrow().schema.names, b.columns().schema.field("price").type
            (['record'], Decimal128Type(decimal128(3, 2)))
        """
        rb = self.arrow()
        if rb.num_rows and batch_kind(rb.schema) == _PICKLE:  # (from records, or from a channel)
            typed = records_to_arrow(self.records(), exact=False)
            if (typed.schema.metadata or {}).get(KIND_KEY) != _PICKLE:
                return typed
            if nested:
                rows = _nested_rows(self.records())
                if rows is not None:
                    return rows
        return rb

    def typed_columns(self, where: str, fields: Sequence[str] | None = None) -> pa.RecordBatch:
        """:meth:`columns` for an operator that computes over columns only (``where`` names it,
        e.g. ``"aggregate(n=('v', 'count'))"``). ``fields``: the only fields of dict records
        it reads; when the records have no typed columns, those fields alone are taken (a
        nested or mixed field the operator does not read is no reason to fail).

        Raises:
            GraphError: the records have no typed columns (a field of several types in one
                batch, nested values), naming the first record at fault and why.

        Example:
            >>> Batch.of_records([{"k": "a"}, {"k": 2}]).typed_columns("aggregate(n=('k', 'count'))")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            raystream.engine.errors.GraphError: aggregate(n=('k', 'count')) computes over Arrow columns, and these records have none: column 'k' mixes str and int (record 1 of the batch: {'k': 2}); ...
        """
        rows: Sequence[Any] | None = None
        sent = self.arrow()
        if fields is not None and sent.num_rows and batch_kind(sent.schema) == _PICKLE:
            records = self.records()
            if all(type(r) is dict for r in records):
                for i, r in enumerate(records):
                    lacks = next((f for f in fields if f not in r), None)
                    if lacks is not None:  # (never a null key or value made up for it)
                        raise GraphError(
                            f"{where} reads field {lacks!r}, and record {i} of the batch has none: "
                            f"{short_repr(r)}; give every record the field (None for no value), or filter first"
                        )
                rows = [{f: r[f] for f in fields} for r in records]
                projected = records_to_arrow(rows, exact=False)
                if (projected.schema.metadata or {}).get(KIND_KEY) != _PICKLE:
                    return projected
        rb = self.columns()
        if fields is not None and rb.num_rows and batch_kind(rb.schema) == _ROW:
            names = set(rb.schema.names)
            lacks = next((f for f in fields if f not in names), None)
            if lacks is not None:  # (every record lacks it: a batch cut after the ones that have it)
                raise GraphError(
                    f"{where} reads field {lacks!r}, and record 0 of the batch has none: "
                    f"{short_repr(self.records()[0])}; give every record the field (None for no value), or filter first"
                )
        if rb.num_rows and batch_kind(rb.schema) == _PICKLE:
            records = self.records()
            index, why = why_not_columns(rows if rows is not None else records)
            raise GraphError(
                f"{where} computes over Arrow columns, and these records have none: {why} (record {index} of "
                f"the batch: {short_repr(records[index])}); give each field one type (e.g. key by a str or an "
                "int), or use a record operator (reduce, process, a window's reduce)"
            )
        return rb

    def __len__(self) -> int:
        if self._records is not None:
            return len(self._records)
        assert self._arrow is not None  # of_records / of_arrow always set one of the two
        return self._arrow.num_rows

    def nbytes(self) -> int:
        """Arrow buffer size if held as Arrow, else 0 (not computed for Python lists)."""
        return self._arrow.nbytes if self._arrow is not None else 0

    def slice(self, start: int, stop: int) -> "Batch":
        """Rows ``start`` to ``stop`` (exclusive) in the forms this batch holds, with their
        event timestamps; no copy of Arrow data.

        Example:
            >>> b = Batch.of_records(["a", "b", "c"])
            >>> b.slice(1, 3).records(), len(b.slice(3, 3))
            (['b', 'c'], 0)
        """
        part = Batch(
            records=self._records[start:stop] if self._records is not None else None,
            arrow=self._arrow.slice(start, max(0, stop - start)) if self._arrow is not None else None,
        )
        if self.timestamps is not None:
            part.timestamps = self.timestamps[start:stop]
        return part

    def take(self, rows: np.ndarray) -> "Batch":
        """The rows numbered ``rows`` (an int array of this batch's row numbers, in the
        order given) in the form this batch holds, with their event timestamps.

        Example:
            >>> b = Batch.stamped(["a", "b", "c"], [1, 2, 3])
            >>> part = b.take(np.array([2, 0]))
            >>> part.records(), part.timestamps.tolist()
            (['c', 'a'], [3, 1])
        """
        if self._arrow is not None:
            part = Batch(arrow=pc.take(self._arrow, pa.array(rows), boundscheck=False))
        else:
            records = self.records()
            part = Batch(records=[records[i] for i in rows.tolist()])
        if self.timestamps is not None:
            part.timestamps = self.timestamps[rows]
        return part

    def __reduce__(self) -> tuple[Any, ...]:
        # a channel ships a batch with event timestamps as its Arrow data and the int64
        # timestamps beside it (no schema change): never its Python records once it has Arrow
        if self._arrow is not None:
            return (_rebuilt, (None, self._arrow, self.timestamps))
        return (_rebuilt, (self._records, None, self.timestamps))

    def row_bytes(self) -> int:
        """About how many bytes a row of this batch takes (>= 1): its Arrow buffers per row,
        else :func:`record_bytes` of its first record (records of one stream are alike). What
        the output buffers count to send records of megabytes in smaller batches.

        Example:
            >>> Batch.of_records([("k", b"x" * 1000)]).row_bytes() > 1000
            True
        """
        if self._arrow is not None:
            rows = self._arrow.num_rows
            return max(1, self._arrow.nbytes // rows) if rows else 1
        return record_bytes(self._records[0]) if self._records else 1

    def __repr__(self) -> str:
        form = "arrow" if self._arrow is not None else "records"
        return f"Batch({len(self)} rows, {form})"


def _rebuilt(records: list | None, arrow: pa.RecordBatch | None, timestamps: np.ndarray | None) -> Batch:
    """A batch unpickled (see :meth:`Batch.__reduce__`)."""
    b = Batch(records=records, arrow=arrow)
    b.timestamps = timestamps
    return b


def with_timestamp_column(rb: pa.RecordBatch, timestamps: np.ndarray) -> pa.RecordBatch:
    """``rb`` with its rows' event ``timestamps`` as one more (last) int64 column, marked in
    its schema metadata: one Arrow batch that keeps them where only Arrow goes (a feedback
    edge, whose in-flight batches are logged in checkpoints as they are). :meth:`Batch.of_arrow`
    takes the column off again as the batch's timestamps.

    Example:
        >>> rb = with_timestamp_column(pa.RecordBatch.from_pylist([{"a": 1}]), np.array([7]))
        >>> b = Batch.of_arrow(rb); b.arrow().schema.names, b.timestamps.tolist()
        (['a'], [7])
    """
    meta = dict(rb.schema.metadata or {})
    meta[TIMESTAMPS_KEY] = b"1"
    column = pa.array(np.asarray(timestamps, dtype=np.int64), type=pa.int64())
    return rb.append_column(pa.field("__raystream_timestamps__", pa.int64()), column).replace_schema_metadata(meta)


def _without_timestamp_column(rb: pa.RecordBatch, meta: dict[bytes, bytes]) -> Batch:
    """The :class:`Batch` of a :func:`with_timestamp_column` batch: its records' columns and
    metadata as they were, the last column as its timestamps."""
    stamps = rb.column(rb.num_columns - 1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    rest = {k: v for k, v in meta.items() if k != TIMESTAMPS_KEY}
    b = Batch.of_arrow(rb.remove_column(rb.num_columns - 1).replace_schema_metadata(rest or None))
    b.timestamps = stamps
    return b


def concat_timestamps(batches: Sequence[Batch]) -> np.ndarray | None:
    """The event timestamps of consecutive ``batches`` as one array when every one carries
    them, else None (records of a batch without timestamps have none).

    Example:
        >>> concat_timestamps([Batch.stamped([1], [5]), Batch.stamped([2], [6])]).tolist()
        [5, 6]
        >>> concat_timestamps([Batch.stamped([1], [5]), Batch.of_records([2])]) is None
        True
    """
    parts = [b.timestamps for b in batches]
    if any(p is None for p in parts):
        return None
    return np.concatenate(parts)  # type: ignore[arg-type]
