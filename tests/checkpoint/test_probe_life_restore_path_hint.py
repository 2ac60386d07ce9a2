"""``from_savepoint=`` given a job's checkpoint directory (``<checkpoint_dir>/<job id>``) or the
checkpoint base instead of the ``chk-<n>`` directory the docs name: the refusal (before Ray
starts) now names the newest complete checkpoint below it to pass. Before 2026-12-07 it said
only "the directory has no _metadata (the savepoint was not written or not finished, or the
path is wrong)"."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.checkpoint import CheckpointStorage
from raystream.engine.errors import CheckpointError


def retained(tmp_path) -> CheckpointStorage:
    storage = CheckpointStorage(str(tmp_path / "chk"))
    for cid in (1, 2, 3):
        storage.write_state("wc-1a2b3c4d", cid, "op-0", b"x")
    for cid in (1, 2):  # (3 never completed)
        storage.write_metadata("wc-1a2b3c4d", cid, {})
    return storage


@pytest.mark.parametrize("given", ["chk/wc-1a2b3c4d", "chk"])
def test_a_job_or_base_directory_names_the_checkpoint_to_pass(tmp_path, given):
    retained(tmp_path)
    env = rs.StreamEnvironment()
    env.from_collection([1]).collect()
    with pytest.raises(CheckpointError) as err:
        env.execute("resume", from_savepoint=str(tmp_path / given))
    newest = str(tmp_path / "chk" / "wc-1a2b3c4d" / "chk-2")
    assert f"it holds the complete checkpoint {newest!r}: pass that directory" in str(err.value)


def test_a_directory_without_checkpoints_keeps_the_plain_refusal(tmp_path):
    (tmp_path / "empty").mkdir()
    env = rs.StreamEnvironment()
    env.from_collection([1]).collect()
    with pytest.raises(CheckpointError, match=r"has no _metadata \(the savepoint was not written"):
        env.execute("resume", from_savepoint=str(tmp_path / "empty"))
