"""A dispatcher task killed while its inbox had spilled (the drill's ``--workload statefun``
kills) left its spill directory, segment files included, for good: ``close()`` deletes it, and
a killed process runs no ``close()``; every failure added one. The next queue to spill in that
directory removes the directories of dead processes (of this host), and only those."""

from __future__ import annotations

import os
import subprocess
import sys

from raystream.statefun_api.spill import SpillingQueue

SPILL_DIR_PREFIX = "raystream-statefun-spill-"
RECORDS = [("f/a", str(i), "", "", "t/int", b"x" * 10, True) for i in range(50)]

# a process that spills and dies without closing its queue (as a killed task does)
KILLED = """
import os, sys
from raystream.statefun_api.spill import SpillingQueue
q = SpillingQueue(0, sys.argv[1])
q.push([("f/a", str(i), "", "", "t/int", b"x" * 10, True) for i in range(50)])
assert q.spilled_messages
os._exit(0)
"""


def _spill_dirs(base) -> list[str]:
    return sorted(n for n in os.listdir(base) if n.startswith(SPILL_DIR_PREFIX))


def _killed_spiller(base) -> str:
    subprocess.run([sys.executable, "-c", KILLED, str(base)], check=True, cwd=os.getcwd())
    (left,) = _spill_dirs(base)
    assert any(n.endswith(".arrows") for n in os.listdir(base / left))  # (its segment file)
    return left


def test_the_next_queue_that_spills_removes_the_spill_dir_of_a_dead_process(tmp_path):
    stale = _killed_spiller(tmp_path)
    q = SpillingQueue(0, str(tmp_path))
    q.push(RECORDS)
    assert q.spilled_messages == len(RECORDS)
    dirs = _spill_dirs(tmp_path)
    assert stale not in dirs and len(dirs) == 1, dirs
    assert q.stale_dirs_removed == 1
    assert [r[1] for r in q.pop(len(RECORDS))] == [r[1] for r in RECORDS]
    q.close()
    assert _spill_dirs(tmp_path) == []


def test_the_spill_dirs_of_live_queues_and_foreign_dirs_are_kept(tmp_path):
    from raystream.statefun_api.spill import OWNER_FILE, remove_stale_spill_dirs

    first, second = SpillingQueue(0, str(tmp_path)), SpillingQueue(0, str(tmp_path))
    first.push(RECORDS)
    foreign = tmp_path / (SPILL_DIR_PREFIX + "foreign")  # (no owner file: not removed)
    foreign.mkdir()
    other_host = tmp_path / (SPILL_DIR_PREFIX + "other-host")
    other_host.mkdir()
    (other_host / OWNER_FILE).write_text("some-other-host pid:[1] 1")
    second.push(RECORDS)  # (this process is alive: the first queue's directory stays)
    assert len(_spill_dirs(tmp_path)) == 4
    assert remove_stale_spill_dirs(str(tmp_path)) == 0
    assert [r[1] for r in first.pop(50)] == [r[1] for r in second.pop(50)]
    first.close()
    second.close()
    assert _spill_dirs(tmp_path) == sorted([foreign.name, other_host.name])
