"""Final values on the record API: ``reduce(fn, emit="final"[, combinable=True])`` and
``sum/min/max(column, emit="final")`` (no Ray).

The combiners before the shuffle (``LocalReduceOperator``, ``LocalFieldAggregateOperator``)
and the keyed halves must give what a plain Python loop gives, for any split of the input
into batches, Arrow (vectorized) or Python records, across a snapshot and restore, and
whole jobs at parallelism 1 and 2 (in process). A keyed operator that emitted its final
values must not emit them again after a restore from a checkpoint taken once it finished
(FLIP-147 final state).
"""

from __future__ import annotations

import time
from collections import namedtuple
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import raystream as rs
from raystream.checkpoint.coordinator import CheckpointConfig
from raystream.engine.config import JobConfig
from raystream.engine.errors import GraphError, JobFailed, UserCodeError
from raystream.engine.local_runtime import run_in_process
from raystream.engine.master import JobMaster
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch
from raystream.operators.keyed import AggregateOperator, ReduceOperator
from raystream.operators.keyed_final import (
    FieldAggregateOperator,
    LocalFieldAggregateOperator,
    LocalReduceOperator,
)
from raystream.operators.sinks import collected_records
from raystream.operators.testing import OperatorHarness

KEY = KeySelector("key")
FOLD = {"sum": lambda a, b: a + b, "min": min, "max": max}


def state_backend(kind: str) -> Any:
    """The keyed state backend by name: on RocksDB (a 16-entry read cache, so values reach
    RocksDB) the keyed halves keep their values in the keyed backend, not the operator."""
    if kind == "heap":
        return None
    pytest.importorskip("rocksdict")
    from raystream.checkpoint.backends import RocksDBStateBackend

    return RocksDBStateBackend(cache_size=16)


def reference(records: list[dict[str, Any]], how: str, column: str = "value") -> dict[Any, dict[str, Any]]:
    """The plain Python loop: per key, its first record with ``column`` folded in order."""
    out: dict[Any, dict[str, Any]] = {}
    for r in records:
        k = r["key"]
        if k in out:
            out[k] = {**out[k], column: FOLD[how](out[k][column], r[column])}
        else:
            out[k] = dict(r)
    return out


def typed(rows: list[dict[str, Any]] | dict[Any, dict[str, Any]]) -> list[tuple]:
    """Rows comparable exactly, value types included (1 and 1.0 differ)."""
    rows = list(rows.values()) if isinstance(rows, dict) else rows
    return sorted(tuple((k, type(v).__name__, v) for k, v in sorted(r.items())) for r in rows)


def as_arrow(rows: list[dict[str, Any]]) -> Batch:
    return Batch.of_arrow(Batch.of_records(rows).arrow())


# ---------------------------------------------------------------------------- operators
values = st.one_of(st.integers(-1000, 1000), st.integers(-1000, 1000).map(lambda i: i / 4))  # floats exact in sums
batches = st.lists(
    st.tuples(
        st.booleans(),  # as Arrow (vectorized combiner) or as Python records
        st.booleans(),  # this batch's values are floats
        st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(-1000, 1000)), min_size=1, max_size=40),
    ),
    min_size=1,
    max_size=8,
)


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
@settings(max_examples=60, deadline=None)
@given(data=batches, how=st.sampled_from(["sum", "min", "max"]), group=st.integers(1, 3), restore_after=st.integers(0, 8),
       held=st.integers(1, 30), barriers=st.sets(st.integers(0, 8), max_size=3))
