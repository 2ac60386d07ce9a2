"""``raystream run`` prints every line a job's ``print()`` sink writes, before it exits.

The lines used to travel only through Ray's worker-log forwarding (the task actor's stdout
file, tailed by Ray's log monitor and published to the driver), which is asynchronous: the
CLI shut Ray down as soon as the job ended, and the lines written last (a bounded job's
single batch: all of them) were lost in most runs. The command runs in a subprocess, as a
user's shell runs it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
N = 600


def test_every_printed_line_reaches_stdout_before_the_cli_exits(tmp_path):
    job = tmp_path / "print_lines.py"
    # one slow batch: the sink writes all N lines in one go, just before the job ends
    job.write_text(textwrap.dedent(f"""
        import time
        def slow(i):
            time.sleep(0.002)
            return i
        def build(env, args):
            env.generate(slow, count={N}).print("rec:")
    """))
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled"}
    res = subprocess.run([sys.executable, "-m", "raystream.jobs.cli", "run", str(job)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    got = sorted(int(m.group(1)) for ln in lines if (m := re.fullmatch(r"rec:(\d+)", ln)))
    assert got == list(range(N)), (len(got), res.stdout[-500:], res.stderr[-2000:])
    assert "finished" in res.stderr
