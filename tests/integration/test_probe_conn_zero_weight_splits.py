"""A user's source whose splits weigh 0 is read by every subtask (on Ray).

Before, the master dealt every split of weight 0 to subtask 0 (see
``tests/unit/test_probe_conn_zero_weight_splits.py``): a job at parallelism 2 read all its
splits in one subtask and the other read nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import raystream as rs
from raystream.engine.connectors import END_OF_INPUT, Source, SourceReader


@dataclass
class Partition:
    split_id: str
    records: int
    position: int = 0

    def weight(self) -> float:
        return 0.0  # (e.g. a backlog estimate the source cannot make yet)


class _Reader(SourceReader[Partition]):
    def __init__(self, subtask: int) -> None:
        self.subtask = subtask
        self.splits: list[Partition] = []

    def add_splits(self, splits: list[Partition]) -> None:
        self.splits.extend(splits)

    def poll_next(self):
        while self.splits and self.splits[0].position >= self.splits[0].records:
            self.splits.pop(0)
        if not self.splits:
            return END_OF_INPUT
        s = self.splits[0]
        s.position = s.records
        return rs.Batch.of_records([(s.split_id, i, self.subtask) for i in range(s.records)])

    def snapshot_state(self, checkpoint_id: int) -> list[Partition]:
        return [Partition(s.split_id, s.records, s.position) for s in self.splits]


class PartitionSource(Source[Partition]):
    split_type = Partition

    def create_splits(self, parallelism: int) -> list[Partition]:
        return [Partition(f"p{i}", 10) for i in range(4)]

    def create_reader(self, ctx) -> SourceReader[Partition]:
        return _Reader(ctx.subtask_index)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_zero_weight_splits_are_read_by_every_subtask(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    got = env.from_source(PartitionSource()).execute_and_collect()
    assert sorted((split, i) for split, i, _sub in got) == sorted((f"p{p}", i) for p in range(4) for i in range(10))
    readers = {split: sub for split, _i, sub in got}
    assert readers == {f"p{p}": p % parallelism for p in range(4)}  # round robin over the subtasks
