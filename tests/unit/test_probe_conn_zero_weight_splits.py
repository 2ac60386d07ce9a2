"""Splits that weigh 0 are dealt round robin (``engine.connectors.assign_splits``).

A split's ``weight()`` is the work left in it; a user's source may well say 0 for a split
whose work it cannot see (a live partition whose backlog estimate is 0 because its reader is
caught up, a file of unknown size). Before, the deal took the reader with the least work and,
among equals, the lowest index; a split of weight 0 left that reader's work as it was, so
every such split went to reader 0: an unbounded source of 4 such partitions at parallelism 2
read them all in subtask 0 and left subtask 1 without a split for as long as the job ran.
Now readers of equal work take turns by the number of splits they hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from raystream.engine.connectors import assign_split_indices, assign_splits


@dataclass
class Partition:
    split_id: str
    backlog: float

    def weight(self) -> float:
        return self.backlog


@given(st.integers(0, 40), st.integers(1, 7), st.sampled_from([0.0, 1e-9, 1.0, 1000.0]))
def test_splits_of_equal_weight_zero_included_are_dealt_round_robin(n, parallelism, weight):
    splits = [Partition(f"p{i}", weight) for i in range(n)]
    assert assign_split_indices(splits, parallelism) == [list(range(n))[i::parallelism] for i in range(parallelism)]


def test_zero_weight_splits_beside_heavy_ones_go_to_the_readers_with_fewest_splits():
    splits = [Partition("big0", 100), Partition("big1", 100), Partition("z0", 0), Partition("z1", 0),
              Partition("z2", 0), Partition("z3", 0)]
    assert [[s.split_id for s in r] for r in assign_splits(splits, 2)] == [["big0", "z0", "z2"], ["big1", "z1", "z3"]]
    # unequal work still comes first: the light reader takes the zero-weight splits' turns only on ties
    splits = [Partition("big", 100), Partition("small", 10), Partition("z0", 0), Partition("z1", 0)]
    assert [[s.split_id for s in r] for r in assign_splits(splits, 2)] == [["big"], ["small", "z0", "z1"]]
