"""How stateful-function messages travel through the engine: records, keys and tags.

A message between functions (or from an ingress router) crosses the engine as a flat
tuple of scalars, so the engine ships it as typed Arrow columns rather than pickles::

    (target_typename, target_id, caller_typename, caller_id, value_typename, value, has_value)

The fields are read by name through the position constants :data:`TARGET_TYPENAME`,
:data:`TARGET_ID`, :data:`CALLER_TYPENAME`, :data:`CALLER_ID`, :data:`VALUE_TYPENAME`,
:data:`VALUE` and :data:`HAS_VALUE` (``record[VALUE]``). The record is a plain ``tuple``,
not a ``NamedTuple``: the engine ships only exact tuples as typed Arrow columns (a tuple
subclass would be pickled) and gives plain tuples back, so named-tuple records would need a
conversion per message on every channel, spill file and snapshot (about 1 us each, measured).

``value`` is the serialized value (bytes), or, for a value of a built-in immutable type
(int, long, double, string, bool) that no one serialized yet, the decoded Python value: a
message between embedded functions is never encoded. Messages to other subtasks cross the
feedback edge with such values in a typed Arrow column (:class:`FeedbackBatches`,
:func:`typed_records_batch`), and so do spill files and snapshots of messages of one kind;
records are encoded (:func:`encode_record`) at remote calls, and where values of several
kinds would share a column (:func:`records_to_arrow_batch`).

``caller_typename == ""`` means the message came from an ingress. The dispatcher is keyed
by :func:`address_key` ``(typename, id)``; a tuple rather than ``"typename/id"`` because
namespaces and ids may both contain slashes, so the string form is ambiguous.

Egress messages leave the dispatcher on the side output :func:`egress_tag` of their
egress typename, already decoded (see :func:`decode_egress_value`).

Example:
    >>> from raystream.statefun_api import message_builder
    >>> m = message_builder("com.example/greeter", "alice", str_value="hi")
    >>> record = message_to_record(m)
    >>> record[TARGET_TYPENAME], record[TARGET_ID], record[CALLER_TYPENAME]
    ('com.example/greeter', 'alice', '')
    >>> address_key(record)
    ('com.example/greeter', 'alice')
    >>> invocation = record_to_invocation(record)
    >>> invocation.message.as_string(), invocation.caller is None
    ('hi', True)
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from itertools import repeat
from operator import countOf
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raystream.engine.keygroups import key_groups_of_str_pairs, key_groups_of_tuples
from raystream.engine.records import KIND_KEY, Batch, records_to_arrow, tuple_columns
from raystream.statefun_api.address import Address
from raystream.statefun_api.egress_io import KafkaProducerRecordType, KinesisEgressRecordType
from raystream.statefun_api.invocation import Invocation
from raystream.statefun_api.messages import EgressMessage, Message
from raystream.statefun_api.types import (
    BoolType,
    DoubleType,
    FloatType,
    IntType,
    LongType,
    StringType,
    Type,
    TypedValue,
    builtin_type,
)

__all__ = [
    "MessageRecord",
    "TARGET_TYPENAME",
    "TARGET_ID",
    "CALLER_TYPENAME",
    "CALLER_ID",
    "VALUE_TYPENAME",
    "VALUE",
    "HAS_VALUE",
    "message_to_record",
    "record_to_invocation",
    "address_key",
    "record_address",
    "record_caller",
    "describe_records",
    "egress_tag",
    "decode_egress_value",
    "decode_by_typename",
    "encode_record",
    "encode_records",
    "record_typed_value",
    "records_to_arrow_batch",
    "message_key_groups",
    "message_record_key_groups",
    "feedback_batch",
    "FeedbackBatches",
    "typed_records_batch",
    "CompactMessages",
    "IngressRecords",
    "FEEDBACK_TAG",
]

MessageRecord = tuple[str, str, str, str, str, Any, bool]


class CompactMessages:
    """Messages from an ingress to one function type, all of one value typename, without
    caller, their values held decoded (built-in types: ``int``, ``float``, ``bool``, ``str``):
    two columns (ids, values) instead of one record each. The dispatcher holds, queues and
    spills ingress messages in this form (issue 13); :meth:`records` gives the message records
    they stand for, in order (snapshots and errors see those).

    Example:
        >>> c = CompactMessages("demo/counter", "io.statefun.types/int", ["a", "b", "c"], [1, 2, 3])
        >>> head = c.split(1)
        >>> head.records(), len(c), c.ids
        ([('demo/counter', 'a', '', '', 'io.statefun.types/int', 1, True)], 2, ['b', 'c'])
    """

    __slots__ = ("typename", "value_typename", "ids", "values")

    def __init__(self, typename: str, value_typename: str, ids: list[str], values: list[Any]) -> None:
        self.typename = typename
        self.value_typename = value_typename
        self.ids = ids
        self.values = values

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"CompactMessages({self.typename!r}, {self.value_typename!r}, {len(self.ids)} messages)"

    def records(self) -> list[MessageRecord]:
        """The message records of these messages, in order (tuples built in C)."""
        return list(
            zip(repeat(self.typename), self.ids, repeat(""), repeat(""), repeat(self.value_typename), self.values, repeat(True))
        )

    def split(self, n: int) -> CompactMessages:
        """Remove the first ``n`` messages (``0 < n < len(self)``) and return them (slices: the
        lists given to the constructor are not changed)."""
        head = CompactMessages(self.typename, self.value_typename, self.ids[:n], self.values[:n])
        self.ids = self.ids[n:]
        self.values = self.values[n:]
        return head


class IngressRecords(list):  # type: ignore[type-arg]
    """The message records a routed ingress emits (a plain list of them to anything that reads
    it), with the same messages in compact form (``compact``: one :class:`CompactMessages` per
    target, or None), which a dispatcher that receives the very list (in process, at
    parallelism 1) queues instead of the records.

    Example:
        >>> out = IngressRecords([("demo/f", "a", "", "", "io.statefun.types/int", 1, True)])
        >>> out.compact = (CompactMessages("demo/f", "io.statefun.types/int", ["a"], [1]),)
        >>> out == out.compact[0].records()
        True
    """

    __slots__ = ("compact",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.compact: tuple[CompactMessages, ...] | None = None
"""``(target_typename, target_id, caller_typename, caller_id, value_typename, value, has_value)``;
``value`` is bytes or the decoded value of a built-in immutable type (see the module docstring)."""

#: position of the target function's typename in a :data:`MessageRecord`
TARGET_TYPENAME: Final = 0
#: position of the target function's id
TARGET_ID: Final = 1
#: position of the sender's typename (``""``: the message came from an ingress)
CALLER_TYPENAME: Final = 2
#: position of the sender's id (``""`` for an ingress)
CALLER_ID: Final = 3
#: position of the value's typename (StateFun's ``TypedValue.typename``)
VALUE_TYPENAME: Final = 4
#: position of the value: bytes, or the decoded value of a built-in immutable type
VALUE: Final = 5
#: position of ``TypedValue.has_value``
HAS_VALUE: Final = 6

#: side output of the dispatcher that carries messages to addresses of other subtasks
FEEDBACK_TAG = "statefun-feedback"

_BUILTIN_TYPES: dict[str, Type[Any]] = {
    t.typename: t
    for t in (IntType, LongType, FloatType, DoubleType, StringType, BoolType, KafkaProducerRecordType, KinesisEgressRecordType)
}


def message_to_record(message: Message, caller: Address | None = None) -> MessageRecord:
    """The engine record of ``message`` sent by ``caller`` (``None``: from an ingress); a
    value held decoded stays decoded."""
    tpe = message._type
    if tpe is not None:
        if caller is None:  # (an ingress router's message: no test per caller field)
            return (message.target_typename, message.target_id, "", "", tpe.typename, message._obj, True)
        return (message.target_typename, message.target_id, caller.typename, caller.id, tpe.typename, message._obj, True)
    tv = message.typed_value
    return (
        message.target_typename,
        message.target_id,
        caller.typename if caller is not None else "",
        caller.id if caller is not None else "",
        tv.typename,
        tv.value,
        tv.has_value,
    )


def record_typed_value(record: MessageRecord) -> TypedValue:
    """The :class:`~statefun_api.types.TypedValue` a record carries (decoded values stay so)."""
    value = record[VALUE]
    if type(value) is bytes:
        return TypedValue(record[VALUE_TYPENAME], record[HAS_VALUE], value)
    return TypedValue.of(builtin_type(record[VALUE_TYPENAME]), value)  # type: ignore[arg-type]


def record_message(record: MessageRecord) -> Message:
    """The :class:`~statefun_api.messages.Message` a record carries."""
    value = record[VALUE]
    if type(value) is bytes:
        typed = TypedValue(record[VALUE_TYPENAME], record[HAS_VALUE], value)
        return Message._unchecked(record[TARGET_TYPENAME], record[TARGET_ID], typed)
    value_type = builtin_type(record[VALUE_TYPENAME])
    return Message._decoded(record[TARGET_TYPENAME], record[TARGET_ID], value_type, value)  # type: ignore[arg-type]


def encode_record(record: MessageRecord) -> MessageRecord:
    """``record`` with its value serialized (the record itself when it already is).

    Example:
        >>> from raystream.statefun_api import message_builder
        >>> encode_record(message_to_record(message_builder("a/f", "1", int_value=1)))[VALUE]
        b'\\r\\x01\\x00\\x00\\x00'
    """
    value = record[VALUE]
    if type(value) is bytes:
        return record
    data = builtin_type(record[VALUE_TYPENAME]).serializer().serialize(value)  # type: ignore[union-attr]
    return record[:VALUE] + (data, True)


def encode_records(records: list[MessageRecord]) -> list[MessageRecord]:
    """``records`` with every value serialized: what leaves the dispatcher for other
    subtasks (the channel ships them as one Arrow batch of seven typed columns)."""
    return [r if type(r[VALUE]) is bytes else encode_record(r) for r in records]


def records_to_arrow_batch(records: list[MessageRecord]) -> pa.RecordBatch:
    """Message records as one Arrow batch of seven typed columns (values serialized): how
    they go over the feedback edge, into spill files and into snapshots. The same batch the
    engine's generic conversion makes (tuple records, columns ``f0`` .. ``f6``), built with
    the known column types (~1.7x faster on 8192 records, measured).

    Example:
        >>> from raystream.statefun_api import message_builder
        >>> rb = records_to_arrow_batch([message_to_record(message_builder("a/f", "1", int_value=1))])
        >>> rb.schema.types[VALUE], rb.num_rows
        (DataType(binary), 1)
    """
    return _encoded_to_arrow(encode_records(records))


def _encoded_to_arrow(encoded: list[MessageRecord]) -> pa.RecordBatch:
    """:func:`records_to_arrow_batch` of records whose values are all serialized already."""
    if not encoded:
        return records_to_arrow(encoded)
    try:
        arrays = [pa.array(column, kind) for column, kind in zip(tuple_columns(encoded, 7), _RECORD_TYPES)]
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, IndexError):  # not a well-formed record: the generic path
        return records_to_arrow(encoded)
    return pa.RecordBatch.from_arrays(arrays, _RECORD_COLUMNS).replace_schema_metadata(_RECORD_METADATA)


def typed_records_batch(records: list[MessageRecord]) -> pa.RecordBatch:
    """Message records as one Arrow batch of seven columns, the values held decoded kept so:
    when every value is held decoded and of one Python type (int, float, str, bool) the
    value column is typed (int64, float64, string, bool; the value's typename in column
    ``f4`` says which built-in type, e.g. int or long), exactly what the engine's generic
    conversion makes of such records; otherwise, as :func:`records_to_arrow_batch`, every
    value serialized in a binary column. Read back with ``arrow_to_records``: decoded values
    come back decoded, serialized ones as bytes.

    Example:
        >>> from raystream.statefun_api import message_builder
        >>> rb = typed_records_batch([message_to_record(message_builder("a/f", "1", int_value=7))])
        >>> rb.schema.types[VALUE], rb.column(VALUE).to_pylist()
        (DataType(int64), [7])
        >>> rb = typed_records_batch([message_to_record(message_builder("a/f", "1", int_value=7)),
        ...                           message_to_record(message_builder("a/f", "1", str_value="x"))])
        >>> rb.schema.types[VALUE], rb.column(VALUE).to_pylist()
        (DataType(binary), [b'\\r\\x07\\x00\\x00\\x00', b'\\n\\x01x'])
    """
    kind = _decoded_kind(records)
    if kind is None:
        return records_to_arrow_batch(records)
    rb = _decoded_to_arrow(records, _DECODED_ARROW_TYPES[kind])
    return rb if rb is not None else records_to_arrow_batch(records)


def _decoded_kind(records: list[MessageRecord]) -> type | None:
    """The Python type of the values of ``records`` when all of them are held decoded and of
    that one type (int, float, str or bool); ``None`` otherwise (serialized values, mixed
    kinds, no records)."""
    kinds = set(map(type, map(_value_of, records)))
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    return kind if kind in _DECODED_ARROW_TYPES else None


def _decoded_to_arrow(records: list[MessageRecord], value_type: pa.DataType) -> pa.RecordBatch | None:
    """:func:`typed_records_batch` of records whose values are all held decoded as one Python
    type (``value_type`` its Arrow type); ``None`` when a typename or id is not exactly a str
    (a ``str`` subclass would come back a plain str) or a record says it has no value: such
    records go serialized, as before."""
    n = len(records)
    columns = tuple_columns(records, 7)
    for column in columns[:VALUE]:
        if countOf(map(type, column), str) != n:
            return None
    if countOf(columns[HAS_VALUE], True) != n:  # (a decoded value always has one)
        return None
    try:
        arrays = [pa.array(column, kind) for column, kind in zip(columns, _RECORD_TYPES[:VALUE])]
        arrays.append(pa.array(columns[VALUE], value_type))
        arrays.append(_all_true(n))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError, UnicodeError):
        return None
    return pa.RecordBatch.from_arrays(arrays, _RECORD_COLUMNS).replace_schema_metadata(_RECORD_METADATA)


def _all_true(n: int) -> pa.Array:
    return pa.repeat(pa.scalar(True, pa.bool_()), n)


_value_of = operator.itemgetter(VALUE)

#: the Arrow type of a column of values held decoded, per Python type (what the engine's
#: generic conversion infers from values of that one type)
_DECODED_ARROW_TYPES: dict[type, pa.DataType] = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}


class FeedbackBatches:
    """Makes the batches of messages a dispatcher sends to other subtasks (the feedback edge),
    values held decoded kept decoded: a message between embedded functions is not encoded
    when it crosses to another subtask (issue 13); it travels in a typed Arrow column and the
    receiver reads the value back decoded. Values not held decoded (other types, float32) go
    serialized in a binary column, as before.

    A step's messages of several kinds (decoded ints, strings, serialized values...) go as
    one batch per kind, in the order each kind first appears, when no address gets messages
    of two kinds among them (the order of each address's messages is kept; a batch of one
    column type stays typed); otherwise every value is serialized, as before.

    The channel's writer coalesces the feedback batches of consecutive dispatcher steps per
    target and converts them to Arrow once per send (a step often forwards a handful of
    messages: converting each step's few records to seven Arrow columns cost more than the
    messages themselves), with the engine's generic conversion, which gives typed columns
    only to records of one kind (int values beside bytes values would be pickled). So a
    batch goes as Python records only when it has the *form* of the first batch this
    dispatcher sent (all decoded of one Python type, or serialized): every records batch a
    target's buffer holds then has that one form, and merged they stay typed. A batch of
    another form goes as its own Arrow batch (:func:`typed_records_batch`), which the writer
    sends beside the others, never merged with records.

    Example:
        >>> from raystream.statefun_api import message_builder
        >>> batches = FeedbackBatches()
        >>> [(b.is_arrow, b.records()[0][VALUE]) for b in batches.batches([
        ...     message_to_record(message_builder("a/f", "1", int_value=7)),
        ...     message_to_record(message_builder("a/f", "2", str_value="x"))])]
        [(False, 7), (True, 'x')]
        >>> [b.records()[0][VALUE] for b in batches.batches([
        ...     message_to_record(message_builder("a/f", "1", int_value=7)),
        ...     message_to_record(message_builder("a/f", "1", str_value="x"))])]  # one address, two kinds
        [b'\\r\\x07\\x00\\x00\\x00']
    """

    __slots__ = ("form",)

    def __init__(self) -> None:
        #: the form of the records batches sent so far: the Python type of their decoded
        #: values, ``bytes`` for serialized ones; ``None`` before the first batch
        self.form: type | None = None

    def batches(self, records: list[MessageRecord]) -> list[Batch]:
        """The batches of ``records`` (messages to other subtasks, in order) to emit on the
        feedback side output, in this order (see the class docstring)."""
        kind = _decoded_kind(records)
        if kind is not None:
            return [self._batch(records, kind)]
        groups = _kind_groups(records)
        if groups is None:
            return [self._batch(encode_records(records), bytes)]
        return [self._batch(group, k) for k, group in groups.items()]

    def _batch(self, records: list[MessageRecord], form: type) -> Batch:
        """``records``, whose values are all decoded of the Python type ``form`` or all
        serialized (``form`` is ``bytes``), as a records batch or an Arrow batch."""
        if self.form is None:
            self.form = form
        if form is self.form:
            return Batch.of_records(records)
        return Batch.of_arrow(typed_records_batch(records))


def _kind_groups(records: list[MessageRecord]) -> dict[type, list[MessageRecord]] | None:
    """``records`` grouped by the Python type of their values (``bytes``: serialized), each
    group in order, the groups in the order their kinds first appear; ``None`` when an
    address gets values of two kinds (grouping would reorder its messages), or a value is
    of no kind of the feedback edge."""
    kinds: dict[tuple[str, str], type] = {}
    groups: dict[type, list[MessageRecord]] = {}
    for record in records:
        kind = type(record[VALUE])
        if kind is not bytes and kind not in _DECODED_ARROW_TYPES:
            return None
        if kinds.setdefault((record[TARGET_TYPENAME], record[TARGET_ID]), kind) is not kind:  # (its address)
            return None
        group = groups.get(kind)
        if group is None:
            groups[kind] = [record]
        else:
            group.append(record)
    return groups


def feedback_batch(records: list[MessageRecord]) -> Batch:
    """The batch of messages to other subtasks with every value serialized (the feedback
    edge's form before :class:`FeedbackBatches`, which the dispatcher uses: values held
    decoded stay so). As Python records: the channel's writer converts them to Arrow."""
    return Batch.of_records(encode_records(records))


