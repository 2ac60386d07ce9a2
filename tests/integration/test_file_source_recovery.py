"""Exactly once for a source of many uneven splits: Parquet files of 1.5 row groups, read at
p=2 with row groups half read when tasks are killed or a savepoint stops the job; the
restored splits are dealt out by the rows left in them (``engine.connectors.assign_splits``),
also onto another parallelism."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.parquet as pq

import raystream as rs
from raystream.operators.sinks import collected_records
from tests.integration.test_fault_tolerance import kill_tasks, make_env
from tests.waiting import wait_for

FILES = 12
ROWS = 3000  # per file: row groups of 2,000 and 1,000 rows


def uneven_files(tmp_path) -> str:
    directory = tmp_path / "in"
    directory.mkdir()
    for f in range(FILES):
        ids = pa.array(range(f * ROWS, (f + 1) * ROWS), pa.int64())
        pq.write_table(pa.table({"i": ids}), directory / f"part-{f:02d}.parquet", row_group_size=2000)
    return str(directory)


def _slow(batch: pa.RecordBatch) -> pa.RecordBatch:
    time.sleep(0.01)  # ~10 ms a 100-row batch: ~2 s of reading at p=2, kills land mid-split
    return batch


def build(env: rs.StreamEnvironment, path: str) -> None:
    env.read_parquet(path, batch_size=100).uid("files").map_batches(_slow).map(lambda r: r["i"]).collect()


def ids(result: rs.JobResult) -> list[int]:
    return [i for batches in result.sink_results.values() for i in collected_records(batches)]


def test_killed_readers_of_uneven_files_recover_exactly_once(tmp_path):
    path = uneven_files(tmp_path)
    env = make_env(2, tmp_path)
    build(env, path)
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    client = env.execute_async("uneven-files-kills")
    killed = kill_tasks(client, parallelisms, 2, seed=5)
    result = client.wait()
    assert killed and result.metrics["restarts"] >= 1
    got = ids(result)
    assert sorted(got) == list(range(FILES * ROWS)), f"{FILES * ROWS - len(set(got))} lost, {len(got) - len(set(got))} duplicated"


def test_a_savepoint_of_half_read_files_restores_at_another_parallelism_exactly_once(tmp_path):
    path = uneven_files(tmp_path)
    env = make_env(2, tmp_path / "run0")
    build(env, path)
    client = env.execute_async("uneven-files-2")
    # stop once some rows are read and others are not: row groups are half read
    wait_for(lambda: (client.metrics().get("operators", {}).get("map", {}).get("records_in", 0) or 0) > 6000,
             "6,000 rows read")
    savepoint = client.stop_with_savepoint(str(tmp_path / "sp"))
    first = ids(client.wait())
    assert 0 < len(first) < FILES * ROWS
    env = make_env(3, tmp_path / "run1")
    build(env, path)
    second = ids(env.execute("uneven-files-3", from_savepoint=savepoint))
    assert sorted(first + second) == list(range(FILES * ROWS))
