"""The record API's window combiner takes its keys from the records it folds (as the keyed
window operator does), not from the key column converted a second time: the same windows and
results as without the combiner for Arrow batches whose key column is a string, an int, a bool
or a float with NaNs (one key for every NaN), and the key a record error names is the record's.

In process, no Ray: the combiner's partials are fed to the keyed
:class:`CombinedWindowOperator` as a channel would (Arrow), the same batches to the plain
:class:`WindowOperator`.
"""

from __future__ import annotations

import math
from collections import Counter

import pyarrow as pa
import pytest

from raystream.checkpoint.descriptors import AggregateFunction
from raystream.engine.errors import UserCodeError
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_combiner import CombinedWindowOperator, WindowAggregateCombiner
from raystream.operators.window_operator import AGGREGATE, WindowOperator
from raystream.operators.windows import TumblingEventTimeWindows

SIZE = 10


class SumV(AggregateFunction):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: dict, accumulator: int) -> int:
        return accumulator + value["v"]

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, a: int, b: int) -> int:
        return a + b


def _run(batches: list[pa.RecordBatch], combined: bool) -> list:
    selector = KeySelector("k")
    assigner = TumblingEventTimeWindows.of(SIZE)
    stamps = TimestampAssigner(column="ts")
    if combined:
        op = CombinedWindowOperator(selector.key_of, assigner, SumV(), timestamp_assigner=stamps)
    else:
        op = WindowOperator(selector.key_of, assigner, AGGREGATE, SumV(), timestamp_assigner=stamps)
    keyed = OperatorHarness(op)
    combiner = OperatorHarness(WindowAggregateCombiner(selector, assigner, SumV(), stamps)) if combined else None
    for rb in batches:
        if combiner is None:
            keyed.process(Batch.of_arrow(rb))
            continue
        combiner.process(Batch.of_arrow(rb))
        for part in combiner.output.batches:
            keyed.process(Batch.of_arrow(part.arrow()))  # across a channel: Arrow
        combiner.output.batches.clear()
    keyed.advance_watermark(10 * SIZE)
    return [r for b in keyed.output.batches for r in b.records()]


@pytest.mark.parametrize("keys", [
    ["a", "b", "a", "c", "a", "b"],
    [3, 1, 3, 2, 3, 1],
    [True, False, True, True, False, True],
    [float("nan"), 1.5, float("nan"), 1.5, float("nan"), 2.5],
])
def test_combined_window_equals_uncombined_for_arrow_key_columns(keys):
    rows = len(keys)
    batches = [pa.RecordBatch.from_pydict({"k": keys, "v": list(range(1, rows + 1)),
                                           "ts": [i * 3 for i in range(rows)]}),
               pa.RecordBatch.from_pydict({"k": keys[::-1], "v": [10] * rows, "ts": [5 + i * 4 for i in range(rows)]})]
    plain = _run(batches, combined=False)
    combined = _run(batches, combined=True)
    assert Counter(plain) == _reference(batches)
    assert Counter(combined) == Counter(plain)


def _reference(batches: list[pa.RecordBatch]) -> Counter:
    """The sums per key (every NaN one key) and window, by hand."""
    sums: dict = {}
    for rb in batches:
        for r in rb.to_pylist():
            k = "nan" if isinstance(r["k"], float) and math.isnan(r["k"]) else r["k"]
            w = r["ts"] // SIZE
            sums[(k, w)] = sums.get((k, w), 0) + r["v"]
    return Counter(sums.values())


def test_a_record_without_the_key_field_is_named_by_the_combiner():
    combiner = OperatorHarness(WindowAggregateCombiner(KeySelector("k"), TumblingEventTimeWindows.of(SIZE), SumV(),
                                                       TimestampAssigner(column="ts")))
    with pytest.raises(UserCodeError) as err:
        combiner.process(Batch.of_records([{"k": "a", "v": 1, "ts": 1}, {"v": 2, "ts": 2}]))
    assert err.value.record == {"v": 2, "ts": 2}
