"""A restore hands each new subtask only the keyed snapshots that hold its key groups.

Each old subtask's keyed snapshot holds the key groups of its own range, and a restoring
subtask keeps only the key groups of its new range. The restore plan used to give every new
subtask the snapshots of *all* old subtasks: at parallelism p the job master read the whole
keyed state and pickled it into p task specs, and every task received all of it, so a
restart needed p times the job's state in the master and the whole state in every task.
Now a subtask gets the snapshots whose ranges overlap its own (one at an unchanged
parallelism), and the state restored is the same: every key once, in its owner, unchanged.
Both backends, checkpoints and savepoints, rescaled up and down. No Ray."""

from __future__ import annotations

import pytest

from raystream.checkpoint import (
    CheckpointStorage,
    HeapKeyedStateBackend,
    HeapStateBackend,
    ListStateDescriptor,
    RocksDBKeyedStateBackend,
    ValueStateDescriptor,
)
from raystream.checkpoint.coordinator import METADATA_FORMAT
from raystream.engine.keygroups import KeyGroupRange, key_group_for

MAXP = 128
UID = "sums"
OLD_P = 4
KEYS = [f"user-{i}" for i in range(300)] + list(range(100))


def backend(kind: str, rng: KeyGroupRange, tmp_path):
    if kind == "heap":
        return HeapKeyedStateBackend(rng, MAXP)
    return RocksDBKeyedStateBackend(rng, MAXP, None, local_dir=str(tmp_path / "local"), cache_size=16)


def state_backend(kind: str):
    if kind == "heap":
        return HeapStateBackend()
    from raystream.checkpoint import RocksDBStateBackend

    return RocksDBStateBackend()


@pytest.fixture(params=["heap", "rocksdb"])
def kind(request) -> str:
    if request.param == "rocksdb":
        pytest.importorskip("rocksdict")
    return request.param


def checkpoint(kind: str, storage: CheckpointStorage, tmp_path) -> dict:
    """Checkpoint 1 of a keyed operator at parallelism OLD_P: a value and a list per key."""
    sb = state_backend(kind)
    subtasks = {}
    made = []
    for s in range(OLD_P):
        rng = KeyGroupRange.for_subtask(s, OLD_P, MAXP)
        b = backend(kind, rng, tmp_path)
        made.append(b)
        value, items = b.get_state(ValueStateDescriptor("total")), b.get_state(ListStateDescriptor("items"))
        for i, k in enumerate(KEYS):
            if key_group_for(k, MAXP) in rng:
                b.set_current_key(k)
                value.update(i)
                items.add_all([k, i])
        subtasks[s] = {"keyed": sb.write_snapshot(storage, "job", 1, f"{UID}/{s}-keyed", b.snapshot(1)),
                       "committables": []}
    for b in made:
        b.close()
    md = {"format": METADATA_FORMAT, "job_id": "job", "checkpoint_id": 1, "max_parallelism": MAXP,
          "operators": {UID: {"parallelism": OLD_P, "subtasks": subtasks}}, "carried_committables": {}}
    storage.write_metadata("job", 1, md)
    return md


def as_savepoint(storage: CheckpointStorage, md: dict, where: str):
    names, subtasks = {}, {}
    for s, e in md["operators"][UID]["subtasks"].items():
        names[f"keyed-{s}"] = storage.read_state(e["keyed"])
        subtasks[s] = {"keyed": f"keyed-{s}", "committables": []}
    path = storage.write_savepoint(where, {**md, "operators": {UID: {"parallelism": OLD_P, "subtasks": subtasks}}}, names)
    return storage.read_savepoint(path)


def overlapping(s: int, p: int) -> int:
    """How many of the OLD_P old ranges overlap new subtask ``s`` of ``p``."""
    mine = KeyGroupRange.for_subtask(s, p, MAXP)
    return sum(1 for o in range(OLD_P) if set(KeyGroupRange.for_subtask(o, OLD_P, MAXP)) & set(mine))


@pytest.mark.parametrize("how", ["checkpoint", "savepoint"])
@pytest.mark.parametrize("new_p", [4, 1, 2, 3, 8])
def test_each_new_subtask_gets_only_the_snapshots_of_its_key_groups(kind, how, new_p, tmp_path):
    storage = CheckpointStorage(str(tmp_path / "chk"))
    md = checkpoint(kind, storage, tmp_path)
    read = storage.read_state
    if how == "savepoint":
        md, reader = as_savepoint(storage, md, str(tmp_path / "sp"))
        read = reader.read
    sb = state_backend(kind)
    vertices = [{"id": 0, "parallelism": new_p, "uids": [UID], "source_uid": None}]
    plan, _ = sb.restore_plan(md, read, vertices, MAXP)

    shares = [len(plan[(0, s)][UID]["keyed"]) for s in range(new_p)]
    assert shares == [overlapping(s, new_p) for s in range(new_p)], (
        f"snapshots per new subtask {shares}: each should get only those holding its key groups"
    )
    if new_p == OLD_P:
        assert shares == [1] * OLD_P

    restored: dict = {}
    for s in range(new_p):
        rng = KeyGroupRange.for_subtask(s, new_p, MAXP)
        b = backend(kind, rng, tmp_path)
        try:
            b.restore([sb.deserialize_snapshot(x, rng) for x in plan[(0, s)][UID]["keyed"]])
            value, items = b.get_state(ValueStateDescriptor("total")), b.get_state(ListStateDescriptor("items"))
            for k in KEYS:
                if key_group_for(k, MAXP) in rng:
                    b.set_current_key(k)
                    assert k not in restored, f"key {k!r} restored twice"
                    restored[k] = (value.value(), items.get())
        finally:
            b.close()
    assert restored == {k: (i, [k, i]) for i, k in enumerate(KEYS)}
