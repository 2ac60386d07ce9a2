"""Signed checkpoint files: with a job secret every file carries an HMAC-SHA256, and a file
whose HMAC is missing or wrong is refused before anything is unpickled."""

from __future__ import annotations

import pickle

import pytest

from raystream.checkpoint import CheckpointStorage, decode_blob, encode_blob, resolve_storage
from raystream.checkpoint.coordinator import CheckpointConfig, CheckpointCoordinator
from raystream.checkpoint.format import (
    SIGNATURE_FIELD,
    read_blob_header,
    sign_blob,
    verify_blob_signature,
)
from raystream.checkpoint.storage import SECRET_ENV
from raystream.engine.errors import CheckpointError, ConfigError

SECRET = "job secret"
UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Payload:
    """Runs code when unpickled: what an attacker puts into a checkpoint file."""

    def __reduce__(self):
        return (_record_unpickling, ("attacker code ran",))


@pytest.fixture(autouse=True)
def _no_secret_in_environment(monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    UNPICKLED.clear()


def _tamper(path, payload: bytes) -> None:
    """Replace a file's payload the way an attacker with write access would: a valid envelope
    (right CRCs) that keeps every header field of the original, its HMAC included."""
    blob = path.read_bytes()
    header = read_blob_header(blob)
    path.write_bytes(encode_blob(header.kind, payload, **header.extra))


def _checkpoint(storage):
    handle = storage.write_state("job", 1, "op/0-0-op", pickle.dumps({"count": 41}))
    storage.write_metadata("job", 1, {"handles": [handle]})
    return handle


def test_round_trip_with_a_secret_signs_every_file(tmp_path):
    storage = CheckpointStorage(str(tmp_path), secret=SECRET)
    handle = _checkpoint(storage)
    sp = storage.write_savepoint(str(tmp_path / "sp"), {"job": "j"}, {"op/0-0-op": b"sp state"})

    assert pickle.loads(storage.read_state(storage.read_metadata("job", 1)["handles"][0])) == {"count": 41}
    metadata, reader = storage.read_savepoint(sp)
    assert (metadata, reader.read("op/0-0-op")) == ({"job": "j"}, b"sp state")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 4 and handle.path in {str(p.relative_to(tmp_path)) for p in files}
    for f in files:
        assert SIGNATURE_FIELD in read_blob_header(f.read_bytes()).extra, f


def test_tampered_state_file_is_refused_naming_the_file(tmp_path):
    storage = CheckpointStorage(str(tmp_path), secret=SECRET)
    handle = _checkpoint(storage)
    _tamper(tmp_path / handle.path, pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match=r"0-0-op' failed its HMAC-SHA256 check: it was tampered with or signed with another secret"):
        storage.read_state(handle)


def test_tampered_metadata_is_refused_before_it_is_unpickled(tmp_path):
    storage = CheckpointStorage(str(tmp_path), secret=SECRET)
    _checkpoint(storage)
    _tamper(tmp_path / "job" / "chk-1" / "_metadata", pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match=r"_metadata' failed its HMAC-SHA256 check: it was tampered with"):
        storage.read_metadata("job", 1)
    assert UNPICKLED == []
    # the same file without a secret is unpickled: the trust boundary the secret closes
    CheckpointStorage(str(tmp_path)).read_metadata("job", 1)
    assert UNPICKLED == ["attacker code ran"]


def test_flipped_payload_byte_is_reported_as_tampering(tmp_path):
    storage = CheckpointStorage(str(tmp_path), secret=SECRET)
    handle = _checkpoint(storage)
    path = tmp_path / handle.path
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="tampered with"):
        storage.read_state(handle)


def test_file_signed_with_another_secret_is_refused(tmp_path):
    _checkpoint(CheckpointStorage(str(tmp_path), secret="old secret"))
    with pytest.raises(CheckpointError, match="_metadata' failed its HMAC-SHA256 check.*signed with another secret"):
        CheckpointStorage(str(tmp_path), secret=SECRET).read_metadata("job", 1)


def test_unsigned_files_are_refused_when_a_secret_is_set(tmp_path):
    handle = _checkpoint(CheckpointStorage(str(tmp_path)))
    signed = CheckpointStorage(str(tmp_path), secret=SECRET)
    with pytest.raises(CheckpointError, match=r"_metadata' is not signed, but a checkpoint secret is set"):
        signed.read_metadata("job", 1)
    with pytest.raises(CheckpointError, match=r"0-0-op' is not signed"):
        signed.read_state(handle)


def test_savepoint_files_are_checked_too(tmp_path):
    storage = CheckpointStorage(str(tmp_path / "chk"), secret=SECRET)
    sp = storage.write_savepoint(str(tmp_path / "sp"), {"job": "j"}, {"op/0-0-op": b"sp state"})
    with pytest.raises(CheckpointError, match="signed with another secret"):
        resolve_storage(str(tmp_path / "chk"), secret="other").read_savepoint(sp)
    _tamper(tmp_path / "sp" / "op" / "0-0-op", pickle.dumps(Payload()))
    _, reader = storage.read_savepoint(sp)
    with pytest.raises(CheckpointError, match="0-0-op' failed its HMAC-SHA256 check"):
        reader.read("op/0-0-op")
    _tamper(tmp_path / "sp" / "_metadata", pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="_metadata' failed its HMAC-SHA256 check"):
        storage.read_savepoint(sp)
    assert UNPICKLED == []


