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

At parallelism > 1, where about half of the messages cross to another subtask's dispatcher
(as Arrow), the messages of a batch whose values are held decoded leave as one Arrow batch
in the engine's form of message records (:meth:`RoutedIngress.route_batch`), built from the
id and value columns without a tuple per message; the hash exchange computes their key
groups on the typename and id columns (:attr:`RoutedIngress.message_key_groups`). At
parallelism 1 they stay Python records (no exchange to ship them through). A Python router's
operator (:class:`IngressRouter`, ``with_ingress``) does the same with the messages it
returns (:meth:`IngressRouter.route_batch`).

Example:
    >>> from raystream.engine.records import Batch
    >>> from raystream.statefun_api.types import IntType
    >>> op = RoutedIngress(["demo/counter"], IntType)
    >>> op.route(Batch.of_records([("a", 1), ("b", 2)]))
    [('demo/counter', 'a', '', '', 'io.statefun.types/int', 1, True), ('demo/counter', 'b', '', '', 'io.statefun.types/int', 2, True)]
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raystream.engine.errors import GraphError, UserCodeError
from raystream.engine.operator import OperatorContext, Output, StreamOperator
from raystream.engine.records import Batch
from raystream.statefun_api.address import id_problem, parse_typename
from raystream.statefun_api.messages import Message, message_builder
from raystream.statefun_api.routing import (
    _RECORD_COLUMNS,
    _RECORD_METADATA,
    CompactMessages,
    IngressRecords,
    MessageRecord,
    message_key_groups,
    message_to_record,
)
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

__all__ = ["RoutedIngress", "check_routed_targets", "IngressRouter", "Router", "Field", "message_arrow_batch", "COLUMNAR_MIN_RECORDS"]

Router = Callable[[Any], "Message | Iterable[Message] | None"]
"""An ingress router: one input record -> a Message, an iterable of Messages, or None."""

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

#: the Arrow type ``records_to_arrow`` gives a column of decoded values of each built-in type
_ARROW_TYPES: dict[Type[Any], pa.DataType] = {
    IntType: pa.int64(),
    LongType: pa.int64(),
    FloatType: pa.float64(),
    DoubleType: pa.float64(),
    StringType: pa.string(),
    BoolType: pa.bool_(),
}

#: the range of ints held decoded per type (message_builder's: sfixed32, sfixed64)
_INT_BOUNDS: dict[Type[Any], tuple[int, int]] = {IntType: (-(1 << 31), (1 << 31) - 1), LongType: (-(1 << 63), (1 << 63) - 1)}


_STRING = pa.string()


def message_arrow_batch(typenames: pa.Array, ids: pa.Array, value_typename: str, values: pa.Array) -> pa.RecordBatch:
    """Message records from the ingress (no caller) whose values, all of the built-in type
    ``value_typename``, are held decoded, as the Arrow batch ``records_to_arrow`` makes of
    their tuples: columns ``f0`` .. ``f6`` (target typename, target id, caller typename and
    id, value typename, value, has value). The constant columns are made without a value per
    row from Python.

    Example:
        >>> rb = message_arrow_batch(pa.array(["a/f"]), pa.array(["1"]), IntType.typename, pa.array([7]))
        >>> from raystream.engine.records import arrow_to_records
        >>> arrow_to_records(rb)
        [('a/f', '1', '', '', 'io.statefun.types/int', 7, True)]
    """
    n = len(values)
    empty = _repeated("", n)
    columns = [typenames, ids, empty, empty, _repeated(value_typename, n), values, _repeated(True, n)]
    return pa.RecordBatch.from_arrays(columns, _RECORD_COLUMNS).replace_schema_metadata(_RECORD_METADATA)


@lru_cache(maxsize=8)
def _repeated(value: str | bool, n: int) -> pa.Array:
    """``value`` (a str or True) ``n`` times as an Arrow column, made once for the constant
    columns of every message batch of that many rows (Arrow arrays are immutable: batches share
    it). An ingress's batches mostly have one size: ``pa.repeat`` per batch and column was ~40
    instructions a message. At most 8 kept (a few constants of a job, at its batch sizes).

    Example:
        >>> _repeated("a/f", 2).to_pylist(), _repeated(True, 2).type
        (['a/f', 'a/f'], DataType(bool))
    """
    return pa.repeat(pa.scalar(value, _STRING if isinstance(value, str) else pa.bool_()), n)


