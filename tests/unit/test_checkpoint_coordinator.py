"""Checkpoint coordinator without Ray: acks, completion, aborts, corrupt checkpoints, restore plans."""

import pickle

import pytest

from raystream.checkpoint import (
    CheckpointStorage,
    HeapKeyedStateBackend,
    ValueStateDescriptor,
    dumps,
    serialize_keyed_snapshot,
)
from raystream.checkpoint.coordinator import (
    CheckpointConfig,
    CheckpointCoordinator,
    build_restore_plan,
)
from raystream.engine.errors import CheckpointError, ConfigError
from raystream.engine.keygroups import KeyGroupRange

GRAPH = {"parallelism": {0: 2}, "max_parallelism": 128}
VERTICES = [{"id": 0, "parallelism": 2, "uids": ["sum"], "source_uid": None}]


def backend_with(subtask, parallelism, keys):
    b = HeapKeyedStateBackend(KeyGroupRange.for_subtask(subtask, parallelism, 128), 128)
    st = b.get_state(ValueStateDescriptor("v"))
    for k in keys:
        try:
            b.set_current_key(k)
        except Exception:
            continue
        st.update(k.upper())
    return b


def take_checkpoint(coord, storage, keys):
    p = coord.trigger()
    for s in range(2):
        b = backend_with(s, 2, keys)
        keyed = storage.write_state(coord.job_id, p.checkpoint_id, f"sum/0-{s}-keyed", serialize_keyed_snapshot(b.snapshot(p.checkpoint_id)))
        op = storage.write_state(coord.job_id, p.checkpoint_id, f"sum/0-{s}-op", dumps({"operator": {"subtask": s}}))
        done = coord.acknowledge(p.checkpoint_id, (0, s), {"sum": {"keyed": keyed, "op": op, "committables": [f"c{p.checkpoint_id}-{s}"]}})
    assert done is p
    coord.begin_finalize(p)
    metadata = coord.complete(p, GRAPH)
    assert coord.end_finalize(p)
    return metadata


def test_complete_only_after_all_acks_and_late_acks_are_ignored(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    coord = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path)), "job", [(0, 0), (0, 1)], storage)
    p = coord.trigger()
    assert coord.acknowledge(p.checkpoint_id, (0, 0), {}) is None
    assert storage.list_complete("job") == []
    coord.abort(p, "declined")
    assert coord.acknowledge(p.checkpoint_id, (0, 1), {}) is None  # aborted: ignored
    assert coord.stats()["aborted"] == 1
    with pytest.raises(CheckpointError):
        coord.trigger() and coord.trigger()


def test_restore_plan_rescales_keyed_state_and_recommits(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    coord = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path)), "job", [(0, 0), (0, 1)], storage)
    keys = [f"k{i}" for i in range(200)]
    take_checkpoint(coord, storage, keys)
    cid, meta = coord.latest_restorable()
    vertices = [{"id": 0, "parallelism": 3, "uids": ["sum"], "source_uid": None}]
    plan, commits = build_restore_plan(meta, storage.read_state, vertices, 128)
    assert commits == {"sum": ["c1-0", "c1-1"]}
    from raystream.checkpoint import deserialize_keyed_snapshot

    seen = {}
    for s in range(3):
        b = HeapKeyedStateBackend(KeyGroupRange.for_subtask(s, 3, 128), 128)
        b.restore([deserialize_keyed_snapshot(x, key_group_range=b.key_group_range if hasattr(b, "key_group_range") else None) for x in plan[(0, s)]["sum"]["keyed"]])
        st = b.get_state(ValueStateDescriptor("v"))
        for k in b.keys("v"):
            b.set_current_key(k)
            seen[k] = st.value()
        assert plan[(0, s)]["sum"]["operator"] == [{"subtask": 0}, {"subtask": 1}]
    assert seen == {k: k.upper() for k in keys}


def test_corrupt_or_missing_newest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    storage = CheckpointStorage(str(tmp_path))
    coord = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path)), "job", [(0, 0), (0, 1)], storage)
    take_checkpoint(coord, storage, ["a", "b"])
    meta2 = take_checkpoint(coord, storage, ["a", "b", "c"])
    handle = meta2["operators"]["sum"]["subtasks"][0]["keyed"]
    path = tmp_path / "job" / "chk-2"
    victim = next(p for p in path.rglob("*") if p.is_file() and p.name != "_metadata" and handle.path.endswith(p.name))
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    cid, _ = coord.latest_restorable()
    assert cid == 1
    assert "skipping checkpoint 2" in caplog.text
    for f in (tmp_path / "job" / "chk-1").rglob("*-op"):
        f.unlink()
    assert coord.latest_restorable() is None  # none usable: the master fails with CheckpointError