_RECORD_TYPES = [pa.string(), pa.string(), pa.string(), pa.string(), pa.string(), pa.binary(), pa.bool_()]
_RECORD_COLUMNS = [f"f{i}" for i in range(7)]
_RECORD_METADATA = {KIND_KEY: b"tuple"}


def record_to_invocation(record: MessageRecord) -> Invocation:
    """The :class:`~statefun_api.invocation.Invocation` carried by an engine record."""
    caller = Address.of(record[CALLER_TYPENAME], record[CALLER_ID]) if record[CALLER_TYPENAME] else None
    return Invocation(record_message(record), caller)


address_key: Callable[[MessageRecord], tuple[str, str]] = operator.itemgetter(TARGET_TYPENAME, TARGET_ID)
"""The key of a message record: its target ``(typename, id)`` (the dispatcher's key). An
``operator.itemgetter``, so mapping it over a batch's records runs without a Python frame
per record."""


def message_key_groups(batch: pa.RecordBatch, max_parallelism: int) -> np.ndarray | None:
    """The key groups of :func:`address_key` of every message record of an Arrow batch (the
    engine's tuple form, columns ``f0`` .. ``f6``: the routed ingress's output, the feedback
    edge's), computed on its typename and id columns without making the records; ``None``
    for a batch of another form. The ``batch_key_groups`` of the dispatcher's key selector.

    Example:
        >>> from raystream.engine.keygroups import key_group_for
        >>> from raystream.statefun_api import message_builder
        >>> rb = records_to_arrow_batch([message_to_record(message_builder("a/f", "1", int_value=1))])
        >>> message_key_groups(rb, 128).tolist() == [key_group_for(("a/f", "1"), 128)]
        True
    """
    if batch.num_columns != 7 or (batch.schema.metadata or {}).get(KIND_KEY) != b"tuple":
        return None
    return key_groups_of_tuples([batch.column(TARGET_TYPENAME), batch.column(TARGET_ID)], max_parallelism)


