"""GeneratorSource with ``batch_fn``: a batch of indices per call, records or Arrow."""

from __future__ import annotations

import pyarrow as pa
import pytest

import raystream as rs
from raystream.engine.connectors import END_OF_INPUT
from raystream.engine.errors import ConfigError, GraphError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.sources import GeneratorSource


def ctx(subtask: int = 0, parallelism: int = 1) -> OperatorContext:
    return OperatorContext("gen", "gen", f"gen ({subtask + 1}/{parallelism})", subtask, parallelism, 128,
                           KeyGroupRange(0, 127))


def read_all(source: GeneratorSource, parallelism: int) -> list[list[Batch]]:
    """Every subtask's batches, each subtask reading its own split to the end."""
    out = []
    for i, split in enumerate(source.create_splits(parallelism)):
        reader = source.create_reader(ctx(i, parallelism))
        reader.add_splits([split])
        batches = []
        while (b := reader.poll_next()) is not END_OF_INPUT:
            assert isinstance(b, Batch)
            batches.append(b)
        out.append(batches)
    return out


@pytest.mark.parametrize("parallelism", [1, 2, 3])
def test_batch_fn_gets_each_subtasks_strided_ranges(parallelism):
    calls: list[range] = []

    def squares(idx: range) -> list[int]:
        calls.append(idx)
        return [i * i for i in idx]

    per_task = read_all(GeneratorSource(batch_fn=squares, count=50, batch_size=7), parallelism)
    got = sorted(r for batches in per_task for b in batches for r in b.records())
    assert got == sorted(i * i for i in range(50))
    assert all(c.step == parallelism and len(c) <= 7 for c in calls)
    for i, batches in enumerate(per_task):  # each subtask reads its own indices, in order
        assert [r for b in batches for r in b.records()] == [j * j for j in range(i, 50, parallelism)]


def test_batch_fn_returning_arrow_is_a_columnar_stream():
    def columns(idx: range) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict({"i": list(idx), "sq": [i * i for i in idx]})

    (batches,) = read_all(GeneratorSource(batch_fn=columns, count=10, batch_size=4), 1)
    assert all(b.is_columnar for b in batches)
    assert [r for b in batches for r in b.records()] == [{"i": i, "sq": i * i} for i in range(10)]
    table = pa.Table.from_batches([b.arrow() for b in batches])
    (tables,) = read_all(GeneratorSource(batch_fn=lambda idx: pa.Table.from_batches([columns(idx)]), count=10,
                                         batch_size=4), 1)
    assert pa.Table.from_batches([b.arrow() for b in tables]).equals(table)


def test_batch_fn_may_emit_any_number_of_records_per_index():
    src = GeneratorSource(batch_fn=lambda idx: [i for i in idx if i % 3 == 0], count=20, batch_size=5)
    assert sorted(r for bs in read_all(src, 2) for b in bs for r in b.records()) == list(range(0, 20, 3))


def test_batch_fn_errors_name_the_function_and_what_it_returned():
    with pytest.raises(ConfigError, match="not both"):
        GeneratorSource(lambda i: i, batch_fn=lambda idx: list(idx), count=3)
    with pytest.raises(ConfigError, match="batch_fn must be a function of a range of indices, got 42"):
        GeneratorSource(batch_fn=42, count=3)  # type: ignore[arg-type]

    def gen_tuple(idx: range) -> tuple:
        return tuple(idx)

    with pytest.raises(ConfigError, match=r"'gen_tuple' returned tuple for indices range\(0, 3\)"):
        read_all(GeneratorSource(batch_fn=gen_tuple, count=3), 1)  # type: ignore[arg-type]


def test_batch_fn_reader_resumes_from_a_snapshot():
    src = GeneratorSource(batch_fn=lambda idx: list(idx), count=30, batch_size=4)
    reader = src.create_reader(ctx())
    reader.add_splits(src.create_splits(1))
    first = reader.poll_next().records()  # type: ignore[union-attr]
    state = reader.snapshot_state(1)
    rest = src.create_reader(ctx())
    rest.add_splits(state)
    tail = []
    while (b := rest.poll_next()) is not END_OF_INPUT:
        tail.extend(b.records())  # type: ignore[union-attr]
    assert first + tail == list(range(30))


def test_env_generate_takes_a_batch_fn_and_runs_it_at_parallelism_two():
    import raystream as rs
    from raystream.engine.config import JobConfig
    from raystream.engine.local_runtime import run_in_process
    from raystream.operators.sinks import collected_records

    env = rs.StreamEnvironment(parallelism=2)
    env.generate(batch_fn=lambda idx: pa.table({"i": list(idx), "sq": [i * i for i in idx]}), count=1000,
                 batch_size=64).map(lambda r: (r["i"], r["sq"])).collect()
    result = run_in_process(env.get_job_graph(), JobConfig(name="batch-fn"), timeout_s=120)
    rows = sorted(tuple(r) for batches in result["results"].values() for r in collected_records(batches))
    assert rows == [(i, i * i) for i in range(1000)]
    with pytest.raises(ConfigError, match="not both"):
        env.generate(lambda i: i, batch_fn=lambda idx: list(idx), count=3)


def test_a_count_given_twice_is_refused():
    """generate(5, count=3) generated 5 and ignored count=3 without a word."""
    with pytest.raises(GraphError, match=r"generate\(5, count=3\): give the count once"):
        rs.StreamEnvironment().generate(5, count=3)
