"""A vectorized window aggregate with its combiner (the default at parallelism 2) over a
source whose subtask goes idle (``with_idleness``) and resumes after the other subtasks ended.

While the subtask was idle the keyed window's watermark followed the others' (here to the end
of event time), so every record it reads on resuming is late. The combiner before the shuffle
judged by its own, older watermark, pre-aggregated those records into partials, and the
window failed the job: "a pre-aggregated partial ... arrived after every window of its pane
closed". Now a combiner whose input went idle passes records through unchanged, and the
window gives them to the late side output as it does without a combiner. In process (the job
master and task code of a cluster, without Ray); the gate opens on a condition (the window
fired its last window), never after a guessed time.
"""

from __future__ import annotations

import collections
import os
from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint import AggregateFunction
from raystream.engine.connectors import NOTHING_AVAILABLE, PollResult
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.sources import GeneratorSource, _GeneratorReader
from raystream.operators.time import WatermarkStrategy
from raystream.operators.windows import ProcessWindowFunction, TumblingEventTimeWindows
from tests.waiting import wait_for

N = 2_000  # records: subtask 0 reads the even indices, subtask 1 the odd ones
PAUSE_AT = 201  # subtask 1 stops before this index until the gate opens
LATE = rs.OutputTag("late")
LAST_WINDOW = (10 * (N - 2)) // 100 * 100  # the last window of subtask 0's records


def record(i: int) -> dict:
    return {"key": f"k{i % 3}", "v": 1, "ts": 10 * i, "i": i}


class SecondSplitGated(GeneratorSource):
    """Split ``gen-1`` emits no index at or past ``PAUSE_AT`` until the file ``gate`` exists."""

    def __init__(self, gate: str) -> None:
        super().__init__(record, count=N, batch_size=50)
        self.gate = gate

    def create_reader(self, ctx: Any) -> _Reader:
        return _Reader(self, ctx)


class _Reader(_GeneratorReader):
    def poll_next(self) -> PollResult:
        src = self.source
        assert isinstance(src, SecondSplitGated)
        if (self.splits and self.splits[0].split_id == "gen-1" and self.splits[0].position >= PAUSE_AT
                and not os.path.exists(src.gate)):
            return NOTHING_AVAILABLE
        return super().poll_next()


class Count(AggregateFunction):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: dict, acc: int) -> int:
        return acc + 1

    def get_result(self, acc: int) -> int:
        return acc

    def merge(self, a: int, b: int) -> int:
        return a + b


class AsRow(ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Any) -> Any:
        for n in elements:
            yield {"key": key, "window_start": context.window().start, "n": n}


def mark_last_window(gate: str):
    def mark(r: dict) -> tuple:
        if r["window_start"] >= LAST_WINDOW:  # the watermark passed subtask 0's end: open the gate
            open(gate + ".fired", "w").close()
        return ("window", r["key"], r["window_start"], r["n"])
    return mark


@pytest.mark.parametrize("api,combine", [("vectorized", None), ("vectorized", True), ("vectorized", False),
                                         ("AggregateFunction", True), ("AggregateFunction", False)])
def test_records_of_a_subtask_resuming_after_idleness_go_to_the_late_side_output(api, combine, tmp_path):
    gate = str(tmp_path / "gate")
    env = rs.StreamEnvironment(parallelism=2, flush_ms=10)
    stream = env.from_source(SecondSplitGated(gate), name="gen").assign_timestamps_and_watermarks(
        WatermarkStrategy.for_bounded_out_of_orderness(0).with_timestamp_column("ts").with_idleness(50))
    windowed = stream.key_by("key").window(TumblingEventTimeWindows.of(100)).side_output_late_data(LATE)
    if api == "vectorized":
        windows = windowed.aggregate(n=("v", "count"), combine=combine)
    else:
        windows = windowed.aggregate(Count(), AsRow(), combine=combine)
    windows.map(mark_last_window(gate)).collect()
    windows.get_side_output(LATE).map(lambda r: ("late", r["i"])).collect()

    def open_gate(master: Any, runtime: Any) -> None:
        wait_for(lambda: os.path.exists(gate + ".fired"), "the window fired its last window", 120)
        open(gate, "w").close()

    result = run_in_process(env.get_job_graph(), env._job_config("idle-combiner"), timeout_s=300, on_start=open_gate)
    out = [r for batches in result["results"].values() for r in collected_records(batches)]

    on_time = [record(i) for i in range(N) if i % 2 == 0 or i < PAUSE_AT]
    counts = collections.Counter((r["key"], r["ts"] // 100 * 100) for r in on_time)
    expected = sorted([("window", k, s, n) for (k, s), n in counts.items()]
                      + [("late", i) for i in range(PAUSE_AT, N, 2)])
    assert sorted(out) == expected
