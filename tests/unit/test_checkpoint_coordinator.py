"""Checkpoint coordinator without Ray: acks, completion, aborts, corrupt checkpoints, restore plans."""

import pickle

import pytest

from checkpoint import (
    CheckpointStorage,
    HeapKeyedStateBackend,
    ValueStateDescriptor,
    dumps,
    serialize_keyed_snapshot,
)
from checkpoint.coordinator import CheckpointConfig, CheckpointCoordinator, build_restore_plan
from engine.errors import CheckpointError, ConfigError
from engine.keygroups import KeyGroupRange

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
    return coord.complete(p, GRAPH)


def test_complete_only_after_all_acks_and_late_acks_are_ignored(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    coord = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path)), "job", [(0, 0), (0, 1)], storage)
    p = coord.trigger()
    assert coord.acknowledge(p.checkpoint_id, (0, 0), {}) is None
    assert storage.list_complete("job") == []
    coord.abort("declined")
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
    from checkpoint import deserialize_keyed_snapshot

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
