"""Processing-time timers that fall due while a job is down fire once, after the restore.

A keyed process function registers a processing-time timer per record (each key's timers at
one time: the job's clock, :class:`FileClock`, stands still while it runs). The job is stopped
with a savepoint while its timers are pending; the clock then moves past them (the downtime),
and a job restored from the savepoint, at parallelism 1 and 3, on the heap and the
RocksDB backends, must fire each of them exactly once (the restored job's own timers are
not due when its input ends, so they are dropped, as in Flink). The restored job's source
waits until every restored timer has fired (a file per firing), so the end of input cannot
drop them first.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

N = 200
KEYS = 7
T0 = 1_000_000
DELAY = 1_000


class FileClock:
    """Processing time read from a file (every task's copy reads the same): tests move it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def now_ms(self) -> int:
        with open(self.path) as f:
            return int(f.read())

    def set(self, ms: int) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            f.write(str(ms))
        os.replace(tmp, self.path)


class Delayed(rs.KeyedProcessFunction):
    """Counts each key's records and registers a processing-time timer ``DELAY`` ms on."""

    def __init__(self, fired_dir: str) -> None:
        self.fired_dir = fired_dir

    def open(self, ctx) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        ts = ctx.timer_service()
        ts.register_processing_time_timer(ts.current_processing_time() + DELAY)

    def on_timer(self, timestamp, ctx):
        key = ctx.get_current_key()
        open(os.path.join(self.fired_dir, f"{key}-{timestamp}-{os.getpid()}-{id(self)}"), "w").close()
        yield (key, timestamp)


def job(tmp_path, parallelism: int, backend: str, gate: str, pause_at: int) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=0)
    env.enable_checkpointing(3_600_000, checkpoint_dir=str(tmp_path / "chk"), timeout_ms=60_000)
    env.set_state_backend(backend)
    env.clock = FileClock(str(tmp_path / "clock"))
    generate(env, lambda i: {"k": f"k{i % KEYS}", "i": i}, count=N, rate=None, batch_size=10, gate=gate,
             tag=f"at{pause_at}", pause_at=pause_at).uid("src").set_parallelism(1) \
        .key_by(lambda r: r["k"]).process(Delayed(str(tmp_path / "fired"))).uid("timers") \
        .collect().uid("out")
    return env


def timers(result: dict) -> list:
    return [tuple(r) for batches in result["results"].values() for r in collected_records(batches)]


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
@pytest.mark.parametrize("new_parallelism", [1, 3])
def test_timers_due_during_downtime_fire_once_after_the_restore(tmp_path, backend, new_parallelism):
    clock = FileClock(str(tmp_path / "clock"))
    clock.set(T0)
    os.mkdir(tmp_path / "fired")
    gate, sp = str(tmp_path / "gate"), str(tmp_path / "sp")

    def stop(master, runtime) -> None:
        wait_until_paused(gate, 1)
        asyncio.run_coroutine_threadsafe(master.stop_with_savepoint(sp), runtime.loop).result(60)

    env = job(tmp_path, 2, backend, gate, N // 2)
    first = timers(run_in_process(env.get_job_graph(), env._job_config("first"), on_start=stop, timeout_s=120))
    assert first == []  # (the clock stood still: no timer was due)

    clock.set(T0 + 10 * DELAY)  # the downtime: every pending timer is due now
    gate2 = str(tmp_path / "gate2")

    def release(master, runtime) -> None:
        wait_for(lambda: len(os.listdir(tmp_path / "fired")) >= KEYS, f"{KEYS} restored timers fired", 60)
        open(gate2, "w").close()

    env = job(tmp_path, new_parallelism, backend, gate2, 0)
    second = timers(run_in_process(env.get_job_graph(), env._job_config("second", from_savepoint=sp),
                                   on_start=release, timeout_s=120))
    want = Counter((f"k{k}", T0 + DELAY) for k in range(KEYS))
    assert Counter(second) == want
    assert len(os.listdir(tmp_path / "fired")) == KEYS  # (none fired twice, not even uncommitted)
