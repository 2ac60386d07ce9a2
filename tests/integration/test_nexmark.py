"""Nexmark queries on Ray at parallelism 2 against the plain-Python reference over the same events."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.jobs import nexmark

N = 20_000
ARGS = ["--events", str(N), "--window-ms", "200", "--slide-ms", "100", "--batch-size", "2048", "--q2-modulus", "7"]


@pytest.fixture(scope="module")
def events():
    return nexmark.generate_events(N)


@pytest.mark.parametrize("query", [0, 1, 2, 5, 7, 8])
def test_query_equals_reference(events, query):
    args = nexmark.parse_args(["--query", str(query), *ARGS])
    env = rs.StreamEnvironment(parallelism=2)
    got = nexmark.build(env, args).execute_and_collect(f"nexmark-q{query}")
    expected = nexmark.reference(query, events, args)
    assert expected, "the reference is empty: the test data is too small"
    assert nexmark.sort_rows(got) == nexmark.sort_rows(expected)
