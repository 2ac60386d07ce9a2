"""Exactly once for event time: timers and open windows survive killed tasks.

A rate-limited generated stream with event timestamps feeds a tumbling-window aggregate
(record API: an AggregateFunction) and a KeyedProcessFunction with event-time timers;
checkpoints every 150 ms; 1-2 random task actors are killed while the job runs. The sorted
output must equal a failure-free run's.
"""

from __future__ import annotations

from collections import Counter

import pytest

import raystream as rs
from raystream.checkpoint import AggregateFunction, ValueStateDescriptor
from raystream.operators.sinks import collected_records
from raystream.operators.time import WatermarkStrategy
from raystream.operators.windows import TumblingEventTimeWindows
from tests.integration.test_fault_tolerance import kill_tasks

N = 24_000
RATE = 8_000  # records/s over both source subtasks: ~3 s of processing time
T0 = 1_000_000


def record(i: int) -> dict:
    return {"key": f"k{(i * 7919) % 23:02d}", "value": i % 101, "ts": T0 + i}


class CountSum(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + 1, acc[1] + value["value"])

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


class BucketTotals(rs.KeyedProcessFunction):
    """Per key and 250 ms bucket of event time: the sum of values, emitted by an event-time
    timer at the bucket's end (state: a dict bucket end -> sum)."""

    def open(self, ctx):
        self.pending = ctx.get_state(ValueStateDescriptor("pending", default=None))

    def process_element(self, r, ctx):
        end = ctx.timestamp - ctx.timestamp % 250 + 249
        pending = dict(self.pending.value() or {})
        pending[end] = pending.get(end, 0) + r["value"]
        self.pending.update(pending)
        ctx.timer_service().register_event_time_timer(end)

    def on_timer(self, timestamp, ctx):
        pending = dict(self.pending.value() or {})
        total = pending.pop(timestamp)
        self.pending.update(pending)
        yield ("timer", ctx.get_current_key(), timestamp, total)


def build(env: rs.StreamEnvironment, rate: float | None = RATE) -> None:
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    src = env.generate(record, count=N, rate=rate, batch_size=200).uid("source").assign_timestamps_and_watermarks(strategy)
    keyed = src.key_by("key")
    (keyed.window(TumblingEventTimeWindows.of(500)).aggregate(CountSum()).uid("window")
     .map(lambda acc: ("window", acc[0], acc[1])).collect())
    keyed.process(BucketTotals()).uid("timers").collect()


def expected() -> list:
    """The failure-free output, computed directly (and checked against a real run below)."""
    windows: dict = {}
    buckets: dict = {}
    for i in range(N):
        r = record(i)
        w = windows.setdefault((r["key"], r["ts"] // 500), [0, 0])
        w[0] += 1
        w[1] += r["value"]
        b = (r["key"], r["ts"] - r["ts"] % 250 + 249)
        buckets[b] = buckets.get(b, 0) + r["value"]
    out = [("window", c, s) for c, s in windows.values()]
    out += [("timer", k, t, s) for (k, t), s in buckets.items()]
    return sorted(out)


def outputs(result: rs.JobResult) -> list:
    return sorted(r for batches in result.sink_results.values() for r in collected_records(batches))


@pytest.fixture(scope="module")
def reference():
    env = rs.StreamEnvironment(parallelism=2)
    build(env, rate=None)
    got = outputs(env.execute("event-time-reference"))
    assert got == expected()
    return got


@pytest.mark.parametrize("kills,seed", [(1, 11), (2, 4)])
def test_timers_and_windows_survive_killed_tasks(reference, tmp_path, kills, seed):
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(150, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(5, 100))
    build(env)
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    client = env.execute_async("event-time-recovery")
    killed = kill_tasks(client, parallelisms, kills, seed)
    result = client.wait()
    assert killed, "the job ended before any task could be killed"
    assert result.metrics["restarts"] >= 1 and result.checkpoints["completed"] >= 1
    got = outputs(result)
    missing = sorted((Counter(reference) - Counter(got)).elements())
    extra = sorted((Counter(got) - Counter(reference)).elements())
    assert got == reference, (
        f"killed {killed}; {len(missing)} missing {missing[:20]}, {len(extra)} extra {extra[:20]}; "
        f"restarts {result.metrics['restarts']}, checkpoints {result.checkpoints}"
    )
