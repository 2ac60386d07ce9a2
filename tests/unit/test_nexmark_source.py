"""The Nexmark source batches: one ``nexmark_event`` per index as records, or typed Arrow
columns of the same values (one ``event_row`` per index, no dict)."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.records import arrow_to_records
from raystream.jobs import nexmark


def test_nexmark_source_batches_are_the_events():
    idx = range(3, 400, 2)
    expected = [nexmark.nexmark_event(i, 1, 5000) for i in idx]
    assert nexmark.event_batch(idx, 1, 5000) == expected
    rb = nexmark.event_columns(idx, 1, 5000)
    assert rb.schema == nexmark.EVENT_SCHEMA
    assert rb.to_pylist() == expected
    assert arrow_to_records(rb) == expected


@pytest.mark.parametrize("seed, eps", [(0, 10_000), (1, 5000), (7, 1000), (2**40 + 3, 333)])
def test_event_rows_are_the_event_values(seed, eps):
    """event_row repeats nexmark_event's arithmetic: same values in EVENT_SCHEMA order for
    persons, auctions and bids, at epoch boundaries and far into the stream."""
    idx = [*range(0, 260), *range(49_990, 50_060), 10**9 + 1, 10**12 + 50, 2**63 + 4]
    for i in idx:
        e = nexmark.nexmark_event(i, seed, eps)
        assert list(e) == nexmark.EVENT_SCHEMA.names
        assert nexmark.event_row(i, seed, eps) == tuple(e.values()), i


def test_event_columns_build_no_event_dicts(monkeypatch):
    """The columnar source generates the values without a dict per event (nexmark_event is
    not called), and they are still the events' values."""
    idx = range(5, 3000, 3)
    expected = nexmark.event_batch(idx, 2, 4000)

    def no_dicts(*args):
        raise AssertionError("event_columns built an event dict")

    monkeypatch.setattr(nexmark, "nexmark_event", no_dicts)
    assert nexmark.event_columns(idx, 2, 4000).to_pylist() == expected
    assert nexmark.event_columns(idx, 2, 4000, columns=("price", "kind")).to_pylist() == [
        {"price": e["price"], "kind": e["kind"]} for e in expected]
    assert nexmark.event_columns(range(0), columns=("ts",)).num_rows == 0


def test_projected_columns_are_those_fields_of_the_events():
    idx = range(0, 500)
    cols = ("kind", "ts", "price")
    rb = nexmark.event_columns(idx, columns=cols)
    assert rb.schema.names == list(cols)
    assert rb.to_pylist() == [{c: e[c] for c in cols} for e in nexmark.event_batch(idx)]
    with pytest.raises(rs.ConfigError, match=r"no columns \['bidder'\]"):
        nexmark.event_columns(idx, columns=("kind", "bidder"))


def test_q1_columns_equal_the_q1_rows():
    rb = nexmark.event_columns(range(3000), columns=("kind", "ts", "auction", "person", "price"))
    expected = nexmark.reference(1, nexmark.event_batch(range(3000)), nexmark.parse_args([]))
    assert nexmark._q1_columns(rb).to_pylist() == expected


@pytest.mark.parametrize("size, step", [(50, 1000), (100, 4096), (2000, 8192), (100, 7)])
def test_top_bids_per_batch_keep_every_windows_top_bids(size, step):
    """q7's pre-selection: the top bids per window over the batches' kept bids (ties
    included) are the reference's, for windows within one batch and across batches."""
    n = 30_000
    kept = []
    for s in range(0, n, step):
        kept.extend(nexmark._top_bids(nexmark.event_columns(range(s, min(n, s + step))), size).to_pylist())
    by_window: dict[int, list] = {}
    for b in kept:
        by_window.setdefault(b["ts"] - b["ts"] % size, []).append(b)
    got = [{"auction": b["auction"], "bidder": b["person"], "price": b["price"], "ts": b["ts"], "window_end": w + size}
           for w, bids in by_window.items() for b in bids if b["price"] == max(x["price"] for x in bids)]
    args = nexmark.parse_args(["--window-ms", str(size)])
    assert nexmark.sort_rows(got) == nexmark.sort_rows(nexmark.reference(7, nexmark.generate_events(n), args))
    if step >= 1000:
        assert len(kept) < n // 100  # a pre-selection, not every bid
