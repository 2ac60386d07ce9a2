"""The raystream CLI against a real Ray head started with ``ray start --head``.

The head runs on loopback ports of its own (next to the session's in-process local Ray),
in a process group of its own so that the fixture can stop exactly its processes. Every CLI
command runs in a subprocess, as a user would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.ray_head import ray_head
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

JOB = '''
"""A test job module: per-key sums of squares (bounded) or an endless rate-limited stream."""
import argparse

import raystream as rs

JOB_NAME = "squares"


def parse_args(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--unbounded", action="store_true")
    return p.parse_args(argv)


def build(env, args):
    src = env.generate(lambda i: i, rate=500.0) if args.unbounded else env.generate(lambda i: i, count=args.n)
    return src.map(lambda i: (i % 3, i * i)).key_by(0).reduce(lambda a, b: (a[0], a[1] + b[1])).name("sum")


def report(records, args):
    final = {}
    for k, v in records:
        final[k] = max(final.get(k, 0), v)
    print("RESULT", sorted(final.items()))
'''


@pytest.fixture(scope="module")
def head():
    """A Ray head with the dashboard (Job Submission API) on loopback ports; stopped afterwards."""
    with ray_head(dashboard=True, prefix="rsh-", RAY_metrics_report_interval_ms="500") as info:
        yield info


def raystream(*args: str, timeout: float = 120, cwd: Path = ROOT, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra_env)
    env.pop("RAY_ADDRESS", None)
    if "RAY_AUTH_MODE" not in extra_env:
        env.pop("RAY_AUTH_MODE", None)  # as a user's shell: raystream finds the cluster's token itself
    return subprocess.run([sys.executable, "-m", "raystream.jobs.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def expected(n: int) -> list[tuple[int, int]]:
    out: dict[int, int] = {}
    for i in range(n):
        out[i % 3] = out.get(i % 3, 0) + i * i
    return sorted(out.items())


def test_submit_runs_a_job_module_on_the_cluster(head, tmp_path):
    job = tmp_path / "squares.py"
    job.write_text(textwrap.dedent(JOB))
    t0 = time.monotonic()
    res = raystream("submit", str(job), "--address", head["http"], "-p", "2", "--", "--n", "3000", timeout=180)
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"RESULT {expected(3000)}" in res.stdout
    assert "raystream: job 'squares' started as squares-" in res.stdout  # the driver's stderr, via Ray's logs
    assert "SUCCEEDED" in res.stderr
    print(f"ray start --head: {head['start_s']:.1f}s; submit to result: {elapsed:.1f}s")


def test_list_status_logs_cancel_against_the_cluster(head, tmp_path):
    job = tmp_path / "endless.py"
    job.write_text(textwrap.dedent(JOB))
    res = raystream("submit", str(job), "--address", head["http"], "--no-wait", "--", "--unbounded")
    assert res.returncode == 0, res.stderr
    sid = res.stdout.strip().splitlines()[-1]
    assert sid.startswith("raysubmit_")

    def running_job():
        out = raystream("list", "--address", head["gcs"])
        assert out.returncode == 0, out.stderr
        rows = [ln.split() for ln in out.stdout.splitlines() if ln.startswith("squares-")]
        return rows[0] if rows and rows[0][2] == "RUNNING" else None

    row = wait_for(running_job, "the job to be listed as RUNNING", 90, poll_s=0.5)
    job_id = row[0]
    assert row[1] == "squares"

    def status_with_records():
        out = raystream("status", job_id, "--address", head["gcs"])
        assert out.returncode == 0, out.stderr
        sums = [ln.split() for ln in out.stdout.splitlines() if ln.startswith("sum ")]
        return out.stdout if sums and int(sums[0][2]) > 0 else None

    text = wait_for(status_with_records, "records flowing", 60, poll_s=0.5)
    assert f"job {job_id} (squares): RUNNING" in text and "RECORDS IN" in text and "IN/S" in text
    assert "checkpoints: off" in text  # a summary line, not a raw dict

    # the same through the dashboard address: Ray's submission list, then the relayed raystream list
    out = raystream("list", "--address", head["http"])
    assert out.returncode == 0, out.stderr
    assert sid in out.stdout and job_id in out.stdout
    out = raystream("logs", job_id, "--address", head["http"])  # a raystream job id finds its Ray job
    assert out.returncode == 0 and f"started as {job_id}" in out.stdout, out.stderr

    # savepoints of a job without checkpointing: one clear error line, no traceback
    out = raystream("savepoint", job_id, str(tmp_path / "sp"), "--address", head["gcs"])
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("raystream: error:") and "Traceback" not in out.stderr
    assert "checkpointing" in out.stderr or "does not support" in out.stderr

    out = raystream("cancel", job_id, "--address", head["gcs"])
    if out.returncode != 0:  # show why the job ended early
        logs = raystream("logs", sid, "--address", head["http"])
        raise AssertionError(out.stderr + "\n--- driver log ---\n" + logs.stdout + logs.stderr)

    def ray_job_ended():  # through the CLI: it authenticates with the cluster's token
        out = raystream("status", sid, "--address", head["http"])
        return next((w for w in ("FAILED", "SUCCEEDED", "STOPPED") if f"Ray job {sid}: {w}" in out.stdout), None)

    status = wait_for(ray_job_ended, "the Ray job to end", 60, poll_s=0.5)
    assert status == "FAILED"  # `raystream run` exits 1 for a cancelled job
    assert f"job {job_id} was cancelled" in raystream("logs", sid, "--address", head["http"]).stdout
    out = raystream("status", job_id, "--address", head["gcs"])
    assert out.returncode == 2 and "no running raystream job" in out.stderr
    out = raystream("status", sid, "--address", head["http"])
    assert out.returncode == 0 and f"Ray job {sid}: FAILED" in out.stdout


def test_metrics_exporter_reaches_prometheus(head):
    script = textwrap.dedent(f"""
        import time, ray
        from raystream.engine.observability import MetricsExporter
        from raystream.engine.ray_runtime import ensure_ray
        ensure_ray({head["gcs"]!r}, logging_level="ERROR")  # with the cluster's token auth
        exp = MetricsExporter("prom-job-1", "prom")
        for i in range(1, 5):
            exp.update({{"operators": {{"map": {{"records_in": 100 * i, "records_out": 100 * i, "subtasks": 2}}}},
                        "channels": [], "restarts": 0, "checkpoints": {{"completed": i}}}})
            time.sleep(0.5)
        time.sleep(3)
        ray.shutdown()
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("RAY_AUTH_MODE", None)
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr

    def scraped():
        text = urllib.request.urlopen(head["metrics"], timeout=5).read().decode()
        lines = [ln for ln in text.splitlines() if "raystream_" in ln and 'job_id="prom-job-1"' in ln]
        return lines if any("records_out" in ln for ln in lines) else None

    lines = wait_for(scraped, "raystream metrics on the Prometheus endpoint", 30, poll_s=0.5)
    out = [ln for ln in lines if "records_out" in ln and "per_second" not in ln and not ln.startswith("#")]
    assert out and float(out[0].rsplit(" ", 1)[1]) == 400.0, lines
    assert any("raystream_checkpoint_completed" in ln for ln in lines), lines
    # the names docs/cli.md documents (counters with Prometheus' _total suffix)
    names = {ln.split("{", 1)[0] for ln in lines if not ln.startswith("#")}
    assert {"ray_raystream_records_out_total", "ray_raystream_records_in_per_second"} <= names, sorted(names)
    assert all('operator="map"' in ln for ln in out)


def test_auth_failure_says_what_it_is_and_how_to_fix_it(head, tmp_path):
    """The head runs with Ray's default token authentication; a client holding another
    token is told so, with the fix, instead of a hint about the dashboard."""
    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    res = raystream("list", "--address", head["http"], RAY_AUTH_TOKEN_PATH=str(wrong), timeout=60)
    assert res.returncode != 0
    assert "authentication failed" in res.stderr and "ray get-auth-token" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
