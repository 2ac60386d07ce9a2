"""Windows, joins and co-process timers with their state in RocksDB, on Ray (issue 16).

One job over two generated, event-timed streams: session windows, sliding windows with a
ProcessWindowFunction, a window co-group, an interval join and a keyed co-process function
with event-time timers (per-bucket map state). On RocksDB all of their per-key state and
timers are in the keyed backend. Checked against a failure-free run on the heap backend:

* killed task actors (1-2, random) on RocksDB: exactly the failure-free output;
* a savepoint of the job at parallelism 2 (on RocksDB, or on the heap backend: switching
  backends) restored on RocksDB at parallelism 3: the two runs' outputs together are the
  failure-free output.
"""

from __future__ import annotations

from collections import Counter

import pytest

import raystream as rs
from raystream.checkpoint import MapStateDescriptor
from raystream.operators.sinks import collected_records
from raystream.operators.time import WatermarkStrategy
from raystream.operators.windows import (
    EventTimeSessionWindows,
    ProcessWindowFunction,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)
from tests.integration import gated
from tests.integration.test_fault_tolerance import kill_tasks, make_env
from tests.integration.test_rocksdb_operator_state import _stop_with_savepoint

pytest.importorskip("rocksdict")

N = 12_000
RATE = 5_000  # records/s per stream: the killed job runs ~2.5 s
T0 = 1_000_000


def event_ts(i: int) -> int:
    """1 ms apart, with a 300 ms pause every 1,000 records (sessions of gap 100 end there)."""
    return T0 + i + 300 * (i // 1000)


def left(i: int) -> dict:
    return {"key": f"k{(i * 7919) % 23:02d}", "i": i, "ts": event_ts(i)}


def right(i: int) -> dict:
    return {"key": f"k{(i * 104729) % 23:02d}", "i": i, "ts": event_ts(i)}


class Span(ProcessWindowFunction):
    def process(self, key, context, elements):
        items = list(elements)
        yield ("sliding", key, context.window.start, len(items), sum(r["i"] for r in items))


class BucketCounts(rs.KeyedCoProcessFunction):
    """Per key and 250 ms bucket of event time: records of each input, reported by an
    event-time timer at the bucket's end."""

    def open(self, ctx):
        self.buckets = ctx.get_state(MapStateDescriptor("buckets"))

    def _count(self, ctx, side: int) -> None:
        end = ctx.timestamp - ctx.timestamp % 250 + 249
        counts = list(self.buckets.get(end) or (0, 0))
        counts[side] += 1
        self.buckets.put(end, tuple(counts))
        ctx.timer_service().register_event_time_timer(end)

    def process_element1(self, value, ctx):
        self._count(ctx, 0)

    def process_element2(self, value, ctx):
        self._count(ctx, 1)

    def on_timer(self, timestamp, ctx):
        counts = self.buckets.get(timestamp)
        self.buckets.remove(timestamp)
        yield ("co", ctx.get_current_key(), timestamp, *counts)


def build(env: rs.StreamEnvironment, rate: float | None = RATE, gate: str | None = None) -> None:
    """The job; with ``gate``, both sources pause halfway until that file exists."""
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    a = gated.generate(env, left, N, rate, 200, gate, "left").uid("left").assign_timestamps_and_watermarks(strategy)
    b = gated.generate(env, right, N, rate, 200, gate, "right").uid("right").assign_timestamps_and_watermarks(strategy)
    ka, kb = a.key_by("key"), b.key_by("key")
    (ka.window(EventTimeSessionWindows.with_gap(100))
     .reduce(lambda x, y: {"key": x["key"], "i": x["i"] + y["i"], "ts": max(x["ts"], y["ts"]), "n": x.get("n", 1) + y.get("n", 1)})
     .uid("sessions").map(lambda r: ("session", r["key"], r["ts"], r.get("n", 1), r["i"])).collect())
    ka.window(SlidingEventTimeWindows.of(400, 200)).process(Span()).uid("sliding").collect()
    (a.co_group(b).where("key").equal_to("key").window(TumblingEventTimeWindows.of(500))
     .apply(lambda key, ls, rs_: [("cogroup", key, len(ls), len(rs_), sum(r["i"] for r in ls + rs_))]).uid("cogroup")
     .collect())
    (ka.interval_join(kb).between(-3, 3).process(lambda x, y: ("join", x["i"], y["i"])).uid("join").collect())
    a.connect(b).key_by("key", "key").process(BucketCounts()).uid("co").collect()


def outputs(result: rs.JobResult) -> list:
    return sorted(tuple(r) for batches in result.sink_results.values() for r in collected_records(batches))


def diff(got: list, want: list) -> str:
    missing = sorted((Counter(want) - Counter(got)).elements())
    extra = sorted((Counter(got) - Counter(want)).elements())
    return f"{len(missing)} missing {missing[:10]}, {len(extra)} extra {extra[:10]}"


@pytest.fixture(scope="module")
def reference() -> list:
    """The failure-free output (heap backend, no rate limit)."""
    env = rs.StreamEnvironment(parallelism=2)
    build(env, rate=None)
    got = outputs(env.execute("rocksdb-windows-reference"))
    kinds = Counter(r[0] for r in got)
    assert set(kinds) == {"session", "sliding", "cogroup", "join", "co"} and kinds["join"] > 1000, kinds
    return got


@pytest.mark.parametrize("kills,seed", [(1, 2), (2, 9)])
def test_windows_and_joins_on_rocksdb_are_exactly_once_across_kills(reference, tmp_path, kills, seed):
    env = make_env(2, tmp_path)
    env.set_state_backend("rocksdb")
    build(env)
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    client = env.execute_async("rocksdb-windows-kills")
    killed = kill_tasks(client, parallelisms, kills, seed)
    result = client.wait()
    assert killed, "the job ended before any task could be killed"
    assert result.metrics["restarts"] >= 1 and result.checkpoints["completed"] >= 1
    got = outputs(result)
    assert got == reference, f"killed {killed}: {diff(got, reference)}"


@pytest.mark.parametrize("first", ["rocksdb", "heap"])
def test_windows_and_joins_rescale_2_to_3_on_rocksdb_from_a_savepoint(reference, tmp_path, first):
    got: list = []
    savepoint = None
    gate = str(tmp_path / "gate")
    for step, (parallelism, backend) in enumerate(((2, first), (3, "rocksdb"))):
        env = make_env(parallelism, tmp_path / f"run{step}")
        env.set_state_backend(backend)
        # (no rate: the gate keeps the first run going until its savepoint; the rate is no state)
        build(env, rate=None, gate=gate if step == 0 else None)
        client = env.execute_async(f"rocksdb-windows-rescale-{step}", from_savepoint=savepoint)
        if step == 0:  # both sources (2 subtasks each) paused halfway: the savepoint is mid-run
            gated.wait_until_paused(gate, 4)
            savepoint = _stop_with_savepoint(client, str(tmp_path / "sp"))
        result = client.wait()
        out = outputs(result)
        if step == 0:
            assert 0 < len(out) < len(reference), "the savepoint should be taken mid-run"
        got.extend(out)
    got.sort()
    assert got == reference, diff(got, reference)
