"""A job without ``uid()``s and with a vectorized window aggregate, rescaled through a
savepoint between parallelism 1 and 2. Its combiner node was added only above parallelism 1,
so the window's automatic uid (and every later operator's) differed between the two, and the
restore was refused ("the savepoint has state for operators ['window_aggregate-...'] that
the job does not have"); now the node is there at every parallelism (passing batches through
at 1). In process (the job master and task code of a cluster, without Ray): stop with a
savepoint halfway, restore at the other parallelism; the two runs' output equals an
uninterrupted run's.
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


def record(i: int) -> dict:
    return {"key": f"k{i % 7}", "v": i % 13, "ts": 10 * i}


def run(parallelism: int, tmp: str, gate: str | None = None, from_savepoint: str | None = None,
        on_start: Any = None) -> dict:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=10)
    env.enable_checkpointing(3_600_000, checkpoint_dir=os.path.join(tmp, "chk"))  # (savepoints only)
    (generate(env, record, N, None, 50, gate=gate).set_parallelism(1)
        .assign_timestamps_and_watermarks(WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts"))
        .key_by("key").window(TumblingEventTimeWindows.of(100)).aggregate(n=("v", "count"), total=("v", "sum"))
        .map(lambda r: (r["key"], r["window_start"], r["n"], r["total"]))
        .collect())  # no uid() anywhere but what generate() sets
    config = env._job_config(f"uidless-rescale-p{parallelism}", from_savepoint=from_savepoint)
    return run_in_process(env.get_job_graph(), config, timeout_s=300, on_start=on_start)


def rows(result: dict) -> list[Any]:
    return [r for batches in result["results"].values() for r in collected_records(batches)]


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_a_job_without_uids_rescales_its_vectorized_window_between_one_and_two(before, after, tmp_path):
    reference = sorted(rows(run(1, str(tmp_path / "reference"))))
    assert len({(k, start) for k, start, _n, _t in reference}) == len(reference) > 200  # (each key's windows once)
    gate, path = str(tmp_path / "gate"), str(tmp_path / "sp")

    def stop_halfway(master: Any, runtime: Any) -> None:
        wait_until_paused(gate, 1)
        asyncio.run_coroutine_threadsafe(master.stop_with_savepoint(path), runtime.loop).result(120)

    first = run(before, str(tmp_path / "first"), gate, on_start=stop_halfway)
    assert first["savepoint"] == path
    open(gate, "w").close()
    second = run(after, str(tmp_path / "second"), gate, from_savepoint=path)
    assert sorted(rows(first) + rows(second)) == reference
