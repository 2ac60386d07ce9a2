"""A process function's ctx.timestamp for a record without a timestamp is None, not the
previous batch's (Flink: ``ctx.timestamp()`` is null for a record without one), and the
results of records with timestamps carry their record's timestamp however many each gives
(results per record counted per batch: basic.result_stamps)."""
from __future__ import annotations

from typing import Any

import numpy as np

import raystream as rs
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch
from raystream.operators.basic import FlatMapOperator, ProcessOperator
from raystream.operators.keyed import KeyedProcessOperator
from raystream.operators.testing import OperatorHarness

MAX_TS = 9_223_372_036_854_775_807  # (a count window's results: GlobalWindow.max_timestamp())


class Stamp(rs.ProcessFunction):
    def process_element(self, value: Any, ctx: Any) -> Any:
        yield (value, ctx.timestamp)


class KStamp(rs.KeyedProcessFunction):
    def process_element(self, value: Any, ctx: Any) -> Any:
        yield (value, ctx.timestamp)


class Fan(rs.ProcessFunction):
    """``value`` results (0, 1 or more) per record."""

    def process_element(self, value: Any, ctx: Any) -> Any:
        return [(value, j) for j in range(value)]


def _stamped(h: OperatorHarness) -> list[tuple[Any, int | None]]:
    out = []
    for b in h.output.batches:
        ts = b.timestamps.tolist() if b.timestamps is not None else [None] * len(b.records())
        out.extend(zip(b.records(), ts))
    return out


def test_a_process_functions_record_without_a_timestamp_after_one_with_sees_none() -> None:
    h = OperatorHarness(ProcessOperator(Stamp(), None))
    h.process(Batch.stamped(["window result"], [MAX_TS]))
    h.process(Batch.of_records(["plain"]))
    assert h.records() == [("window result", MAX_TS), ("plain", None)]
    assert _stamped(h) == [(("window result", MAX_TS), MAX_TS), (("plain", None), None)]


def test_a_keyed_process_functions_record_without_a_timestamp_after_one_with_sees_none() -> None:
    h = OperatorHarness(KeyedProcessOperator(KeySelector(lambda r: r), KStamp(), None))
    h.process(Batch.stamped(["a"], [500]))
    h.process(Batch.of_records(["a"]))
    assert h.records() == [("a", 500), ("a", None)]
    assert _stamped(h) == [(("a", 500), 500), (("a", None), None)]


def test_results_carry_their_records_timestamp_whatever_their_count() -> None:
    for op in (ProcessOperator(Fan(), None), KeyedProcessOperator(KeySelector(lambda r: r % 2), _KFan(), None)):
        h = OperatorHarness(op)
        h.process(Batch.stamped([2, 0, 1, 3, 0], [10, 20, 30, 40, 50]))
        h.process(Batch.stamped([1, 1], [60, 70]))  # (one each: the carried timestamps as they are)
        assert _stamped(h) == [((2, 0), 10), ((2, 1), 10), ((1, 0), 30), ((3, 0), 40), ((3, 1), 40),
                               ((3, 2), 40), ((1, 0), 60), ((1, 0), 70)]


class _KFan(rs.KeyedProcessFunction):
    def process_element(self, value: Any, ctx: Any) -> Any:
        return [(value, j) for j in range(value)]


def test_a_flat_maps_results_carry_their_records_timestamp_across_pieces() -> None:
    def fan(n: int) -> Any:
        return (n * 100 + j for j in range(n))  # (a generator: taken a piece at a time)

    op = FlatMapOperator(fan)
    h = OperatorHarness(op)
    op._piece = 3  # (small pieces: a record's results go out in several)
    op.FIRST_PIECE_ROWS = 3
    records = [4, 0, 2, 1, 7, 0]
    h.process(Batch.stamped(records, [1, 2, 3, 4, 5, 6]))
    want = [(n * 100 + j, t) for n, t in zip(records, [1, 2, 3, 4, 5, 6]) for j in range(n)]
    assert _stamped(h) == want
    lists = OperatorHarness(FlatMapOperator(lambda r: r))  # (lists and tuples, None: no results)
    lists.process(Batch.stamped([[1, 2], None, (3,), [], [4]], [7, 8, 9, 10, 11]))
    assert _stamped(lists) == [(1, 7), (2, 7), (3, 9), (4, 11)]


def test_result_stamps() -> None:
    from raystream.operators.basic import result_stamps

    stamps = np.array([5, 6, 7], dtype=np.int64)
    assert result_stamps(stamps, [1, 2, 3]) is stamps
    assert result_stamps(stamps, [2, 2, 3]).tolist() == [5, 5, 7]
    assert result_stamps(stamps, [0, 2, 3]).tolist() == [6, 6, 7]  # (distinct ends, yet not one each)
    assert result_stamps(stamps, [11, 11, 12], start=10).tolist() == [5, 7]
    assert result_stamps(stamps, [11, 12, 13], start=10) is stamps
    assert result_stamps(stamps, [1, 2, 4]).tolist() == [5, 6, 7, 7]
    assert result_stamps(stamps, [1, 1, 3]).tolist() == [5, 7, 7]
