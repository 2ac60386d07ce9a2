"""The raystream CLI, and a user's scripts, against a real Ray head started with ``ray start
--head`` (token authentication on, as the Ray that pip installs runs it).

The head runs on loopback ports of its own (next to the session's in-process local Ray),
in a process group of its own so that the fixture can stop exactly its processes. Every CLI
command and script runs in a subprocess, as a user would run it.

One head serves every test of this module: the tests that need a token-auth head, formerly
in ``test_probe_rayuser_cluster_list.py`` and ``test_probe_paths_cluster_auth.py`` with a
head each, are here (each ``ray start --head`` and its stop cost the suite seconds). The
listing test comes first: it checks that the head lists no submission before any was made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_probe_paths_cluster_auth import SCRIPT
from tests.ray_head import ray_head, user_environment
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


# -- listing through the dashboard (first: no submission made yet) --------------------------


def _raystream_user(*args: str) -> subprocess.CompletedProcess:
    env = user_environment(PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "raystream.jobs.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


def test_list_through_the_dashboard_shows_submissions_not_directly_connected_drivers(head):
    """``raystream list --address http://HEAD:8265`` shows Ray's *submissions*, then the running
    raystream jobs. Before, its first table also held a row for every driver that had connected
    to the cluster directly (a script with ``address=``, ``raystream run --address``, ``raystream
    list --address HOST:PORT``): Ray lists them as jobs of type DRIVER without a submission id,
    shown under SUBMISSION ID as ``01000000``, an id no other command takes."""
    direct = _raystream_user("list", "--address", head["gcs"])  # a driver connecting directly
    assert direct.returncode == 0, direct.stdout + direct.stderr
    out = _raystream_user("list", "--address", head["http"])
    assert out.returncode == 0, out.stdout + out.stderr
    submissions, _, running = out.stdout.partition("\n\n")
    rows = submissions.splitlines()
    assert rows[0].split() == ["SUBMISSION", "ID", "STATUS", "ENTRYPOINT"], out.stdout
    assert rows[1:] == [], out.stdout  # (the relayed `list` itself is left out too)
    assert "(no running raystream jobs)" in running, out.stdout


# -- a user's script connecting by GCS address with the token at hand, none or a wrong one --


def _script(address: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = user_environment(PYTHONPATH=str(ROOT), **env_vars)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), address], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env=env)


def test_a_script_connects_with_the_token_at_hand(head):
    assert "Token authentication is enabled" in head["output"], head["output"]
    res = _script(head["gcs"])
    assert res.returncode == 0 and res.stdout.split() == ["OK"], res.stdout + res.stderr[-3000:]


def test_auth_mode_disabled_is_named_as_the_cause_with_its_remedy(head):
    """RAY_AUTH_MODE=disabled (as a test suite sets it) sends no token: the error said the token
    of ~/.ray/auth_token "was used ... it may not be this cluster's" (it was not used at all),
    after ~20 s of Ray's retries, without saying that authentication failed."""
    res = _script(head["gcs"], RAY_AUTH_MODE="disabled")
    assert res.returncode == 2, res.stdout + res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("CONFIG_ERROR"))
    assert "authentication failed" in line and "RAY_AUTH_MODE=disabled" in line, line
    assert "unset RAY_AUTH_MODE" in line and "was used" not in line, line


def test_a_wrong_token_says_authentication_failed_and_how_to_get_the_right_one(head, tmp_path):
    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    res = _script(head["gcs"], RAY_AUTH_TOKEN_PATH=str(wrong))
    assert res.returncode == 2, res.stdout + res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("CONFIG_ERROR"))
    assert "authentication failed" in line and "ray get-auth-token" in line and str(wrong) in line, line


# -- the CLI's commands ----------------------------------------------------------------------


def raystream(*args: str, timeout: float = 120, cwd: Path = ROOT, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra_env)
    env.pop("RAY_ADDRESS", None)
    if "RAY_AUTH_MODE" not in extra_env:
        env.pop("RAY_AUTH_MODE", None)  # as a user's shell: raystream finds the cluster's token itself
    return subprocess.run([sys.executable, "-m", "raystream.jobs.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def job_api(head: dict, path: str) -> dict:
    """GET ``path`` of the head's Job Submission API from this process, with the cluster's
    token (what the tests wait for between CLI commands: a CLI process per poll costs seconds
    of start-up and connection; the commands whose output is checked still run as a user's)."""
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()  # (tests/ray_head.py: the head's)
    request = urllib.request.Request(head["http"] + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


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

    def started() -> bool:  # the driver printed "job 'squares' started as <job id>"
        return "started as squares-" in job_api(head, f"/api/jobs/{sid}/logs")["logs"]

    wait_for(started, "the submitted driver to start the job", 90, poll_s=0.2)
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

    def submission_ended() -> bool:
        return job_api(head, f"/api/jobs/{sid}")["status"] in ("FAILED", "SUCCEEDED", "STOPPED")

    wait_for(submission_ended, "the Ray job to end", 60, poll_s=0.2)
    status = ray_job_ended()
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
            time.sleep(0.1)  # (snapshots apart in time: the rates are per second between them)
        sys.stdin.read()  # the driver stays until the test saw its metrics scraped (it closes stdin)
        ray.shutdown()
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("RAY_AUTH_MODE", None)
    proc = subprocess.Popen([sys.executable, "-c", "import sys\n" + script], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def scraped():
        if proc.poll() is not None:  # (its stderr is shown below)
            raise AssertionError("the exporting driver exited before its metrics were scraped")
        return scraped_lines()

    def scraped_lines():  # the job's lines once the last snapshot's records_out (400) is there
        text = urllib.request.urlopen(head["metrics"], timeout=5).read().decode()
        lines = [ln for ln in text.splitlines() if "raystream_" in ln and 'job_id="prom-job-1"' in ln]
        counts = [float(ln.rsplit(" ", 1)[1]) for ln in lines
                  if "records_out" in ln and "per_second" not in ln and not ln.startswith("#")]
        return lines if 400.0 in counts else None

    try:
        wait_for(scraped, "raystream metrics on the Prometheus endpoint (the driver running)", 30, poll_s=0.2)
        failed = None
    except AssertionError as exc:
        failed = exc
    _, err = proc.communicate(input="", timeout=120)  # (stdin closed: the driver shuts down)
    assert failed is None and proc.returncode == 0, f"{failed}; the driver exited {proc.returncode}: {err[-3000:]}"
    # what the driver reported stays on the endpoint after it has gone
    lines = wait_for(scraped_lines, "raystream metrics on the Prometheus endpoint", 30, poll_s=0.5)
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
