"""``raystream list --address http://HEAD:8265`` shows Ray's *submissions*, then the running
raystream jobs. Before, its first table also held a row for every driver that had connected to
the cluster directly (a script with ``address=``, ``raystream run --address``, ``raystream list
--address HOST:PORT``): Ray lists them as jobs of type DRIVER without a submission id, shown
under SUBMISSION ID as ``01000000``, an id no other command takes.

The head runs as a user starts it (``ray start --head`` with its dashboard, token
authentication on), on loopback ports of its own, stopped by its process group (never ``ray
stop``); every command runs in a subprocess, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.ray_head import ray_head, user_environment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def head():
    with ray_head(dashboard=True, prefix="rsl-") as info:
        yield info


def _raystream(*args: str) -> subprocess.CompletedProcess:
    env = user_environment(PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "raystream.jobs.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


def test_list_through_the_dashboard_shows_submissions_not_directly_connected_drivers(head):
    direct = _raystream("list", "--address", head["gcs"])  # a driver connecting directly
    assert direct.returncode == 0, direct.stdout + direct.stderr
    out = _raystream("list", "--address", head["http"])
    assert out.returncode == 0, out.stdout + out.stderr
    submissions, _, running = out.stdout.partition("\n\n")
    rows = submissions.splitlines()
    assert rows[0].split() == ["SUBMISSION", "ID", "STATUS", "ENTRYPOINT"], out.stdout
    assert rows[1:] == [], out.stdout  # (the relayed `list` itself is left out too)
    assert "(no running raystream jobs)" in running, out.stdout