def test_unknown_operator_state_needs_allow_non_restored_state(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    coord = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path)), "job", [(0, 0), (0, 1)], storage)
    meta = take_checkpoint(coord, storage, ["a"])
    other = [{"id": 0, "parallelism": 1, "uids": ["renamed"], "source_uid": None}]
    with pytest.raises(CheckpointError, match="sum"):
        build_restore_plan(meta, storage.read_state, other, 128, allow_non_restored_state=False)
    plan, _ = build_restore_plan(meta, storage.read_state, other, 128, allow_non_restored_state=True)
    assert plan == {}
    with pytest.raises(CheckpointError, match="max_parallelism"):
        build_restore_plan(meta, storage.read_state, VERTICES, 256)


def test_config_validation():
    with pytest.raises(ConfigError, match="interval"):
        CheckpointConfig(0)
    with pytest.raises(ConfigError, match="mode"):
        CheckpointConfig(100, mode="maybe")
    assert pickle.loads(pickle.dumps(CheckpointConfig(100))).interval_ms == 100


# ---------------------------------------------------------------- ownership and retention
def make(tmp_path, tasks=((0, 0), (0, 1)), **config):
    storage = CheckpointStorage(str(tmp_path))
    cfg = CheckpointConfig(100, checkpoint_dir=str(tmp_path), **config)
    return CheckpointCoordinator(cfg, "job", list(tasks), storage), storage


def ack(coord, cid, task, *comms):
    return coord.acknowledge(cid, task, {"sink": {"committables": list(comms)}})


def finalize(coord, p, fail=None, commit=True):
    """Finalize ``p`` as the master does; ``commit``: its commit then finishes."""
    coord.begin_finalize(p)
    try:
        if fail is not None:
            raise fail
        coord.complete(p, GRAPH)
    except Exception as exc:  # noqa: BLE001 - handed to end_finalize like the master does
        return coord.end_finalize(p, exc)
    ok = coord.end_finalize(p)
    if ok and commit:
        coord.committed(p.checkpoint_id)
    return ok


def test_timeout_during_finalization_never_touches_the_next_checkpoint(tmp_path):
    """Review finding 1: a checkpoint timed out while its metadata was written must not
    wipe the checkpoint triggered after it, nor lose either one's committables."""
    clock = [0.0]
    coord, storage = make(tmp_path, timeout_ms=600)
    coord.clock = lambda: clock[0]
    p1 = coord.trigger()
    ack(coord, 1, (0, 0), "a")
    assert ack(coord, 1, (0, 1), "b") is p1
    coord.begin_finalize(p1)  # metadata write starts (slow storage)...
    clock[0] = 1.0
    assert coord.timed_out() == [p1]
    coord.abort(p1, "timed out")  # ...and the timeout aborts it meanwhile
    assert coord.can_trigger()
    p2 = coord.trigger()
    coord.complete(p1, GRAPH)  # the slow write of 1 lands now
    assert coord.end_finalize(p1) is False  # 1 commits nothing itself...
    assert coord.get(2) is p2 and p2.status == "PENDING"  # ...and 2 is untouched
    ack(coord, 2, (0, 0), "c")
    assert ack(coord, 2, (0, 1), "d") is p2
    assert finalize(coord, p2)
    assert sorted(p2.commit["sink"]) == ["a", "b", "c", "d"]
    assert storage.list_complete("job") == [1, 2]
    assert coord.stats()["retained_committables"] == 0


def test_declined_checkpoint_hands_its_committables_on(tmp_path):
    """Review finding 2: a task whose state write failed declines with the committables its
    sink had already prepared; they are committed with the next checkpoint."""
    coord, _ = make(tmp_path)
    p1 = coord.trigger()
    ack(coord, 1, (0, 0), "a")
    assert coord.decline(1, "writing state failed", {"sink": ["b"]}) is p1
    assert p1.status == "ABORTED"
    ack(coord, 1, (0, 0), "late")  # a late ack of the aborted checkpoint: retained too
    p2 = coord.trigger()
    ack(coord, 2, (0, 0), "c")
    ack(coord, 2, (0, 1), "d")
    assert finalize(coord, p2)
    assert sorted(p2.commit["sink"]) == ["a", "b", "c", "d", "late"]
    assert sorted(coord.metadata_for(p2, GRAPH)["carried_committables"]["sink"]) == ["a", "b", "late"]


