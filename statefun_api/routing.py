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
message between embedded functions is never encoded. Records are encoded
(:func:`encode_record`) only at the boundaries: messages to other subtasks (the feedback
edge, :func:`records_to_arrow_batch`), spill files, snapshots and remote calls.

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
from typing import Any, Final

import numpy as np
import pyarrow as pa

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
    "FEEDBACK_TAG",
]

MessageRecord = tuple[str, str, str, str, str, Any, bool]
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


def feedback_batch(records: list[MessageRecord]) -> Batch:
    """The batch of messages to other subtasks: the records with their values serialized.
    No Arrow form yet: the channel's writer coalesces the feedback batches of consecutive
    dispatcher steps per target and converts them once per send (a step often forwards a
    handful of messages; converting each step's few records to seven Arrow columns cost more
    than the messages themselves)."""
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
