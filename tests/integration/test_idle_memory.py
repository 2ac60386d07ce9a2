"""Memory of the worker pool is proportional to live work, not to history: jobs whose
functions capture a large object, run one after another on the same pooled executors, do
not pile up in them (each release frees the finished job's cyclic garbage once it passes
``engine.memory.IDLE_GARBAGE_BYTES``)."""

from __future__ import annotations

import os

import pytest

import raystream as rs
from raystream.engine.memory import IDLE_GARBAGE_BYTES, anonymous_memory

pytestmark = pytest.mark.ray

CAPTURED = 96 << 20  # bytes captured by each job's function, more than the budget


def _memory(_record: int) -> tuple[int, int | None]:
    """(pid, anonymous resident bytes) of the task executor running this record (no
    collection here: what the executor keeps between jobs is measured as it is)."""
    return os.getpid(), anonymous_memory()


def _probe() -> dict[int, int]:
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(8).map(_memory).collect()
    out: dict[int, int] = {}
    for pid, size in env.execute_and_collect("memory-probe"):
        out[pid] = max(out.get(pid, 0), size)
    return out


def _job_capturing(blob: bytes) -> None:
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(1000).map(lambda i: (i, blob[i])).filter(lambda r: r[0] % 100 == 0).collect()
    assert len(env.execute_and_collect("captures-a-blob")) == 10


def test_jobs_capturing_large_objects_do_not_pile_up_in_pooled_executors(ray_session):
    _job_capturing(b"\x01" * CAPTURED)
    first = _probe()
    for fill in (2, 3, 4, 5):  # a new object every time, as a notebook re-running a cell
        _job_capturing(bytes([fill]) * CAPTURED)
    last = _probe()
    both = sorted(set(first) & set(last))
    assert both, (first, last)  # the pool lent the same executors again
    for pid in both:
        grown = last[pid] - first[pid]
        # without the release's collection each job's copy stayed: +4 x 96 MiB
        assert grown < IDLE_GARBAGE_BYTES + CAPTURED, f"executor pid {pid} grew {grown / 2**20:.0f} MiB over 4 jobs"


def test_a_finished_job_s_client_keeps_no_job_code(ray_session):
    """The client keeps the shipped graph (for a failover of its master) only while the job
    runs: a client kept in a notebook after the job holds no copy of what it captured."""
    env = rs.StreamEnvironment(parallelism=1)
    blob = b"\x01" * (1 << 20)
    env.generate(10).map(lambda i: blob[i]).collect()
    client = env.execute_async("keeps-nothing")
    assert client._submission is not None  # (private: the one reference to the shipped bytes)
    client.wait()
    assert client._submission is None
