"""Overlapping commits in the job master, without Ray: checkpoint N's commit is slow and
checkpoint N+1 completes meanwhile. N+1's metadata carries N's committables (a restore
re-commits them), but N+1's own commit must not commit them again: the commit log of an
in-memory (``collect``) committer records every committable once."""

from __future__ import annotations

import threading

from raystream.checkpoint.coordinator import CheckpointCoordinator
from raystream.engine.master import JobMaster
from tests.unit.test_checkpoint_coordinator import ack, finalize, make
from tests.unit.test_job_master import Script, committed_checkpoint_tags, run_job, tags


def test_a_commit_overlapping_a_slow_one_logs_each_committable_once(tmp_path, monkeypatch):
    later_completed = threading.Event()
    real_end_finalize = CheckpointCoordinator.end_finalize
    real_commit = JobMaster._commit
    carried: list[int] = []

    def end_finalize(self, p, error=None):
        ok = real_end_finalize(self, p, error)
        if ok and p.checkpoint_id >= 2:
            carried.append(sum(len(c) for c in p.carried.values()))
            later_completed.set()
        return ok

    def slow_first_commit(self, committables, log_name=None):
        if log_name == (1, "chk"):  # runs on a worker thread: the master goes on meanwhile
            assert later_completed.wait(30), "no later checkpoint completed during checkpoint 1's commit"
        return real_commit(self, committables, log_name)

    monkeypatch.setattr(CheckpointCoordinator, "end_finalize", end_finalize)
    monkeypatch.setattr(JobMaster, "_commit", slow_first_commit)
    result, runtime, master = run_job(tmp_path, Script(finish_after=2))

    assert carried and carried[0] == 2  # checkpoint 2 carried checkpoint 1's two committables
    assert tags(result) == sorted(committed_checkpoint_tags(runtime) + ["final-0", "final-1"])
    storage = master.coordinator.storage
    logged = [(subtask, tag) for _name, entry in storage.read_commit_log("job-1", 10**9)
              for comms in entry.values() for subtask, tag, _batches in comms]
    assert {(0, ("chk", 1)), (1, ("chk", 1))} <= set(logged)
    assert sorted(logged) == sorted(set(logged)), f"committables logged twice: {sorted(logged)}"


# ---------------------------------------------------------------- the coordinator alone
def test_a_later_commit_repeats_an_earlier_ones_committables_only_if_it_did_not_finish(tmp_path):
    coord, storage = make(tmp_path)
    p1 = coord.trigger()
    ack(coord, 1, (0, 0), "a")
    ack(coord, 1, (0, 1), "b")
    assert finalize(coord, p1, commit=False)  # 1's commit is running (slow)...
    assert coord.to_commit(p1) == {"sink": ["a", "b"]} and p1.commits == [1]
    p2 = coord.trigger()
    ack(coord, 2, (0, 0), "c")
    ack(coord, 2, (0, 1), "d")
    assert finalize(coord, p2, commit=False)  # ...while 2 completes
    assert sorted(storage.read_metadata("job", 2)["carried_committables"]["sink"]) == ["a", "b"]
    coord.committed(1)  # 1's commit finished: 2's commit does not repeat it
    assert coord.to_commit(p2) == {"sink": ["c", "d"]} and p2.commits == [2]


def test_checkpoints_completed_during_a_commit_are_committed_together_once(tmp_path):
    """A commit takes every completed checkpoint not committed yet (the ones that completed
    while an earlier commit ran): the checkpoints it took then commit nothing of their own."""
    coord, _storage = make(tmp_path)
    done = []
    for cid, (x, y) in enumerate([("a", "b"), ("c", "d"), ("e", "f")], start=1):
        p = coord.trigger()
        ack(coord, cid, (0, 0), x)
        ack(coord, cid, (0, 1), y)
        assert finalize(coord, p, commit=False)
        done.append(p)
    _p1, p2, p3 = done
    assert coord.to_commit(p2) == {"sink": ["a", "b", "c", "d", "e", "f"]} and p2.commits == [1, 2, 3]
    for cid in p2.commits:
        coord.committed(cid)
    assert coord.to_commit(p3) == {} and p3.commits == []


def test_a_later_commit_repeats_an_earlier_commit_that_failed(tmp_path):
    coord, storage = make(tmp_path)
    p1 = coord.trigger()
    ack(coord, 1, (0, 0), "a")
    ack(coord, 1, (0, 1), "b")
    assert finalize(coord, p1, commit=False)  # 1's commit fails (never reported committed)
    p2 = coord.trigger()
    ack(coord, 2, (0, 0), "c")
    ack(coord, 2, (0, 1), "d")
    assert finalize(coord, p2, commit=False)
    assert sorted(coord.to_commit(p2)["sink"]) == ["a", "b", "c", "d"]
    coord.reset_for_restart()  # a restore from 2 re-commits 1's committables too
    assert sorted(coord.take_retained(2)["sink"]) == ["a", "b", "c", "d"]


def test_an_aborted_checkpoint_hands_on_each_committable_once(tmp_path):
    """A finalizing checkpoint aborted (its metadata write failed) retains only what it
    added; what it carried of a checkpoint still committing stays with that checkpoint."""
    coord, storage = make(tmp_path)
    p1 = coord.trigger()
    ack(coord, 1, (0, 0), "a")
    ack(coord, 1, (0, 1), "b")
    assert finalize(coord, p1, commit=False)
    p2 = coord.trigger()
    ack(coord, 2, (0, 0), "c")
    ack(coord, 2, (0, 1), "d")
    assert finalize(coord, p2, fail=OSError("disk full"), commit=False) is False
    p3 = coord.trigger()
    ack(coord, 3, (0, 0), "e")
    ack(coord, 3, (0, 1))
    assert finalize(coord, p3, commit=False)
    carried = storage.read_metadata("job", 3)["carried_committables"]["sink"]
    assert sorted(carried) == ["a", "b", "c", "d"]  # each once
    coord.committed(1)
    assert sorted(coord.to_commit(p3)["sink"]) == ["c", "d", "e"]
