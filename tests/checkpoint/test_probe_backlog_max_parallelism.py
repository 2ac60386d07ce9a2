"""A restore at another ``max_parallelism`` is refused naming only the operators whose state is
split into key groups (keyed state, or operator state holding a ``KeyGroupedState``: a heap
reduce's or window's per-key entries); a savepoint whose state is all independent of key
groups (source splits, committables, stateless operators' files) restores.

Before 2026-12-07 the refusal listed every operator with a state file, so a stateless map, a
source and a sink were named as "state split into key groups", and a job holding no keyed
state at all could not change its max_parallelism. No Ray."""

from __future__ import annotations

import pytest

from raystream.checkpoint import CheckpointStorage
from raystream.checkpoint.coordinator import METADATA_FORMAT, build_restore_plan
from raystream.engine.errors import CheckpointError
from raystream.engine.operator import KeyGroupedState
from raystream.engine.serde import dumps


def savepoint(storage: CheckpointStorage, keyed: bool) -> dict:
    """A p=2 checkpoint at max_parallelism 128: source 'src' (splits), map 'fmt' (stateless),
    sink 'out' (committables) and, if ``keyed``, 'count' (a keyed snapshot) and 'win' (operator
    state with per-key entries by key group)."""
    blobs = {"src": {"operator": None, "splits": ["s0", "s1"]}, "fmt": {"operator": None},
             "out": {"operator": {"pending": ["file-1"]}}}
    if keyed:
        blobs["win"] = {"operator": {"panes": {"event": KeyGroupedState({5: [("a", 1)]}), "n": 2}}}
        blobs["count"] = {"operator": None}
    ops: dict = {}
    for uid, blob in blobs.items():
        subtasks = {}
        for s in range(2):
            entry = {"op": storage.write_state("job", 1, f"{uid}/{s}-op", dumps(blob)),
                     "committables": ["c"] if uid == "out" else []}
            if uid == "count":
                entry["keyed"] = storage.write_state("job", 1, f"{uid}/{s}-keyed", b"keyed bytes")
            subtasks[s] = entry
        ops[uid] = {"parallelism": 2, "subtasks": subtasks}
    md = {"format": METADATA_FORMAT, "job_id": "job", "checkpoint_id": 1, "max_parallelism": 128,
          "operators": ops, "carried_committables": {}}
    storage.write_metadata("job", 1, md)
    return md


VERTICES = [{"id": 0, "parallelism": 2, "uids": ["src", "fmt", "count", "win", "out"], "source_uid": "src"}]


def test_the_refusal_names_only_the_operators_with_key_grouped_state(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    md = savepoint(storage, keyed=True)
    with pytest.raises(CheckpointError) as err:
        build_restore_plan(md, storage.read_state, VERTICES, 64)
    message = str(err.value)
    assert "max_parallelism 128, the job has 64" in message
    assert "(uids ['count', 'win'])" in message
    for other in ("'src'", "'fmt'", "'out'"):
        assert other not in message
    assert "StreamEnvironment(max_parallelism=128)" in message


def test_state_independent_of_key_groups_restores_at_another_max_parallelism(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    md = savepoint(storage, keyed=False)
    plan, committables = build_restore_plan(md, storage.read_state, VERTICES, 64)
    assert sorted(s for t in range(2) for s in plan[(0, t)]["src"]["splits"]) == ["s0", "s0", "s1", "s1"]
    assert plan[(0, 0)]["out"]["operator"] == [{"pending": ["file-1"]}] * 2
    assert committables == {"out": ["c", "c"]}
