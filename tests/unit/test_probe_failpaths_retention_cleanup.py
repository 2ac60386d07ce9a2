"""A job whose checkpoints its retention mode deletes leaves none of their part files behind (no Ray).

At a failed or cancelled job's end the sinks keep the pending part files a complete checkpoint
records: a job started from that retained checkpoint commits them. When the retention mode
deletes the checkpoints too (``NO_EXTERNALIZED_CHECKPOINTS``, ``DELETE_ON_CANCELLATION`` for a
cancel), those files have no checkpoint left that could ever commit them; before, they stayed in
``<dir>/.raystream/`` for good. Now the sinks clean up again once the checkpoints are deleted.
"""

from __future__ import annotations

import asyncio
from typing import Any

import cloudpickle

import raystream as rs
from raystream.checkpoint import HeapStateBackend
from raystream.checkpoint.coordinator import CheckpointConfig, ExternalizedCheckpointRetention
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobFailed
from tests.unit.test_job_master import Script, master_on
from tests.unit.test_probe_failpaths_sink_cleanup import _writing_tasks, failing_commits, hidden


def _run(tmp_path: Any, retention: ExternalizedCheckpointRetention, end: Any) -> tuple[Any, Any, dict]:
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(4).write_jsonl(str(tmp_path / "out"))
    checkpoint = CheckpointConfig(20, checkpoint_dir=str(tmp_path / "chk"), externalized_checkpoint_retention=retention)
    config = JobConfig(name="files", checkpoint=checkpoint, restart=rs.RestartStrategy.none(),
                       state_backend=HeapStateBackend(), reuse_workers=False)
    script = Script(finish_after=10 ** 9)
    script.cancelled = True
    master, _runtime = master_on(script)

    async def main() -> tuple[Any, dict]:
        job = asyncio.ensure_future(master.run(cloudpickle.dumps(env.get_job_graph()), cloudpickle.dumps(config),
                                               "job-1", None, False))
        while master.status != "RUNNING" or len(master.coordinator.completed) < 2:
            await asyncio.sleep(0.01)
        await end(master)
        outcome = (await asyncio.gather(asyncio.wait_for(job, 60), return_exceptions=True))[0]
        await master.end_checkpoints("job-1")  # (the driver has the result)
        return outcome, await master.job_info("job-1")

    outcome, info = asyncio.run(main())
    return outcome, master, info


def test_a_failed_job_whose_checkpoints_go_leaves_no_part_files(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _writing_tasks(monkeypatch, out)
    retention = ExternalizedCheckpointRetention.NO_EXTERNALIZED_CHECKPOINTS
    outcome, master, info = _run(tmp_path, retention, failing_commits(monkeypatch))
    assert isinstance(outcome, JobFailed) and master.status == "FAILED"
    assert info["checkpoint_cleanup"].startswith("deleted ") and info["checkpoint_cleanup"] != "deleted 0 checkpoints"
    assert hidden(out) == [], "the deleted checkpoints' pending part files stayed"
    assert "with the checkpoints: deleted " in info["sink_cleanup"]


def test_a_retained_checkpoint_keeps_its_part_files(tmp_path, monkeypatch):
    """The default retention keeps a failed job's checkpoints, and with them their files."""
    out = tmp_path / "out"
    _writing_tasks(monkeypatch, out)
    retention = ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION
    outcome, master, info = _run(tmp_path, retention, failing_commits(monkeypatch))
    assert isinstance(outcome, JobFailed)
    assert info["checkpoint_cleanup"].startswith("kept")
    assert hidden(out), "the retained checkpoint's pending part files went"
    assert "with the checkpoints" not in info["sink_cleanup"]

