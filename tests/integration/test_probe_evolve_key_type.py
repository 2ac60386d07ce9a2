"""A job upgraded through a savepoint whose ``key_by`` now gives keys of another type (str
names -> int ids) fails naming both key types, the operator and the record, instead of
counting every key from 1 again (before 2026-12-07, on both backends: silent state loss);
the same job restored unchanged at another parallelism continues every count (session Ray)."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.engine.errors import JobFailed
from tests.waiting import wait_for

N = 3000


def record(i: int) -> dict:
    return {"name": f"user-{i % 7}", "id": i % 7}


class Count(rs.KeyedProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        yield (value["id"], self.count.value())


def job(parallelism: int, key: str, backend: str, chk: str) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=10)
    env.enable_checkpointing(100, checkpoint_dir=chk)
    env.set_restart_strategy(rs.RestartStrategy.none())
    if backend == "rocksdb":
        env.set_state_backend("rocksdb")
    (env.generate(record, count=N, rate=3000).uid("src")
        .key_by(key).process(Count()).uid("count").collect().uid("out"))
    return env


def rows(result) -> list[tuple]:
    return [tuple(r.values()) for b in result.sink_results.values() for x in b for r in x.to_pylist()]


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
def test_a_changed_key_type_fails_naming_both_types_and_an_unchanged_job_continues(backend, tmp_path):
    if backend == "rocksdb":
        pytest.importorskip("rocksdict")
    client = job(1, "name", backend, str(tmp_path / "chk1")).execute_async("evolve-key-type")
    # the savepoint must hold keyed state: a checkpoint can complete before the first record
    # (under load), and a savepoint without keys has no key type to refuse
    wait_for(lambda: client.metrics().get("operators", {}).get("collect", {}).get("records_in", 0) > 0,
             "the keyed function's first results at the sink")
    savepoint = client.stop_with_savepoint(str(tmp_path / "sp"))
    first = rows(client.wait())
    with pytest.raises(JobFailed) as err:
        job(2, "id", backend, str(tmp_path / "chk2")).execute("evolve-key-type", from_savepoint=savepoint)
    message = str(err.value)
    assert "kept under keys of type ['str']" in message and "of type 'number'" in message
    assert "while processing record" in message
    rest = rows(job(2, "name", backend, str(tmp_path / "chk3")).execute("evolve-key-type",
                                                                       from_savepoint=savepoint))
    expected = sorted((i, c) for i in range(7) for c in range(1, len(range(i, N, 7)) + 1))
    assert sorted(first + rest) == expected
