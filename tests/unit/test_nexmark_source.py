"""The Nexmark source batches: one ``nexmark_event`` per index, as records or typed Arrow columns."""

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
