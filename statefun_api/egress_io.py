"""Kafka and Kinesis egress messages, as in the official SDK's ``statefun.egress_io``.

On StateFun, :func:`kafka_egress_message` and :func:`kinesis_egress_message` wrap a record
for StateFun's generic Kafka / Kinesis egress: a ``KafkaProducerRecord`` or
``KinesisEgressRecord`` protobuf message (``kafka-egress.proto``, ``kinesis-egress.proto``)
in a ``TypedValue`` of typename ``type.googleapis.com/io.statefun.sdk.egress.<Record>``.
The builders here produce exactly the SDK's bytes, so remote functions written with the SDK
and embedded functions written with ``statefun_api`` send the same egress messages.

In raystream an egress is any sink bound with ``StatefulFunctionsJob.with_egress``: the sink
receives a :class:`KafkaProducerRecord` / :class:`KinesisEgressRecord` (decoded by
typename), whether it writes to Kafka, Kinesis, files or a test collector.

Example:
    >>> msg = kafka_egress_message(typename="example/greets", topic="greetings", key="ann", value="hi ann")
    >>> msg.typename, msg.value_typename()
    ('example/greets', 'type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord')
    >>> KafkaProducerRecordType.serializer().deserialize(msg.raw_value())
    KafkaProducerRecord(topic='greetings', key='ann', value=b'hi ann')
    >>> kinesis_egress_message("example/events", stream="events", value=b"\\x01", partition_key="p").raw_value()
    b'\\n\\x01p\\x12\\x01\\x01\\x1a\\x06events'
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from raystream.engine.errors import short_repr
from raystream.statefun_api._protowire import DecodeError, Fields, Writer
from raystream.statefun_api.messages import EgressMessage
from raystream.statefun_api.types import Type, TypedValue, TypeSerializer

__all__ = [
    "KafkaProducerRecord",
    "KinesisEgressRecord",
    "KafkaProducerRecordType",
    "KinesisEgressRecordType",
    "kafka_egress_message",
    "kinesis_egress_message",
]


@dataclass(frozen=True)
class KafkaProducerRecord:
    """A record for a Kafka egress (``io.statefun.sdk.egress.KafkaProducerRecord``).

    Attributes:
        topic: the destination topic.
        key: the record's key (UTF-8; ``""`` for none, as in the protobuf message).
        value: the record's value bytes.
    """

    topic: str
    key: str
    value: bytes


@dataclass(frozen=True)
class KinesisEgressRecord:
    """A record for a Kinesis egress (``io.statefun.sdk.egress.KinesisEgressRecord``).

    Attributes:
        stream: the destination stream.
        partition_key: the partition key.
        value: the record's value bytes.
        explicit_hash_key: the explicit hash key (``""`` for none).
    """

    stream: str
    partition_key: str
    value: bytes
    explicit_hash_key: str = ""


class _KafkaSerializer(TypeSerializer[KafkaProducerRecord]):
    __slots__ = ()

    def serialize(self, value: KafkaProducerRecord) -> bytes:
        if not isinstance(value, KafkaProducerRecord):
            raise TypeError(f"expected a KafkaProducerRecord, got {value!r}")
        w = Writer()  # fields in number order: key = 1, value_bytes = 2, topic = 3
        w.string(1, value.key)
        w.bytes(2, value.value)
        w.string(3, value.topic)
        return w.getvalue()

    def deserialize(self, data: bytes) -> KafkaProducerRecord:
        try:
            f = Fields.parse(data)
            return KafkaProducerRecord(topic=f.string(3), key=f.string(1), value=f.bytes(2))
        except DecodeError as exc:
            raise ValueError(f"not a KafkaProducerRecord: {exc}") from exc


class _KinesisSerializer(TypeSerializer[KinesisEgressRecord]):
    __slots__ = ()

    def serialize(self, value: KinesisEgressRecord) -> bytes:
        if not isinstance(value, KinesisEgressRecord):
            raise TypeError(f"expected a KinesisEgressRecord, got {value!r}")
        w = Writer()  # partition_key = 1, value_bytes = 2, stream = 3, explicit_hash_key = 4
        w.string(1, value.partition_key)
        w.bytes(2, value.value)
        w.string(3, value.stream)
        w.string(4, value.explicit_hash_key)
        return w.getvalue()

    def deserialize(self, data: bytes) -> KinesisEgressRecord:
        try:
            f = Fields.parse(data)
            return KinesisEgressRecord(
                stream=f.string(3), partition_key=f.string(1), value=f.bytes(2), explicit_hash_key=f.string(4)
            )
        except DecodeError as exc:
            raise ValueError(f"not a KinesisEgressRecord: {exc}") from exc


class _RecordType(Type[Any]):
    __slots__ = ("_ser",)

    def __init__(self, typename: str, serializer: TypeSerializer[Any]) -> None:
        super().__init__(typename)
        self._ser = serializer

    def serializer(self) -> TypeSerializer[Any]:
        return self._ser


#: the type of Kafka egress records (the SDK's ``TypedValue`` typename)
KafkaProducerRecordType: Type[KafkaProducerRecord] = _RecordType(
    "type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord", _KafkaSerializer()
)
#: the type of Kinesis egress records
KinesisEgressRecordType: Type[KinesisEgressRecord] = _RecordType(
    "type.googleapis.com/io.statefun.sdk.egress.KinesisEgressRecord", _KinesisSerializer()
)


def _value_bytes(value: Any, value_type: Type[Any] | None, kafka: bool, typename: str = "") -> bytes:
    if value_type:
        return bytes(value_type.serializer().serialize(value))
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if kafka and isinstance(value, int):  # Kafka's IntegerSerializer: 4 bytes, big endian
        if not -(1 << 31) <= value < 1 << 31:
            raise ValueError(
                f"kafka_egress_message({typename!r}, value={short_repr(value)}): an int value is written as "
                f"Kafka's IntegerSerializer does, 4 big-endian bytes, so it must lie in "
                f"[-2**31, 2**31 - 1]; for a larger one give bytes (struct.pack('>q', value) as Kafka's "
                f"LongSerializer writes it) or a str"
            )
        return struct.pack(">i", value)
    if kafka and isinstance(value, float):  # Kafka's DoubleSerializer
        return struct.pack(">d", value)
    call = "kafka_egress_message" if kafka else "kinesis_egress_message"
    accepted = "a str (UTF-8 encoded), bytes, an int or a float" if kafka else "a str (UTF-8 encoded) or bytes"
    raise TypeError(
        f"Unable to convert value to bytes: {call}({typename!r}, value={short_repr(value)}) got a value "
        f"of type {type(value).__qualname__}; the value must be {accepted}, or pass "
        f"value_type=... (e.g. IntType, make_json_type(...)) to serialize it with that type"
    )


def kafka_egress_message(
    typename: str,
    topic: str,
    value: str | bytes | bytearray | int | float,
    value_type: Type[Any] | None = None,
    key: str | None = None,
) -> EgressMessage:
    """A message for the Kafka egress ``typename``: ``value`` to ``topic`` under ``key``.

    With ``value_type`` the value is serialized by it; otherwise a str is UTF-8 encoded,
    bytes are taken as they are, an int is 4 big-endian bytes and a float 8 (Kafka's
    ``IntegerSerializer`` / ``DoubleSerializer``), as in the SDK.

    Example:
        >>> kafka_egress_message("example/out", "numbers", 7).raw_value()
        b'\\x12\\x04\\x00\\x00\\x00\\x07\\x1a\\x07numbers'
    """
    if not topic:
        raise ValueError("A destination Kafka topic is missing")
    if value is None:
        raise ValueError("Missing value")
    record = KafkaProducerRecord(topic=topic, key=key if key is not None else "", value=_value_bytes(value, value_type, True, typename))
    data = KafkaProducerRecordType.serializer().serialize(record)
    return EgressMessage(typename, TypedValue(KafkaProducerRecordType.typename, True, data))


def kinesis_egress_message(
    typename: str,
    stream: str,
    value: str | bytes | bytearray,
    partition_key: str,
    value_type: Type[Any] | None = None,
    explicit_hash_key: str | None = None,
) -> EgressMessage:
    """A message for the Kinesis egress ``typename``: ``value`` to ``stream``.

    With ``value_type`` the value is serialized by it; otherwise a str is UTF-8 encoded and
    bytes are taken as they are, as in the SDK.

    Example:
        >>> m = kinesis_egress_message("example/out", "events", "e1", partition_key="k1", explicit_hash_key="7")
        >>> KinesisEgressRecordType.serializer().deserialize(m.raw_value())
        KinesisEgressRecord(stream='events', partition_key='k1', value=b'e1', explicit_hash_key='7')
    """
    if not stream:
        raise ValueError("Missing destination Kinesis stream")
    if value is None:
        raise ValueError("Missing value")
    if partition_key is None:
        raise ValueError("Missing partition key")
    record = KinesisEgressRecord(
        stream=stream,
        partition_key=partition_key,
        value=_value_bytes(value, value_type, False, typename),
        explicit_hash_key=explicit_hash_key if explicit_hash_key is not None else "",
    )
    data = KinesisEgressRecordType.serializer().serialize(record)
    return EgressMessage(typename, TypedValue(KinesisEgressRecordType.typename, True, data))
