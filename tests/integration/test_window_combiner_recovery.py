"""Window combiners on Ray (session Ray): the combined window aggregates (vectorized and
``aggregate(AggregateFunction)``) equal the uncombined ones at parallelism 1 and 2 with late
records and allowed lateness, and stay exactly once across killed tasks (a keyed window task,
then the source task with its combiner). Kills happen on conditions (a checkpoint completed,
the restarted attempt checkpointed again), never after a guessed time."""

from __future__ import annotations

from typing import Any, Callable

import ray

import raystream as rs
from raystream.checkpoint.descriptors import AggregateFunction
from raystream.operators.functions import OutputTag
from raystream.operators.sinks import collected_records
from raystream.operators.time import WatermarkStrategy
from raystream.operators.windows import (
    ProcessWindowFunction,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)
from tests.waiting import wait_for

N = 24_000
RATE = 8_000  # records/s: the killed job runs ~3 s


def record(i: int) -> dict:
    """Skewed keys (k00 is ~1/3 of the records); every 97th record is 3.1 s behind (a batch
    spans 3 s: some are late, some re-fire their window within the allowed lateness)."""
    key = "k00" if i % 3 == 0 else f"k{(i * 7919) % 37:02d}"
    ts = 10 * i - (3100 if i % 97 == 96 else 0)
    return {"key": key, "value": i % 101, "ts": ts}


def record_in_order(i: int) -> dict:
    """``record`` without the records behind: nothing is late whatever the batch boundaries."""
    return {**record(i), "ts": 10 * i}


class Stats(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + 1, acc[1] + value["value"])

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


class WithWindow(ProcessWindowFunction):
    def process(self, key, context, elements):
        for n, total in elements:
            yield ("rec", key, context.window.start, n, total)


def build(env: rs.StreamEnvironment, combine: bool | None, rate: int | None = None,
          fn: Callable[[int], dict] = record) -> None:
    late = OutputTag("late")
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(100).with_timestamp_column("ts")
    # one source subtask: every run sees the same watermarks, so the same records are late;
    # without a rate its batches are cut by batch_size alone, not by linger_ms (on a loaded
    # machine making 300 records can take longer than the default 50 ms, and a batch cut
    # early moves a watermark, so other records were late: a flaky comparison of runs)
    linger = {} if rate is not None else {"linger_ms": 3_600_000}
    src = env.generate(fn, count=N, rate=rate, batch_size=300, **linger).set_parallelism(1)
    keyed = src.assign_timestamps_and_watermarks(strategy).key_by("key")
    rec = (keyed.window(TumblingEventTimeWindows.of(500)).allowed_lateness(200).side_output_late_data(late)
           .aggregate(Stats(), WithWindow(), combine=combine).uid("rec-window"))
    rec.get_side_output(late).map(lambda r: ("late", r["key"], r["ts"], r["value"], 0)).collect()
    rec.collect()
    vec_late = OutputTag("vec-late")
    vec = (keyed.window(SlidingEventTimeWindows.of(600, 200)).side_output_late_data(vec_late)
           .aggregate(n=("value", "count"), total=("value", "sum"), combine=combine).uid("vec-window"))
    vec.map(lambda r: ("vec", r["key"], r["window_start"], r["n"], r["total"])).collect()
    vec.get_side_output(vec_late).map(lambda r: ("vlate", r["key"], r["ts"], r["value"], 0)).collect()


def rows_of(result: Any) -> list[tuple]:
    return sorted(tuple(r) for batches in result.sink_results.values() for r in collected_records(batches))


def test_combined_windows_equal_uncombined_at_p1_and_p2():
    runs = {}
    for p, combine in ((1, False), (1, True), (2, False), (2, True)):
        env = rs.StreamEnvironment(parallelism=p)
        build(env, combine)
        ops = [op["name"] for v in env.get_job_graph().vertices for op in v.chain]
        assert ops.count("window_aggregate (local)") == (2 if combine else 0), ops
        runs[(p, combine)] = rows_of(env.execute())
    want = runs[(1, False)]
    kinds = {r[0] for r in want}
    assert kinds == {"rec", "late", "vec", "vlate"}, kinds
    assert sum(1 for r in want if r[0] == "late") > 10
    for k, got in runs.items():
        assert got == want, k


def test_combined_windows_are_exactly_once_across_kills(tmp_path):
    reference = rs.StreamEnvironment(parallelism=2)
    # a rate-limited source cuts batches by time, and late-data decisions follow the batch
    # boundaries (a watermark after each batch): the kill test runs on data in event-time order
    build(reference, False, fn=record_in_order)
    want = rows_of(reference.execute())

    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(150, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(5, 100))
    build(env, True, rate=RATE, fn=record_in_order)
    graph = env.get_job_graph()
    window_vertex = next(v.id for v in graph.vertices if v.chain[0]["name"] == "window_aggregate")
    client = env.execute_async("window-combiner-kills")

    def info() -> dict[str, Any]:
        return client.info()

    def checkpointed_in(attempt: int, after: int | None) -> bool:
        i = info()
        latest = (i.get("checkpoints") or {}).get("latest_completed")
        return i["status"] == "RUNNING" and i["attempt"] == attempt and latest is not None and latest != after

    killed = []
    after = None
    for vertex, subtask in ((window_vertex, 1), (0, 0)):  # a keyed window task, then the source (+ combiners)
        attempt = info()["attempt"]
        wait_for(lambda: checkpointed_in(attempt, after), f"attempt {attempt} completed a checkpoint")  # noqa: B023
        after = info()["checkpoints"]["latest_completed"]
        ray.kill(client.task_actor(vertex, subtask), no_restart=True)
        killed.append((vertex, subtask))
        wait_for(lambda: info()["attempt"] != attempt, "the job restarted")  # noqa: B023
    result = client.wait()
    assert result.metrics["restarts"] == len(killed) == 2
    got = rows_of(result)
    assert {r[0] for r in want} == {"rec", "vec"}
    assert got == want
