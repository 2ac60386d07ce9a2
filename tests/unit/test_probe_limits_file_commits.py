"""The file sinks' committer (in the job master) costs the same per commit however many part
files the job has written: a re-commit is recognised without scanning them (no Ray).

Before, each commit scanned the list of every file committed so far: a long-running job
with frequent checkpoints spent time in the master growing with its history (54 s over the
first 50,000 files, and each commit slower than the one before)."""

from __future__ import annotations

from raystream.operators.sinks import FileCommittable, JsonLinesSink

#: string comparisons made by the committer (counted by the names it compares)
COMPARED = [0]


class _Name(str):
    """A part file name that counts how often it is compared for equality."""

    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        COMPARED[0] += 1
        return str.__eq__(self, other)


def test_commits_cost_the_same_however_many_files_were_committed_before(tmp_path):
    sink = JsonLinesSink(str(tmp_path))
    committer = sink.create_committer()
    n = 2000
    committables = []
    for i in range(n):
        pending = tmp_path / f".inprogress-0-{i}-t"
        data = f'{{"i": {i}}}\n'
        pending.write_text(data)
        committables.append(FileCommittable(str(pending), _Name(f"{tmp_path}/part-t-0000-{i:06d}.jsonl"), len(data)))
    COMPARED[0] = 0
    for c in committables:
        committer.commit([c])
    committer.commit(committables[:10])  # re-commits after a recovery: nothing new
    assert COMPARED[0] <= 3 * n, COMPARED[0]  # (before: ~n * n / 2 = 2,000,000)
    assert committer.result() == [str(c.final) for c in committables]
    assert sorted(p.name for p in tmp_path.glob("part-*.jsonl")) == [f"part-t-0000-{i:06d}.jsonl" for i in range(n)]
