"""What a job's ``print()`` sinks write reaches the driver's stdout, all of it before
``env.execute()`` returns: a script's output, a notebook cell's.

It used to travel only through Ray's worker-log forwarding (the task actor's stdout file,
tailed by Ray's log monitor and printed by a thread of the driver), which is asynchronous: a
script that ended after ``env.execute()`` lost the lines not forwarded yet (at p=2, 24 of 50
lines), every line came after ``execute()`` had returned (in a notebook: in a later cell, if
at all), each behind Ray's ``(TaskActor pid=...)`` prefix. (``raystream run`` had a relay of
its own; the environment now relays for every caller.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import raystream as rs
from raystream.engine.client import JobClient
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_every_printed_line_is_on_stdout_when_execute_returns(capsys, parallelism):
    records = [f"rec-{i}-é" for i in range(300)]
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.from_collection(records).map(str.upper).print(prefix="out ")
    env.execute("nb-print")
    lines = capsys.readouterr().out.splitlines()
    if parallelism == 1:
        assert sorted(lines) == sorted(f"out {r.upper()}" for r in records)
    else:
        assert all(line.startswith(("out 1> ", "out 2> ")) for line in lines), lines[:5]
        assert sorted(line[len("out 1> "):] for line in lines) == sorted(r.upper() for r in records)


def test_an_unbounded_printing_job_prints_as_it_runs_and_its_cancel_leaves_nothing_running(capsys):
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(lambda i: i, rate=500).filter(lambda x: x % 50 == 0).print(prefix="tick ")
    client = env.execute_async("nb-print-unbounded")
    seen: list[str] = []

    def printed() -> bool:
        seen.extend(capsys.readouterr().out.splitlines())
        return len(seen) >= 3

    try:
        wait_for(printed, "lines printed while the job runs")
    finally:
        client.cancel()
        with pytest.raises(rs.JobCancelled):
            client.wait(timeout=60)
    assert all(line.startswith(("tick 1> ", "tick 2> ")) for line in seen), seen[:5]
    assert not [j for j in JobClient.list_running() if j.startswith("nb-print-unbounded-")]


def test_a_script_that_ends_after_execute_loses_no_printed_line(tmp_path):
    script = tmp_path / "print_then_exit.py"
    script.write_text(textwrap.dedent("""
        import raystream as rs
        env = rs.StreamEnvironment(parallelism=2)
        env.from_collection([f"rec-{i}" for i in range(50)]).map(str.upper).print()
        env.execute("print-then-exit")
        print("EXECUTE RETURNED", flush=True)
    """))
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert lines[-1] == "EXECUTE RETURNED", res.stdout[-500:]
    assert sorted(line.split("> ", 1)[1] for line in lines[:-1]) == sorted(f"REC-{i}" for i in range(50)), lines


def test_printing_jobs_of_a_driver_share_one_relay_and_leave_no_thread_running(capsys):
    """A queue actor per printing job made each one start a process (~0.6-1.5 s a job where
    one without print() took ~10 ms): the driver's relay is made once and kept for the next
    printing jobs; its printing thread runs only while a printing job runs."""
    import threading

    import ray

    from raystream.engine.client import NAMESPACE, RELAY_PREFIX, OutputRelay

    names = []
    for i in range(3):
        env = rs.StreamEnvironment(parallelism=2)
        env.from_collection([f"job{i}-{n}" for n in range(20)]).print()
        env.execute(f"nb-print-shared-{i}")
        names.append(OutputRelay.idle_name())
        lines = capsys.readouterr().out.splitlines()
        assert sorted(line.split("> ", 1)[1] for line in lines) == sorted(f"job{i}-{n}" for n in range(20))
    assert names[0] is not None and names == [names[0]] * 3, names
    relays = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
              if a.get("namespace") == NAMESPACE and a["name"].startswith(RELAY_PREFIX)]
    assert relays == [names[0]], relays
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "raystream-print-relay"],
             "the relay's printing thread to end with the last printing job")
