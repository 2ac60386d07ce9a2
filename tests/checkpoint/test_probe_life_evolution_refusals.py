"""Restoring a savepoint into a changed job: each refusal names the operators (uids) and the
remedy. Before 2026-12-07 a changed ``max_parallelism`` was refused with "the checkpoint was
taken with max_parallelism 128, the job has 64; keyed state cannot be re-split ..." naming
neither the stateful operators nor what to do, and state of an operator the new job lacks was
refused without saying which uids the new job has (an operator without ``uid()`` whose
generated uid changed looked like a removed one)."""

from __future__ import annotations

import re

import pytest

from raystream.checkpoint import CheckpointStorage
from raystream.checkpoint.coordinator import METADATA_FORMAT, build_restore_plan
from raystream.engine.errors import CheckpointError
from raystream.engine.operator import KeyGroupedState
from raystream.engine.serde import dumps


def savepoint_like(storage: CheckpointStorage, max_parallelism: int = 128) -> dict:
    """A checkpoint of a two-subtask job: source 'src' (splits), reduce 'count' (keyed
    state), map 'fmt' (stateless)."""
    ops: dict = {}
    counts = {"by_key_group": KeyGroupedState({3: {"a": 1}})}  # (a heap reduce's per-key values)
    for uid, blob in (("src", {"operator": None, "splits": ["split"]}), ("count", {"operator": counts}),
                      ("fmt", {"operator": None})):
        ops[uid] = {"parallelism": 2, "subtasks": {
            s: {"op": storage.write_state("job", 1, f"{uid}/{s}-op", dumps(blob)), "committables": []} for s in range(2)}}
    md = {"format": METADATA_FORMAT, "job_id": "job", "checkpoint_id": 1, "max_parallelism": max_parallelism,
          "operators": ops, "carried_committables": {}}
    storage.write_metadata("job", 1, md)
    return md


def vertices(*uids: str) -> list[dict]:
    return [{"id": 0, "parallelism": 1, "uids": list(uids), "source_uid": uids[0]}]


def test_a_changed_max_parallelism_names_the_stateful_operators_and_the_remedy(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    md = savepoint_like(storage)
    with pytest.raises(CheckpointError) as err:
        build_restore_plan(md, storage.read_state, vertices("src", "count", "fmt"), 64)
    message = str(err.value)
    assert "max_parallelism 128, the job has 64" in message
    assert "uids ['count']" in message  # the operator whose state is split into key groups (not src, fmt)
    assert "StreamEnvironment(max_parallelism=128)" in message  # what to do


def test_state_of_an_operator_the_job_lacks_names_the_jobs_uids_and_the_remedies(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    md = savepoint_like(storage)
    with pytest.raises(CheckpointError) as err:  # 'count' renamed; the stateless 'fmt' removed needs no flag
        build_restore_plan(md, storage.read_state, vertices("src", "count2"), 128, allow_non_restored_state=False)
    message = str(err.value)
    assert re.search(r"state for operators \['count'\] that the job does not have", message)
    assert "the job's operators have uids ['count2', 'src']" in message
    assert "uid()" in message and "allow_non_restored_state=True" in message
    plan, _ = build_restore_plan(md, storage.read_state, vertices("src", "count2"), 128, allow_non_restored_state=True)
    assert plan[(0, 0)]["src"]["splits"] == ["split", "split"] and "count2" not in plan[(0, 0)]
