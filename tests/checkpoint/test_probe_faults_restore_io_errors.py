"""A storage I/O error (not a missing or corrupt file) while a restart looks for the checkpoint
to restore from: the restore is retried, never planned from an older checkpoint.

Before the fix a read that failed once (S3 throttling, a network blip) made the newest
complete checkpoint look corrupt: the restart skipped it and restored an older one, whose
sources replayed what the newer one had already committed, so the sinks committed it twice (90
of 1,500 records of a keyed count written twice, p=1 and p=2). A lookup that failed once
(``get_file_info`` of the ``_metadata`` files) failed the job for good with a bare ``OSError``
naming neither the job nor the storage. A missing or corrupt file still makes the restore try
an older checkpoint (``tests/unit/test_checkpoint_coordinator.py``).
"""

from __future__ import annotations

import inspect
import os

import pytest

import raystream as rs
from raystream.checkpoint import CheckpointStorage
from raystream.checkpoint.coordinator import CheckpointConfig, CheckpointCoordinator
from raystream.checkpoint.faults import FaultRule, faulty_filesystem
from raystream.checkpoint.storage import CheckpointStorageUnavailable
from raystream.engine.local_runtime import run_in_process
from tests.checkpoint.test_probe_state_intermediate_savepoint import written
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

N = 400


class FailOnceWhileRestoring:
    """A fault handler's ``sleep`` that raises an I/O error the first time it is called from
    within ``CheckpointCoordinator.latest_restorable`` (a restart looking for its checkpoint),
    and lets every other call through."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __call__(self, _seconds: float) -> None:
        if os.path.exists(self.flag) or not any(f.function == "latest_restorable" for f in inspect.stack(0)):
            return
        open(self.flag, "w").close()
        raise OSError("injected: checkpoint storage did not answer")


def complete_two(tmp_path) -> None:
    """Checkpoints 1 and 2 of job "job", complete, in ``tmp_path``."""
    coord = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path)), "job", [(0, 0)],
                                  CheckpointStorage(str(tmp_path)))
    for _ in range(2):
        p = coord.trigger()
        op = coord.storage.write_state("job", p.checkpoint_id, "op-0", b"state")
        coord.acknowledge(p.checkpoint_id, (0, 0), {"op": {"op": op, "committables": []}})
        coord.begin_finalize(p)
        coord.complete(p, {"parallelism": {0: 1}, "max_parallelism": 128})
        assert coord.end_finalize(p)


@pytest.mark.parametrize("op", ["read", "info", "list"])
def test_an_io_error_is_no_reason_to_restore_an_older_checkpoint(tmp_path, op):
    complete_two(tmp_path)
    fs = faulty_filesystem(rules=[FaultRule(op, fail=True, times=1)])
    coord = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path)), "job", [(0, 0)],
                                  CheckpointStorage((fs, str(tmp_path))))
    with pytest.raises(CheckpointStorageUnavailable, match="injected fault") as failed:
        coord.latest_restorable()
    assert failed.value.retryable
    found = coord.latest_restorable()  # storage answers again: the newest checkpoint
    assert found is not None and found[0] == 2


@pytest.mark.parametrize("op", ["read", "info"])
@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_restart_whose_restore_hits_an_io_error_restores_again(tmp_path, op, parallelism):
    gate = str(tmp_path / "gate")
    fs = faulty_filesystem(rules=[FaultRule(op, delay_s=0.001)], sleep=FailOnceWhileRestoring(str(tmp_path / "raised")))
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    env.enable_checkpointing(50, checkpoint_dir=(fs, str(tmp_path / "chk")), timeout_ms=60_000)
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(3, 0))
    generate(env, lambda i: {"i": i}, count=N, rate=None, batch_size=20, gate=gate).uid("src") \
        .key_by(lambda r: r["i"] % 5).map(lambda r: r).uid("id").write_jsonl(str(tmp_path / "out"))

    def drill(master, runtime) -> None:
        wait_until_paused(gate, parallelism)
        wait_for(lambda: master.coordinator.completed_count >= 2, "2 checkpoints completed", 60)
        runtime.kill_executor(next(iter(runtime.executors.values())))
        # the restart's restore fails once (an I/O error), the next restart restores
        wait_for(lambda: master.restarts >= 2 and master.status == "RUNNING" or master.status == "FAILED",
                 "a second restart", 60)
        open(gate, "w").close()

    result = run_in_process(env.get_job_graph(), env._job_config("restore-io"), on_start=drill, timeout_s=120)
    assert os.path.exists(tmp_path / "raised")  # the I/O error was injected
    assert result["metrics"]["restarts"] == 2
    assert written(tmp_path) == list(range(N))
