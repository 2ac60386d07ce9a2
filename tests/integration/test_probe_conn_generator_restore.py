"""An unbounded ``generate()`` job stopped with a savepoint at parallelism 2 and resumed at 1
emits every index (on Ray; the reader's part: ``tests/unit/test_probe_conn_generator_restore.py``).

Before, the resumed job emitted only the even indices, forever: its one reader read the
split of the old subtask 0 without end and never the other.
"""

from __future__ import annotations

import json
from pathlib import Path

import raystream as rs
from tests.waiting import wait_for


def _written(path: Path) -> list[int]:
    return [json.loads(line) for f in sorted(path.glob("*.jsonl")) for line in f.read_text().splitlines()]


def _job(tmp_path: Path, parallelism: int) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=10)
    env.enable_checkpointing(100, checkpoint_dir=str(tmp_path / f"chk-{parallelism}"))
    env.generate(lambda i: i, rate=4000).uid("gen").write_jsonl(str(tmp_path / "out")).uid("out")
    return env


def test_an_unbounded_generator_resumed_at_lower_parallelism_emits_every_index(tmp_path):
    client = _job(tmp_path, 2).execute_async("gen-p2")
    wait_for(lambda: len(_written(tmp_path / "out")) >= 500, "500 committed records at parallelism 2")
    first = client.stop_with_savepoint(str(tmp_path / "sp1"))
    client.wait()
    before = _written(tmp_path / "out")
    client = _job(tmp_path, 1).execute_async("gen-p1", from_savepoint=first)
    wait_for(lambda: len(_written(tmp_path / "out")) >= len(before) + 1000, "1,000 more committed records at parallelism 1")
    client.stop_with_savepoint(str(tmp_path / "sp2"))
    client.wait()
    got = _written(tmp_path / "out")
    assert len(got) == len(set(got)), "an index was written twice"
    # each split stopped where it was: every index below the lower of the two is there
    evens, odds = max(i for i in got if i % 2 == 0), max(i for i in got if i % 2 == 1)
    assert set(range(min(evens, odds))) <= set(got), f"missing e.g. {sorted(set(range(min(evens, odds))) - set(got))[:5]}"
    old = set(before)
    resumed = [i for i in got if i not in old]
    even = sum(1 for i in resumed if i % 2 == 0)
    assert min(even, len(resumed) - even) >= 300, f"resumed: {even} even and {len(resumed) - even} odd indices"
