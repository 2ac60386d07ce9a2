"""Pooled task executors keep no RocksDB working directory of a job that ended.

Before, a task never closed its keyed state backend: each finished job left
``<local_dir>/pid<N>-<token>`` (the job's whole keyed state) on every executor that ran a
keyed subtask of it, two more per job at parallelism 2, until the executor process ended.
"""

from __future__ import annotations

import os

import pytest

import raystream as rs
from raystream.checkpoint.backends import RocksDBStateBackend

pytest.importorskip("rocksdict")
pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.mark.parametrize("parallelism", [1, 2])
def test_jobs_on_pooled_executors_leave_no_rocksdb_directory(tmp_path, parallelism):
    local = tmp_path / "rocksdb"
    expected: dict[int, int] = {}
    for i in range(3000):
        expected[i % 10] = expected.get(i % 10, 0) + i
    for run in range(2):
        env = rs.StreamEnvironment(parallelism=parallelism)
        env.set_state_backend(RocksDBStateBackend(local_dir=str(local)))
        env.enable_checkpointing(100, checkpoint_dir=str(tmp_path / f"chk{run}"))
        out = (env.generate(3000).map(lambda x: (x % 10, x)).key_by(0)
               .reduce(lambda a, b: (a[0], a[1] + b[1]), emit="final").execute_and_collect())
        assert dict(out) == expected
        assert os.listdir(local) == [], f"run {run}: directories left on the executors"