def test_combiner_and_keyed_half_equal_a_python_loop(backend, data, how, group, restore_after, held, barriers):
    inputs, n = [], 0
    for arrow, floats, rows in data:
        recs = [{"key": k, "value": v / 4 if floats else v, "i": (n := n + 1)} for k, v in rows]
        inputs.append(as_arrow(recs) if arrow else Batch.of_records(recs))
    want = reference([r for b in inputs for r in b.records()], how)

    # the combiner holds the Arrow batches' partials (up to `held` rows plus one batch's) and
    # sends them merged before a barrier, before a Python batch's partials and at the end
    local = OperatorHarness(LocalFieldAggregateOperator(KEY, "value", how, max_held_rows=held))
    for j, b in enumerate(inputs):
        local.process(b)
        assert local.operator.held_rows <= held + len(b)
        if j in barriers:
            assert local.snapshot()["operator"] is None
            assert local.operator.held_rows == 0 and local.operator.held_keys == 0
    local.end_input()
    partials = local.output.batches
    for p in partials:  # one partial per key in every send
        keys = [r["key"] for r in p.records()]
        assert len(keys) == len(set(keys))
    assert sum(len(p) for p in partials) <= n
    # partials of several upstream batches reach the keyed half in one batch
    merged = [Batch.of_records([r for p in partials[i:i + group] for r in p.records()]) for i in range(0, len(partials), group)]
    keyed = OperatorHarness(FieldAggregateOperator(KEY, "value", how), state_backend=state_backend(backend))
    for i, b in enumerate(merged):
        if i == restore_after:
            keyed = OperatorHarness(FieldAggregateOperator(KEY, "value", how), restore=[keyed.snapshot()],
                                    state_backend=state_backend(backend))
        keyed.process(as_arrow(b.records()) if i % 2 else b)
    keyed.end_input()
    assert typed(keyed.records()) == typed(want)


def test_the_combiner_is_vectorized_for_a_numeric_column():
    rows = [{"key": k, "value": v, "ts": i} for i, (k, v) in enumerate([("a", 1), ("b", 2), ("a", 3), ("a", 4)])]
    local = OperatorHarness(LocalFieldAggregateOperator(KEY, "value", "sum"))
    local.process(as_arrow(rows))
    local.end_input()
    (out,) = local.output.batches
    assert out.is_arrow  # pyarrow did the work: no Python record was built
    assert sorted(out.records(), key=lambda r: r["key"]) == [{"key": "a", "value": 8, "ts": 0}, {"key": "b", "value": 2, "ts": 1}]


def test_int_sums_stay_exact_beyond_int64():
    big = 2**62
    rows = [{"key": "a", "value": big}, {"key": "a", "value": big}, {"key": "a", "value": big}]
    local = OperatorHarness(LocalFieldAggregateOperator(KEY, "value", "sum"))
    local.process(as_arrow(rows))
    local.end_input()
    keyed = OperatorHarness(FieldAggregateOperator(KEY, "value", "sum"))
    keyed.process(local.output.batches[0])
    keyed.end_input()
    assert keyed.records() == [{"key": "a", "value": 3 * big}]


def test_held_int_sums_that_could_overflow_int64_go_out_unmerged():
    big = 2**61
    local = OperatorHarness(LocalFieldAggregateOperator(KEY, "value", "sum"))
    for _ in range(3):  # each batch's sum fits int64, the three together do not
        local.process(as_arrow([{"key": "a", "value": big}, {"key": "a", "value": big}]))
    local.end_input()
    assert [len(b) for b in local.output.batches] == [1, 1, 1]
    keyed = OperatorHarness(FieldAggregateOperator(KEY, "value", "sum"))
    for b in local.output.batches:
        keyed.process(b)
    keyed.end_input()
    assert keyed.records() == [{"key": "a", "value": 6 * big}]


