"""A Ray head started as a user starts it: ``ray start --head``, token authentication on.

The head runs on loopback ports of its own (next to the session's in-process local Ray), in a
process group of its own that is stopped by its id afterwards (never ``ray stop``, which would
stop every Ray of the machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.ports import free_ports

RAY_BIN = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")

#: what a user's shell would not set: the suite's own Ray settings
SUITE_VARIABLES = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def user_environment(**extra: str) -> dict[str, str]:
    """``os.environ`` without the suite's Ray variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SUITE_VARIABLES}
    env.update(extra)
    return env


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(pgid: int) -> None:
    # SIGTERM first (the raylet and the dashboard end on it), then SIGKILL for the rest: the
    # GCS server and the autoscaler's monitor of a `ray start --head` outlived a SIGTERM by more
    # than 15 s (seen on Ray 2.60 with no job running), so a longer grace was only ever spent
    # waiting for the SIGKILL (the head is thrown away: its temp dir is removed below)
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        if not _group_alive(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)


@contextmanager
def ray_head(*, dashboard: bool, prefix: str, **extra_env: str) -> Iterator[dict]:
    """Start a Ray head with 2 CPUs and yield its addresses: ``gcs`` (host:port), ``http`` and
    ``metrics`` (with ``dashboard``), ``start_s`` (how long ``ray start`` took), ``temp``
    (its temp dir) and ``output`` (what ``ray start`` printed).

    The Ray that pip installs enables token authentication when a token exists
    (``~/.ray/auth_token``); on a fresh machine none may exist yet (the suite runs with
    ``RAY_AUTH_MODE=disabled``), so one is generated as Ray's docs tell a user to, and removed
    afterwards if this made it.
    """
    if RAY_BIN is None:
        import pytest

        pytest.skip("the `ray` command is not installed (pip install ray puts it next to python)")
    gcs, dash, metrics, client, agent, agent_grpc, renv, nm, om = free_ports(9)
    temp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: Unix socket paths have a length limit
    cmd = [
        RAY_BIN, "start", "--head", "--disable-usage-stats", "--node-ip-address=127.0.0.1", f"--port={gcs}",
        f"--metrics-export-port={metrics}", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={renv}", f"--node-manager-port={nm}", f"--object-manager-port={om}",
        "--num-cpus=2", f"--temp-dir={temp}",
    ]
    if dashboard:
        cmd += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"]
    else:
        cmd.append("--include-dashboard=false")
    env = user_environment(**extra_env)
    token = Path.home() / ".ray" / "auth_token"
    made_token = not token.exists()
    if made_token:
        gen = subprocess.run([RAY_BIN, "get-auth-token", "--generate"], capture_output=True, text=True, env=env,
                             timeout=60)
        assert gen.returncode == 0 and token.exists(), gen.stderr
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    pgid = proc.pid  # the head's processes all stay in this process group
    try:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        info = {"gcs": f"127.0.0.1:{gcs}", "start_s": time.monotonic() - t0, "temp": temp, "output": out}
        if dashboard:
            info.update(http=f"http://127.0.0.1:{dash}", metrics=f"http://127.0.0.1:{metrics}/metrics")
        yield info
    finally:
        _stop_group(pgid)
        assert not _group_alive(pgid), "Ray head processes left behind"
        shutil.rmtree(temp, ignore_errors=True)
        if made_token:
            token.unlink(missing_ok=True)
