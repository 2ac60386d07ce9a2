"""Under back-pressure a checkpoint barrier queues behind about a second of the slow
consumer's work, not behind ``credits`` full buffers (Flink's buffer debloating).

Before, a channel's sends went at ``batch_size`` rows (65,536) or ``buffer_bytes`` (8 MiB)
however slow their consumer was, and ``credits`` (4) of them were in flight: a sink at 1 ms a
record behind a fast source had minutes of records ahead of every barrier, so every
checkpoint timed out and an exactly-once sink never committed. Now a channel's first sends
hold about ``INITIAL_SEND_BYTES`` (32 KiB, Flink's buffer size), and while its producer waits
for credit it measures the rows a second its consumer acknowledges and holds each send to
``rate * DEBLOAT_TARGET_S / credits`` rows.

The test counts, without measuring time, the records the sink takes between a source
snapshotting a checkpoint and the sink taking the same checkpoint's barrier: they were in
flight ahead of the barrier. The sink sleeps ``SINK_S`` a record, so a channel can never
measure more than ``1 / SINK_S`` rows a second, however fast or slow the machine is.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint.coordinator import CheckpointConfig
from raystream.engine.channels import DEBLOAT_TARGET_S, INITIAL_SEND_BYTES, row_bytes
from raystream.engine.config import JobConfig, TaskConfig
from raystream.engine.connectors import Sink, SinkWriter, SourceReader
from raystream.engine.errors import JobFailed
from raystream.engine.local_runtime import run_in_process
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.sources import GeneratorSource

SINK_S = 0.002  # the sink's time per record (at least: time.sleep)
CREDITS = 4
CHECKPOINTS = 3  # the job ends (on purpose) once the sinks took this many


def _record(i: int) -> dict[str, Any]:
    return {"k": i % 5, "i": i, "pad": "x" * 200}


def _bound(parallelism: int) -> int:
    """Most records a barrier can have ahead of it: per channel (parallelism ** 2 of them)
    ``CREDITS`` sends in flight and one buffered, each of at most the initial size or the
    rows a second the sink can take in ``DEBLOAT_TARGET_S`` over ``CREDITS`` sends."""
    row = row_bytes(Batch.of_records([_record(i) for i in range(100)]))
    per_send = max(INITIAL_SEND_BYTES // row, int(DEBLOAT_TARGET_S / SINK_S / CREDITS)) + 1
    return parallelism * parallelism * (CREDITS + 1) * per_send


_lock = threading.Lock()
_state: dict[str, Any] = {}


def _reset(parallelism: int) -> None:
    _state.update(sunk=0, at_source={}, ahead={}, bound=_bound(parallelism), sinks_done={})


class _WatchedReader(SourceReader[Any]):
    """The generator's reader, noting how many records the sinks took when it snapshots."""

    def __init__(self, inner: SourceReader[Any]) -> None:
        self.inner = inner

    def add_splits(self, splits: list[Any]) -> None:
        self.inner.add_splits(splits)

    def poll_next(self) -> Any:
        return self.inner.poll_next()

    def snapshot_state(self, checkpoint_id: int) -> Any:
        with _lock:
            _state["at_source"].setdefault(checkpoint_id, _state["sunk"])
        return self.inner.snapshot_state(checkpoint_id)


class _WatchedGenerator(GeneratorSource):
    def create_reader(self, ctx: OperatorContext) -> SourceReader[Any]:
        return _WatchedReader(super().create_reader(ctx))


class _SlowWriter(SinkWriter[Any]):
    def write(self, batch: Batch) -> None:
        for _ in batch.records():
            time.sleep(SINK_S)
            with _lock:
                _state["sunk"] += 1
                for cid, at in _state["at_source"].items():  # fail fast: no need to wait for the barrier
                    ahead = _state["sunk"] - at
                    if cid not in _state["ahead"] and ahead > _state["bound"]:
                        raise AssertionError(f"more than {_state['bound']} records were ahead of checkpoint {cid}'s barrier")

    def snapshot_state(self, checkpoint_id: int) -> Any:
        with _lock:
            at = _state["at_source"][checkpoint_id]
            _state["ahead"][checkpoint_id] = max(_state["ahead"].get(checkpoint_id, 0), _state["sunk"] - at)
            done = _state["sinks_done"]
            done[checkpoint_id] = done.get(checkpoint_id, 0) + 1
        if checkpoint_id >= CHECKPOINTS:
            raise RuntimeError("enough checkpoints")  # ends the unbounded job
        return None


class _SlowSink(Sink[Any]):
    def create_writer(self, ctx: OperatorContext) -> SinkWriter[Any]:
        return _SlowWriter()


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_barrier_behind_a_slow_sink_waits_for_about_a_second_of_its_records(parallelism: int, tmp_path) -> None:
    _reset(parallelism)
    env = rs.StreamEnvironment(parallelism=parallelism)
    (env.from_source(_WatchedGenerator(_record, batch_size=50))  # unbounded, fast
     .map(lambda r: r)
     .key_by("k")
     .sink_to(_SlowSink()))
    config = JobConfig(name="debloat", task=TaskConfig(credits=CREDITS), restart=rs.RestartStrategy.none(),
                       checkpoint=CheckpointConfig(100, checkpoint_dir=str(tmp_path)))
    with pytest.raises(JobFailed) as info:
        run_in_process(env.get_job_graph(), config, timeout_s=300)
    assert "enough checkpoints" in str(info.value), info.value.cause
    ahead = _state["ahead"]
    assert ahead and all(n <= _state["bound"] for n in ahead.values()), (ahead, _state["bound"])