def test_record_partials_are_held_across_batches_and_each_kind_sends_the_other_first():
    local = OperatorHarness(LocalFieldAggregateOperator(KEY, "value", "sum"))
    local.process(Batch.of_records([{"key": "a", "value": 1, "i": 0}, {"key": "b", "value": 1, "i": 1}]))
    local.process(Batch.of_records([{"key": "a", "value": 2, "i": 2}]))
    assert local.output.batches == []  # folded on, held
    local.process(as_arrow([{"key": "a", "value": 4, "i": 3}]))  # the other kind: the records' partials go first
    assert [sorted(r.items()) for r in local.output.batches[0].records()] == [
        sorted({"key": "a", "value": 3, "i": 0}.items()), sorted({"key": "b", "value": 1, "i": 1}.items())]
    local.end_input()
    keyed = OperatorHarness(FieldAggregateOperator(KEY, "value", "sum"))
    for b in local.output.batches:
        keyed.process(b)
    keyed.end_input()
    assert sorted(keyed.records(), key=lambda r: r["key"]) == [{"key": "a", "value": 7, "i": 0}, {"key": "b", "value": 1, "i": 1}]


def test_a_python_batch_sends_the_held_partials_first():
    """A key's first record is the one of its first partial downstream: the held (Arrow)
    partials go out before the partials of a batch that takes the record loop."""
    local = OperatorHarness(LocalFieldAggregateOperator(KEY, "value", "sum"))
    local.process(as_arrow([{"key": "a", "value": 1, "i": 0}]))
    local.process(Batch.of_records([{"key": "a", "value": 2, "i": 1}]))
    local.end_input()
    keyed = OperatorHarness(FieldAggregateOperator(KEY, "value", "sum"))
    for b in local.output.batches:
        keyed.process(b)
    keyed.end_input()
    assert keyed.records() == [{"key": "a", "value": 3, "i": 0}]


def test_min_max_with_nan_follow_python():
    nan = float("nan")
    rows = [{"key": "a", "value": 1.0}, {"key": "a", "value": nan}, {"key": "a", "value": 0.5}]
    for how in ("min", "max"):
        local = OperatorHarness(LocalFieldAggregateOperator(KEY, "value", how))
        local.process(as_arrow(rows))
        local.end_input()
        keyed = OperatorHarness(FieldAggregateOperator(KEY, "value", how))
        keyed.process(local.output.batches[0])
        keyed.end_input()
        want = reference(rows, how)["a"]["value"]
        assert repr(keyed.records()[0]["value"]) == repr(want)


def test_tuples_and_named_tuples_by_index():
    Row = namedtuple("Row", "key value")
    tuples = [("a", 1), ("b", 5), ("a", 2)]
    for records, column in ((tuples, 1), (tuples, -1), ([Row(*t) for t in tuples], 1)):
        h = OperatorHarness(FieldAggregateOperator(KeySelector(0), column, "sum"))
        h.process(records)
        h.end_input()
        got = sorted(h.records())
        assert got == [("a", 3), ("b", 5)]
        assert type(got[0]) is type(records[0])


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "records"])
@pytest.mark.parametrize("operator", [LocalFieldAggregateOperator, FieldAggregateOperator])
def test_a_null_value_is_an_error_naming_the_record(arrow, operator):
    rows = [{"key": "a", "value": 1}, {"key": "a", "value": None}]
    h = OperatorHarness(operator(KEY, "value", "sum"))
    with pytest.raises(UserCodeError, match=r"sum\('value'\) of key 'a': the record has no value \(None\) in 'value'; filter or fill nulls") as err:
        h.process(as_arrow(rows) if arrow else rows)
    assert err.value.record == {"key": "a", "value": None}


def test_values_that_do_not_add_up_are_an_error_naming_the_record():
    h = OperatorHarness(LocalFieldAggregateOperator(KEY, "value", "sum"))
    with pytest.raises(UserCodeError, match=r"sum\('value'\) of key 'a': cannot fold 'x' \(str\) into 1 \(int\)") as err:
        h.process([{"key": "a", "value": 1}, {"key": "a", "value": "x"}])
    assert err.value.record == {"key": "a", "value": "x"}
    h = OperatorHarness(FieldAggregateOperator(KEY, "value", "max"))
    with pytest.raises(UserCodeError, match="has no field 'value'"):
        h.process([{"key": "a", "value": 1}, {"key": "a", "valu": 2}])
    h = OperatorHarness(FieldAggregateOperator(KeySelector(0), 0, "max"))
    with pytest.raises(UserCodeError, match="needs dict records"):
        h.process([[1, 2]])