def compact_message_batch(batch: pa.RecordBatch) -> CompactMessages | None:
    """The messages of an Arrow message batch (the engine's tuple form, as a routed ingress
    sends it over the exchange at parallelism > 1) in compact form, read from its id and
    value columns only, when they can be so: one target typename and one value typename
    throughout, no caller, every message with a value, and the values held decoded (an
    ``int64``, ``float64``, ``string`` or ``bool`` column without nulls: what
    :func:`typed_records_batch` makes of decoded values). ``None`` otherwise (the batch is
    then read as records). ``records()`` of the result equals ``arrow_to_records(batch)``.

    Example:
        >>> from raystream.statefun_api import message_builder
        >>> rb = typed_records_batch([message_to_record(message_builder("a/f", i, int_value=7)) for i in ("1", "2")])
        >>> c = compact_message_batch(rb)
        >>> c.typename, c.value_typename, c.ids, c.values
        ('a/f', 'io.statefun.types/int', ['1', '2'], [7, 7])
    """
    n = batch.num_rows
    if not n or batch.num_columns != 7 or (batch.schema.metadata or {}).get(KIND_KEY) != b"tuple":
        return None
    values = batch.column(VALUE)
    if values.null_count or values.type not in _COMPACT_VALUE_TYPES:
        return None
    has_value = batch.column(HAS_VALUE)
    if has_value.type != pa.bool_() or has_value.null_count or has_value.true_count != n:
        return None
    constants: list[str] = []
    for index in (TARGET_TYPENAME, CALLER_TYPENAME, CALLER_ID, VALUE_TYPENAME):
        column = batch.column(index)
        if column.type != pa.string() or column.null_count:
            return None
        first = column[0].as_py()
        if n > 1 and not pc.all(pc.equal(column, first)).as_py():
            return None
        constants.append(first)
    target, caller_tn, caller_id, value_tn = constants
    ids = batch.column(TARGET_ID)
    if caller_tn or caller_id or not target or ids.type != pa.string() or ids.null_count:
        return None
    return CompactMessages(target, value_tn, ids.to_pylist(), values.to_pylist())


