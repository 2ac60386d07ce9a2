"""Stop-with-savepoint racing a source's end of input (in process, step by step).

Two sources feed one task D. The savepoint's barrier from source A reaches D first; source
B (triggered too, but busy in its last poll) then reaches its end of input instead of the
barrier: its end of input completes D's alignment, D snapshots and stops. B waits for the
ack of that last send before it reports itself finished (its final state stands in for its
part of the savepoint). A stopped D must still acknowledge the send it processed in full;
before the fix it did not, B never finished and the savepoint timed out (seen on Ray as
"timed out (pending; no ack from generate#1)").
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.connectors import END_OF_INPUT, Source, SourceReader
from raystream.engine.errors import JobCancelled
from raystream.engine.local_runtime import LocalExecutorRuntime, run_in_process
from raystream.engine.records import Batch
from tests.waiting import wait_for

B_IN_LAST_POLL = threading.Event()
B_GO = threading.Event()


@dataclass
class _Split:
    split_id: str
    emitted: bool = False


class _GatedEndReader(SourceReader[_Split]):
    """Emits [-1, -2, -3], then blocks in its next poll until the test lets it end."""

    def __init__(self) -> None:
        self.splits: list[_Split] = []

    def add_splits(self, splits: list[_Split]) -> None:
        self.splits.extend(splits)

    def poll_next(self) -> Any:
        if self.splits and not self.splits[0].emitted:
            self.splits[0].emitted = True
            return Batch.of_records([-1, -2, -3])
        B_IN_LAST_POLL.set()
        assert B_GO.wait(60), "the test never let source B end"
        return END_OF_INPUT

    def snapshot_state(self, checkpoint_id: int) -> list[_Split]:
        return [_Split(s.split_id, s.emitted) for s in self.splits]


class GatedEndSource(Source[_Split]):
    def create_splits(self, parallelism: int) -> list[_Split]:
        return [_Split("b")]

    def create_reader(self, ctx: Any) -> SourceReader[_Split]:
        return _GatedEndReader()


def _tasks(runtime: LocalExecutorRuntime) -> dict[str, Any]:
    return {h.task.spec.name: h.task for e in runtime.executors.values() for h in e._hosted.values()
            if h.task is not None}


def test_stop_with_savepoint_completes_when_a_source_ends_into_the_alignment(tmp_path):
    B_IN_LAST_POLL.clear(), B_GO.clear()
    env = rs.StreamEnvironment(parallelism=1, flush_ms=0)
    env.enable_checkpointing(3_600_000, checkpoint_dir=str(tmp_path / "chk"), timeout_ms=10_000)
    a = env.generate(lambda i: i, count=10_000_000, rate=2_000, batch_size=10).uid("a")
    b = env.from_source(GatedEndSource(), name="b").uid("b")
    a.union(b).map(lambda x: x).name("d").uid("d").collect()
    outcome: dict[str, Any] = {}

    def drill(master, runtime) -> None:
        assert B_IN_LAST_POLL.wait(60)
        sp = asyncio.run_coroutine_threadsafe(master.stop_with_savepoint(str(tmp_path / "sp")), runtime.loop)
        wait_for(lambda: _tasks(runtime)["union -> d -> collect"]._aligning is not None,
               "D aligns: A's barrier is there, B's is not")
        B_GO.set()  # B ends: its end of input completes D's alignment
        try:
            outcome["savepoint"] = sp.result(60)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            outcome["error"] = exc
            asyncio.run_coroutine_threadsafe(master.cancel(), runtime.loop).result(60)

    try:
        result = run_in_process(env.get_job_graph(), JobConfig(name="stop-race", checkpoint=env.checkpoint_config),
                                on_start=drill)
    except JobCancelled:
        result = {}
    assert "error" not in outcome, outcome["error"]
    assert outcome["savepoint"].endswith("sp") and result["savepoint"] == outcome["savepoint"]
