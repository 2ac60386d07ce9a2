"""Routed ingress: records addressed by a field, StateFun's routable ingress without a router.

A StateFun module routes a Kafka or Kinesis ingress without user code: each record goes to
the functions listed under ``targets`` with the record's key as the function id and its
value as a message of the ingress's ``valueType``. :class:`RoutedIngress` is that router
for any raystream stream (what :meth:`StatefulFunctionsJob.with_routed_ingress` chains to
it): it takes the id and the value of every record of a batch at once (a column of an
Arrow batch, a tuple index or dict key through ``operator.itemgetter``, or a function),
checks them as ``message_builder`` would and builds the message records in one pass,
instead of a ``Message`` object and a conversion per record in a Python router.

Values of the built-in types (int, long, float, double, string, bool) stay decoded as
``message_builder`` keeps them; values of other types are serialized with the type's
serializer (``value_type`` from ``make_json_type``, ``make_protobuf_type``, ...).

Example:
    >>> from raystream.engine.records import Batch
    >>> from raystream.statefun_api.types import IntType
    >>> op = RoutedIngress(["demo/counter"], IntType)
    >>> op.route(Batch.of_records([("a", 1), ("b", 2)]))
    [('demo/counter', 'a', '', '', 'io.statefun.types/int', 1, True), ('demo/counter', 'b', '', '', 'io.statefun.types/int', 2, True)]
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

from raystream.engine.errors import GraphError, UserCodeError
from raystream.engine.operator import StreamOperator
from raystream.engine.records import Batch
from raystream.statefun_api.address import parse_typename
from raystream.statefun_api.messages import message_builder
from raystream.statefun_api.routing import MessageRecord, message_to_record
from raystream.statefun_api.types import (
    BoolType,
    DoubleType,
    FloatType,
    IntType,
    LongType,
    StringType,
    Type,
    all_hold_decoded,
)

__all__ = ["RoutedIngress", "Field"]

Field = str | int | Callable[[Any], Any]
"""Where a routed ingress finds a record's id or value: a column name (or dict key), a tuple
index, or a function of the record."""

#: message_builder's keyword of each built-in type (the error of a bad value is then its own)
_KEYWORDS: dict[Type[Any], str] = {
    IntType: "int_value",
    LongType: "long_value",
    FloatType: "float_value",
    DoubleType: "double_value",
    StringType: "str_value",
    BoolType: "bool_value",
}


class RoutedIngress(StreamOperator):
    """Turns every record into one message per target function type: id and value taken
    from the record's fields (see the module docstring).

    Args:
        targets: function typenames (``"namespace/name"``) every record is sent to.
        value_type: the statefun type of the values (``IntType``, ``StringType``, a
            ``make_json_type(...)``...).
        id_field: where the function id is: a column name or dict key, a tuple index, or a
            function of the record; the ids must be non-empty strings.
        value_field: where the value is (same forms); ``None``: the whole record.

    Example:
        >>> from raystream.statefun_api.types import StringType
        >>> op = RoutedIngress(["demo/greeter"], StringType, id_field="user", value_field="user")
        >>> [r[1] for r in op.route(Batch.of_records([{"user": "ann"}, {"user": "bob"}]))]
        ['ann', 'bob']
    """

    def __init__(
        self,
        targets: Sequence[str],
        value_type: Type[Any],
        id_field: Field = 0,
        value_field: Field | None = 1,
    ) -> None:
        if isinstance(targets, str):
            targets = [targets]
        if not targets:
            raise GraphError("a routed ingress needs at least one target function type")
        for target in targets:
            try:
                parse_typename(target)
            except (TypeError, ValueError) as exc:
                raise GraphError(f"routed ingress target {target!r}: {exc}") from None
        if not isinstance(value_type, Type):
            raise GraphError(f"routed ingress: value_type must be a statefun_api Type (IntType, make_json_type(...)), got {value_type!r}")
        for name, field in (("id_field", id_field), ("value_field", value_field)):
            if not (field is None and name == "value_field") and not isinstance(field, (str, int)) and not callable(field):
                raise GraphError(f"routed ingress: {name} must be a column name, a tuple index or a function, got {field!r}")
        self.targets = list(targets)
        self.value_type = value_type
        self.id_field = id_field
        self.value_field = value_field
        self._keyword = _KEYWORDS.get(value_type)

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        """Emit the messages of ``batch``'s records (one per record and target)."""
        if len(batch):
            self.output.emit(Batch.of_records(self.route(batch)))

    def route(self, batch: Batch) -> list[MessageRecord]:
        """The message records of ``batch``, per target in record order.

        Raises:
            UserCodeError: naming the first record whose id or value is missing or invalid.
        """
        ids = self._column(batch, self.id_field, "id")
        values = self._column(batch, self.value_field, "value") if self.value_field is not None else batch.records()
        if not (set(map(type, ids)) <= {str}) or "" in ids:
            index = next(i for i, v in enumerate(ids) if type(v) is not str or not v)
            raise UserCodeError(
                batch.records()[index],
                ValueError(f"the routed ingress's id ({self._describe(self.id_field)}) must be a non-empty string, got {ids[index]!r}"),
            )
        typename = self.value_type.typename
        if self._keyword is not None and all_hold_decoded(self.value_type, values):
            out: list[MessageRecord] = []
            for target in self.targets:  # tuples built in C: zip over constant and per-record columns
                out.extend(zip(repeat(target), ids, repeat(""), repeat(""), repeat(typename), values, repeat(True)))
            return out
        return self._route_slow(batch, ids, values)

    def _route_slow(self, batch: Batch, ids: list[Any], values: list[Any]) -> list[MessageRecord]:
        """One ``message_builder`` per record: values held encoded (a non built-in type, a
        value such as -0.0) and the exact error of an invalid one."""
        out: list[MessageRecord] = []
        keyword = self._keyword
        records = None
        for target in self.targets:
            for i, (fid, value) in enumerate(zip(ids, values)):
                try:
                    if keyword is None:
                        message = message_builder(target, fid, value=value, value_type=self.value_type)
                    else:
                        message = message_builder(target, fid, **{keyword: value})
                except Exception as exc:
                    if records is None:
                        records = batch.records()
                    raise UserCodeError(records[i], exc) from exc
                out.append(message_to_record(message))
        return out

    def _column(self, batch: Batch, field: Field, what: str) -> list[Any]:
        """The values of ``field`` of every record of ``batch`` (a column of an Arrow batch
        without converting the other columns)."""
        if isinstance(field, str) and batch.is_columnar:
            rb = batch.arrow()
            index = rb.schema.get_field_index(field)
            if index < 0:
                raise UserCodeError(
                    batch.records()[0],
                    KeyError(f"the routed ingress's {what} column {field!r} is not in the stream; its columns are {rb.schema.names}"),
                )
            column = rb.column(index)
            if column.null_count:
                first = next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
                raise UserCodeError(batch.records()[first], ValueError(f"the routed ingress's {what} column {field!r} is null"))
            return column.to_pylist()  # type: ignore[no-any-return]
        records = batch.records()
        get: Callable[[Any], Any] = field if callable(field) else operator.itemgetter(field)  # type: ignore[arg-type]
        it = iter(records)
        try:
            return list(map(get, it))
        except Exception as exc:
            index = len(records) - operator.length_hint(it) - 1
            record = records[index] if 0 <= index < len(records) else "<unknown record>"
            raise UserCodeError(
                record, ValueError(f"the routed ingress cannot take the {what} ({self._describe(field)}): {type(exc).__name__}: {exc}")
            ) from exc

    @staticmethod
    def _describe(field: Field) -> str:
        if isinstance(field, str):
            return f"field {field!r}"
        if isinstance(field, int):
            return f"index {field}"
        return f"function {getattr(field, '__name__', repr(field))}"
