"""The arrow baseline of ``benchmarks/bench_nexmark.py`` equals the plain-Python reference (no Ray).

Window sizes and batch sizes are chosen so that windows span batches and batch boundaries
fall inside the last millisecond of a window (10 events per ms: a batch of 1995 rows ends in
the middle of ms 199, 399, ...), where closing a window one event too early shows (checked by
mutating the arrow code's window boundaries: each mutation fails some case here).
"""

from __future__ import annotations

import pytest

import raystream as rs
from benchmarks import bench_nexmark as bench
from raystream.jobs import nexmark

QUERIES = sorted(nexmark.QUERIES)
SMALL = ["--window-ms", "200", "--slide-ms", "100", "--q2-modulus", "7"]
SMALL_50 = ["--window-ms", "40", "--slide-ms", "20", "--q2-modulus", "7"]
CONFIGS = {
    "default-windows": (20_000, [], bench.BATCH_SIZE),
    "small-windows": (12_000, SMALL, bench.BATCH_SIZE),
    "batch-ends-mid-ms": (12_000, SMALL, 1995),
    "batch-ends-on-window": (12_000, SMALL, 2000),
    "slide-not-dividing-size": (
        9_000,
        ["--window-ms", "300", "--slide-ms", "200", "--q2-modulus", "7"],
        1999,
    ),
    # 50 events per ms, so a window's last ms holds a person and auctions; the first batch
    # ends right after the person of ms 39, the last ms of the window [0, 40)
    "person-and-auctions-split": (10_000, ["--events-per-second", "50000", *SMALL_50], 1951),
}


def _rows(tables):
    return nexmark.sort_rows([r for t in tables for r in t.to_pylist()])


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("query", QUERIES)
def test_arrow_baseline_equals_python_reference(query, config):
    events, extra, batch_size = CONFIGS[config]
    args = nexmark.parse_args(["--query", str(query), "--events", str(events), *extra])
    expected = nexmark.sort_rows(bench.python_query(query, args))
    assert expected, "the reference is empty: the test data is too small"
    assert _rows(bench.arrow_query(query, args, batch_size)) == expected


@pytest.mark.parametrize("query", [5, 7, 8])
def test_windowed_queries_have_several_windows_across_batches(query):
    """The small-window configuration really exercises state carried between batches."""
    args = nexmark.parse_args(["--query", str(query), "--events", "12000", *SMALL])
    starts = {r.get("window_start", r.get("window_end")) for r in bench.python_query(query, args)}
    assert len(starts) >= 5


def test_event_batches_are_the_generated_events():
    args = nexmark.parse_args(["--events", "5000"])
    tables = list(bench.event_batches(args, batch_size=2048))
    assert [t.num_rows for t in tables] == [2048, 2048, 904]
    assert all(t.schema == bench.SCHEMA for t in tables)
    assert [r for t in tables for r in t.to_pylist()] == nexmark.generate_events(5000)


def test_check_raises_on_a_wrong_result():
    args = nexmark.parse_args(["--events", "3000"])
    expected = nexmark.sort_rows(bench.python_query(2, args))
    assert bench.check("arrow", 2, bench.arrow_query(2, args), expected) == len(expected)
    wrong = bench.python_query(2, args)[1:]
    with pytest.raises(
        bench.WrongResult, match=r"q2: raystream returned \d+ rows, the python reference \d+"
    ):
        bench.check("raystream", 2, wrong, expected)


def test_unknown_query_is_a_config_error():
    with pytest.raises(rs.ConfigError, match="no arrow baseline for Nexmark query 3"):
        bench.arrow_query(3, nexmark.parse_args(["--events", "10"]))
