"""The in-process runtime (no Ray): the real job master and tasks in one process, exactly
once across a killed executor."""

from __future__ import annotations

import time

import raystream as rs
from raystream.checkpoint.coordinator import CheckpointConfig
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.engine.master import JobMaster
from raystream.operators.sinks import collected_records

N = 20_000


def record(i: int) -> dict:
    return {"key": f"k{(i * 7919) % 23:02d}", "value": i % 89, "i": i}


def build() -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=2, flush_ms=5)
    (env.generate(record, count=N, rate=8_000, batch_size=100)
     .set_parallelism(1)
     .key_by("key")
     .reduce(lambda a, b: {"key": a["key"], "value": a["value"] + b["value"], "i": b["i"]})
     .map(lambda r: (r["key"], r["value"], r["i"]))
     .collect())
    return env


def expected() -> list:
    sums: dict = {}
    out = []
    for i in range(N):
        r = record(i)
        sums[r["key"]] = sums.get(r["key"], 0) + r["value"]
        out.append((r["key"], sums[r["key"]], i))
    return sorted(out)


def collected(result: dict) -> list:
    return sorted(tuple(r) for batches in result["results"].values() for r in collected_records(batches))


def test_a_job_runs_in_process_without_ray():
    env = build()
    result = run_in_process(env.get_job_graph(), JobConfig(name="in-process"), timeout_s=120)
    assert collected(result) == expected()


def test_killed_executor_in_process_is_exactly_once(tmp_path):
    env = build()
    config = JobConfig(name="in-process-kill", checkpoint=CheckpointConfig(50, checkpoint_dir=str(tmp_path)),
                       restart=rs.RestartStrategy.fixed_delay(3, 0))
    killed = []

    def drill(master: JobMaster, runtime) -> None:
        deadline = time.monotonic() + 60
        while not (master.coordinator and master.coordinator.completed_count >= 2) and time.monotonic() < deadline:
            time.sleep(0.005)  # poll the condition: two checkpoints completed
        victim = next(e for name, e in runtime.executors.items() if name.endswith(":s1:0"))
        runtime.kill_executor(victim)
        killed.append(victim.name)

    result = run_in_process(env.get_job_graph(), config, timeout_s=120, on_start=drill)
    assert killed and result["metrics"]["restarts"] == 1
    assert collected(result) == expected()
