"""``group_by(...).aggregate(...)`` of the vectorized aggregates, with errors that name the aggregation.

Arrow's own message for an aggregate it cannot compute names a kernel and types
(``Function 'hash_sum' has no kernel matching input types (string, uint32)``); this one names
the aggregation as the job wrote it, the column's type and what each function accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

__all__ = ["group_aggregate"]

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

    Example:
        >>> t = pa.table({"k": ["a", "a"], "v": ["x", "y"]})
        >>> group_aggregate(t, "k", [("v", "sum")], "aggregate")
        Traceback (most recent call last):
        ...
        TypeError: aggregate: cannot compute sum of column 'v' (string); sum and mean need numeric or bool columns; ...
    """
    try:
        return table.group_by(keys, use_threads=False).aggregate(list(specs))
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
