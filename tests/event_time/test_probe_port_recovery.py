"""A job with cascaded event-time windows (per-key 1 s sums, then 5 s totals over them, on
the vectorized and the record path, and a ``KeyedProcessFunction`` with event-time timers
after the first window) that crashes once mid-run gives the output of a run without the
crash, at parallelism 1 and 2 (in process).

The crash comes after a checkpoint completed (the source holds back the records from index
``PAUSE_AT`` until one did; it polls, it never sleeps), so the restarted attempt restores
open windows of both levels, pending timers and the source position, and the records it
replays carry their timestamps again (the second window reads the first one's
``max_timestamp()``).
"""

from __future__ import annotations

import glob
import os
from typing import Any

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.connectors import NOTHING_AVAILABLE
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.sources import GeneratorSource, _GeneratorReader
from raystream.operators.windows import TumblingEventTimeWindows

COUNT, PAUSE_AT = 600, 300
SECOND, FIVE = 1_000, 5_000


def event(i: int) -> dict:
    """4 keys, 20 records a second over 30 s, in event-time order."""
    return {"k": f"k{i % 4}", "ts": i * 50, "v": 1 + i % 7}


class _PausingReader(_GeneratorReader):
    """Emits no index at or past ``pause_at`` until a checkpoint completed after it paused
    there (a new ``chk-*/_metadata``); the task serves checkpoints meanwhile."""

    def poll_next(self) -> Any:
        src = self.source
        if self.splits and self.splits[0].position >= src.pause_at:
            done = set(glob.glob(os.path.join(src.checkpoint_dir, "**", "chk-*", "_metadata"), recursive=True))
            seen = self.__dict__.setdefault("seen_at_pause", done)
            if not done - seen:
                return NOTHING_AVAILABLE
        return super().poll_next()


class PausingSource(GeneratorSource):
    def __init__(self, pause_at: int, checkpoint_dir: str) -> None:
        super().__init__(event, count=COUNT, batch_size=20, linger_ms=3_600_000)
        self.pause_at, self.checkpoint_dir = pause_at, checkpoint_dir

    def create_reader(self, ctx: Any) -> _PausingReader:
        return _PausingReader(self)


class CrashOnce(rs.MapFunction):
    """Fails the first attempt at the record of index ``PAUSE_AT``; a later attempt writes
    the first index it sees into ``first_after``."""

    def __init__(self, first_after: str) -> None:
        self.first_after = first_after

    def open(self, runtime_context: Any) -> None:
        self.attempt = runtime_context.get_attempt_number()

    def map(self, value: dict) -> dict:
        i = value["ts"] // 50
        if self.attempt == 0 and i == PAUSE_AT:
            raise RuntimeError("simulated crash")
        if self.attempt > 0 and not os.path.exists(self.first_after):
            with open(self.first_after, "w") as f:
                f.write(str(i))
        return value


class Total(rs.ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Any) -> Any:
        yield ("record", key, context.window().start, sum(e[1] for e in elements))


class SeenAndTimer(rs.KeyedProcessFunction):
    """Each first-window result's ``ctx.timestamp``, and an event-time timer 300 ms after it."""

    def process_element(self, value: dict, ctx: Any) -> Any:
        ctx.timer_service().register_event_time_timer(ctx.timestamp + 300)
        yield ("seen", value["k"], ctx.timestamp, value["s"])

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        yield ("timer", ctx.get_current_key(), timestamp, 0)


def build(env: rs.StreamEnvironment, source: rs.DataStream) -> None:
    events = source.set_parallelism(1).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts"))
    seconds = events.key_by("k").window(TumblingEventTimeWindows.of(SECOND)).aggregate(s=("v", "sum")).uid("seconds")
    totals = seconds.key_by("k").window(TumblingEventTimeWindows.of(FIVE)).aggregate(total=("s", "sum")).uid("fives")
    totals.map(lambda r: ("vector", r["k"], r["window_start"], r["total"])).collect().uid("out-vector")
    pairs = events.map(lambda e: (e["k"], e["v"]))  # (no time field: the records carry it)
    per_second = pairs.key_by(0).window(TumblingEventTimeWindows.of(SECOND)).reduce(
        lambda a, b: (a[0], a[1] + b[1])).uid("record-seconds")
    per_second.key_by(0).window(TumblingEventTimeWindows.of(FIVE)).process(Total()).uid("record-fives").collect().uid(
        "out-record")
    seconds.key_by("k").process(SeenAndTimer()).uid("timers").collect().uid("out-timers")


def rows(result: dict) -> list[tuple]:
    return sorted(r for label in ("out-vector", "out-record", "out-timers") for r in collected_records(result["results"][label]))


def reference() -> list[tuple]:
    fives: dict[tuple[str, int], int] = {}
    seconds: dict[tuple[str, int], int] = {}
    for e in map(event, range(COUNT)):
        fives[(e["k"], e["ts"] - e["ts"] % FIVE)] = fives.get((e["k"], e["ts"] - e["ts"] % FIVE), 0) + e["v"]
        seconds[(e["k"], e["ts"] - e["ts"] % SECOND)] = seconds.get((e["k"], e["ts"] - e["ts"] % SECOND), 0) + e["v"]
    out = [(kind, k, s, t) for (k, s), t in fives.items() for kind in ("vector", "record")]
    out += [("seen", k, s + SECOND - 1, t) for (k, s), t in seconds.items()]
    out += [("timer", k, s + SECOND - 1 + 300, 0) for k, s in seconds]
    return sorted(out)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_cascaded_windows_after_a_crash_give_the_output_of_a_run_without_one(parallelism: int, tmp_path: Any) -> None:
    want = reference()
    plain = rs.StreamEnvironment(parallelism=parallelism)
    build(plain, plain.generate(event, count=COUNT, batch_size=20, linger_ms=3_600_000))
    assert rows(run_in_process(plain.get_job_graph(), JobConfig(name="cascade-plain"), timeout_s=120)) == want

    chk, first_after = tmp_path / "chk", tmp_path / "first_after"
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.enable_checkpointing(50, checkpoint_dir=str(chk))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(2, 0))
    source = env.from_source(PausingSource(PAUSE_AT, str(chk))).set_parallelism(1).map(CrashOnce(str(first_after)))
    build(env, source)
    config = JobConfig(name="cascade-crash", checkpoint=env.checkpoint_config, restart=env.restart_strategy)
    result = run_in_process(env.get_job_graph(), config, timeout_s=120)
    # the restarted attempt resumed at the checkpoint taken while the source paused at
    # PAUSE_AT: everything before came from the restored state
    assert first_after.read_text() == str(PAUSE_AT)
    assert result["metrics"]["restarts"] == 1
    assert rows(result) == want
