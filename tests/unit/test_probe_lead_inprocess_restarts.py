"""``run_in_process`` keeps only the live attempt's executors: a killed (failed attempt's)
executor is forgotten by the in-process runtime once its tasks stop. Before, every restart
added the next attempt's executors to the ones of every earlier attempt, with their tasks,
channels and timer queues (4 -> 8 -> 12 executors after 1, 3, 5 restarts of a p=2 job), so a
long drill or benchmark in one process grew with its history."""

from __future__ import annotations

from typing import Any

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.operators.flink_functions import MapFunction
from raystream.operators.functions import RuntimeContext
from raystream.operators.sinks import collected_records

FAILED_ATTEMPTS = 3


class FailEarlyAttempts(MapFunction):
    def open(self, runtime_context: RuntimeContext) -> None:
        self.attempt = runtime_context.get_attempt_number()

    def map(self, value: Any) -> Any:
        if self.attempt < FAILED_ATTEMPTS and value == 7:
            raise RuntimeError(f"planned failure in attempt {self.attempt}")
        return value


def test_a_restarted_job_holds_no_killed_executor():
    env = rs.StreamEnvironment(parallelism=2)
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(FAILED_ATTEMPTS + 1, 0))
    env.generate(20).map(FailEarlyAttempts()).collect()
    seen: dict[str, Any] = {}
    result = run_in_process(env.get_job_graph(), JobConfig(name="restarts", restart=env.restart_strategy),
                            timeout_s=120, on_start=lambda master, runtime: seen.update(master=master, runtime=runtime))
    assert sorted(r for b in result["results"].values() for r in collected_records(b)) == list(range(20))
    assert seen["master"].attempt == FAILED_ATTEMPTS + 1  # (the master counts attempts from 1: 3 failed, the 4th finished)
    runtime = seen["runtime"]
    # every attempt's executors were killed (the failed ones' at their restart, the last one's
    # at the job's end) and none is held any longer (before: all 8 of the 4 attempts)
    assert runtime.executors == {}, sorted(runtime.executors)
    assert all(h.finished for h in runtime._dying)
