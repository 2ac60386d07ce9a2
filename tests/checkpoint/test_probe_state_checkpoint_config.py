"""``enable_checkpointing`` refuses settings that are not what they must be, naming the
setting and the value, when the job is built.

``retained=2.5`` used to be accepted: then every completed checkpoint failed to discard the
old ones ("could not discard old checkpoints" logged each time) and the checkpoint directory
grew without bound (41 of 41 checkpoints kept in a 2 s job). ``timeout_ms="1000"`` or
``min_pause_ms=None`` raised a bare TypeError from a comparison; ``checkpoint_dir=123`` was
accepted."""

from __future__ import annotations

import numpy as np
import pytest

import raystream as rs
from raystream.checkpoint import CheckpointStorage
from raystream.engine.errors import ConfigError
from raystream.engine.local_runtime import run_in_process


@pytest.mark.parametrize("setting, value", [
    ("retained", 2.5), ("retained", "3"), ("retained", 0), ("retained", True),
    ("timeout_ms", "1000"), ("timeout_ms", 0), ("timeout_ms", 1.5),
    ("min_pause_ms", None), ("min_pause_ms", -1),
    ("tolerable_failures", -1), ("tolerable_failures", 1.0),
    ("checkpoint_dir", 123),
])
def test_a_bad_setting_is_a_config_error_naming_it(setting, value):
    env = rs.StreamEnvironment()
    with pytest.raises(ConfigError) as err:
        env.enable_checkpointing(100, **{setting: value})
    assert setting in str(err.value) and repr(value) in str(err.value)


def test_interval_is_named_too():
    with pytest.raises(ConfigError, match="interval_ms .* got 5"):
        rs.StreamEnvironment().enable_checkpointing(5)


def test_good_settings_are_kept(tmp_path):
    env = rs.StreamEnvironment()
    env.enable_checkpointing(100, checkpoint_dir=tmp_path, retained=np.int64(2), timeout_ms=1000, min_pause_ms=0,
                             tolerable_failures=None)
    assert env.checkpoint_config.retained == 2 and type(env.checkpoint_config.retained) is int
    env.enable_checkpointing(100, checkpoint_dir=CheckpointStorage(str(tmp_path)), tolerable_failures=3)
    assert env.checkpoint_config.tolerable_failures == 3


async def _keep_checkpoints(self, job_id) -> None:
    """Stands for ``JobMaster.end_checkpoints``: what the running job's retention kept stays."""


def test_retained_checkpoints_are_discarded(tmp_path, monkeypatch):
    from raystream.engine.master import JobMaster

    monkeypatch.setattr(JobMaster, "end_checkpoints", _keep_checkpoints)  # (a finished job deletes them all)
    env = rs.StreamEnvironment(parallelism=1, flush_ms=0)
    env.enable_checkpointing(20, checkpoint_dir=str(tmp_path / "chk"), retained=2)
    env.generate(lambda i: i, count=2000, rate=4000).key_by(lambda x: x % 3).reduce(lambda a, b: a + b).collect()
    result = run_in_process(env.get_job_graph(), env._job_config("retained"), timeout_s=120)
    assert result["checkpoints"]["completed"] > 3
    [job] = (tmp_path / "chk").iterdir()
    assert len(list(job.glob("chk-*"))) <= 2