def test_the_coordinator_remembers_the_newest_checkpoints_and_counts_all(tmp_path):
    """A long-running job's coordinator keeps the last HISTORY_KEPT outcomes and counts:
    its memory does not grow with the number of checkpoints taken."""
    from raystream.checkpoint.coordinator import HISTORY_KEPT

    coord, _ = make(tmp_path)
    rounds = HISTORY_KEPT + 50
    for i in range(rounds):
        p = coord.trigger()
        if i % 2:
            coord.abort(p, f"timed out ({i})")
        else:
            ack(coord, p.checkpoint_id, (0, 0))
            ack(coord, p.checkpoint_id, (0, 1))
            assert finalize(coord, p)
    stats = coord.stats()
    assert (stats["completed"], stats["aborted"]) == (rounds // 2, rounds // 2)
    assert len(coord.history) == HISTORY_KEPT and len(coord.completed) <= HISTORY_KEPT
    assert coord.history[-1]["id"] == rounds and stats["latest_completed"] == rounds - 1
    assert list(coord.completed) == sorted(coord.completed) and coord.completed[-1] == rounds - 1


def test_failed_metadata_write_retains_everything(tmp_path):
    coord, _ = make(tmp_path)
    p1 = coord.trigger()
    ack(coord, 1, (0, 0), "a")
    ack(coord, 1, (0, 1), "b")
    assert finalize(coord, p1, fail=OSError("disk full")) is False
    assert p1.status == "ABORTED" and list(coord.completed) == [] and coord.completed_count == 0
    p2 = coord.trigger()
    ack(coord, 2, (0, 0))
    ack(coord, 2, (0, 1))
    assert finalize(coord, p2)
    assert sorted(p2.commit["sink"]) == ["a", "b"]


def test_restart_commits_retained_committables_the_restored_checkpoint_covers(tmp_path):
    coord, _ = make(tmp_path)
    p1 = coord.trigger()
    ack(coord, 1, (0, 0), "a")
    ack(coord, 1, (0, 1), "b")
    assert finalize(coord, p1)
    coord.retain(1, {"sink": ["late-1"]})  # prepared at barrier 1: covered by checkpoint 1
    coord.trigger()
    ack(coord, 2, (0, 0), "after-1")  # prepared at barrier 2: replayed after a restore from 1
    coord.reset_for_restart()
    assert coord.checkpoints == {}
    assert coord.take_retained(1) == {"sink": ["late-1"]}
    assert coord.retained == {}


def test_a_checkpoint_carries_the_committables_of_one_still_committing(tmp_path):
    """Checkpoint 1 completed but its commit has not finished (slow, failed, or its master
    died): checkpoint 2's metadata records 1's committables too, so a restore from 2
    re-commits them (committing is idempotent)."""
    coord, storage = make(tmp_path)
    p1 = coord.trigger()
    ack(coord, 1, (0, 0), "a")
    ack(coord, 1, (0, 1), "b")
    assert finalize(coord, p1, commit=False)  # its commit is still running
    p2 = coord.trigger()
    ack(coord, 2, (0, 0), "c")
    ack(coord, 2, (0, 1), "d")
    assert finalize(coord, p2, commit=False)
    assert sorted(p2.commit["sink"]) == ["a", "b", "c", "d"]
    assert sorted(storage.read_metadata("job", 2)["carried_committables"]["sink"]) == ["a", "b"]
    coord.committed(1)
    coord.committed(2)
    p3 = coord.trigger()
    ack(coord, 3, (0, 0), "e")
    ack(coord, 3, (0, 1))
    assert finalize(coord, p3)
    assert p3.commit == {"sink": ["e"]}  # committed ones are not carried any more


def test_a_restart_recommits_a_completed_checkpoint_whose_commit_failed(tmp_path):
    coord, _ = make(tmp_path)
    p1 = coord.trigger()
    ack(coord, 1, (0, 0), "a")
    ack(coord, 1, (0, 1), "b")
    assert finalize(coord, p1, commit=False)  # the commit fails: the job restarts
    coord.trigger()
    ack(coord, 2, (0, 0), "after-1")
    coord.reset_for_restart()
    assert coord.take_retained(1) == {"sink": ["a", "b"]}
    assert coord.committing == {} and coord.retained == {}
    p2 = coord.trigger()
    ack(coord, p2.checkpoint_id, (0, 0))
    ack(coord, p2.checkpoint_id, (0, 1))
    assert finalize(coord, p2)
    assert p2.commit == {}


def test_an_intermediate_savepoint_commits_nothing_itself(tmp_path):
    coord, _ = make(tmp_path)
    p1 = coord.trigger(savepoint=str(tmp_path / "sp"))
    ack(coord, 1, (0, 0), "a")
    ack(coord, 1, (0, 1))
    assert finalize(coord, p1, commit=False)
    assert coord.committing == {}  # (the master retains what it covers for the next checkpoint)


def test_finished_tasks_stand_in_with_final_state_flip147(tmp_path):
    coord, storage = make(tmp_path)
    p1 = coord.trigger()
    ack(coord, 1, (0, 0), "a")
    # (0, 1) finishes before it saw barrier 1: its final state counts as its ack of 1, and
    # its last committables go with 1
    final = {"src": {"op": dumps({"splits": ["end"]})}}
    assert coord.task_finished((0, 1), final, {"sink": ["final-1"]}) is p1
    assert finalize(coord, p1)
    assert sorted(p1.commit["sink"]) == ["a", "final-1"]
    meta = storage.read_metadata("job", 1)
    handle = meta["operators"]["src"]["subtasks"][1]["op"]
    assert pickle.loads(storage.read_state(handle)) == {"splits": ["end"]}
    # later checkpoints wait only for the running task
    p2 = coord.trigger()
    assert p2.waiting == {(0, 0)}
    # a task that acked the pending checkpoint, then finished: its last committables wait
    # for the next checkpoint (their data came after barrier 2)
    ack(coord, 2, (0, 0), "b")
    coord.task_finished((0, 0), {}, {"sink": ["final-0"]})
    assert finalize(coord, p2)
    assert p2.commit["sink"] == ["b"]
    p3 = coord.trigger()  # the final checkpoint: every task has finished
    assert p3.waiting == set()
    assert finalize(coord, p3)
    assert p3.commit["sink"] == ["final-0"]


def test_a_metadata_write_that_lands_after_its_timeout_records_what_the_checkpoint_carries(tmp_path):
    """Race (found by the drill under load: 191 records lost): checkpoint 2 times out while its
    metadata is written on another thread; the file lands anyway, so it is restorable, and a
    master that dies before the next checkpoint completes restores from it. Its metadata must
    record the committables it carries of checkpoint 1 (also timed out), which the abort hands
    on to the next checkpoint: a restore from 2 commits them, or their data is lost."""
    storage = CheckpointStorage(str(tmp_path))
    coord = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path)), "job", [(0, 0)], storage)

    def finalizing(commit: str):
        p = coord.trigger()
        op = storage.write_state("job", p.checkpoint_id, f"sink/0-0-op-{commit}", dumps({"operator": None}))
        assert coord.acknowledge(p.checkpoint_id, (0, 0), {"sink": {"op": op, "committables": [commit]}}) is p
        coord.begin_finalize(p)
        return p

    graph = {"parallelism": {0: 1}, "max_parallelism": 128}
    p1 = finalizing("part-1")
    coord.abort(p1, "timed out (finalizing)")  # its metadata never written
    p2 = finalizing("part-2")
    assert p2.carried == {"sink": ["part-1"]}
    coord.abort(p2, "timed out (finalizing)")  # ...while complete(p2) runs on the writer thread
    metadata = coord.complete(p2, graph)  # the late write lands
    assert not coord.end_finalize(p2)  # aborted: commits nothing now, restorable from storage
    assert metadata["carried_committables"] == {"sink": ["part-1"]}
    _cid, restored = coord.latest_restorable()
    vertices = [{"id": 0, "parallelism": 1, "uids": ["sink"], "source_uid": None}]
    _plan, commits = build_restore_plan(restored, storage.read_state, vertices, 128)
    assert sorted(commits["sink"]) == ["part-1", "part-2"]  # a takeover from checkpoint 2 commits both