_COMPACT_VALUE_TYPES: Final = frozenset((pa.int64(), pa.float64(), pa.string(), pa.bool_()))


def message_record_key_groups(
    records: list[MessageRecord] | list[tuple[str, str]], max_parallelism: int, min_records: int = 256
) -> np.ndarray | None:
    """The key groups of :func:`address_key` of every message record of a list (or of every
    ``(typename, id)`` address key of a list), computed as
    :func:`message_key_groups` does on an Arrow batch: the typename and id columns hashed
    with numpy, each distinct value once. No key tuple is made and hashed per record, and
    no id is remembered (ingress ids are often seen once: a process-wide cache of keys
    hashes each new one in Python, ~1.7 us, against ~0.13 us here). ``None`` when a
    typename or id is not exactly a str that Arrow can hold, and for fewer than ``min_records``
    records (the columns cost ~20-40 us a batch: a few records are cheaper through
    :func:`~engine.keygroups.key_groups_of_keys`). The ``record_key_groups`` of the
    dispatcher's key selector.

    Example:
        >>> from raystream.engine.keygroups import key_group_for
        >>> from raystream.statefun_api import message_builder
        >>> records = [message_to_record(message_builder("a/f", i, int_value=1)) for i in ("1", "2")]
        >>> message_record_key_groups(records, 128, min_records=1).tolist() == [key_group_for(("a/f", i), 128) for i in ("1", "2")]
        True
    """
    if not records or len(records) < min_records:
        return None
    return key_groups_of_str_pairs(list(map(_target_typename, records)), list(map(_target_id, records)), max_parallelism)


