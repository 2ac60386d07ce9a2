"""A ``generate()`` source restored at a lower parallelism reads every split it is given.

A generator's splits are strided index ranges, one per subtask of the job that made them
(``gen-0``: 0, 2, 4...; ``gen-1``: 1, 3, 5... at parallelism 2). Restored at parallelism 1,
one reader holds both. Before, it read its splits one after the other: an unbounded split
never ends, so after ``stop_with_savepoint`` at parallelism 2 and a restore at 1 the job emitted
only even indices, forever, with no error (and at half the rate asked). Now the reader takes
its splits in turns, the lowest next index first, and its share of ``rate`` is one per split.
"""

from __future__ import annotations

import pytest

from raystream.engine.connectors import END_OF_INPUT, NOTHING_AVAILABLE
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.operators import sources
from raystream.operators.sources import GeneratorSource
from raystream.operators.time import WatermarkedSource, WatermarkStrategy


def _ctx(parallelism: int = 1) -> OperatorContext:
    return OperatorContext("gen", "gen", f"gen (1/{parallelism})", 0, parallelism, 128, KeyGroupRange(0, 127))


def _restored_reader(source: GeneratorSource, old_parallelism: int, new_parallelism: int = 1):
    """The reader of subtask 0 at ``new_parallelism``, given every split of a job at ``old_parallelism``
    (as a restore deals them: round robin)."""
    reader = source.create_reader(_ctx(new_parallelism))
    reader.add_splits(source.create_splits(old_parallelism)[::new_parallelism])
    return reader


def test_an_unbounded_generator_restored_at_lower_parallelism_emits_every_index():
    reader = _restored_reader(GeneratorSource(count=None, batch_size=3), 2)
    got = [i for _ in range(6) for i in reader.poll_next().records()]
    assert sorted(got) == list(range(18))  # before: 0, 2, 4, ... 34 (gen-0 only)


@pytest.mark.parametrize("old", [2, 3, 5])
def test_a_bounded_generator_restored_at_parallelism_1_emits_each_index_once_about_in_order(old):
    reader = _restored_reader(GeneratorSource(count=50, batch_size=4), old)
    batches = []
    while (b := reader.poll_next()) is not END_OF_INPUT:
        batches.append(b.records())
    got = [i for b in batches for i in b]
    assert sorted(got) == list(range(50))
    # the lowest next index first: no batch starts more than one round of batches ahead
    assert all(b[0] < 4 * old * (n // old + 1) for n, b in enumerate(batches))


def test_per_split_watermarks_follow_the_split_of_each_batch():
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda i: i)
    source = WatermarkedSource(GeneratorSource(count=None, batch_size=3), strategy)
    reader = source.create_reader(_ctx())
    reader.add_splits(GeneratorSource(count=None).create_splits(2))
    marks = []
    for _ in range(6):
        reader.poll_next()
        marks.append(reader.poll_watermark())
    # the minimum over both splits: never past an index the slower split has not emitted
    assert [m for m in marks if m is not None] == sorted(m for m in marks if m is not None)
    assert max(m for m in marks if m is not None) < 17


def test_the_rate_is_shared_per_split(monkeypatch):
    now = [100.0]

    class _Clock:
        @staticmethod
        def monotonic() -> float:
            return now[0]

    monkeypatch.setattr(sources, "time", _Clock)
    reader = _restored_reader(GeneratorSource(count=None, rate=100.0, batch_size=1000), 4, 2)  # 2 of 4 splits
    assert reader.poll_next() is NOTHING_AVAILABLE
    got = []
    for second in (1, 2):  # a second: 2 splits x 100 / 4 = 50 records
        now[0] += 1.0
        while (b := reader.poll_next()) is not NOTHING_AVAILABLE:
            got.extend(b.records())
        assert len(got) == 50 * second
    assert sorted(got) == sorted([*range(0, 200, 4), *range(2, 200, 4)])  # (in turns: 50 of each split)