def test_local_reduce_holds_one_partial_per_key_until_a_barrier_the_cap_or_the_end():
    h = OperatorHarness(LocalReduceOperator(KeySelector(0), lambda a, b: (a[0], a[1] + b[1]), max_held_keys=3))
    h.process([("a", 1), ("b", 2), ("a", 3)])
    h.process([("a", 4)])
    assert h.output.batches == []  # held: 2 keys
    assert h.snapshot()["operator"] is None  # sent before the barrier
    assert [sorted(b.records()) for b in h.output.batches] == [[("a", 8), ("b", 2)]]
    h.process([("c", 1), ("d", 1), ("e", 1), ("c", 1)])  # 3 keys: at the cap, held
    assert len(h.output.batches) == 1 and h.operator.held_keys == 3
    h.process([("f", 1)])  # 4 keys > 3: all sent
    assert sorted(h.output.batches[-1].records()) == [("c", 2), ("d", 1), ("e", 1), ("f", 1)]
    h.process([("a", 5)])
    h.end_input()
    assert h.output.batches[-1].records() == [("a", 5)] and h.operator.held_keys == 0


@pytest.mark.parametrize("make", [
    lambda: ReduceOperator(KEY, lambda a, b: {"key": a["key"], "value": a["value"] + b["value"]}, "final"),
    lambda: FieldAggregateOperator(KEY, "value", "sum"),
    lambda: AggregateOperator("key", {"value": ("value", "sum")}, "final"),
], ids=["reduce", "sum", "aggregate"])
@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
def test_values_emitted_at_end_of_input_are_not_in_the_final_state(make, backend):
    """FLIP-147: the state of a finished task stands in for it in later checkpoints; a
    restore from one must not emit the final values a second time."""
    h = OperatorHarness(make(), state_backend=state_backend(backend))
    h.process(as_arrow([{"key": "a", "value": 1}, {"key": "b", "value": 2}, {"key": "a", "value": 3}]))
    h.end_input()
    assert sorted((r["key"], r["value"]) for r in h.records()) == [("a", 4), ("b", 2)]
    restored = OperatorHarness(make(), restore=[h.snapshot()], state_backend=state_backend(backend))
    restored.end_input()
    assert restored.records() == []


# ---------------------------------------------------------------------------- the API
@pytest.mark.parametrize("build, chains", [
    (lambda k: k.sum("value", emit="final"), [["from_collection", "sum (local)"], ["sum", "collect"]]),
    (lambda k: k.min("value", emit="final"), [["from_collection", "min (local)"], ["min", "collect"]]),
    (lambda k: k.reduce(lambda a, b: a, emit="final", combinable=True),
     [["from_collection", "reduce (local)"], ["reduce", "collect"]]),
    (lambda k: k.reduce(lambda a, b: a, emit="final"), [["from_collection"], ["reduce", "collect"]]),
    (lambda k: k.max("value"), [["from_collection"], ["max", "collect"]]),
], ids=["sum", "min", "combinable-reduce", "reduce", "max-updates"])
def test_a_combiner_is_chained_before_the_shuffle(build, chains):
    env = rs.StreamEnvironment(parallelism=2)
    build(env.from_collection([{"key": "a", "value": 1}]).key_by("key")).collect()
    jg = env.get_job_graph()
    assert [[op["name"] for op in v.chain] for v in jg.vertices] == chains
    assert type(jg.vertices[0].outputs[0].partitioner).__name__ == "KeyGroupPartitioner"


def _unbounded(env: rs.StreamEnvironment) -> Any:
    return env.generate(lambda i: {"key": i % 3, "value": i}).map(lambda r: r).key_by("key")