def test_without_a_secret_nothing_changes(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    assert not storage.signed and "signed" not in repr(storage)
    handle = _checkpoint(storage)
    assert SIGNATURE_FIELD not in read_blob_header((tmp_path / handle.path).read_bytes()).extra
    assert pickle.loads(storage.read_state(handle)) == {"count": 41}
    # signed files stay readable without the secret (the signature is an ignored header field)
    other = tmp_path / "signed"
    h2 = _checkpoint(CheckpointStorage(str(other), secret=SECRET))
    assert pickle.loads(CheckpointStorage(str(other)).read_state(h2)) == {"count": 41}


def test_secret_from_the_environment_travels_with_the_pickled_storage(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    storage = CheckpointStorage(str(tmp_path))
    assert storage.signed and repr(storage).endswith(", signed)")
    monkeypatch.delenv(SECRET_ENV)
    shipped = pickle.loads(pickle.dumps(storage))  # e.g. a task whose process lacks the variable
    assert shipped.signed
    handle = _checkpoint(shipped)
    assert pickle.loads(CheckpointStorage(str(tmp_path), secret=SECRET).read_state(handle)) == {"count": 41}
    with pytest.raises(CheckpointError, match="signed with another secret"):
        CheckpointStorage(str(tmp_path), secret="another").read_state(handle)
    monkeypatch.setenv(SECRET_ENV, "another")
    unsigned = pickle.loads(pickle.dumps(CheckpointStorage(str(tmp_path), secret=None)))
    assert unsigned.signed  # built while the variable is set
    monkeypatch.delenv(SECRET_ENV)
    assert not pickle.loads(pickle.dumps(CheckpointStorage(str(tmp_path)))).signed


def test_bad_secrets_are_config_errors_that_do_not_show_the_value():
    for bad in (b"", "", 1234):
        with pytest.raises(ConfigError, match="must be a non-empty str or bytes") as info:
            CheckpointConfig(100, secret=bad)
        assert "1234" not in str(info.value)
        with pytest.raises(ConfigError, match="must be a non-empty str or bytes"):
            CheckpointStorage("/tmp", secret=bad)
    assert SECRET not in repr(CheckpointConfig(100, secret=SECRET))


def test_enable_checkpointing_secret_reaches_the_coordinator_storage(tmp_path, monkeypatch):
    import raystream as rs

    env = rs.StreamEnvironment().enable_checkpointing(100, checkpoint_dir=str(tmp_path), secret=SECRET)
    config = pickle.loads(pickle.dumps(env.checkpoint_config))  # as shipped to the job master
    coordinator = CheckpointCoordinator(config, "job", [(0, 0)])
    assert coordinator.storage.signed and coordinator.storage.base_path == str(tmp_path)
    _checkpoint(coordinator.storage)
    with pytest.raises(CheckpointError, match="signed with another secret"):
        CheckpointStorage(str(tmp_path), secret="other").read_metadata("job", 1)

    monkeypatch.setenv(SECRET_ENV, SECRET)  # the driver's environment is enough
    env = rs.StreamEnvironment().enable_checkpointing(100, checkpoint_dir=str(tmp_path / "env"))
    monkeypatch.delenv(SECRET_ENV)
    assert CheckpointCoordinator(pickle.loads(pickle.dumps(env.checkpoint_config)), "job", [(0, 0)]).storage.signed
    env = rs.StreamEnvironment().enable_checkpointing(100, checkpoint_dir=str(tmp_path / "plain"))
    assert not CheckpointCoordinator(env.checkpoint_config, "job", [(0, 0)]).storage.signed


def test_sign_and_verify_blob():
    blob = encode_blob("state", b"payload", note="kept")
    signed = sign_blob(blob, b"k")
    assert decode_blob(signed, "state") == b"payload"
    assert read_blob_header(signed).extra["note"] == "kept"
    verify_blob_signature(signed, b"k")
    assert sign_blob(signed, b"k") == signed  # re-signing replaces the signature
    with pytest.raises(CheckpointError, match="signed with another secret"):
        verify_blob_signature(signed, b"other")
    with pytest.raises(CheckpointError, match="in 'f' is not signed"):
        verify_blob_signature(blob, b"k", "f")
    with pytest.raises(CheckpointError, match="truncated"):
        verify_blob_signature(signed[:-1], b"k")
    relabelled = encode_blob("metadata", b"payload", **read_blob_header(signed).extra)
    with pytest.raises(CheckpointError, match="tampered"):  # the kind is signed too
        verify_blob_signature(relabelled, b"k")
