"""A job runs what was added to its environment since the last job (as Flink's ``execute()``):
a notebook keeps one ``env`` across cells, and each ``execute()`` ran every pipeline ever
built on it, so a second pipeline wrote the first one's files again, and a cell run twice
ran its pipeline twice (or failed: "execute_and_collect() needs exactly one collect() sink")."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import raystream as rs
from raystream.operators.sinks import collected_records


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(path.glob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_second_pipeline_on_the_same_environment_does_not_run_the_first_again(tmp_path, parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    orders = [{"id": i, "qty": i % 4} for i in range(30)]
    env.from_collection(orders).write_jsonl(str(tmp_path / "orders"))  # cell 1
    env.execute("load")
    assert sorted(r["id"] for r in _rows(tmp_path / "orders")) == list(range(30))

    words = ["a", "b", "a", "c"]  # cell 2, on the same env
    counts = env.from_collection(words).map(lambda w: (w, 1)).key_by(0).reduce(
        lambda a, b: (a[0], a[1] + b[1]), emit="final")
    assert sorted(counts.execute_and_collect("count")) == sorted(Counter(words).items())
    assert sorted(r["id"] for r in _rows(tmp_path / "orders")) == list(range(30)), "the first job ran again"

    # cell 2 run again: its pipeline is built again and runs once, the first copy not again
    counts = env.from_collection(words).map(lambda w: (w, 1)).key_by(0).reduce(
        lambda a, b: (a[0], a[1] + b[1]), emit="final")
    assert sorted(counts.execute_and_collect("count")) == sorted(Counter(words).items())
    assert len(_rows(tmp_path / "orders")) == 30


def test_a_new_branch_of_a_stream_of_an_earlier_job_reads_its_source_again_and_runs_alone():
    env = rs.StreamEnvironment(parallelism=2)
    numbers = env.from_collection(range(50)).map(lambda x: x * 3)
    assert sorted(numbers.execute_and_collect("all")) == [x * 3 for x in range(50)]
    evens = numbers.filter(lambda x: x % 2 == 0)
    assert sorted(evens.execute_and_collect("evens")) == [x * 3 for x in range(50) if x * 3 % 2 == 0]
    result = env.execute("evens-again")  # nothing added since: the last job runs again
    assert [sorted(collected_records(b)) for b in result.sink_results.values()] == \
        [[x * 3 for x in range(50) if x * 3 % 2 == 0]]
    assert sorted(env.execute_and_collect("evens-collected-again")) == [x * 3 for x in range(50) if x * 3 % 2 == 0]
