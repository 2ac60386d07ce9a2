"""A task closes its keyed state backends when it ends (no Ray).

Before, nothing called a keyed backend's ``close()``: every job left its RocksDB working
directory (``<local_dir>/pid<N>-<token>``, the job's whole keyed state) on the pooled
executor that ran it, two more per job at parallelism 2, until the process ended. The
close must not break a snapshot still being written: the writer reads the RocksDB
checkpoint's files from that directory after the task thread handed it over.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

pytest.importorskip("rocksdict")

from raystream.checkpoint.backends import RocksDBStateBackend  # noqa: E402
from raystream.checkpoint.storage import CheckpointStorage  # noqa: E402
from raystream.engine.channels import InputInfo  # noqa: E402
from raystream.engine.config import TaskConfig  # noqa: E402
from raystream.engine.errors import JobFailed  # noqa: E402
from raystream.engine.events import Barrier, EndOfInput  # noqa: E402
from raystream.engine.executor import MasterHooks  # noqa: E402
from raystream.engine.partitioners import KeySelector  # noqa: E402
from raystream.engine.records import Batch  # noqa: E402
from raystream.engine.snapshots import AsyncSnapshotWriter  # noqa: E402
from raystream.engine.task import Task, TaskSpec  # noqa: E402
from raystream.operators.keyed import ReduceOperator  # noqa: E402
from raystream.operators.testing import OperatorHarness  # noqa: E402


def _sum() -> ReduceOperator:
    return ReduceOperator(KeySelector(0), lambda a, b: (a[0], a[1] + b[1]))


def _wait_until(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _spec(rocks: RocksDBStateBackend) -> TaskSpec:
    return TaskSpec(
        job_id="job", vertex_id=0, name="sum", subtask_index=0, parallelism=1, max_parallelism=128,
        chain=[{"name": "sum", "uid": "sum", "factory": _sum, "kind": "operator", "keyed": True}],
        inputs=[InputInfo(0, "up")], outputs=[], config=TaskConfig(), state_backend=rocks, checkpointing=True,
    )


def test_a_finished_task_deletes_its_rocksdb_directory(tmp_path):
    local = tmp_path / "rocksdb"
    h = OperatorHarness(_sum(), state_backend=RocksDBStateBackend(local_dir=str(local)))
    h.process([(f"k{i % 7}", i) for i in range(100)])
    assert len(os.listdir(local)) == 1  # the backend's working directory, while the task runs
    h.snapshot()
    h.end_input()
    assert dict(h.records())["k0"] == sum(i for i in range(100) if i % 7 == 0)
    assert os.listdir(local) == []


def test_a_failed_task_deletes_its_rocksdb_directory(tmp_path):
    local = tmp_path / "rocksdb"
    task = Task(_spec(RocksDBStateBackend(local_dir=str(local))), [])
    task.deliver(0, 0, [Batch.of_records([("a", 1), ("a", "not a number")])], lambda: None)
    with pytest.raises(JobFailed, match="sum"):
        task.run()
    assert os.listdir(local) == []


class _Messenger:
    """Records what the hooks send to the job master."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send(self, method, *args):
        self.sent.append((method, *args))
        return method

    def pending(self, calls):
        return []

    def wait_all(self, calls, timeout_s):
        return []


class _GatedStorage(CheckpointStorage):
    """Checkpoint storage whose uploads of shared files wait for ``gate``."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def write_shared(self, job_id, checkpoint_id, name, data):
        self.entered.set()
        assert self.gate.wait(30)
        return super().write_shared(job_id, checkpoint_id, name, data)


class _Hooks(MasterHooks):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = threading.Event()

    def wait_snapshots_written(self) -> None:
        self.waiting.set()
        super().wait_snapshots_written()


def test_a_snapshot_being_written_when_the_task_ends_is_written_before_the_backend_closes(tmp_path):
    local = tmp_path / "rocksdb"
    rocks = RocksDBStateBackend(local_dir=str(local))
    storage = _GatedStorage(str(tmp_path / "chk"))
    messenger = _Messenger()
    hooks = _Hooks(messenger, 0, AsyncSnapshotWriter(storage, "job", state_backend=rocks))
    task = Task(_spec(rocks), [], hooks=hooks)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (task.run(), done.set()), daemon=True)
    thread.start()
    task.deliver(0, 0, [Batch.of_records([(f"k{i % 7}", i) for i in range(100)])], lambda: None)
    task.deliver(0, 1, [Barrier(1)], lambda: None)
    task.deliver(0, 2, [EndOfInput()], lambda: None)
    assert storage.entered.wait(30)  # the snapshot writer is uploading checkpoint 1's files...
    # ...when the task has ended its input and closes (or has closed) its backend
    _wait_until(lambda: hooks.waiting.is_set() or done.is_set() or not os.listdir(local))
    storage.gate.set()
    thread.join(30)
    assert done.is_set()
    hooks.writer.drain()
    methods = [m[0] for m in messenger.sent]
    assert methods == ["acknowledge_checkpoint"], messenger.sent  # written, not declined
    assert os.listdir(local) == []
