"""A job whose sink's committables cannot be pickled fails with a JobFailed naming the sink.

Before, the task's result went to Ray as it was, and the user got Ray's bare
``ray::TaskActor.run() ... cannot pickle '_thread.lock' object``.
"""

from __future__ import annotations

import threading

import pytest

import raystream as rs
from raystream.engine.connectors import Committer, Sink, SinkWriter

pytestmark = pytest.mark.usefixtures("ray_session")


class _Writer(SinkWriter):
    def __init__(self) -> None:
        self.rows = 0

    def write(self, batch):
        self.rows += len(batch)

    def prepare_commit(self, checkpoint_id):
        return [(self.rows, threading.Lock())] if self.rows else []


class _Committer(Committer):
    def commit(self, committables):
        pass


class LockingSink(Sink):
    def create_writer(self, ctx):
        return _Writer()

    def create_committer(self):
        return _Committer()


@pytest.mark.parametrize("parallelism", [1, 2])
def test_unpicklable_committables_fail_the_job_naming_the_sink(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.set_restart_strategy(rs.RestartStrategy.none())
    env.from_collection(list(range(100))).sink_to(LockingSink(), name="my-sink")
    with pytest.raises(rs.JobFailed) as info:
        env.execute("locking sink")
    msg = str(info.value)
    assert "'my-sink'" in msg and "prepare_commit()" in msg and "end of input" in msg
    assert "cannot pickle '_thread.lock' object" in msg
