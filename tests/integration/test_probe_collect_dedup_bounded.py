"""``execute_and_collect(stream=True)`` with checkpointing keeps what it needs to deliver each
checkpoint's piece once in memory proportional to the job's subtasks, not to its age.

Each collect sink subtask sends what it wrote before checkpoint ``n`` as one piece once ``n``
completes, and a restored writer sends the pieces its checkpoint holds again; the iterator
drops those it has. It used to remember every piece it had ever taken (one entry a subtask a
checkpoint: ~200 MB a day at 100 ms checkpoints); now it keeps the newest piece of each
subtask. Restarts delivering every record once: ``test_collect_stream.py``."""

from __future__ import annotations

import pytest

import raystream as rs
from tests.waiting import wait_for

CHECKPOINTS = 30


def _entries(iterator: object) -> int:
    """Entries in the iterator's sets and dicts (what it remembers besides queued records)."""
    return sum(len(v) for v in vars(iterator).values() if isinstance(v, (set, dict)))


@pytest.mark.parametrize("p", [1, 2])
def test_the_iterators_memory_of_pieces_stays_bounded_over_many_checkpoints(p, tmp_path):
    env = rs.StreamEnvironment(parallelism=p, flush_ms=10)
    env.enable_checkpointing(20, checkpoint_dir=str(tmp_path / "chk"))
    stream = env.generate(lambda i: i, rate=1000).map(lambda x: x * 2)
    taken: list[int] = []
    with stream.execute_and_collect(stream=True) as records:

        def checkpoints_done() -> bool:
            taken.extend(next(records) for _ in range(500))  # (half a second of records: the
            # iterator keeps up with the job, so it has taken a piece of most checkpoints)
            return records.client.metrics()["checkpoints"]["completed"] >= CHECKPOINTS

        wait_for(checkpoints_done, f"{CHECKPOINTS} completed checkpoints", poll_s=0.0)
        # (a piece of each subtask at most a few checkpoints: well above CHECKPOINTS if it kept them all)
        assert _entries(records) <= 4 * p, vars(records)
    assert len(set(taken)) == len(taken) and all(x % 2 == 0 for x in taken)  # (each record once)
    if p == 1:
        assert taken == [2 * x for x in range(len(taken))]
