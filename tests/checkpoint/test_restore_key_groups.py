"""The restore plan cuts each KeyGroupedState of the operator states to a subtask's key groups.

Operators keep per-key state outside the keyed backend (a heap reduce's values, windows,
timers) as a ``KeyGroupedState`` (key group -> that group's part) in their
``snapshot_state`` value. The restore plan used to give every new subtask the operator
states of all old subtasks whole: at parallelism p each restored task unpickled the whole
job's state and the master shipped it p times. Now each new subtask gets a copy of every
old state in which each marker, at the top or inside plain dicts, holds only its key
groups; everything else (and a state written before the marker, plain dicts of every key
group) is handed to every subtask as before. No Ray.
"""

from __future__ import annotations

import pickle

import pytest

from raystream.checkpoint import CheckpointStorage, dumps
from raystream.checkpoint.coordinator import METADATA_FORMAT, build_restore_plan
from raystream.engine.errors import CheckpointError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import KeyGroupedState, key_group_share, key_group_sharer

MAXP = 128
UID = "op"
OLD_P = 2


def old_state(s: int) -> dict:
    """What old subtask ``s`` of OLD_P snapshotted: a part per key group of its range, in a
    marker at two depths, next to values that are not split (a watermark, a name, a plain
    dict keyed by int, a list)."""
    mine = KeyGroupRange.for_subtask(s, OLD_P, MAXP)
    return {
        "by_key_group": KeyGroupedState({kg: {f"key-{kg}": kg * 10} for kg in mine}),
        "timers": {"event": KeyGroupedState({kg: [(kg, f"key-{kg}", None)] for kg in mine if kg % 3 == 0}),
                   "processing": KeyGroupedState(), "watermark": 1000 + s},
        "name": f"subtask-{s}",
        "plain": {kg: "not split" for kg in range(4)},
        "listed": [KeyGroupedState({0: "inside a list: not looked into"})],
    }


def write(storage: CheckpointStorage, states: list) -> dict:
    subtasks = {}
    for s, st in enumerate(states):
        op = storage.write_state("job", 1, f"{UID}/{s}-op", dumps({"operator": st}))
        subtasks[s] = {"op": op, "committables": []}
    md = {"format": METADATA_FORMAT, "job_id": "job", "checkpoint_id": 1, "max_parallelism": MAXP,
          "operators": {UID: {"parallelism": len(states), "subtasks": subtasks}}, "carried_committables": {}}
    storage.write_metadata("job", 1, md)
    return md


def plan_for(md: dict, storage: CheckpointStorage, new_p: int) -> list[list]:
    vertices = [{"id": 0, "parallelism": new_p, "uids": [UID], "source_uid": None}]
    plan, _ = build_restore_plan(md, storage.read_state, vertices, MAXP)
    return [plan[(0, s)][UID]["operator"] for s in range(new_p)]


@pytest.mark.parametrize("new_p", [4, 3, 2, 1])
def test_each_new_subtask_gets_only_its_key_groups_of_every_marker(tmp_path, new_p):
    storage = CheckpointStorage(str(tmp_path))
    olds = [old_state(s) for s in range(OLD_P)]
    shares = plan_for(write(storage, olds), storage, new_p)

    for s, states in enumerate(shares):
        mine = KeyGroupRange.for_subtask(s, new_p, MAXP)
        assert len(states) == OLD_P, "one state per old subtask, in old-subtask order"
        for old, got in zip(olds, states):
            assert isinstance(got["by_key_group"], KeyGroupedState)
            assert dict(got["by_key_group"]) == {kg: v for kg, v in old["by_key_group"].items() if kg in mine}
            assert dict(got["timers"]["event"]) == {kg: v for kg, v in old["timers"]["event"].items() if kg in mine}
            assert got["timers"]["processing"] == {}
            # what is not a marker, or not inside plain dicts, is handed over whole
            assert got["timers"]["watermark"] == old["timers"]["watermark"]
            assert (got["name"], got["plain"], got["listed"]) == (old["name"], old["plain"], old["listed"])
    # every key group's part reaches exactly one new subtask
    for key in ("by_key_group",):
        dealt = [kg for states in shares for st in states for kg in st[key]]
        assert sorted(dealt) == list(range(MAXP))


def test_the_plan_of_a_subtask_carries_its_share_not_the_whole_state(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    big = [{"by_key_group": KeyGroupedState({kg: "x" * 10_000 for kg in KeyGroupRange.for_subtask(s, OLD_P, MAXP)})}
           for s in range(OLD_P)]
    shares = plan_for(write(storage, big), storage, 4)
    whole = len(pickle.dumps(big))
    for states in shares:
        assert len(pickle.dumps(states)) < whole / 3, "a subtask of 4 received more than its quarter"


def test_a_marker_as_the_whole_state_and_nested_deeper(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    olds = [KeyGroupedState({0: "a", 64: "b"}), {"x": {"y": {"z": KeyGroupedState({1: "c", 127: "d"})}, "w": 5}}]
    [low, high] = plan_for(write(storage, olds), storage, 2)
    assert low == [KeyGroupedState({0: "a"}), {"x": {"y": {"z": KeyGroupedState({1: "c"})}, "w": 5}}]
    assert high == [KeyGroupedState({64: "b"}), {"x": {"y": {"z": KeyGroupedState({127: "d"})}, "w": 5}}]
    assert all(type(st) is KeyGroupedState for st in (low[0], high[0]))


def test_states_of_the_old_format_and_non_keyed_states_are_handed_over_unchanged(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    # a reduce's snapshot written before the marker (a plain dict of every key group), a
    # source's list, a watermark, nothing
    olds = [{"by_key_group": {3: {"a": 1}, 100: {"b": 2}}}, ["split-0", "split-1"], {"watermark": 7}, None]
    for states in plan_for(write(storage, olds), storage, 3):
        assert states == olds


def test_key_group_share_needs_no_marker_and_checks_the_keys():
    state = {"a": {"b": 1}, "c": [KeyGroupedState({1: 2})]}
    assert key_group_sharer(state)(KeyGroupRange(0, 0)) is state, "no marker: the state itself, not a copy"
    import numpy as np

    m = KeyGroupedState({np.int64(5): "x"})
    assert list(m) == [5] and type(next(iter(m))) is int
    assert key_group_share(m, KeyGroupRange(5, 5)) == {5: "x"}
    with pytest.raises(TypeError, match="keyed by key group"):
        KeyGroupedState({"k": 1})
    cyclic: dict = {"m": KeyGroupedState({0: 1, 9: 2})}
    cyclic["self"] = cyclic
    assert key_group_share(cyclic, KeyGroupRange(0, 5))["m"] == {0: 1}


def test_a_marker_that_cannot_be_read_back_fails_the_restore_naming_the_operator(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    bad = KeyGroupedState()
    dict.__setitem__(bad, "not a key group", 1)  # (bypassing the check, as a corrupt state would)
    md = write(storage, [{"by_key_group": bad}])
    with pytest.raises(CheckpointError, match=f"operator state of {UID!r}.*keyed by key group"):
        plan_for(md, storage, 2)