_target_typename = operator.itemgetter(TARGET_TYPENAME)
_target_id = operator.itemgetter(TARGET_ID)


def record_address(record: MessageRecord) -> Address:
    """The target address of a message record."""
    return Address.of(record[TARGET_TYPENAME], record[TARGET_ID])


def record_caller(record: MessageRecord) -> str:
    """``"typename/id"`` of the sender, or ``"ingress"`` (for error messages)."""
    return f"{record[CALLER_TYPENAME]}/{record[CALLER_ID]}" if record[CALLER_TYPENAME] else "ingress"


def describe_records(records: list[MessageRecord]) -> str:
    """What a task shows as 'the record being processed' of an invocation: its first message
    (and how many there are). The result's repr is itself, so an error message built from it
    is not quoted twice.

    Example:
        >>> print(describe_records([("a/f", "1", "", "", "io.statefun.types/int", 7, True)] * 2))
        Message(target=a/f/1, type='io.statefun.types/int', value=b'\\r\\x07\\x00\\x00\\x00') from ingress (first of 2 messages to this address)
    """
    first = records[0]
    text = f"{record_to_invocation(first).message!r} from {record_caller(first)}"
    if len(records) > 1:
        text += f" (first of {len(records)} messages to this address)"
    return _Text(text)


class _Text(str):
    """A string whose repr is itself (so error messages are not double-quoted)."""

    def __repr__(self) -> str:
        return str(self)