def check_routed_targets(ingress: str, targets: Sequence[str], function_types: Any) -> None:
    """Raise a GraphError naming ``ingress``, the target and the job's function types if a
    function type of ``targets`` is none of ``function_types`` (a
    :class:`~statefun_api.playground.FunctionTypes`: embedded typenames and remote
    endpoints' patterns, a ``namespace/*`` endpoint taking any name of its namespace).

    Example:
        >>> from raystream.statefun_api.playground import FunctionTypes
        >>> types = FunctionTypes(lambda: (["t/a"], ["remote/*"]))
        >>> check_routed_targets("'in'", ["t/a", "remote/anything"], types)
        >>> check_routed_targets("'in'", ["t/nobody"], types)
        Traceback (most recent call last):
        ...
        raystream.engine.errors.GraphError: routed ingress 'in' sends every record to function type 't/nobody', which no function of the job takes (the job has: remote/*, t/a); register a function under 't/nobody' (functions.register / @functions.bind), serve it from a remote endpoint (with_endpoint(remote_endpoint('t/nobody' or 't/*', url)), a module.yaml endpoint), or correct the ingress's targets
    """
    for target in targets:
        if not function_types.serves(target):
            raise GraphError(
                f"routed ingress {ingress} sends every record to function type {target!r}, which no function "
                f"of the job takes (the job has: {function_types.describe()}); register a function under "
                f"{target!r} (functions.register / @functions.bind), serve it from a remote endpoint "
                f"(with_endpoint(remote_endpoint({target!r} or {target.rpartition('/')[0] + '/*'!r}, url)), a "
                f"module.yaml endpoint), or correct the ingress's targets"
            )


