"""Switching a job between the RocksDB and the heap state backend through savepoints, on Ray,
rescaling at each switch: RocksDB (p=2) -> heap (p=3) -> RocksDB (p=1). A KeyedProcessFunction
with every state kind (value, list, map, reducing, aggregating, a TTL value) and event-time
timers, and the record-API reduce: the union of the three runs' output equals the failure-free
output (the heap runs get the RocksDB state, timers and reduce values included)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint import (
    AggregateFunction,
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)
from raystream.operators.sinks import collected_records
from raystream.operators.time import WatermarkStrategy
from tests.integration import test_fault_tolerance as reduce_job

pytest.importorskip("rocksdict")
pytestmark = pytest.mark.usefixtures("ray_session")

N = 9_000
RATE = 1_500  # records/s: ~6 s per run, time for a savepoint while it runs
T0 = 1_000_000
TIMEOUT = 5_000
STEPS = ((2, "rocksdb"), (3, "heap"), (1, "rocksdb"))


def record(i: int) -> dict:
    return {"key": f"k{(i * 7919) % 29:02d}", "value": i % 101, "ts": T0 + i, "i": i}


class Avg(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + value, acc[1] + 1)

    def get_result(self, acc):
        return acc[0] / acc[1]

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


class AllStates(rs.KeyedProcessFunction):
    """Per record: the key's running total, last three values, count per value % 3, max,
    average and record count (every state kind, the count with a TTL); per key and 250 ms
    bucket of event time: the bucket's sum, emitted by an event-time timer; per record a
    timeout timer 5 s of event time later, registered once (so a timer lost in a switch is
    never registered again: its output goes missing)."""

    def open(self, ctx: Any) -> None:
        self.total = ctx.get_state(ValueStateDescriptor("total", default=0))
        self.last = ctx.get_state(ListStateDescriptor("last"))
        self.by_mod = ctx.get_state(MapStateDescriptor("by_mod"))
        self.max = ctx.get_state(ReducingStateDescriptor("max", max))
        self.avg = ctx.get_state(AggregatingStateDescriptor("avg", Avg()))
        self.seen = ctx.get_state(ValueStateDescriptor("seen", default=0, ttl=StateTtlConfig(3_600_000)))
        self.buckets = ctx.get_state(MapStateDescriptor("buckets"))

    def process_element(self, r: dict, ctx: Any) -> Any:
        v = r["value"]
        total = self.total.value() + v
        self.total.update(total)
        self.last.update((list(self.last.get()) + [v])[-3:])
        self.by_mod.put(v % 3, (self.by_mod.get(v % 3) or 0) + 1)
        self.max.add(v)
        self.avg.add(v)
        self.seen.update(self.seen.value() + 1)
        end = ctx.timestamp - ctx.timestamp % 250 + 249
        self.buckets.put(end, (self.buckets.get(end) or 0) + v)
        ctx.timer_service().register_event_time_timer(end)
        if (ctx.timestamp + TIMEOUT) % 250 != 249:  # (never on a bucket's end)
            ctx.timer_service().register_event_time_timer(ctx.timestamp + TIMEOUT)
        yield ("rec", r["i"], total, tuple(self.last.get()), tuple(sorted(self.by_mod.items())), self.max.get(),
               round(self.avg.get(), 9), self.seen.value())

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        if timestamp % 250 != 249:
            yield ("timeout", ctx.get_current_key(), timestamp)
            return
        total = self.buckets.get(timestamp)
        self.buckets.remove(timestamp)
        yield ("timer", ctx.get_current_key(), timestamp, total)


def all_states_reference() -> list:
    keys: dict[str, dict] = {}
    buckets: dict = {}
    out = []
    for i in range(N):
        r = record(i)
        s = keys.setdefault(r["key"], {"total": 0, "last": [], "mod": {}, "max": None, "sum": 0, "n": 0})
        v = r["value"]
        s["total"] += v
        s["last"] = (s["last"] + [v])[-3:]
        s["mod"][v % 3] = s["mod"].get(v % 3, 0) + 1
        s["max"] = v if s["max"] is None else max(s["max"], v)
        s["sum"] += v
        s["n"] += 1
        out.append(("rec", i, s["total"], tuple(s["last"]), tuple(sorted(s["mod"].items())), s["max"],
                    round(s["sum"] / s["n"], 9), s["n"]))
        end = r["ts"] - r["ts"] % 250 + 249
        buckets[(r["key"], end)] = buckets.get((r["key"], end), 0) + v
        if (r["ts"] + TIMEOUT) % 250 != 249:
            out.append(("timeout", r["key"], r["ts"] + TIMEOUT))
    out += [("timer", k, t, total) for (k, t), total in buckets.items()]
    return sorted(out)


def reduce_reference() -> list:
    totals: dict[str, int] = {}
    out = []
    for i in range(reduce_job.N):
        r = reduce_job.record(i)
        totals[r["key"]] = totals.get(r["key"], 0) + r["value"]
        out.append((r["key"], totals[r["key"]], i))
    return sorted(out)


def build_all_states(env: rs.StreamEnvironment, rate: float | None = RATE) -> None:
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    (env.generate(record, count=N, rate=rate, batch_size=150).set_parallelism(1).uid("source")
     .assign_timestamps_and_watermarks(strategy)
     .key_by("key").process(AllStates()).uid("all-states").collect())


def diff(got: list, want: list) -> str:
    missing = sorted((Counter(want) - Counter(got)).elements())
    extra = sorted((Counter(got) - Counter(want)).elements())
    return f"{len(missing)} missing {missing[:5]}, {len(extra)} extra {extra[:5]}"


@pytest.mark.parametrize("job", ["all-states", "reduce"])
def test_rocksdb_to_heap_to_rocksdb_through_savepoints_while_rescaling(tmp_path, job):
    got: list = []
    savepoint = None
    for step, (parallelism, backend) in enumerate(STEPS):
        env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=20)
        env.enable_checkpointing(150, checkpoint_dir=str(tmp_path / f"chk{step}"))
        env.set_state_backend(backend)
        last = step == len(STEPS) - 1
        # the rate only keeps the first runs going until their savepoint; the last one runs
        # the rest at full speed (the same restore, timers and output; rate is no state)
        rate = None if last else (reduce_job.RATE if job == "reduce" else RATE)
        if job == "reduce":
            reduce_job.build(env, rate=rate)
        else:
            build_all_states(env, rate)
        client = env.execute_async(f"switch-back-{job}-{step}", from_savepoint=savepoint)
        if not last:
            deadline = time.monotonic() + 60
            while (client.info().get("checkpoints") or {}).get("completed", 0) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)  # a condition: the job is running and checkpointing
            savepoint = client.stop_with_savepoint(str(tmp_path / f"sp-{step}"))
        result = client.wait()
        got.extend(tuple(r) for b in result.sink_results.values() for r in collected_records(b))
    want = reduce_reference() if job == "reduce" else all_states_reference()
    got = sorted(got)
    assert got == want, diff(got, want)
