"""Nexmark in-process: the generator, and the window stages of q5, q7 and q8 run through
OperatorHarness against the plain-Python reference (the Ray runs are in
tests/integration/test_nexmark.py)."""

from __future__ import annotations

import random

import pytest

from raystream.engine.partitioners import KeySelector
from raystream.jobs import nexmark
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_fast import VectorWindowAggregateOperator
from raystream.operators.window_operator import AGGREGATE, LIST, WindowOperator
from raystream.operators.windows import SlidingEventTimeWindows, TumblingEventTimeWindows

N = 6_000
ARGS = nexmark.parse_args(["--window-ms", "100", "--slide-ms", "50", "--q2-modulus", "7"])
TS = TimestampAssigner(column="ts")


@pytest.fixture(scope="module")
def events():
    return nexmark.generate_events(N)


def _chunks(rows, n=512):
    return [rows[i:i + n] for i in range(0, len(rows), n)]


def test_generator_is_deterministic_with_nexmark_proportions(events):
    assert nexmark.generate_events(N) == events
    assert nexmark.generate_events(50, seed=1) != events[:50]
    kinds = [e["kind"] for e in events]
    assert (kinds.count(nexmark.PERSON), kinds.count(nexmark.AUCTION), kinds.count(nexmark.BID)) == (N // 50, 3 * N // 50, 46 * N // 50)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert events[10]["ts"] - nexmark.T0 == 1  # 10 events per ms
    # a pure function of the index: any split of the index range sees the same events
    idx = list(range(N))
    random.Random(3).shuffle(idx)
    assert all(nexmark.nexmark_event(i) == events[i] for i in idx[:500])
    # bids refer to existing auctions and persons; auctions to existing sellers
    seen_persons, seen_auctions = set(), set()
    for e in events:
        if e["kind"] == nexmark.PERSON:
            seen_persons.add(e["id"])
        elif e["kind"] == nexmark.AUCTION:
            assert e["person"] in seen_persons
            seen_auctions.add(e["id"])
        else:
            assert e["auction"] in seen_auctions and e["person"] in seen_persons
    assert len({tuple(e) for e in events}) == 1  # one schema: typed Arrow columns


def test_build_rejects_unknown_query():
    import raystream as rs

    with pytest.raises(rs.ConfigError, match="unknown Nexmark query 4"):
        nexmark.reference(4, [], ARGS)


def test_q5_stages_equal_reference(events, state_backend):
    bids = [e for e in events if e["kind"] == nexmark.BID]
    counts = OperatorHarness(VectorWindowAggregateOperator(
        "auction", "ts", SlidingEventTimeWindows.of(ARGS.window_ms, ARGS.slide_ms), {"num": ("auction", "count")}))
    top = OperatorHarness(WindowOperator(
        KeySelector("window_start").key_of, TumblingEventTimeWindows.of(ARGS.slide_ms), LIST, None, nexmark._HotItems(),
        timestamp_assigner=TimestampAssigner(fn=lambda r: r["window_end"] - 1)), state_backend=state_backend)
    for chunk in _chunks(bids):
        counts.process(chunk)
        wm = chunk[-1]["ts"] - 1
        counts.advance_watermark(wm)
        stage1 = counts.take()
        if stage1:
            top.process(stage1)
        top.advance_watermark(wm)
    counts.end_input()
    if counts.records():
        top.process(counts.take())
    top.end_input()
    assert nexmark.sort_rows(top.records()) == nexmark.sort_rows(nexmark.reference(5, events, ARGS))


def test_q7_window_aggregate_equals_reference(events, state_backend):
    h = OperatorHarness(WindowOperator(lambda r: 0, TumblingEventTimeWindows.of(ARGS.window_ms), AGGREGATE,
                                       nexmark._MaxBids(), nexmark._WithWindowEnd(), timestamp_assigner=TS),
                        state_backend=state_backend)
    bids = [e for e in events if e["kind"] == nexmark.BID]
    for chunk in _chunks(bids):
        h.process(chunk)
        h.advance_watermark(chunk[-1]["ts"] - 1)
    h.end_input()
    expected = nexmark.reference(7, events, ARGS)
    assert len(expected) >= N // 10 // ARGS.window_ms
    assert nexmark.sort_rows(h.records()) == nexmark.sort_rows(expected)


def test_max_bids_keeps_ties_and_merges():
    agg = nexmark._MaxBids()
    acc = agg.create_accumulator()
    for p in (3, 5, 5, 1):
        acc = agg.add({"price": p}, acc)
    assert agg.get_result(acc) == [{"price": 5}, {"price": 5}]
    assert agg.merge((7, ["x"]), acc) == (7, ["x"]) and agg.merge((5, ["y"]), acc)[1] == ["y", {"price": 5}, {"price": 5}]


def test_q8_window_equals_reference(events, state_backend):
    """q8's stage: persons and auctions keyed by the person id, one tumbling window each."""
    h = OperatorHarness(WindowOperator(nexmark._person_id, TumblingEventTimeWindows.of(ARGS.window_ms), LIST, None,
                                       nexmark._NewSellers(), timestamp_assigner=TS), state_backend=state_backend)
    for chunk in _chunks(events):
        h.process([e for e in chunk if e["kind"] != nexmark.BID])
        h.advance_watermark(chunk[-1]["ts"] - 1)
    h.end_input()
    expected = nexmark.reference(8, events, ARGS)
    assert expected
    assert nexmark.sort_rows(h.records()) == nexmark.sort_rows(expected)


@pytest.mark.parametrize("query", [0, 1, 2])
def test_stateless_references(events, query):
    rows = nexmark.reference(query, events, ARGS)
    bids = [e for e in events if e["kind"] == nexmark.BID]
    if query == 0:
        assert rows == events
    elif query == 1:
        assert len(rows) == len(bids) and rows[0]["price"] == bids[0]["price"] * 908 // 1000
    else:
        assert rows and all(r["auction"] % 7 == 0 for r in rows)