class RoutedIngress(StreamOperator):
    """Turns every record into one message per target function type: id and value taken
    from the record's fields (see the module docstring).

    Args:
        targets: function typenames (``"namespace/name"``) every record is sent to.
        value_type: the statefun type of the values (``IntType``, ``StringType``, a
            ``make_json_type(...)``...).
        id_field: where the function id is: a column name or dict key, a tuple index, or a
            function of the record; the ids must be non-empty strings, or bytes holding
            UTF-8 (decoded, as StateFun's Kafka ingress reads a record's key).
        value_field: where the value is (same forms); ``None``: the whole record.
        function_types: the function types of the job (a
            :class:`~statefun_api.playground.FunctionTypes`, given by
            :meth:`StatefulFunctionsJob.with_routed_ingress`): :meth:`open` fails the job
            if a target is none of them, before any record is routed. ``None``: unchecked.

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
        function_types: Any = None,
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
        self.function_types = function_types
        self._keyword = _KEYWORDS.get(value_type)
        self._columnar = False

    #: the key groups of the Arrow message batches it emits (of any Arrow batch of message
    #: records), computed on their columns: the dispatcher's key selector's ``batch_key_groups``
    message_key_groups = staticmethod(message_key_groups)

    def open(self, ctx: OperatorContext, output: Output) -> None:
        """Check the targets against the job's function types (see ``function_types``);
        emit Arrow message batches when parallel (see :meth:`route_batch`)."""
        if self.function_types is not None:
            check_routed_targets(repr(ctx.operator_name), self.targets, self.function_types)
        super().open(ctx, output)
        self._columnar = ctx.parallelism > 1

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        """Emit the messages of ``batch``'s records (one per record and target)."""
        if len(batch):
            self.output.emit(self.route_batch(batch, columnar=self._columnar))

    def route(self, batch: Batch) -> list[MessageRecord]:
        """The message records of ``batch``, per target in record order.

        Raises:
            UserCodeError: naming the first record whose id or value is missing or invalid.
        """
        return self.route_batch(batch).records()

    def route_batch(self, batch: Batch, columnar: bool = False) -> Batch:
        """The messages of ``batch`` (as :meth:`route`) as one batch. With ``columnar``, values
        held decoded come as one Arrow batch in the engine's form of message records (columns
        ``f0`` .. ``f6``, what a channel would convert the records to), built from the id and
        value columns: what an ingress at parallelism > 1 emits, since about half of its
        messages cross to another subtask's dispatcher as Arrow anyway, and the key groups of
        an Arrow batch are computed on its columns (:attr:`message_key_groups`). Values held
        encoded (non built-in types, -0.0) come as Python records.

        Example:
            >>> rb = RoutedIngress(["demo/counter"], IntType).route_batch(Batch.of_records([("a", 1)]), columnar=True).arrow()
            >>> rb.schema.names, rb.column(1).to_pylist(), rb.schema.types[5]
            (['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6'], ['a'], DataType(int64))

        Raises:
            UserCodeError: naming the first record whose id or value is missing or invalid.
        """
        id_array = self._arrow_ids(batch) if columnar else None
        ids = self._column(batch, self.id_field, "id") if id_array is None else None
        values = self._column(batch, self.value_field, "value") if self.value_field is not None else batch.records()
        # (C passes: countOf compares each id's type with str by identity, no set built; with
        # every id a str, `all(ids)` says none is empty without comparing each with "")
        not_str = ids is not None and operator.countOf(map(type, ids), str) != len(ids)
        if not_str:
            ids = self._decoded_ids(batch, ids)  # type: ignore[arg-type]  # (not None: not_str)
            not_str = operator.countOf(map(type, ids), str) != len(ids)
        if ids is not None and (not_str or not all(ids)):
            index = next(i for i, v in enumerate(ids) if type(v) is not str or not v)
            raise UserCodeError(
                batch.records()[index],
                ValueError(
                    f"the routed ingress's id ({self._describe(self.id_field)}) must be a non-empty string, "
                    f"got {ids[index]!r} (bytes holding UTF-8 are taken too, as a Kafka record's key)"
                ),
            )
        if ids is not None and not "".join(ids).isascii():  # (one C pass; the per-id check only for non-ASCII batches)
            for index, fid in enumerate(ids):
                problem = None if fid.isascii() else id_problem(fid)
                if problem is not None:
                    raise UserCodeError(
                        batch.records()[index], ValueError(f"the routed ingress's id ({self._describe(self.id_field)}): {problem}")
                    )
        if columnar and self._keyword is not None:
            value_array = self._value_array(values)
            if value_array is not None:
                rb = self._message_batch(id_array if id_array is not None else ids, value_array)  # type: ignore[arg-type]
                if rb is not None:
                    return Batch.of_arrow(rb)
        if self._keyword is None or not all_hold_decoded(self.value_type, values):
            if ids is None:
                ids = id_array.to_pylist()  # type: ignore[union-attr]  # (one of the two is set)
            return Batch.of_records(self._route_slow(batch, ids, values))
        if ids is None:
            ids = id_array.to_pylist()  # type: ignore[union-attr]
        typename = self.value_type.typename
        out = IngressRecords()
        for target in self.targets:  # tuples built in C: zip over constant and per-record columns
            out.extend(zip(repeat(target), ids, repeat(""), repeat(""), repeat(typename), values, repeat(True)))
        # (the same messages as columns: a dispatcher that receives this very list queues them so;
        # without a value field the values are the input's records, a list its source owns)
        if self.value_field is None:
            values = list(values)
        out.compact = tuple(CompactMessages(target, typename, ids, values) for target in self.targets)
        return Batch.of_records(out)

    def _decoded_ids(self, batch: Batch, ids: list[Any]) -> list[Any]:
        """``ids`` with every bytes id decoded from UTF-8, as StateFun's routable Kafka ingress
        takes a record's key (``new String(key, UTF_8)``; a Kinesis partition key is text):
        a ``(key, value)`` record from a Kafka consumer has bytes for both. Other values are
        left for the caller's check.

        Raises:
            UserCodeError: naming the record whose id is not valid UTF-8.
        """
        out = list(ids)
        for index, fid in enumerate(ids):
            if isinstance(fid, (bytes, bytearray, memoryview)):
                try:
                    out[index] = bytes(fid).decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise UserCodeError(
                        batch.records()[index],
                        ValueError(
                            f"the routed ingress's id ({self._describe(self.id_field)}) is bytes that are not "
                            f"UTF-8 ({exc}); a function id is text: a Kafka record's key is read as UTF-8, as "
                            f"on StateFun"
                        ),
                    ) from None
        return out

    def _value_array(self, values: list[Any]) -> pa.Array | None:
        """``values`` as the Arrow column ``records_to_arrow`` makes of them when every one
        may be held decoded (:func:`~statefun_api.types.all_hold_decoded`), else None. Ints
        through numpy: their range checked on the array, not with ``min()``/``max()`` over
        the list (~50 ns a value less, measured), read with ``np.fromiter`` (its dtype given:
        no type discovery per value, ~210 instructions a value against ~285 with ``np.array``)."""
        bounds = _INT_BOUNDS.get(self.value_type)
        if bounds is not None:
            if operator.countOf(map(type, values), int) != len(values):  # (not bools: they are ints to numpy)
                return None
            try:
                ints = np.fromiter(values, np.int64, len(values))
            except OverflowError:
                return None
            if not (bounds[0] <= ints.min() and ints.max() <= bounds[1]):
                return None
            return pa.array(ints)
        if not all_hold_decoded(self.value_type, values):
            return None
        try:
            return pa.array(values, _ARROW_TYPES[self.value_type])
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError, OverflowError):
            return None

    def _message_batch(self, ids: pa.Array | list[str], value_array: pa.Array) -> pa.RecordBatch | None:
        """The message records of ``ids`` and their decoded values per target, as the Arrow
        batch ``records_to_arrow`` makes of them (None: an id Arrow cannot hold, e.g. a
        string with a lone surrogate; the records then go as they are)."""
        try:
            id_array = ids if isinstance(ids, pa.Array) else pa.array(ids, pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
            return None
        n, k = len(value_array), len(self.targets)
        targets = [_repeated(t, n) for t in self.targets]
        return message_arrow_batch(
            targets[0] if k == 1 else pa.concat_arrays(targets),
            id_array if k == 1 else pa.concat_arrays([id_array] * k),
            self.value_type.typename,
            value_array if k == 1 else pa.concat_arrays([value_array] * k),
        )

    def _arrow_ids(self, batch: Batch) -> pa.Array | None:
        """The id column of a columnar ``batch`` as it is, when it holds valid ids (a string
        column without nulls or empty strings); None otherwise (the ids are then read as a
        list, which names a bad record)."""
        if not (isinstance(self.id_field, str) and batch.is_columnar):
            return None
        rb = batch.arrow()
        index = rb.schema.get_field_index(self.id_field)
        if index < 0:
            return None
        column = rb.column(index)
        if column.null_count or not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            return None
        if len(column) and pc.min(pc.binary_length(column)).as_py() == 0:
            return None
        return column if pa.types.is_string(column.type) else column.cast(pa.string())

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


class IngressRouter(StreamOperator):
    """Runs an ingress router on every record: the message records of the Messages it
    returns (``with_ingress``). One loop per batch calls the router and makes the record of
    a message held decoded in place, the common case; the rest (lists of messages, values
    held serialized) go through :func:`~statefun_api.routing.message_to_record`.

    Args:
        router: ``record -> Message | Iterable[Message] | None``.

    Example:
        >>> op = IngressRouter(lambda pair: message_builder("demo/counter", pair[0], int_value=pair[1]))
        >>> op.route([("a", 1), ("b", 2)])
        [('demo/counter', 'a', '', '', 'io.statefun.types/int', 1, True), ('demo/counter', 'b', '', '', 'io.statefun.types/int', 2, True)]
    """

    def __init__(self, router: Router) -> None:
        if not callable(router):
            raise GraphError(f"an ingress router must be a function record -> message(s), got {router!r}")
        self.router = router
        self._columnar = False

    def open(self, ctx: OperatorContext, output: Output) -> None:
        """Emit Arrow message batches when parallel (see :meth:`route_batch`)."""
        super().open(ctx, output)
        self._columnar = ctx.parallelism > 1

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        """Emit the message records of the batch's records, in order."""
        out = self.route_batch(batch.records(), self._columnar)
        if len(out):
            self.output.emit(out)

    def route(self, records: Iterable[Any]) -> list[MessageRecord]:
        """The message records of ``records``, in order.

        Raises:
            UserCodeError: naming the record whose router raised or returned something
                other than messages.
        """
        out: list[MessageRecord] = []
        append = out.append
        router = self.router
        for record in records:
            try:
                routed = router(record)
            except Exception as exc:
                raise UserCodeError(record, exc) from exc
            if type(routed) is Message:
                tpe = routed._type
                if tpe is not None:  # a value held decoded (message_to_record, inlined)
                    append((routed.target_typename, routed.target_id, "", "", tpe.typename, routed._obj, True))
                else:
                    append(message_to_record(routed))
            elif routed is not None:
                out.extend(_routed_records(routed, record))
        return out

    def route_batch(self, records: Sequence[Any], columnar: bool = False) -> Batch:
        """The messages of ``records`` (as :meth:`route`) as one batch. With ``columnar``
        (what the operator does at parallelism > 1, where about half of the messages cross to
        another subtask's dispatcher as Arrow anyway), a batch of at least
        :data:`COLUMNAR_MIN_RECORDS` whose messages all hold a decoded value of one built-in
        type comes as one Arrow batch in the engine's form of message records
        (:func:`message_arrow_batch`), built from the typename, id and value of each message
        without a tuple per message; the exchange computes its key groups on the typename
        and id columns. Otherwise, and from the first message that does not fit (a list of
        messages, a value held serialized, another value type), Python records.

        Example:
            >>> op = IngressRouter(lambda pair: message_builder("demo/counter", pair[0], int_value=pair[1]))
            >>> rb = op.route_batch([(str(i), i) for i in range(300)], columnar=True).arrow()
            >>> rb.num_rows, rb.column(1)[299].as_py(), rb.column(5)[299].as_py()
            (300, '299', 299)

        Raises:
            UserCodeError: as :meth:`route`.
        """
        if not columnar or len(records) < COLUMNAR_MIN_RECORDS:
            return Batch.of_records(self.route(records))
        typenames: list[str] = []
        ids: list[str] = []
        values: list[Any] = []
        add_typename, add_id, add_value = typenames.append, ids.append, values.append
        router = self.router
        vtype = None
        it = iter(records)
        for record in it:
            try:
                routed = router(record)
            except Exception as exc:
                raise UserCodeError(record, exc) from exc
            if type(routed) is Message and routed._type is not None and (routed._type is vtype or vtype is None):
                vtype = routed._type
                add_typename(routed.target_typename)
                add_id(routed.target_id)
                add_value(routed._obj)
            elif routed is not None:  # from here on as records
                out = _records_of_columns(typenames, ids, vtype, values)
                if type(routed) is Message:
                    out.append(message_to_record(routed))
                else:
                    out.extend(_routed_records(routed, record))
                out.extend(self.route(it))
                return Batch.of_records(out)
        rb = _message_columns(typenames, ids, vtype, values)
        if rb is None:
            return Batch.of_records(_records_of_columns(typenames, ids, vtype, values))
        return Batch.of_arrow(rb)


#: the fewest messages :meth:`IngressRouter.route_batch` makes an Arrow batch of (the columns
#: cost tens of microseconds a batch, more than a few records going as they are)
COLUMNAR_MIN_RECORDS = 256


def _records_of_columns(typenames: list[str], ids: list[str], vtype: Type[Any] | None, values: list[Any]) -> list[MessageRecord]:
    """The message records of messages from the ingress held decoded as ``vtype``, given as
    columns."""
    if vtype is None:
        return []
    return list(zip(typenames, ids, repeat(""), repeat(""), repeat(vtype.typename), values, repeat(True)))


def _message_columns(typenames: list[str], ids: list[str], vtype: Type[Any] | None, values: list[Any]) -> pa.RecordBatch | None:
    """:func:`message_arrow_batch` of messages held decoded as ``vtype``, given as columns;
    None when there are none, or a typename or id is not exactly a str Arrow can hold (a
    str subclass would come back a plain str, whose key group differs)."""
    if vtype is None:
        return None
    if set(map(type, typenames)) != {str} or set(map(type, ids)) != {str}:
        return None
    n = len(typenames)
    try:
        first = typenames[0]
        f0 = pa.repeat(pa.scalar(first, _STRING), n) if typenames.count(first) == n else pa.array(typenames, _STRING)
        f1 = pa.array(ids, _STRING)
        value_array = pa.array(values, _ARROW_TYPES[vtype])
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError, OverflowError, KeyError):
        return None
    return message_arrow_batch(f0, f1, vtype.typename, value_array)


def _routed_records(routed: Any, record: Any) -> list[MessageRecord]:
    """The message records of what a router returned for ``record`` other than a Message
    or None: an iterable of Messages."""
    if isinstance(routed, Message):  # (a subclass)
        return [message_to_record(routed)]
    if isinstance(routed, (str, bytes)) or not isinstance(routed, Iterable):
        raise UserCodeError(record, TypeError(
            f"the ingress router returned {routed!r} for record {record!r}; expected a "
            f"Message (statefun_api.message_builder(...)), an iterable of Messages, or None"
        ))
    out = []
    try:
        for m in routed:
            if not isinstance(m, Message):
                raise TypeError(
                    f"the ingress router returned {m!r} among the messages for record {record!r}; "
                    f"expected statefun_api Message objects (message_builder(...))"
                )
            out.append(message_to_record(m))
    except Exception as exc:  # (a generator router raises while iterated)
        raise UserCodeError(record, exc) from exc
    return out