def egress_tag(typename: str) -> str:
    """The dispatcher side output that carries the egress ``typename``.

    Example:
        >>> egress_tag("com.example/greets")
        'egress:com.example/greets'
    """
    return f"egress:{typename}"


def decode_by_typename(tv: TypedValue) -> Any:
    """``tv``'s value decoded by its typename when it is a built-in type or a Kafka / Kinesis
    egress record; any other value is returned as the ``TypedValue`` itself.

    Example:
        >>> from raystream.statefun_api.types import to_typed_value
        >>> decode_by_typename(to_typed_value(StringType, "hi")), decode_by_typename(TypedValue("a/b", True, b"x"))
        ('hi', TypedValue(typename='a/b', has_value=True, value=b'x'))
    """
    value_type = _BUILTIN_TYPES.get(tv.typename)
    if value_type is None:
        return tv
    return tv.decoded(value_type)


def decode_egress_value(message: EgressMessage, value_type: Type[Any] | None) -> Any:
    """The record an egress sink receives for ``message``.

    With ``value_type`` the value is deserialized with it (a message of another type raises
    ``TypeError``). Without it, the built-in types (int, long, float, double, string,
    bool) and the Kafka / Kinesis egress records (:mod:`statefun_api.egress_io`) are
    decoded by their typename and any other value is passed on as its
    :class:`~statefun_api.types.TypedValue`.

    Example:
        >>> from raystream.statefun_api import egress_message_builder
        >>> decode_egress_value(egress_message_builder("a/out", "hi", StringType), None)
        'hi'
    """
    tv = message.typed_value
    if value_type is None:
        return decode_by_typename(tv)
    if tv.typename != value_type.typename:
        raise TypeError(
            f"egress {message.typename!r} is declared with type {value_type.typename!r} but "
            f"received a value of type {tv.typename!r}"
        )
    return tv.decoded(value_type)
