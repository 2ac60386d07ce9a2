"""An idle source does not hold event time back across a network hop or a two-input
operator, on Ray (the tester's idle-source scenarios, made deterministic with gates).

Source A emits 100 records (event times 0..9,900 ms, watermark 9,899) and then blocks on a
gate: it stays *active* and holds its watermark. Source B (``with_idleness(200)``) emits one
record (event time 0) and blocks on another gate: after 200 ms of processing time it is
idle. While both are blocked, every window up to A's watermark must fire:

* ``union_rebalanced``: B goes through a map at parallelism 2 before the union, so B's idleness
  must cross a task (before: the map task never passed the IDLE status on);
* ``interval_join``: the join's combined watermark must leave the idle B out (before: the
  minimum of both inputs), seen through a window after the join;
* ``co_group``: the window co-group of A and B, likewise;
* ``stamped_after_a_map``: B is stamped by an ``assign_timestamps_and_watermarks`` after a map
  (not in its source), so the operator itself must go idle (before: ``with_idleness`` was not
  applied there, and the windows waited for B's gate).

The test waits for the output with a condition (no sleeps, no timing assertions), then opens
the gates; the whole output is checked once the job ends.
"""

from __future__ import annotations

import ast
import os
from typing import Any

import pytest

import raystream as rs
from raystream.operators.sinks import collected_records
from raystream.operators.time import WatermarkStrategy
from raystream.operators.windows import TumblingEventTimeWindows
from tests.integration import gated
from tests.waiting import wait_for

A_BEFORE_GATE = 100
A_TOTAL = 200


def a_record(i: int) -> dict:
    return {"k": "x", "ts": i * 100, "src": "A"}


def b_record(i: int) -> dict:
    return {"k": "x", "ts": 0, "src": "B"}


def identity(r: dict) -> dict:
    return r


class Note:
    """A map that appends each record to a file as it passes (the output seen mid-run)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, record: Any) -> Any:
        with open(self.path, "a") as f:
            f.write(repr(record) + "\n")
        return record


def seen(path: str) -> set:
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return {ast.literal_eval(line) for line in f.read().splitlines() if line}


def window_count(key: Any, window: Any, records: Any) -> list:
    return [(window.start, len(list(records)))]


def co_group_counts(key: Any, lefts: list, rights: list) -> list:
    return [(lefts[0]["ts"] // 1000 * 1000, len(lefts), len(rights))]


def join_pair(left: dict, right: dict) -> dict:
    return {"k": left["k"], "ts": left["ts"]}


def build(env: rs.StreamEnvironment, variant: str, gate_a: str, gate_b: str, note: str) -> None:
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    a = (gated.generate(env, a_record, A_TOTAL, None, 10, gate_a, "a", pause_at=A_BEFORE_GATE)
         .assign_timestamps_and_watermarks(strategy))
    b = gated.generate(env, b_record, 1, None, 1, gate_b, "b", pause_at=1)
    if variant == "stamped_after_a_map":
        b = b.map(identity)
    b = b.assign_timestamps_and_watermarks(strategy.with_idleness(200))
    windows = TumblingEventTimeWindows.of(1000)
    if variant in ("union_rebalanced", "stamped_after_a_map"):
        out = a.union(b.map(identity).set_parallelism(2)).key_by("k").window(windows).apply(window_count)
    elif variant == "interval_join":
        joined = a.key_by("k").interval_join(b.key_by("k")).between(-50, 50).process(join_pair)
        out = joined.key_by("k").window(windows).with_timestamp("ts").apply(window_count)
    else:
        out = a.co_group(b).where("k").equal_to("k").window(windows).apply(co_group_counts)
    out.map(Note(note)).collect()


def expected(variant: str, windows: int) -> set:
    """The results of the first ``windows`` windows."""
    if variant in ("union_rebalanced", "stamped_after_a_map"):
        return {(w * 1000, 10 + (w == 0)) for w in range(windows)}
    if variant == "interval_join":
        return {(0, 1)}  # A's record 0 joins B's only record
    return {(w * 1000, 10, int(w == 0)) for w in range(windows)}


@pytest.mark.parametrize("variant", ["union_rebalanced", "interval_join", "co_group", "stamped_after_a_map"])
def test_windows_fire_while_the_idle_source_is_still_blocked(variant: str, tmp_path) -> None:
    gate_a, gate_b, note = str(tmp_path / "gate-a"), str(tmp_path / "gate-b"), str(tmp_path / "seen")
    env = rs.StreamEnvironment(parallelism=1)
    build(env, variant, gate_a, gate_b, note)
    client = env.execute_async(f"idle-{variant}")
    try:
        # A's watermark is 9,899 while it waits: windows [0, 9,000) close if B is left out
        early = expected(variant, 9)
        got = wait_for(lambda: (s := seen(note)) >= early and s, f"the windows before A's gate ({variant})", 90)
        assert got == early  # (nothing of A after its gate exists yet)
        assert not os.path.exists(gate_b)  # B is still blocked: it did not end, it went idle
    finally:
        open(gate_a, "w").close()
        open(gate_b, "w").close()
    result = client.wait(timeout=120)
    final = sorted(r for batches in result.sink_results.values() for r in collected_records(batches))
    assert final == sorted(expected(variant, A_TOTAL // 10))
