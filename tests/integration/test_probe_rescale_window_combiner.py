"""A vectorized window aggregate rescaled through a savepoint to and from parallelism 1.

``key_by(...).window(...).aggregate(n=("v", "count"))`` runs with a combiner before the
shuffle when the job's parallelism is above 1, and without one at parallelism 1. The
combiner used to snapshot its watermark, so a savepoint taken at parallelism 2 was refused at
parallelism 1 ("the savepoint has state for operators ['window_aggregate (local)-...'] that
the job does not have"), and one taken at parallelism 1 restored at 2 failed the job at the
first late record ("a pre-aggregated partial ... arrived after every window of its pane
closed"): the new combiner started at the minimum watermark below the window's restored one.
Now the combiner is no part of a savepoint and, restored, passes records through unchanged
until the first watermark of its run. In process (the job master and task code of a cluster,
without Ray): stop with a savepoint halfway, restore at the other parallelism; the two runs'
output (windows and late records) equals an uninterrupted run's.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

import raystream as rs
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.time import WatermarkStrategy
from raystream.operators.windows import TumblingEventTimeWindows
from tests.integration.gated import generate, wait_until_paused

N = 2_000  # records; the source pauses at N // 2 until the gate opens
LATE = rs.OutputTag("late")


def record(i: int) -> dict:
    # out of order by up to 200 ms against a bound of 20: many late records, in every batch
    return {"key": f"k{i % 5}", "v": i % 13, "ts": 10 * i + ((i * 31) % 11 - 5) * 40, "i": i}


def job(env: rs.StreamEnvironment, gate: str | None) -> None:
    stream = (generate(env, record, N, None, 50, gate=gate).set_parallelism(1)
              .assign_timestamps_and_watermarks(
                  WatermarkStrategy.for_bounded_out_of_orderness(20).with_timestamp_column("ts")))
    windows = (stream.key_by("key").window(TumblingEventTimeWindows.of(100)).side_output_late_data(LATE)
               .aggregate(n=("v", "count"), total=("v", "sum")).uid("windows"))
    windows.map(lambda r: (r["key"], r["window_start"], r["n"], r["total"])).uid("rows").collect().uid("out")
    windows.get_side_output(LATE).map(lambda r: ("late", r["i"])).uid("late-rows").collect().uid("late-out")


def run(parallelism: int, tmp: str, gate: str | None = None, from_savepoint: str | None = None,
        on_start: Any = None) -> dict:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=10)
    env.enable_checkpointing(3_600_000, checkpoint_dir=os.path.join(tmp, "chk"))  # (savepoints only)
    job(env, gate)
    config = env._job_config(f"combiner-rescale-p{parallelism}", from_savepoint=from_savepoint)
    return run_in_process(env.get_job_graph(), config, timeout_s=300, on_start=on_start)


def rows(result: dict) -> list[Any]:
    return [r for batches in result["results"].values() for r in collected_records(batches)]


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2), (2, 3)])
def test_a_vectorized_window_aggregate_rescales_to_and_from_parallelism_one(before, after, tmp_path):
    reference = sorted(rows(run(1, str(tmp_path / "reference"))))
    assert any(r[0] == "late" for r in reference), "the input has no late record (tests nothing)"
    gate, path = str(tmp_path / "gate"), str(tmp_path / "sp")

    def stop_halfway(master: Any, runtime: Any) -> None:
        wait_until_paused(gate, 1)
        asyncio.run_coroutine_threadsafe(master.stop_with_savepoint(path), runtime.loop).result(120)

    first = run(before, str(tmp_path / "first"), gate, on_start=stop_halfway)
    assert first["savepoint"] == path
    open(gate, "w").close()
    second = run(after, str(tmp_path / "second"), gate, from_savepoint=path)
    assert sorted(rows(first) + rows(second)) == reference
