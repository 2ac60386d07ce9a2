"""A restored task keeps no second copy of the checkpoint it started from: once its
operators are restored the task drops its restore plan (it held every restored operator
state and keyed snapshot for the whole job, beside the live state built from them). The
operator harness hands a restored operator its key groups' share, as a real restore does."""

from __future__ import annotations

from typing import Any

from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.operator import KeyGroupedState, StreamOperator
from raystream.engine.records import Batch
from raystream.operators.testing import OperatorHarness

MAXP = 128


class PerKeyGroup(StreamOperator):
    """Counts records per key, keeping the counts itself (outside the keyed backend)."""

    keyed = True

    def __init__(self) -> None:
        self.counts: dict[int, dict[Any, int]] = {}
        self.restored: list[Any] = []

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        for key in batch.records():
            group = self.counts.setdefault(key_group_for(key, MAXP), {})
            group[key] = group.get(key, 0) + 1

    def snapshot_state(self, checkpoint_id: int) -> Any:
        return {"counts": KeyGroupedState({g: dict(c) for g, c in self.counts.items()}), "n": len(self.counts)}

    def restore_state(self, states: list[Any]) -> None:
        self.restored = states


def test_a_restored_task_drops_its_restore_plan_and_gets_only_its_key_groups():
    keys = [f"k{i}" for i in range(200)]
    first = OperatorHarness(PerKeyGroup(), max_parallelism=MAXP)
    first.process(keys)
    snap = first.snapshot()
    for sub in range(3):
        op = PerKeyGroup()
        h = OperatorHarness(op, subtask_index=sub, parallelism=3, max_parallelism=MAXP, restore=[snap])
        assert h.task.spec.restore is None  # restored: the plan is gone, the operator holds its state
        mine = KeyGroupRange.for_subtask(sub, 3, MAXP)
        (state,) = op.restored
        assert state["n"] == len(first.operator.counts)  # (a value that is not a marker: shared)
        assert set(state["counts"]) == {key_group_for(k, MAXP) for k in keys} & set(mine)
