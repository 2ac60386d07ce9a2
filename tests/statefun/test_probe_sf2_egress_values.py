"""``kinesis_egress_message(value=7)`` / ``kafka_egress_message(value=[1])`` raised the
SDK's bare "Unable to convert value to bytes." naming neither the value's type, nor the
argument, nor what is accepted. The TypeError (same type and prefix as the SDK's) now names
the builder, the egress, the value and its type, the accepted types and ``value_type=``."""

from __future__ import annotations

import datetime

import pytest

from raystream.statefun_api import (
    IntType,
    kafka_egress_message,
    kinesis_egress_message,
    make_json_type,
)
from raystream.statefun_api.egress_io import KinesisEgressRecordType


@pytest.mark.parametrize("value", [7, 2.5, {"a": 1}, datetime.date(2024, 1, 2)])
def test_a_kinesis_value_of_another_type_names_its_type_and_what_is_accepted(value) -> None:
    with pytest.raises(TypeError) as err:
        kinesis_egress_message("t/kin", "events", value, partition_key="k")
    text = str(err.value)
    assert text.startswith("Unable to convert value to bytes")  # (the SDK's words, first)
    assert f"kinesis_egress_message('t/kin', value={value!r})" in text
    assert f"of type {type(value).__qualname__}" in text
    assert "a str (UTF-8 encoded) or bytes" in text and "value_type=" in text


@pytest.mark.parametrize("value", [[1], {"a": 1}, object()])
def test_a_kafka_value_of_another_type_names_its_type_and_what_is_accepted(value) -> None:
    with pytest.raises(TypeError) as err:
        kafka_egress_message("t/kaf", "topic", value)
    text = str(err.value)
    assert text.startswith("Unable to convert value to bytes")
    assert "kafka_egress_message('t/kaf', value=" in text
    assert f"of type {type(value).__qualname__}" in text
    assert "a str (UTF-8 encoded), bytes, an int or a float" in text and "value_type=" in text


def test_the_remedies_named_work() -> None:
    m = kinesis_egress_message("t/kin", "events", 7, partition_key="k", value_type=IntType)
    assert KinesisEgressRecordType.serializer().deserialize(m.raw_value()).value == IntType.serializer().serialize(7)
    json_type = make_json_type("t/json")
    m = kafka_egress_message("t/kaf", "topic", {"a": 1}, value_type=json_type)
    assert m.value_typename() == "type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord"
    assert kafka_egress_message("t/kaf", "topic", 7).raw_value().endswith(b"topic")


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**40])
def test_a_kafka_int_outside_four_bytes_names_the_range_and_the_remedy(value) -> None:
    with pytest.raises(ValueError) as err:  # (was a bare struct.error: "'i' format requires ...")
        kafka_egress_message("t/kaf", "topic", value)
    text = str(err.value)
    assert f"kafka_egress_message('t/kaf', value={value})" in text
    assert "[-2**31, 2**31 - 1]" in text and "struct.pack('>q', value)" in text


def test_kafka_ints_at_the_edges_of_four_bytes_are_written() -> None:
    for value in (2**31 - 1, -(2**31)):
        assert kafka_egress_message("t/kaf", "topic", value).raw_value().startswith(b"\x12\x04")
