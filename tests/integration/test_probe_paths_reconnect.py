"""A driver process that shuts Ray down and connects again (a notebook, a test fixture with
its own ``ray.init()`` / ``ray.shutdown()``, ``raystream run`` called twice in one process).

Each scenario runs in a subprocess: this pytest process is the driver of the session's local
Ray, which must not be shut down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

COMMON = '''
import collections
import ray
import raystream as rs

def run_job(p, name):
    env = rs.StreamEnvironment(parallelism=p)
    words = [f"w{i % 11}" for i in range(500)]
    out = (env.from_collection(words).map(lambda w: (w, 1)).key_by(0)
           .reduce(lambda a, b: (a[0], a[1] + b[1]), emit="final").execute_and_collect(name))
    assert dict(out) == dict(collections.Counter(words)) and len(out) == 11, out
    print("OK", name, flush=True)
'''


def _run(script: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(COMMON) + textwrap.dedent(script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)


def test_jobs_after_ray_shutdown_and_a_new_ray_init_run_on_the_new_cluster():
    """Every local Ray numbers its first driver's job 01000000: the worker pool of the first
    cluster looked current on the second, and the next job's deployment onto its dead actors
    aborted the whole process inside Ray (``Check failed ... Cannot find an actor handle``)."""
    res = _run('''
        ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
        run_job(2, "first")
        ray.shutdown()
        ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
        run_job(2, "second")
        ray.shutdown()
        run_job(1, "embedded")   # raystream starts its own local Ray this time
    ''')
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert res.stdout.split() == ["OK", "first", "OK", "second", "OK", "embedded"], res.stdout


def test_a_client_of_a_job_that_ray_shutdown_ended_says_so_and_starts_no_ray():
    """Its calls reached Ray with the old connection's handles: Ray started a new local Ray for
    them (also from the thread settling the job, as the shutdown ended its run) and they failed
    with "Can't find actor ... from a different cluster"; the process could end later with
    "Failed to connect to GCS within 60 seconds"."""
    res = _run('''
        import time
        from raystream.engine.errors import JobFailed
        ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
        env = rs.StreamEnvironment(parallelism=2)
        env.generate(lambda i: i, rate=200.0).map(lambda x: x + 1).collect()
        client = env.execute_async("endless")
        deadline = time.monotonic() + 120
        while client.status() != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.status() == "RUNNING"
        ray.shutdown()
        assert client.status() == "FAILED"
        client.cancel()  # (an ended job: nothing to do)
        try:
            client.wait()
        except JobFailed as exc:
            assert "ray.shutdown()" in str(exc), exc
            print("RAISED", flush=True)
        assert not ray.is_initialized(), "a call on the old client started a new Ray"
        run_job(2, "next")
        assert client.status() == "FAILED"
    ''')
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert res.stdout.split() == ["RAISED", "OK", "next"], res.stdout + res.stderr[-3000:]


def test_the_embedded_ray_outlives_the_thread_whose_job_started_it():
    """Ray starts a local Ray's processes with PR_SET_PDEATHSIG, which Linux sends when the
    *thread* that started them ends: a first job submitted from a worker thread (a web request
    thread, a ThreadPoolExecutor) had the embedded Ray killed as that thread ended, and the next
    job failed, or the process ended with "Failed to connect to GCS within 60 seconds"."""
    res = _run('''
        import threading
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:   # two threads at once: one Ray, started once
            list(pool.map(lambda a: run_job(*a), [(1, "thread-a"), (2, "thread-b")]))
        node = ray._private.worker._global_node
        processes = [p.process for ps in node.all_processes.values() for p in ps]
        env = rs.StreamEnvironment(parallelism=2, reuse_workers=False)  # new actors: needs the GCS
        out = env.from_collection(range(100)).map(lambda x: x * 2).execute_and_collect("main")
        assert sorted(out) == [x * 2 for x in range(100)]
        dead = [p.args[0] for p in processes if p.poll() is not None]
        assert not dead, dead
        print("OK main", flush=True)
    ''')
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert sorted(res.stdout.split()) == sorted(["OK", "thread-a", "OK", "thread-b", "OK", "main"]), res.stdout
