"""A job cancelled while a checkpoint's ``_metadata`` is being written commits nothing after it.

``wait()`` raises ``JobCancelled`` at once (cancel does not wait for slow storage), and the
checkpoint in flight is aborted with the job: if its metadata lands afterwards it is a
restorable checkpoint (a restore from it commits what it records), but the cancelled job
commits nothing more. So a job restored from the newest checkpoint complete when ``wait()``
returned writes every record exactly once. Before, the checkpoint completed after the cancel
and the cancelled job committed its output then: restored from the checkpoint before it, the
records between the two were in the output twice, and ``info()`` of the cancelled job showed
the checkpoint ``in_progress`` for good.
"""

from __future__ import annotations

import glob
import json
import os
import time

import pytest

import raystream as rs
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from tests.waiting import wait_for

N = 3000


class HoldUntil:
    """A fault handler's ``sleep``: says it is holding (``<release>.held``), then waits until
    the file ``release`` exists."""

    def __init__(self, release: str) -> None:
        self.release = release

    def __call__(self, _seconds: float) -> None:
        open(self.release + ".held", "w").close()
        while not os.path.exists(self.release):
            time.sleep(0.01)


def job(tmp_path, parallelism: int, checkpoint_dir, **execute) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.enable_checkpointing(100, checkpoint_dir=checkpoint_dir, timeout_ms=60_000)
    env.generate(lambda i: {"i": i}, count=N, rate=1000).uid("src") \
        .key_by(lambda r: r["i"] % 7).map(lambda r: r).uid("id").write_jsonl(str(tmp_path / "out"))
    return env


def committed(tmp_path) -> list[int]:
    out = []
    for name in glob.glob(str(tmp_path / "out" / "part-*")):
        with open(name) as f:
            out.extend(json.loads(line)["i"] for line in f)
    return sorted(out)


def complete(base: str) -> list[str]:
    return sorted(glob.glob(os.path.join(base, "*", "chk-*", "_metadata")), key=lambda p: int(p.split("chk-")[-1].split("/")[0]))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_checkpoint_written_while_its_job_is_cancelled_commits_nothing_after_it(tmp_path, parallelism):
    base, release = str(tmp_path / "chk"), str(tmp_path / "release")
    fs = faulty_filesystem(rules=[FaultRule("write_metadata", path_glob="*/chk-3", delay_s=1.0)],
                           sleep=HoldUntil(release))
    client = job(tmp_path, parallelism, (fs, base)).execute_async("cancelled")
    try:
        wait_for(lambda: os.path.exists(release + ".held"), "the metadata write of checkpoint 3 held", 120)
        client.cancel()
        with pytest.raises(rs.JobCancelled):
            client.wait(timeout=120)
        newest = complete(base)[-1]
        before = committed(tmp_path)
        info = client.info()["checkpoints"]
    finally:
        open(release, "w").close()  # the held write lands now, after the job ended
    assert newest.endswith("/chk-2/_metadata"), complete(base)
    wait_for(lambda: len(complete(base)) == 3, "the metadata of checkpoint 3 written", 60)
    # the user restarts from the newest checkpoint complete when wait() returned
    env = job(tmp_path, parallelism, str(tmp_path / "chk-2nd"))
    env.execute("resumed", from_savepoint=os.path.dirname(newest))
    after = committed(tmp_path)
    assert len(after) == len(set(after)), f"{len(after) - len(set(after))} records committed twice"
    assert after == list(range(N))
    assert set(before) <= set(after)
    assert info["in_progress"] is None and info["last"]["reason"] == "the job was cancelled", info
