"""A checkpoint's directory is visible from its trigger on, locally and on S3 (a moto server).

``CheckpointStorage.prepare_checkpoint`` (called by the job master when it triggers a
checkpoint) makes the directory a takeover's fence lists: a ``mkdir`` on filesystems with
directories, one empty ``_triggered`` object on object stores (a prefix exists only with its
objects). Without it, a checkpoint none of whose tasks wrote a state file was invisible until
its ``_metadata`` landed, so a fence listing storage meanwhile left it out, and its late
``_metadata`` made it complete.
"""

from __future__ import annotations

import pytest

from raystream.checkpoint import CheckpointStorage, resolve_storage
from raystream.checkpoint.storage import TRIGGER_FILE


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> CheckpointStorage:
    if request.param == "local":
        return resolve_storage(str(tmp_path / "ckpts"))
    server = request.getfixturevalue("s3_server")
    prefix = request.getfixturevalue("s3_prefix")
    return CheckpointStorage(filesystem=server.filesystem(), base_path=f"{server.bucket}/{prefix}")


def test_a_prepared_checkpoint_is_fenced_and_its_late_metadata_never_completes_it(storage):
    storage.write_state("job", 1, "op-0", b"x")
    storage.write_metadata("job", 1, {})
    storage.prepare_checkpoint("job", 2)  # (triggered; no task writes a state file for it)
    assert storage.list_checkpoints("job") == [1, 2] and storage.list_complete("job") == [1]
    assert storage.fence_incomplete("job") == [1, 2]  # (a takeover: numbers its own from 3)
    storage.write_metadata("job", 2, {})  # the old master's late _metadata
    assert storage.list_complete("job") == [1]
    storage.prepare_checkpoint("job", 2)  # (again: nothing changes)
    assert storage.list_complete("job") == [1]


def test_a_prepared_checkpoint_that_completes_is_complete_and_is_discarded_whole(storage):
    storage.prepare_checkpoint("job", 1)
    storage.write_state("job", 1, "op-0", b"x")
    storage.write_metadata("job", 1, {})
    storage.prepare_checkpoint("job", 2)
    storage.prepare_checkpoint("job", 3)
    storage.write_metadata("job", 3, {})
    assert storage.list_complete("job") == [1, 3]
    assert storage.retain("job", 1) == [1, 2]  # (2 was aborted: older than the newest complete one)
    assert storage.list_checkpoints("job") == [3]
    deleted, kept = storage.discard_job("job")
    assert deleted == [3] and kept == {}
    assert storage.list_checkpoints("job") == []


def test_the_trigger_marker_is_an_object_store_thing(tmp_path):
    storage = resolve_storage(str(tmp_path))
    storage.prepare_checkpoint("job", 5)
    assert (tmp_path / "job" / "chk-5").is_dir() and not list((tmp_path / "job" / "chk-5").iterdir())
    assert not (tmp_path / "job" / "chk-5" / TRIGGER_FILE).exists()
