"""``JobClient.list_running()`` in a process without Ray and without a cluster named lists
nothing and starts nothing. Before, Ray's ``list_named_actors`` started a local Ray of its own
(from whichever thread called), only to find no job in it, and left it running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import ray
from raystream.engine.client import JobClient
print(JobClient.list_running(), ray.is_initialized())
"""


def test_list_running_without_ray_or_an_address_lists_nothing_and_starts_nothing():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYSTREAM_ADDRESS")}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "{} False", out.stdout
