"""A Ray dashboard address (``http://HEAD:8265``, the Job Submission API's) where a driver's
cluster address is expected: ``raystream run --address http://...``, ``StreamEnvironment
(address="http://...")``, or ``$RAY_ADDRESS=http://...`` as Ray's docs have users export it for
``ray job submit``.

Before, each ended in a bare traceback from inside ``ray.init`` (``ValueError: Invalid Ray
address ... It looks like you set RAY_ADDRESS to an HTTP address``, also when the address came
from ``--address``), exit code 1; the management commands and ``submit`` ignored an HTTP
``$RAY_ADDRESS`` (``submit needs the dashboard address ... (got None)``). Now a driver's
connection refuses it with a ConfigError saying what it is and what to pass instead, and the
commands that take a dashboard address use it. No Ray is started by these tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raystream.engine.errors import ConfigError
from raystream.engine.ray_runtime import check_cluster
from raystream.jobs.cli import main
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dashboard() -> str:
    """An http:// address where nothing listens (nothing is reached before the refusal)."""
    return f"http://127.0.0.1:{free_port()}"


def test_run_with_a_dashboard_address_says_to_use_the_gcs_address_or_submit(tmp_path, dashboard, capsys):
    job = tmp_path / "tiny_job.py"
    job.write_text("def build(env, args):\n    return env.from_collection([1, 2])\n")
    assert main(["run", str(job), "--address", dashboard]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raystream: error: run --address: {dashboard!r} is the address of a Ray dashboard"), err
    assert "GCS address HOST:PORT" in err and f"raystream submit JOB --address {dashboard}" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_driver_refuses_a_dashboard_address_naming_where_it_came_from(dashboard):
    with pytest.raises(ConfigError, match=r"is the address of a Ray dashboard") as err:
        check_cluster(dashboard, "RAY_ADDRESS")
    assert f"{dashboard!r} (from $RAY_ADDRESS)" in str(err.value) and "unset RAY_ADDRESS" in str(err.value)


def test_a_script_with_an_http_ray_address_fails_with_the_remedy_not_a_ray_traceback(dashboard):
    script = textwrap.dedent("""
        import raystream as rs
        from raystream.engine.errors import ConfigError
        env = rs.StreamEnvironment(parallelism=1)
        try:
            env.from_collection([1, 2, 3]).execute_and_collect("http-address")
        except ConfigError as exc:
            print("CONFIG_ERROR", exc)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_ADDRESS=dashboard)
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("CONFIG_ERROR")), "")
    assert f"{dashboard!r} (from $RAY_ADDRESS) is the address of a Ray dashboard" in line, res.stdout + res.stderr[-3000:]
    assert "unset RAY_ADDRESS to run on a private local Ray" in line, line


@pytest.mark.parametrize("argv", [["list"], ["submit", "jobs/wordcount.py"]], ids=["list", "submit"])
def test_commands_taking_a_dashboard_address_use_an_http_ray_address(argv, dashboard, monkeypatch, capsys):
    """As ``ray job submit`` does: an http ``$RAY_ADDRESS`` is the Job Submission API's address."""
    monkeypatch.setenv("RAY_ADDRESS", dashboard)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raystream: error: cannot reach the Ray Job Submission API at {dashboard!r}"), err
