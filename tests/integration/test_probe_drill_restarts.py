"""The drill's "restarts N" counts the restarts under every job master of a seed: a new master
counts its own restarts from 0 (``JobResult.metrics["restarts"]`` are the last master's), so a
task kill followed by a master kill read "restarts 0" though the job restarted once. No Ray:
a scripted job client and kill."""

from __future__ import annotations

import os
import random

import pytest

import benchmarks.drill as drill
from benchmarks.drill import DrillOutcome, DrillPlan, Fault, _KillGates, _run_kills


class _ScriptedJob:
    """A JobClient whose master counts restarts as the engine's does: per master."""

    def __init__(self) -> None:
        self.attempt, self.restarts, self.failovers = 1, 0, 0

    def info(self) -> dict:
        return {"status": "RUNNING", "attempt": self.attempt, "restarts": self.restarts}


def _scripted_kill(
    client: _ScriptedJob, fault: Fault, rng: random.Random, parallelisms: list[int]
) -> tuple[str | None, str]:
    if fault.kind == "kill-master":  # a new master resumes the job: attempt 1, no restart yet
        client.failovers, client.attempt, client.restarts = client.failovers + 1, 1, 0
        return "job master", ""
    client.attempt, client.restarts = client.attempt + 1, client.restarts + 1
    return "task (1, 0)", ""


@pytest.mark.parametrize("records", [(10, 20), (10, 10)], ids=["task-then-master", "at-one-record"])
def test_a_task_kill_then_a_master_kill_counts_the_restart_of_the_first_master(tmp_path, monkeypatch, records):
    monkeypatch.setattr(drill, "_kill", _scripted_kill)
    kills = (Fault("kill-task", f"at record {records[0]}", at_record=records[0]),
             Fault("kill-master", f"at record {records[1]}", at_record=records[1]))
    plan = DrillPlan(1, kills, "collect", 2, 10_000)
    gates = _KillGates(str(tmp_path), [records[0], records[1]])
    for k in range(2):  # (the source waits at both records: what a gate writes there, its record and token)
        with open(gates.path("reached", k), "w") as f:
            f.write(f"{records[k]} scripted")
    outcome = DrillOutcome(plan)
    job = _ScriptedJob()
    _run_kills(job, plan, outcome, [1, 2], gates)  # type: ignore[arg-type]
    assert not outcome.missed, outcome.missed
    assert len(outcome.kills) == 2 and all(os.path.exists(gates.path("done", k)) for k in range(2))
    # the restart under the killed master, plus the new master's own (none yet)
    assert outcome.restarts + job.restarts == 1, outcome.line()
    assert "restarts 1" in DrillOutcome(plan, restarts=outcome.restarts + job.restarts).line()


def test_a_master_kill_alone_counts_no_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(drill, "_kill", _scripted_kill)
    plan = DrillPlan(2, (Fault("kill-master", "at record 5", at_record=5),), "collect", 2, 10_000)
    gates = _KillGates(str(tmp_path), [5])
    with open(gates.path("reached", 0), "w") as f:
        f.write("5 scripted")
    outcome = DrillOutcome(plan)
    _run_kills(_ScriptedJob(), plan, outcome, [1, 2], gates)  # type: ignore[arg-type]
    assert not outcome.missed and outcome.restarts == 0, outcome.line()
