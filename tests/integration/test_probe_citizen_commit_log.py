"""The commit log of in-memory sinks (``collect``) is written atomically: a temporary
``<entry>.inprogress-<token>`` file, then a rename. Before, a write or rename that failed left
the temporary file in ``<checkpoint dir>/<job>/commits/`` for good, and ``read_commit_log``
read such files as entries: a master that died while writing one left it half written, and
the master taking the job over (or the next restart) failed on it
(``CheckpointError: ... is truncated``) instead of resuming."""

from __future__ import annotations

import collections
import os

import pytest

import raystream as rs
from raystream.checkpoint import CheckpointStorage
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.engine.errors import CheckpointError
from raystream.operators.sinks import collected_records
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

pytestmark = pytest.mark.ray


def _temporary_files(directory) -> list[str]:
    return [name for name in os.listdir(directory) if ".inprogress-" in name]


def test_a_half_written_commit_log_entry_is_not_read(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    storage.write_commit_log("job", 1, "chk", {"sink": ["a"]})
    storage.write_commit_log("job", 2, "chk", {"sink": ["b"]})
    commits = tmp_path / "job" / "commits"
    entry = (commits / "000000000002-chk").read_bytes()
    # a master that died while writing the entry of checkpoint 3
    (commits / "000000000003-chk.inprogress-0123456789abcdef0123456789abcdef").write_bytes(entry[: len(entry) // 2])
    # and a complete temporary file whose rename never happened (not an entry either)
    (commits / "000000000002-chk.inprogress-fedcba9876543210fedcba9876543210").write_bytes(entry)
    assert storage.read_commit_log("job", 5) == [("000000000001-chk", {"sink": ["a"]}),
                                                ("000000000002-chk", {"sink": ["b"]})]


@pytest.mark.parametrize("rule", [
    FaultRule("write", path_glob="*/commits/*", fail=True, after=True),  # written, then an error
    FaultRule("move", path_glob="*/commits/*", fail=True),               # written, the rename fails
], ids=["write", "rename"])
def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, rule):
    storage = CheckpointStorage((faulty_filesystem(rules=[rule]), str(tmp_path)))
    with pytest.raises(CheckpointError):
        storage.write_commit_log("job", 1, "chk", {"sink": ["a"]})
    assert _temporary_files(tmp_path / "job" / "commits") == []
    assert storage.read_commit_log("job", 5) == []


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_job_whose_commit_log_write_failed_once_is_exact_and_leaves_no_temporary_file(tmp_path, parallelism):
    # the master's first commit log write is written, then fails: the attempt restarts
    fs = faulty_filesystem(rules=[FaultRule("write", path_glob="*/commits/*", fail=True, after=True, times=1)])
    env = rs.StreamEnvironment(parallelism=parallelism, reuse_workers=False)  # (a fresh master: times=1 is per process)
    env.enable_checkpointing(50, checkpoint_dir=(fs, str(tmp_path / "chk")))
    n, gate = 3000, str(tmp_path / "gate")
    generate(env, lambda i: i, count=n, rate=None, batch_size=100, gate=gate).map(lambda x: x * 2).collect()
    client = env.execute_async("commit-log-fault")
    wait_until_paused(gate, parallelism)  # half of the records are out: a checkpoint commits them
    wait_for(lambda: client.metrics().get("restarts", 0) >= 1, "the restart after the failed commit log write")
    open(gate, "w").close()
    result = client.wait()
    (batches,) = result.sink_results.values()
    counts = collections.Counter(collected_records(batches))
    assert counts == collections.Counter(x * 2 for x in range(n))  # nothing lost, nothing twice
    # (the finished job deleted its checkpoints and commit log: no temporary file either)
    assert [p.name for p in (tmp_path / "chk").rglob("*") if ".inprogress-" in p.name] == []
