"""A user's script connecting to a cluster that is not there, or started with a plain ``ray
start --head``, which the Ray that pip installs runs with token authentication.

The tests that need such a head (a script connecting with the token at hand, with
RAY_AUTH_MODE=disabled, with a wrong token) run on the head of ``test_cli_cluster.py``, with
:data:`SCRIPT`: one ``ray start --head`` for the module's tests and these. Every script runs
in a subprocess, as a user runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.ports import free_ports

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
