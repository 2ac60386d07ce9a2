"""The checkpoint file envelope: round trips and every corruption is a CheckpointError."""

from __future__ import annotations

import struct

import pytest

from raystream.checkpoint import FORMAT_VERSION, MAGIC, decode_blob, encode_blob, read_blob_header
from raystream.engine.errors import CheckpointError


def test_round_trip_and_header_fields():
    blob = encode_blob("state", b"payload", writer="test")
    assert blob.startswith(MAGIC)
    assert decode_blob(blob, "state") == b"payload"
    header = read_blob_header(blob)
    assert header.version == FORMAT_VERSION
    assert header.kind == "state"
    assert header.payload_size == len(b"payload")
    assert header.extra == {"writer": "test"}


def test_empty_payload_and_any_kind():
    assert decode_blob(encode_blob("x", b""), None) == b""


def test_bad_magic_names_the_file():
    blob = b"PK\x03\x04" + encode_blob("state", b"abc")[4:]
    with pytest.raises(CheckpointError, match=r"not a raystream checkpoint file in 'chk-1/op'"):
        decode_blob(blob, "state", name="chk-1/op")


@pytest.mark.parametrize("cut", [0, 3, 10, 20, -1])
def test_truncated(cut):
    blob = encode_blob("state", b"some payload bytes")
    with pytest.raises(CheckpointError, match="truncated"):
        decode_blob(blob[:cut], "state", name="f")


def test_every_flipped_byte_is_detected():
    blob = encode_blob("state", b"0123456789" * 3)
    for i in range(len(blob)):
        corrupt = bytearray(blob)
        corrupt[i] ^= 0x40
        with pytest.raises(CheckpointError):
            decode_blob(bytes(corrupt), "state", name="f")


def test_payload_checksum_mismatch_message():
    blob = bytearray(encode_blob("state", b"abcdef"))
    blob[-1] ^= 1
    with pytest.raises(CheckpointError, match="payload checksum mismatch"):
        decode_blob(bytes(blob), "state", name="f")


def test_trailing_garbage_is_rejected():
    with pytest.raises(CheckpointError, match="trailing"):
        decode_blob(encode_blob("state", b"abc") + b"zz", "state")


def test_wrong_kind():
    with pytest.raises(CheckpointError, match="holds 'metadata' data, expected 'state'"):
        decode_blob(encode_blob("metadata", b"abc"), "state", name="f")


def test_future_version_is_refused_clearly():
    blob = bytearray(encode_blob("state", b"abc"))
    struct.pack_into("<H", blob, len(MAGIC), FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match="newer raystream"):
        decode_blob(bytes(blob), "state", name="f")


def test_unknown_optional_header_fields_are_ignored():
    blob = encode_blob("state", b"abc", added_in_v1_7={"compression": None})
    assert decode_blob(blob, "state") == b"abc"
    assert read_blob_header(blob).extra == {"added_in_v1_7": {"compression": None}}


def test_invalid_kind():
    with pytest.raises(CheckpointError):
        encode_blob("", b"abc")