@pytest.mark.parametrize("build, message", [
    (lambda env: env.from_collection([{"k": 1}]).key_by("k").sum("k", emit="last"),
     r"sum\(emit='last'\): emit must be 'updates' \(every update\) or 'final'"),
    (lambda env: env.from_collection([1]).key_by(lambda x: x).reduce(max, emit="Final"), r"reduce\(emit='Final'\)"),
    (lambda env: env.from_collection([1]).key_by(lambda x: x).reduce(max, combinable=True), "needs emit='final'"),
    (lambda env: env.from_collection([{"k": 1}]).key_by("k").min("v", emit="final"), r"min\('v'\): no column 'v'"),
    (lambda env: env.from_collection([(1, 2)]).key_by(0).max(1.5), "field name .* or a tuple index"),
    (lambda env: _unbounded(env).sum("value", emit="final"), r"sum\(emit='final'\) .* source 'generate' .* is unbounded"),
    (lambda env: _unbounded(env).reduce(max, emit="final", combinable=True), r"reduce\(emit='final'\) .* unbounded"),
    (lambda env: _unbounded(env).aggregate(n=("value", "count"), emit="final"), r"aggregate\(emit='final'\) .* unbounded"),
])
def test_bad_options_fail_when_the_graph_is_built(build, message):
    with pytest.raises(GraphError, match=message):
        build(rs.StreamEnvironment(parallelism=2))


def test_an_unbounded_stream_keeps_updates():
    _unbounded(rs.StreamEnvironment()).sum("value").collect()  # emit="updates": fine


def _events(n: int) -> list[dict[str, Any]]:
    return [{"key": f"k{(i * 7919) % 29:02d}", "value": (i * 31) % 1009 - 200, "i": i} for i in range(n)]


def _run(env: rs.StreamEnvironment, config: JobConfig | None = None, **kw: Any) -> list[dict[str, Any]]:
    result = run_in_process(env.get_job_graph(), config or JobConfig(name="keyed-final"), timeout_s=120, **kw)
    return [r for batches in result["results"].values() for r in collected_records(batches)]


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("source", ["parquet", "records"])
def test_jobs_equal_a_python_loop(tmp_path, parallelism, source):
    data = _events(6000)
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(data), path, row_group_size=700)
    env = rs.StreamEnvironment(parallelism=parallelism, batch_size=500)
    # one source subtask: every key's records stay in order, so "the key's first record" is defined
    # (source and map: both at p=1, or the map's input interleaves two source subtasks)
    stream = (env.read_parquet(str(path), batch_size=500).set_parallelism(1) if source == "parquet" else
              env.from_collection(data).set_parallelism(1).map(dict).set_parallelism(1))
    keyed = stream.key_by("key")
    for how in ("sum", "min", "max"):
        getattr(keyed, how)("value", emit="final").map(lambda r, how=how: (how, r)).collect()
    add = lambda a, b: {**a, "value": a["value"] + b["value"]}  # noqa: E731
    keyed.reduce(add, emit="final").map(lambda r: ("reduce", r)).collect()
    keyed.reduce(add, emit="final", combinable=True).map(lambda r: ("combined", r)).collect()
    got: dict[str, list] = {}
    for tag, r in _run(env):
        got.setdefault(tag, []).append(r)
    for tag, how in (("sum", "sum"), ("min", "min"), ("max", "max"), ("reduce", "sum"), ("combined", "sum")):
        assert typed(got[tag]) == typed(reference(data, how)), tag


