"""Message records as Arrow batches (the feedback edge, spill files, snapshots) and through
the engine's generic tuple conversion (the keyed ingress edge): every field comes back."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from raystream.engine.records import KIND_KEY, arrow_to_records, records_to_arrow
from raystream.statefun_api import Address, make_json_type, message_builder
from raystream.statefun_api.routing import (
    TARGET_TYPENAME,
    VALUE,
    encode_records,
    feedback_batch,
    message_to_record,
    record_typed_value,
    records_to_arrow_batch,
)
from raystream.statefun_api.spill import SpillingQueue

JSON = make_json_type("demo/json")


def _messages() -> list:
    """One message of every value kind, with and without a caller, unicode names and ids."""
    caller = Address.of("démo/caller", "ünï/côdé")
    messages = [
        message_builder("demo/f", "1", int_value=-(2**31)),
        message_builder("demo/f", "2", long_value=2**62),
        message_builder("demo/f", "3", float_value=0.5),
        message_builder("demo/f", "4", double_value=-1e300),
        message_builder("demo/f", "5", str_value="héllo ✓ 世界"),
        message_builder("demo/f", "6", bool_value=False),
        message_builder("demo/f", "7", value={"a": [1, None]}, value_type=JSON),
        message_builder("démo/φ", "🙂/id", str_value=""),
        message_builder("demo/f", "0", int_value=0),
    ]
    records = [message_to_record(m) for m in messages]
    records += [message_to_record(m, caller) for m in messages]
    records.append(("demo/f", "no-value", "", "", "demo/empty", b"", False))  # TypedValue without a value
    return records


def _typed(records: list) -> list:
    return [tuple((type(v).__name__, v) for v in r) for r in records]


def test_every_value_kind_round_trips_encoded():
    records = _messages()
    rb = records_to_arrow_batch(records)
    assert rb.schema.metadata[KIND_KEY] == b"tuple"
    assert rb.schema.types == [pa.string()] * 5 + [pa.binary(), pa.bool_()]
    back = arrow_to_records(rb)
    assert _typed(back) == _typed(encode_records(records))
    # the values decode to what was sent
    assert [record_typed_value(r) for r in back] == [record_typed_value(r) for r in encode_records(records)]


def test_same_batch_as_the_generic_conversion():
    encoded = encode_records(_messages())
    assert records_to_arrow_batch(encoded).equals(records_to_arrow(encoded))


def test_empty_batch():
    rb = records_to_arrow_batch([])
    assert rb.num_rows == 0
    assert arrow_to_records(rb) == []
    assert arrow_to_records(records_to_arrow([])) == []


def test_large_payloads_and_one_repeated_target():
    big = b"\x00\xff" * (1 << 19)  # 1 MiB
    text = "ü" * 100_000
    records = [("demo/f", "k", "", "", "demo/bytes", big, True)] * 3 + [("demo/f", "k", "", "", "demo/str", text, True)]
    records[-1] = encode_records([message_to_record(message_builder("demo/f", "k", str_value=text))])[0]
    back = arrow_to_records(records_to_arrow_batch(records))
    assert back == records
    assert back[0][VALUE] == big


def test_constant_string_columns_decode_to_one_shared_object():
    """A batch to one function type from the ingress: typename, caller and value typename
    columns hold one value each; the decoded records share it (no new str per record)."""
    records = [message_to_record(message_builder("demo/counter", f"k{i}", int_value=i)) for i in range(100)]
    back = arrow_to_records(records_to_arrow(records))
    assert back == records
    assert _typed(back) == _typed(records)
    assert len({id(r[TARGET_TYPENAME]) for r in back}) == 1
    assert len({id(r[1]) for r in back}) == 100


def test_malformed_records_fall_back_to_the_generic_path():
    records = [("demo/f", "1", "", "", "demo/t", b"x")]  # six fields
    assert arrow_to_records(records_to_arrow_batch(records)) == records
    mixed = [("demo/f", "1", "", "", "demo/t", b"x", True), ("demo/f", None, "", "", "demo/t", b"y", True)]
    assert arrow_to_records(records_to_arrow_batch(mixed)) == mixed


def test_feedback_batch_holds_the_same_records_in_both_forms():
    records = _messages()
    batch = feedback_batch(records)
    assert batch.records() == encode_records(records)
    assert arrow_to_records(batch.arrow()) == batch.records()


def test_spilled_messages_come_back_in_order():
    records = encode_records(_messages()) * 50
    q = SpillingQueue(memory_bytes=0, chunk_rows=64)
    try:
        q.push(records[:500])
        q.push_arrow(records_to_arrow_batch(records[500:]))
        assert q.spilled_messages == len(records)
        assert q.pop(len(records) + 1) == records
    finally:
        q.close()


_names = st.sampled_from(["demo/f", "demo/g", "dé/mo", ""])
_ids = st.one_of(st.sampled_from(["1", "2", "🙂"]), st.text(max_size=6))
_values = st.one_of(st.binary(max_size=16), st.integers(-(2**63), 2**63 - 1), st.text(max_size=8), st.booleans(),
                    st.floats(allow_nan=False))


@given(st.lists(st.tuples(_names, _ids, _names, _ids, _names, _values, st.booleans()), max_size=40))
def test_any_message_records_round_trip_through_the_generic_conversion(records):
    """What the keyed ingress edge does: the router's records (decoded values of any kind,
    often the same strings throughout) come back with their own types."""
    assert _typed(arrow_to_records(records_to_arrow(records))) == _typed(records)
