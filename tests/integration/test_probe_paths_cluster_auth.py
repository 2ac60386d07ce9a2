"""A user's script connecting to a cluster started with a plain ``ray start --head``, which the
Ray that pip installs runs with token authentication.

The head runs on loopback ports of its own, in a process group of its own that the fixture
stops by its id (never ``ray stop``); every script runs in a subprocess, as a user runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.ports import free_ports
from tests.ray_head import ray_head, user_environment

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = '''
import collections, sys
import raystream as rs
from raystream.engine.errors import ConfigError

env = rs.StreamEnvironment(parallelism=2, address=None if sys.argv[1] == "-" else sys.argv[1])
words = [f"w{i % 13}" for i in range(600)]
stream = env.from_collection(words).map(lambda w: (w, 1)).key_by(0).reduce(lambda a, b: (a[0], a[1] + b[1]), emit="final")
try:
    out = stream.execute_and_collect("auth-probe")
except ConfigError as exc:
    print("CONFIG_ERROR", exc)
    sys.exit(2)
assert dict(out) == dict(collections.Counter(words)), out
print("OK")
'''


@pytest.fixture(scope="module")
def head():
    """A Ray head started as a user starts it (token authentication on), no dashboard."""
    with ray_head(dashboard=False, prefix="rsa-") as info:
        assert "Token authentication is enabled" in info["output"], info["output"]
        yield info["gcs"]


def _script(address: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = user_environment(PYTHONPATH=str(ROOT), **env_vars)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), address], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env=env)


def test_a_script_connects_with_the_token_at_hand(head):
    res = _script(head)
    assert res.returncode == 0 and res.stdout.split() == ["OK"], res.stdout + res.stderr[-3000:]


def test_auth_mode_disabled_is_named_as_the_cause_with_its_remedy(head):
    """RAY_AUTH_MODE=disabled (as a test suite sets it) sends no token: the error said the token
    of ~/.ray/auth_token "was used ... it may not be this cluster's" (it was not used at all),
    after ~20 s of Ray's retries, without saying that authentication failed."""
    res = _script(head, RAY_AUTH_MODE="disabled")
    assert res.returncode == 2, res.stdout + res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("CONFIG_ERROR"))
    assert "authentication failed" in line and "RAY_AUTH_MODE=disabled" in line, line
    assert "unset RAY_AUTH_MODE" in line and "was used" not in line, line


def test_a_wrong_token_says_authentication_failed_and_how_to_get_the_right_one(head, tmp_path):
    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    res = _script(head, RAY_AUTH_TOKEN_PATH=str(wrong))
    assert res.returncode == 2, res.stdout + res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("CONFIG_ERROR"))
    assert "authentication failed" in line and "ray get-auth-token" in line and str(wrong) in line, line


def test_a_stale_ray_address_fails_at_once_naming_the_variable():
    """A RAY_ADDRESS left over from a cluster that is gone (a notebook's environment, a shell's
    profile): ray.init retried for many minutes (about 40 s per attempt) before a
    ConnectionError that did not say why; now a ConfigError names the address, the variable it
    came from and what to do."""
    [port] = free_ports(1)  # nothing listens there
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYSTREAM_ADDRESS")}
    env.update(PYTHONPATH=str(ROOT), RAY_ADDRESS=f"127.0.0.1:{port}")
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), "-"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=env)
    assert res.returncode == 2, res.stdout + res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("CONFIG_ERROR"))
    assert f"cannot reach the Ray cluster at '127.0.0.1:{port}' (from $RAY_ADDRESS)" in line, line
    assert "unset RAY_ADDRESS" in line, line
