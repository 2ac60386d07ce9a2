"""Multi-node tests run their ``ray.cluster_utils.Cluster`` in a child process (its own Ray,
not the session's): the child prints a JSON report as its last line of stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cluster_script(script: str, timeout_s: float = 600) -> dict:
    """Run ``script`` in a child Python (the checkout on its path, no ``RAY_ADDRESS``: the
    script starts its own cluster) and return the report it printed last."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout_s, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    print(report)
    return report