def test_updates_stay_rolling_values_per_record():
    data = _events(500)
    env = rs.StreamEnvironment(parallelism=2)
    keyed = env.from_collection(data).set_parallelism(1).key_by("key")
    for how in ("sum", "min", "max"):
        getattr(keyed, how)("value").map(lambda r, how=how: (how, r)).collect()
    keyed.map(lambda r: (r["key"], r["value"])).key_by(0).sum(-1).map(lambda t: ("tuple", t)).collect()
    got: dict[str, list] = {}
    for tag, r in _run(env):
        got.setdefault(tag, []).append(r)
    for how in ("sum", "min", "max"):
        running: dict[str, dict] = {}
        want = []
        for r in data:
            k = r["key"]
            running[k] = {**running[k], "value": FOLD[how](running[k]["value"], r["value"])} if k in running else r
            want.append(running[k])
        assert typed(got[how]) == typed(want), how
    totals: dict[str, int] = {}
    want_tuples = []
    for r in data:
        totals[r["key"]] = totals.get(r["key"], 0) + r["value"]
        want_tuples.append((r["key"], totals[r["key"]]))
    assert sorted(got["tuple"]) == sorted(want_tuples)


# ---------------------------------------------------------------------------- exactly once
def _final_then_slow(env: rs.StreamEnvironment, n_slow: int) -> None:
    """Final values of a small bounded input, unioned with a slow stream that keeps the
    sink running (and checkpointing) long after the keyed operators finished."""
    keyed = env.from_collection(_events(3000)).key_by("key")
    sums = keyed.sum("value", emit="final").map(lambda r: ("sum", r["key"], r["value"]))
    reduced = keyed.reduce(lambda a, b: {**a, "value": a["value"] + b["value"]}, emit="final", combinable=True)
    slow = env.generate(lambda i: ("slow", i, 0), count=n_slow, rate=2000, batch_size=20)
    sums.union(reduced.map(lambda r: ("reduce", r["key"], r["value"])), slow).collect()


def test_final_values_of_finished_operators_are_not_emitted_again_after_a_restore(tmp_path):
    env = rs.StreamEnvironment(parallelism=2, flush_ms=5)
    _final_then_slow(env, n_slow=4000)
    graph = env.get_job_graph()
    finals = {v.id for v in graph.vertices if v.chain[0]["name"] in ("sum", "reduce")}
    config = JobConfig(name="final-after-finish", checkpoint=CheckpointConfig(50, checkpoint_dir=str(tmp_path)),
                       restart=rs.RestartStrategy.fixed_delay(3, 0))
    killed = []

    def drill(master: JobMaster, runtime: Any) -> None:
        deadline = time.monotonic() + 60

        def wait(condition: Any) -> None:
            while not condition() and time.monotonic() < deadline:
                time.sleep(0.005)  # poll the condition

        wait(lambda: master.coordinator is not None
             and {v for v, _ in master.coordinator.finished} >= finals)
        done = master.coordinator.completed_count
        wait(lambda: master.coordinator.completed_count >= done + 1)  # a checkpoint with their final state
        victim = next(iter(runtime.executors.values()))
        runtime.kill_executor(victim)
        killed.append(victim.name)

    result = run_in_process(graph, config, timeout_s=120, on_start=drill)
    rows = [tuple(r) for batches in result["results"].values() for r in collected_records(batches)]
    sums = {k: r["value"] for k, r in reference(_events(3000), "sum").items()}
    assert killed and result["metrics"]["restarts"] == 1
    assert sorted(r for r in rows if r[0] == "sum") == sorted(("sum", k, v) for k, v in sums.items())
    assert sorted(r for r in rows if r[0] == "reduce") == sorted(("reduce", k, v) for k, v in sums.items())
    assert sorted(r[1] for r in rows if r[0] == "slow") == list(range(4000))


def test_a_failing_job_names_the_operator_and_the_record():
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection([{"key": "a", "value": 1}, {"key": "a", "value": None}]).key_by("key").sum("value", emit="final").collect()
    with pytest.raises(JobFailed, match=r"(?s)operator 'sum \(local\)' .*None.*while processing record: \{'key': 'a', 'value': None\}"):
        _run(env)
