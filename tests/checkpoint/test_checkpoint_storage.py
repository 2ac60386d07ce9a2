"""CheckpointStorage on a local directory and on S3 (a real moto server)."""

from __future__ import annotations

import os
import pickle

import pytest

from raystream.checkpoint import CheckpointStorage, StateHandle, resolve_storage
from raystream.engine.errors import CheckpointError, ConfigError


@pytest.fixture(params=["local", "file-uri", "s3-fs", "s3-uri"])
def storage(request, tmp_path) -> CheckpointStorage:
    if request.param == "local":
        return resolve_storage(str(tmp_path / "ckpts"))
    if request.param == "file-uri":
        return CheckpointStorage(f"file://{tmp_path}/ckpts")
    server = request.getfixturevalue("s3_server")
    prefix = request.getfixturevalue("s3_prefix")
    if request.param == "s3-fs":
        return CheckpointStorage(
            filesystem=server.filesystem(), base_path=f"{server.bucket}/{prefix}"
        )
    return CheckpointStorage(server.uri(prefix))


def _complete(storage, job, cid, payload=b"x"):
    h = storage.write_state(job, cid, "op-0", payload)
    storage.write_metadata(job, cid, {"handles": [h], "cid": cid})
    return h


def test_state_and_metadata_round_trip(storage):
    h = storage.write_state("job", 1, "map-uid/0", b"\x00state")
    assert h == StateHandle("job/chk-1/map-uid/0", 6, h.crc32)
    assert storage.list_complete("job") == []  # no _metadata yet: incomplete
    storage.write_metadata("job", 1, {"handles": [h], "fn": lambda x: x + 1})
    meta = storage.read_metadata("job", 1)
    assert meta["fn"](1) == 2
    assert storage.read_state(meta["handles"][0]) == b"\x00state"
    assert storage.list_complete("job") == [1]
    assert storage.latest_complete("job") == 1
    assert storage.latest_complete("other-job") is None


def test_storage_is_picklable(storage):
    h = _complete(storage, "job", 4, b"abc")
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.read_state(h) == b"abc"
    assert clone.list_complete("job") == [4]


def test_list_retain_and_discard(storage):
    for cid in (1, 2, 3, 5):
        _complete(storage, "job", cid)
    storage.write_state("job", 4, "op-0", b"aborted")  # incomplete, older than newest
    storage.write_state("job", 6, "op-0", b"in progress")  # incomplete, newer
    assert storage.list_checkpoints("job") == [1, 2, 3, 4, 5, 6]
    assert storage.list_complete("job") == [1, 2, 3, 5]
    assert storage.retain("job", 2) == [1, 2, 4]
    assert storage.list_checkpoints("job") == [3, 5, 6]
    storage.discard("job", 6)
    storage.discard("job", 6)  # idempotent
    assert storage.list_checkpoints("job") == [3, 5]
    with pytest.raises(ConfigError):
        storage.retain("job", 0)


def test_missing_and_corrupt_files_name_the_path(storage):
    h = _complete(storage, "job", 1, b"payload")
    with pytest.raises(CheckpointError, match=r"chk-2/_metadata.*incomplete"):
        storage.read_metadata("job", 2)
    with pytest.raises(CheckpointError, match="cannot read state file '.*job/chk-1/nope'"):
        storage.read_state(StateHandle("job/chk-1/nope", 1, 0))
    with pytest.raises(CheckpointError, match="does not match its handle"):
        storage.read_state(StateHandle(h.path, h.size, h.crc32 ^ 1))
    # overwrite the file with corrupt bytes
    path = f"{storage.base_path}/{h.path}"
    with storage.filesystem.open_input_stream(path) as f:
        data = bytearray(f.read())
    data[-1] ^= 0xFF
    with storage.filesystem.open_output_stream(path) as f:
        f.write(bytes(data))
    with pytest.raises(CheckpointError, match="job/chk-1/op-0.*checksum"):
        storage.read_state(h)


def test_savepoints_are_self_contained(storage, tmp_path):
    where = storage.write_savepoint("savepoints/sp-1", {"job": "wc"}, {"a": b"1", "dir/b": b"22"})
    metadata, reader = storage.read_savepoint(where)
    assert metadata == {"job": "wc"}
    assert reader.names() == ["a", "dir/b"]
    assert reader.read_all() == {"a": b"1", "dir/b": b"22"}
    with pytest.raises(CheckpointError, match="already exists"):
        storage.write_savepoint("savepoints/sp-1", {}, {})
    storage.write_savepoint("savepoints/sp-1", {"v": 2}, {}, overwrite=True)
    assert storage.read_savepoint("savepoints/sp-1")[1].names() == []
    with pytest.raises(CheckpointError, match="no savepoint at"):
        storage.read_savepoint("savepoints/missing")
    with pytest.raises(CheckpointError, match="has no state 'zz'"):
        reader.read("zz")


def test_local_savepoint_can_be_moved(tmp_path):
    storage = resolve_storage(tmp_path / "ckpts")
    where = storage.write_savepoint(str(tmp_path / "sp"), {"m": 1}, {"op": b"state"})
    os.rename(where, tmp_path / "moved")
    metadata, reader = storage.read_savepoint(str(tmp_path / "moved"))
    assert metadata == {"m": 1} and reader.read("op") == b"state"


def test_local_metadata_is_written_atomically(tmp_path):
    storage = resolve_storage(tmp_path)
    _complete(storage, "job", 1)
    assert sorted(os.listdir(tmp_path / "job" / "chk-1")) == ["_metadata", "op-0"]


@pytest.mark.parametrize("name", ["", "/abs", "_metadata", "_x", "a/../b", "a//b", "./a", "a\\b"])
def test_bad_state_names(tmp_path, name):
    with pytest.raises(ConfigError):
        resolve_storage(tmp_path).write_state("job", 1, name, b"")


def test_bad_locations_and_job_ids(tmp_path):
    with pytest.raises(ConfigError):
        CheckpointStorage(None)
    with pytest.raises(ConfigError, match="cannot open checkpoint storage"):
        CheckpointStorage("nosuchscheme://x/y")
    with pytest.raises(ConfigError, match="job_id"):
        resolve_storage(tmp_path).write_state(None, 1, "x", b"")
    # a job id that is no path segment gets a directory of its own, never a nested one
    from raystream.checkpoint.storage import job_dir_name
    assert resolve_storage(tmp_path).write_state("a/b", 1, "x", b"").path == f"{job_dir_name('a/b')}/chk-1/x"
    assert job_dir_name("a/b").startswith("a_b-")
    s = resolve_storage(tmp_path)
    assert resolve_storage(s) is s


def test_check_savepoint_refuses_wrong_paths_and_writing_a_savepoint_still_works(tmp_path):
    import pytest

    from raystream.checkpoint.storage import CheckpointStorage, check_savepoint
    from raystream.engine.errors import CheckpointError

    storage = CheckpointStorage(str(tmp_path / "chk"))
    target = str(tmp_path / "sp-new")
    written = storage.write_savepoint(target, {"job": "x"}, {"op-0": b"state"})  # a new directory
    check_savepoint(written)
    metadata, reader = storage.read_savepoint(written)
    assert metadata == {"job": "x"} and reader.read("op-0") == b"state"
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    for bad, words in (("missing", "does not exist"), ("file", "is a file"), ("empty", "has no _metadata")):
        with pytest.raises(CheckpointError, match=words):
            check_savepoint(str(tmp_path / bad))
    with pytest.raises(CheckpointError):
        storage.read_savepoint(str(tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()  # reading creates nothing