def test_a_removed_operator_without_state_needs_no_allow_non_restored_state(tmp_path):
    """Flink asks for --allowNonRestoredState only when a removed operator had state. A
    stateless map writes an operator-state file holding None: removing it forced the flag,
    which would also have dropped real state silently."""
    storage = CheckpointStorage(str(tmp_path))
    coord = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path)), "job", [(0, 0)], storage)
    p = coord.trigger()
    acks = {"sum": {"op": storage.write_state("job", p.checkpoint_id, "sum/0-0-op", dumps({"operator": {"n": 3}}))},
            "fmt": {"op": storage.write_state("job", p.checkpoint_id, "fmt/0-0-op", dumps({"operator": None}))}}
    assert coord.acknowledge(p.checkpoint_id, (0, 0), acks) is p
    coord.begin_finalize(p)
    meta = coord.complete(p, GRAPH)
    assert coord.end_finalize(p)
    without_fmt = [{"id": 0, "parallelism": 1, "uids": ["sum"], "source_uid": None}]
    plan, _ = build_restore_plan(meta, storage.read_state, without_fmt, 128, allow_non_restored_state=False)
    assert plan[(0, 0)]["sum"]["operator"] == [{"n": 3}]
    without_sum = [{"id": 0, "parallelism": 1, "uids": ["fmt"], "source_uid": None}]
    with pytest.raises(CheckpointError, match=r"state for operators \['sum'\]"):
        build_restore_plan(meta, storage.read_state, without_sum, 128, allow_non_restored_state=False)
