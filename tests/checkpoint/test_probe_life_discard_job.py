"""Externalized checkpoint retention in storage (``CheckpointStorage.discard_job``, the
``_restoring-<job>`` marker, ``CheckpointConfig.externalized_checkpoint_retention``): what a job
that ended without keeping its checkpoints deletes, and what it must leave. Before 2026-12-07
nothing ever deleted a job's directory (``<checkpoint_dir>/<job id>/`` with its ``chk-<n>``
directories, shared files and commit log stayed after every run)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from raystream.checkpoint import CheckpointStorage
from raystream.checkpoint.coordinator import CheckpointConfig, ExternalizedCheckpointRetention
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.checkpoint.storage import IncrementalStateHandle
from raystream.engine.errors import CheckpointError, ConfigError


def checkpoint(storage: CheckpointStorage, job: str, cid: int, shared: list[str] = (), complete: bool = True) -> None:
    """Checkpoint ``cid`` of ``job`` with one state file referencing the ``shared`` files."""
    handles = tuple(storage.write_shared(job, int(name.split("-")[0]), name.split("-", 1)[1], b"sst " + name.encode())
                    for name in shared)
    h = storage.write_state(job, cid, "op-0", b"state %d" % cid)
    ref = IncrementalStateHandle(h.path, h.size, h.crc32, shared=handles)
    if complete:
        storage.write_metadata(job, cid, {"operators": {"u": {"subtasks": {0: {"keyed": ref}}}}})


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_discard_job_deletes_checkpoints_shared_files_and_commit_log_and_leaves_other_jobs(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    checkpoint(storage, "a", 1, ["1-x.sst"])
    checkpoint(storage, "a", 2, ["1-x.sst", "2-y.sst"])
    checkpoint(storage, "a", 3, complete=False)  # an aborted one
    storage.write_commit_log("a", 2, "chk", {"sink": ["r"]})
    checkpoint(storage, "b", 1, ["1-x.sst"])  # another job: untouched
    deleted, kept = storage.discard_job("a")
    assert (deleted, kept) == ([1, 3, 2], {})  # the newest complete one last
    assert not (tmp_path / "a").exists()
    assert files(tmp_path) == ["b/chk-1/_metadata", "b/chk-1/op-0", "b/shared/1-x.sst"]
    assert storage.discard_job("nothing-here") == ([], {})


def test_a_savepoint_under_the_job_directory_stays(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    checkpoint(storage, "a", 1)
    where = storage.write_savepoint("a/sp-1", {"job": "a"}, {"op-0": b"x"})  # relative: under the base
    storage.discard_job("a")
    assert files(tmp_path) == ["a/sp-1/_metadata", "a/sp-1/op-0"]
    assert storage.read_savepoint(where)[1].read("op-0") == b"x"


def test_a_checkpoint_another_job_restores_from_stays_with_its_shared_files(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    checkpoint(storage, "a", 1, ["1-x.sst"])
    checkpoint(storage, "a", 2, ["1-x.sst", "2-y.sst"])
    checkpoint(storage, "a", 3, ["3-z.sst"])
    metadata, reader = storage.read_savepoint(str(tmp_path / "a" / "chk-2"))
    reader.mark_restoring("b-1234")
    assert storage.restoring_jobs("a", 2) == ["b-1234"]
    # the running job's own retention keeps it too (retained=1 would discard 2 once 3 completed)
    assert storage.retain("a", 1) == [1]
    deleted, kept = storage.discard_job("a")
    assert deleted == [3] and kept == {2: ["b-1234"]}
    assert files(tmp_path) == ["a/chk-2/_metadata", "a/chk-2/_restoring-b-1234", "a/chk-2/op-0",
                               "a/shared/1-x.sst", "a/shared/2-y.sst"]
    assert storage.missing_shared(metadata) == []  # still restorable
    reader.unmark_restoring("b-1234")
    assert storage.restoring_jobs("a", 2) == []
    assert storage.discard_job("a") == ([2], {})
    assert not (tmp_path / "a").exists()


def test_a_delete_that_fails_is_a_checkpoint_error_naming_the_path(tmp_path):
    fs = faulty_filesystem(rules=[FaultRule("delete", path_glob="*/chk-1", fail=True)])
    storage = CheckpointStorage((fs, str(tmp_path)))
    checkpoint(storage, "a", 1)
    with pytest.raises(CheckpointError, match=r"cannot (discard checkpoint|delete checkpoint file) .*a/chk-1"):
        storage.discard_job("a")


@pytest.mark.parametrize("mode, kept", [
    ("RETAIN_ON_CANCELLATION", {"FAILED", "CANCELLED"}),
    ("DELETE_ON_CANCELLATION", {"FAILED"}),
    ("NO_EXTERNALIZED_CHECKPOINTS", set()),
])
def test_retention_modes_keep_checkpoints_as_flink_does(mode, kept):
    for config in (CheckpointConfig(100, externalized_checkpoint_retention=mode),
                   CheckpointConfig(100).set_externalized_checkpoint_retention(mode.lower()),
                   CheckpointConfig(100).set_externalized_checkpoint_retention(ExternalizedCheckpointRetention(mode))):
        assert {s for s in ("FINISHED", "CANCELLED", "FAILED") if config.keeps(s)} == kept
        assert pickle.loads(pickle.dumps(config)).keeps("FAILED") == ("FAILED" in kept)


def test_the_default_keeps_checkpoints_of_failed_and_cancelled_jobs():
    assert CheckpointConfig(100).externalized_checkpoint_retention is ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION


@pytest.mark.parametrize("bad", ["RETAIN", 1, None, ["DELETE_ON_CANCELLATION"]])
def test_an_unknown_retention_mode_is_a_config_error_naming_the_modes(bad):
    with pytest.raises(ConfigError, match=r"externalized_checkpoint_retention must be one of .*RETAIN_ON_CANCELLATION"):
        CheckpointConfig(100, externalized_checkpoint_retention=bad)
    with pytest.raises(ConfigError, match=r"got " + repr(bad).replace("[", r"\[").replace("]", r"\]")):
        CheckpointConfig(100).set_externalized_checkpoint_retention(bad)


def test_enable_checkpointing_takes_the_retention_mode():
    import raystream as rs

    env = rs.StreamEnvironment().enable_checkpointing(100, externalized_checkpoint_retention="DELETE_ON_CANCELLATION")
    assert env.checkpoint_config.keeps("FAILED") and not env.checkpoint_config.keeps("CANCELLED")
    assert rs.StreamEnvironment().enable_checkpointing(100).checkpoint_config.keeps("CANCELLED")
    with pytest.raises(ConfigError, match="externalized_checkpoint_retention must be one of"):
        rs.StreamEnvironment().enable_checkpointing(100, externalized_checkpoint_retention="RETAIN")
