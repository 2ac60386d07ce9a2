"""Operator list state with union redistribution."""

from __future__ import annotations

import pickle

import pytest

from raystream.checkpoint import OperatorStateSnapshot, OperatorStateStore
from raystream.engine.errors import CheckpointError, StateError


def test_list_state_operations():
    s = OperatorStateStore().get_list_state("offsets")
    s.add(1)
    s.add_all([2, 3])
    assert s.get() == [1, 2, 3]
    s.update(["x"])
    assert s.get() == ["x"]
    s.clear()
    assert s.get() == []


def test_snapshot_isolation_and_union_restore():
    stores = [OperatorStateStore() for _ in range(3)]
    for i, store in enumerate(stores):
        store.get_list_state("splits").update([f"split-{i}", {"offset": i}])
        if i == 0:
            store.get_list_state("only-first").add("x")
    snaps = [s.snapshot() for s in stores]
    stores[0].get_list_state("splits").get()  # reading does not matter
    stores[0].get_list_state("splits").add("after")  # mutation after snapshot
    snaps = [pickle.loads(pickle.dumps(s)) for s in snaps]  # snapshots travel through Ray
    # every new subtask (any new parallelism) sees the union in old-subtask order
    for _ in range(2):
        restored = OperatorStateStore()
        restored.restore(snaps)
        assert restored.get_list_state("splits").get() == [
            "split-0",
            {"offset": 0},
            "split-1",
            {"offset": 1},
            "split-2",
            {"offset": 2},
        ]
        assert restored.get_list_state("only-first").get() == ["x"]
        assert restored.state_names() == ["only-first", "splits"]


def test_restore_replaces_existing_state():
    store = OperatorStateStore()
    s = store.get_list_state("a")
    s.add(1)
    snap = store.snapshot()
    s.add(2)
    store.restore([snap])
    assert s.get() == [1]  # the same object sees the restored state
    store.restore([])
    assert s.get() == []


def test_errors():
    store = OperatorStateStore()
    with pytest.raises(StateError):
        store.get_list_state("")
    with pytest.raises(CheckpointError, match="OperatorStateSnapshot"):
        store.restore([{"a": b""}])
    with pytest.raises(CheckpointError, match="operator state 'a'"):
        store.restore([OperatorStateSnapshot({"a": b"not a pickle"})])
