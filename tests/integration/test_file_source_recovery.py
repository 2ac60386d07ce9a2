"""Exactly once for a source of many uneven splits: Parquet files of 1.5 row groups, read at
p=2 with row groups half read when tasks are killed or a savepoint stops the job; the
restored splits are dealt out by the rows left in them (``engine.connectors.assign_splits``),
also onto another parallelism, and each subtask reads them in the source's order, which
per-split watermarks rely on (event-time windows lose no record as late)."""

from __future__ import annotations

import collections
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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


KEYS = 5
WINDOW_MS = 1000


def event_time_files(tmp_path) -> str:
    """Files whose event time rises through the file order (1 ms a row), uneven row groups."""
    directory = tmp_path / "events"
    directory.mkdir()
    first = 0
    for f, groups in enumerate([[1000, 500]] * 4 + [[700, 700, 100], [1200], [300, 300, 300]]):
        n = sum(groups)
        i = pa.array(range(first, first + n), pa.int64())
        table = pa.table({"i": i, "k": pa.array([x % KEYS for x in range(first, first + n)], pa.int64()),
                          "ts": pa.array([1_000_000 + x for x in range(first, first + n)], pa.int64())})
        with pq.ParquetWriter(directory / f"part-{f:03d}.parquet", table.schema) as writer:
            offset = 0
            for size in groups:
                writer.write_table(table.slice(offset, size), row_group_size=size)
                offset += size
        first += n
    return str(directory)


def windowed(env: rs.StreamEnvironment, path: str) -> None:
    strategy = rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    (env.read_parquet(path, batch_size=50).uid("events").assign_timestamps_and_watermarks(strategy)
     .map_batches(_slow).name("slow").uid("slow")
     .key_by("k").window(rs.TumblingEventTimeWindows.of(WINDOW_MS)).aggregate(n=("i", "count"), s=("i", "sum")).uid("win")
     .map(lambda r: (r["k"], r["window_start"], r["n"], r["s"])).uid("rows").collect())


def windows_of(n: int) -> collections.Counter:
    count: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    for i in range(n):
        key = (i % KEYS, 1_000_000 + i - (1_000_000 + i) % WINDOW_MS)
        count[key] += 1
        total[key] += i
    return collections.Counter((k, start, count[(k, start)], total[(k, start)]) for k, start in count)


def rows(result: rs.JobResult) -> collections.Counter:
    return collections.Counter(r for batches in result.sink_results.values() for r in collected_records(batches))


@pytest.mark.parametrize("restore_parallelism", [2, 3])
def test_event_time_windows_over_files_restored_from_a_savepoint_lose_nothing_as_late(tmp_path, restore_parallelism):
    path = event_time_files(tmp_path)
    env = make_env(2, tmp_path / "run0", interval_ms=100_000)
    windowed(env, path)
    client = env.execute_async("files-windows-2")
    wait_for(lambda: (client.metrics().get("operators", {}).get("slow", {}).get("records_in", 0) or 0) > 1500, "1,500 rows read")
    savepoint = client.stop_with_savepoint(str(tmp_path / "sp"))
    first = rows(client.wait())
    assert sum(first.values()) < len(windows_of(9_600))  # stopped mid-read (after 1,500 of 9,600 rows)
    env = make_env(restore_parallelism, tmp_path / "run1", interval_ms=100_000)
    windowed(env, path)
    result = env.execute("files-windows-restored", from_savepoint=savepoint)
    late = result.metrics["operators"].get("win", {}).get("num_late_records_dropped", 0)
    got = first + rows(result)
    want = windows_of(9_600)
    assert late == 0 and got == want, (late, sorted((got - want).items())[:5], sorted((want - got).items())[:5])
