"""``group_by(...).aggregate(...)`` of the vectorized aggregates, with errors that name the aggregation.

Arrow's own message for an aggregate it cannot compute names a kernel and types
(``Function 'hash_sum' has no kernel matching input types (string, uint32)``); this one names
the aggregation as the job wrote it, the column's type and what each function accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from raystream.engine.errors import GraphError, short_repr
from raystream.engine.records import Batch, batch_kind

__all__ = ["group_aggregate", "require_fields"]

#: the kind of a batch whose rows are dict records (``engine.records``)
_DICT_ROWS = b"row"

_INT64_MAX = 2**63 - 1

_ACCEPTS = (
    "sum and mean need numeric or bool columns; count takes any column; min and max take numbers, "
    "strings, binary, dates and timestamps"
)


def group_aggregate(
    table: pa.Table, keys: str | list[str], specs: Sequence[tuple[Any, ...]], where: str | Callable[[], str]
) -> pa.Table:
    """``table.group_by(keys).aggregate(specs)`` (single-threaded, as the operators run it).

    Raises:
        TypeError: Arrow cannot compute an aggregation on its column's type; the message
            names ``where`` (the operator; a callable is called only then), each aggregation with its column's type, and
            what the functions accept.
        OverflowError: an integer sum of a group leaves int64 (where Arrow's sum would wrap
            around), naming the group and the exact sum.

    Example:
        >>> t = pa.table({"k": ["a", "a"], "v": ["x", "y"]})
        >>> group_aggregate(t, "k", [("v", "sum")], "aggregate")
        Traceback (most recent call last):
        ...
        TypeError: aggregate: cannot compute sum of column 'v' (string); sum and mean need numeric or bool columns; ...
    """
    if any(pa.types.is_dictionary(table.schema.field(k).type) for k in ([keys] if isinstance(keys, str) else keys)):
        table = table.unify_dictionaries()  # (chunks of other files or row groups have their own dictionaries)
    try:
        out = table.group_by(keys, use_threads=False).aggregate(list(specs))
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        names = table.schema.names
        parts = [
            f"{spec[1]} of column {spec[0]!r} ({table.schema.field(spec[0]).type})" if spec[0] in names
            else f"{spec[1]} of column {spec[0]!r} (not in the batch: {names})"
            for spec in specs
        ]
        if callable(where):
            where = where()
        raise TypeError(f"{where}: cannot compute {', '.join(parts)}; {_ACCEPTS} (Arrow: {exc})") from exc
    for spec in specs:
        if spec[1] == "sum" and _may_overflow(table.column(spec[0])):
            _check_sums(table, keys, spec[0], where)
    return out


def require_fields(batch: Batch, where: str | Callable[[], str], fields: Sequence[str]) -> None:
    """Refuse a batch of dict records (or Arrow rows) that lack a field a vectorized aggregate
    reads, naming the record and the remedy, however the batch came.

    Records of several shapes in one batch travel pickled, and ``Batch.typed_columns`` names
    the first record without the field; records that all lack it (a batch cut after the
    ones that have it, or a shuffle at parallelism 2 sending them on alone) travel as typed
    columns without that column: the same error then, naming the batch's first record, not
    only that a column is missing.

    Example:
        >>> batch = Batch.of_arrow(pa.record_batch({"k": ["a"], "w": [2]}))
        >>> require_fields(batch, "aggregate(n=('v', 'count'))", ["k", "v"])
        Traceback (most recent call last):
        ...
        raystream.engine.errors.GraphError: aggregate(n=('v', 'count')) reads field 'v', and record 0 of the batch has none: {'k': 'a', 'w': 2}; give every record the field (None for no value), or filter first
    """
    rb = batch.arrow()
    if not rb.num_rows or batch_kind(rb.schema) != _DICT_ROWS:
        return  # (pickled records: typed_columns names the one at fault; tuples and scalars have no such fields)
    names = set(rb.schema.names)
    lacks = next((f for f in fields if f not in names), None)
    if lacks is None:
        return
    if callable(where):
        where = where()
    raise GraphError(
        f"{where} reads field {lacks!r}, and record 0 of the batch has none: {short_repr(batch.records()[0])}; "
        "give every record the field (None for no value), or filter first"
    )


def _may_overflow(column: pa.ChunkedArray) -> bool:
    """Whether a sum over some rows of an integer ``column`` may leave int64, where Arrow's
    sum wraps around (a bound: the largest magnitude times the number of rows)."""
    if not pa.types.is_integer(column.type) or not len(column):
        return False
    lo, hi = pc.min_max(column).values()
    if not lo.is_valid:
        return False
    return max(abs(lo.as_py()), abs(hi.as_py())) * len(column) > _INT64_MAX


def _check_sums(table: pa.Table, keys: str | list[str], column: str, where: str | Callable[[], str]) -> None:
    """Sum ``column`` per group exactly (Python ints): an OverflowError naming the group
    whose sum leaves int64."""
    names = [keys] if isinstance(keys, str) else list(keys)
    sums: dict[tuple[Any, ...], int] = {}
    group_cols = [table.column(k).to_pylist() for k in names]
    for i, v in enumerate(table.column(column).to_pylist()):
        if v is not None:
            g = tuple(c[i] for c in group_cols)
            sums[g] = sums.get(g, 0) + v
    for g, total in sums.items():
        if not -_INT64_MAX - 1 <= total <= _INT64_MAX:
            if callable(where):
                where = where()
            group = g[0] if len(g) == 1 else g
            raise OverflowError(
                f"{where}: the sum of column {column!r} for {group!r} is {total}, beyond a 64-bit integer (Arrow "
                "columns hold int64); cast the column to float64 first, or use sum(column) of the record API "
                "(exact Python ints)"
            )
