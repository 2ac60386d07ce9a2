"""File sinks on Ray: a second run into a directory, and two sinks into one directory in one
job, add part files and replace none (names hold a token unique to each sink writer)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

import raystream as rs


def test_a_second_run_into_a_non_empty_directory_keeps_the_first_runs_files(tmp_path):
    out = tmp_path / "out"

    def run(tag: str, n: int, parallelism: int) -> None:
        env = rs.StreamEnvironment(parallelism=parallelism)
        env.from_collection([{"run": tag, "i": i} for i in range(n)]).rebalance().write_jsonl(str(out))
        env.execute(tag)

    run("first", 10, 2)
    run("second", 4, 1)
    rows = [json.loads(line) for f in sorted(out.glob("part-*.jsonl")) for line in f.read_text().splitlines()]
    assert sorted((r["run"], r["i"]) for r in rows) == sorted(
        [("first", i) for i in range(10)] + [("second", i) for i in range(4)])


def test_two_parquet_sinks_into_one_directory_in_one_job_keep_every_row(tmp_path):
    env = rs.StreamEnvironment()
    env.from_collection([{"src": "a", "i": i} for i in range(100)]).write_parquet(str(tmp_path))
    env.from_collection([{"src": "b", "i": i} for i in range(50)]).write_parquet(str(tmp_path))
    env.execute("two sinks")
    table = pq.read_table(tmp_path)
    assert sorted(zip(table.column("src").to_pylist(), table.column("i").to_pylist())) == sorted(
        [("a", i) for i in range(100)] + [("b", i) for i in range(50)])
