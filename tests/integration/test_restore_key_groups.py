"""A restored subtask receives only its key groups of the state operators keep themselves.

Operators that keep per-key state outside the keyed backend (the heap ``reduce``, the final
aggregates, windows, timers, interval-join buffers) snapshot it per key group. A restore used
to hand every new subtask the snapshots of *all* old subtasks whole, so each restored task
unpickled the whole job's state and the master shipped it p times. Now that state is a
``KeyGroupedState`` and the restore plan cuts it to each subtask's key groups.

For each operator family, in process (the job master and task code of a cluster, without Ray):
a job at parallelism 2 is stopped with a savepoint halfway through its input, then restored at
parallelism 3 and at 1. The two runs' output equals a failure-free run's, and the operator of
every restored subtask received (``restore_state``, seen through a hook of the test) only
key groups of its own range.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.engine.config import JobConfig
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.local_runtime import run_in_process
from raystream.engine.operator import KeyGroupedState, StreamOperator
from raystream.operators.join_operators import IntervalJoinOperator
from raystream.operators.keyed import AggregateOperator, KeyedProcessOperator, ReduceOperator
from raystream.operators.keyed_final import FieldAggregateOperator
from raystream.operators.sinks import collected_records
from raystream.operators.time import WatermarkStrategy
from raystream.operators.two_input import KeyedCoProcessOperator
from raystream.operators.window_fast import VectorWindowAggregateOperator
from raystream.operators.window_operator import WindowOperator
from raystream.operators.windows import TumblingEventTimeWindows
from tests.integration.gated import generate, wait_until_paused

N = 2_000  # records per source; each source pauses at N // 2 until the gate opens
KEYS = 53


def record(i: int) -> dict:
    return {"key": f"k{(i * 7919) % KEYS:02d}", "value": i % 101, "ts": 10 * i, "i": i}


def source(env: rs.StreamEnvironment, gate: str | None, tag: str = "source", event_time: bool = False) -> Any:
    # one source subtask: every run cuts the same batches and sees the same watermarks
    stream = generate(env, record, N, None, 100, gate=gate, tag=tag).set_parallelism(1)
    if event_time:
        stream = stream.assign_timestamps_and_watermarks(
            WatermarkStrategy.for_bounded_out_of_orderness(0).with_timestamp_column("ts"))
    return stream


class TimerPerBucket(rs.KeyedProcessFunction):
    """Counts the records of each key; an event-time timer per key and 500 ms bucket emits
    the bucket's end (a timer lost in a restore never fires: its output goes missing)."""

    def open(self, ctx: Any) -> None:
        self.n = ctx.get_state(ValueStateDescriptor("n", default=0))

    def process_element(self, r: dict, ctx: Any) -> Any:
        self.n.update(self.n.value() + 1)
        ctx.timer_service().register_event_time_timer((r["ts"] // 500 + 1) * 500)
        return ()

    def on_timer(self, time: int, ctx: Any) -> Any:
        yield ("timer", ctx.get_current_key(), time)


class CoTimerPerBucket(rs.KeyedCoProcessFunction):
    """Both inputs register an event-time timer per key and 500 ms bucket (per input)."""

    def process_element1(self, r: dict, ctx: Any) -> Any:
        ctx.timer_service().register_event_time_timer((r["ts"] // 500 + 1) * 500)
        return ()

    def process_element2(self, r: dict, ctx: Any) -> Any:
        ctx.timer_service().register_event_time_timer((r["ts"] // 500 + 1) * 500 + 1)
        return ()

    def on_timer(self, time: int, ctx: Any) -> Any:
        yield ("co-timer", ctx.get_current_key(), time)


def reduce_job(env: rs.StreamEnvironment, gate: str | None) -> None:
    (source(env, gate).key_by("key")
     .reduce(lambda a, b: {**b, "value": a["value"] + b["value"]}).uid("op")
     .map(lambda r: (r["key"], r["value"], r["i"])).collect())


def window_job(env: rs.StreamEnvironment, gate: str | None) -> None:
    (source(env, gate, event_time=True).key_by("key").window(TumblingEventTimeWindows.of(700))
     .reduce(lambda a, b: {**b, "value": a["value"] + b["value"]}).uid("op")
     .map(lambda r: (r["key"], r["value"], r["i"])).collect())


def vector_window_job(env: rs.StreamEnvironment, gate: str | None) -> None:
    (source(env, gate, event_time=True).key_by("key").window(TumblingEventTimeWindows.of(700))
     .aggregate(n=("value", "count"), total=("value", "sum"), combine=False).uid("op")
     .map(lambda r: (r["key"], r["window_start"], r["n"], r["total"])).collect())


def timers_job(env: rs.StreamEnvironment, gate: str | None) -> None:
    source(env, gate, event_time=True).key_by("key").process(TimerPerBucket()).uid("op").collect()


def field_final_job(env: rs.StreamEnvironment, gate: str | None) -> None:
    (source(env, gate).key_by("key").sum("value", emit="final").uid("op")
     .map(lambda r: (r["key"], r["value"])).collect())


def aggregate_final_job(env: rs.StreamEnvironment, gate: str | None) -> None:
    (source(env, gate).key_by("key").aggregate(total=("value", "sum"), n=("value", "count"), emit="final").uid("op")
     .map(lambda r: (r["key"], r["total"], r["n"])).collect())


def interval_join_job(env: rs.StreamEnvironment, gate: str | None) -> None:
    left = source(env, gate, "left", event_time=True).key_by("key")
    right = source(env, gate, "right", event_time=True).key_by("key")
    (left.interval_join(right).between(-300, 300).process(lambda a, b: (a["key"], a["i"], b["i"])).uid("op")
     .collect())


def co_process_timers_job(env: rs.StreamEnvironment, gate: str | None) -> None:
    left = source(env, gate, "left", event_time=True)
    right = source(env, gate, "right", event_time=True)
    left.connect(right).key_by("key", "key").process(CoTimerPerBucket()).uid("op").collect()


#: family -> (the job, the operator class that keeps the state, source subtasks that pause)
FAMILIES: dict[str, tuple[Callable[[rs.StreamEnvironment, str | None], None], type[StreamOperator], int]] = {
    "reduce": (reduce_job, ReduceOperator, 1),
    "window": (window_job, WindowOperator, 1),
    "vector_window": (vector_window_job, VectorWindowAggregateOperator, 1),
    "keyed_process_timers": (timers_job, KeyedProcessOperator, 1),
    "sum_final": (field_final_job, FieldAggregateOperator, 1),
    "aggregate_final": (aggregate_final_job, AggregateOperator, 1),
    "interval_join": (interval_join_job, IntervalJoinOperator, 2),
    "keyed_co_process_timers": (co_process_timers_job, KeyedCoProcessOperator, 2),
}


def make_env(parallelism: int, tmp: str) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=10)
    env.enable_checkpointing(3_600_000, checkpoint_dir=os.path.join(tmp, "chk"))  # (savepoints only)
    return env


def rows(result: dict) -> list[Any]:
    return [r for batches in result["results"].values() for r in collected_records(batches)]


def run(job: Callable[[rs.StreamEnvironment, str | None], None], parallelism: int, tmp: str, gate: str | None = None,
        from_savepoint: str | None = None, on_start: Callable[[Any, Any], None] | None = None) -> dict:
    env = make_env(parallelism, tmp)
    job(env, gate)
    config = JobConfig(name=f"restore-key-groups-p{parallelism}", checkpoint=env.checkpoint_config,
                       from_savepoint=from_savepoint)
    return run_in_process(env.get_job_graph(), config, timeout_s=300, on_start=on_start)


def markers(state: Any) -> list[KeyGroupedState]:
    """The KeyGroupedStates of an operator state (at the top or inside plain dicts)."""
    if isinstance(state, KeyGroupedState):
        return [state]
    if type(state) is dict:
        return [m for v in state.values() for m in markers(v)]
    return []


@pytest.fixture(scope="module")
def savepoints(tmp_path_factory) -> Callable[[str], tuple[str, list[Any], str]]:
    """family -> (a savepoint of its job at parallelism 2 halfway through, that run's output,
    the opened gate), taken once per family."""
    made: dict[str, tuple[str, list[Any], str]] = {}

    def savepoint(family: str) -> tuple[str, list[Any], str]:
        if family not in made:
            job, _cls, sources = FAMILIES[family]
            tmp = str(tmp_path_factory.mktemp(family))
            gate, path = os.path.join(tmp, "gate"), os.path.join(tmp, "sp")

            def stop_halfway(master: Any, runtime: Any) -> None:
                wait_until_paused(gate, sources)
                asyncio.run_coroutine_threadsafe(master.stop_with_savepoint(path), runtime.loop).result(120)

            first = run(job, 2, tmp, gate, on_start=stop_halfway)
            assert first["savepoint"] == path
            open(gate, "w").close()  # the restored runs read on
            made[family] = (path, rows(first), gate)
        return made[family]

    return savepoint


@pytest.mark.parametrize("new_parallelism", [3, 1])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_restored_subtasks_get_only_their_key_groups_and_the_output_of_a_failure_free_run(
        family, new_parallelism, savepoints, tmp_path, monkeypatch):
    job, cls, _sources = FAMILIES[family]
    reference = sorted(rows(run(job, 1, str(tmp_path / "reference"))))
    path, before, gate = savepoints(family)

    received: list[tuple[KeyGroupRange, list[Any]]] = []  # (a restored subtask's key groups, its states)
    restore_state, open_ = cls.restore_state, cls.open

    def recording_restore(self: Any, states: list[Any]) -> None:
        self.__dict__["_test_restored"] = states
        restore_state(self, states)

    def recording_open(self: Any, ctx: Any, output: Any) -> None:
        if "_test_restored" in self.__dict__:
            received.append((ctx.key_group_range, self.__dict__.pop("_test_restored")))
        open_(self, ctx, output)

    monkeypatch.setattr(cls, "restore_state", recording_restore)
    monkeypatch.setattr(cls, "open", recording_open)
    after = rows(run(job, new_parallelism, str(tmp_path / "restored"), gate, from_savepoint=path))

    assert sorted(before + after) == reference, f"{family}: the restored run lost or repeated output"
    assert len(received) == new_parallelism
    held: set[int] = set()
    for rng, states in received:
        assert len(states) == 2, "one operator state per old subtask"
        found = [m for st in states for m in markers(st)]
        assert found, f"{family}: the operator's snapshot has no KeyGroupedState"
        outside = sorted(kg for m in found for kg in m if kg not in rng)
        assert not outside, f"{family}: the subtask of key groups {rng} received key groups {outside} of others"
        held.update(kg for m in found for kg in m)
    assert held, f"{family}: the savepoint held no per-key state (taken too early to test anything)"
