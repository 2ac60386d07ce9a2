"""An event-time window after a count window: the count window's results carry
GlobalWindow.max_timestamp() (2**63 - 1, as Flink stamps them), so their event-time windows
would never fire and their contents were discarded at the end, without an error or a warning
(before 000aba6 they were windowed by their time field). Now the graph is refused when it is
built, naming the count window and the remedies; with_timestamp or an assigner after the count
window reads the results' own time field. And a window operator fails (does not drop) a record
whose window ends after the largest watermark, on each of its paths."""
from __future__ import annotations

from typing import Any

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import ConfigError, GraphError
from raystream.engine.local_runtime import run_in_process
from raystream.engine.records import Batch
from raystream.operators.sinks import collected_records
from raystream.operators.testing import OperatorHarness
from raystream.operators.windows import (
    EventTimeSessionWindows,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)

EV = [{"k": f"k{i % 2}", "ts": i * 100, "v": i} for i in range(40)]
MAX_TS = 2**63 - 1


def _fours(parallelism: int = 1) -> tuple[rs.StreamEnvironment, Any]:
    env = rs.StreamEnvironment(parallelism=parallelism)
    s = env.from_collection(EV).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts"))
    return env, s.key_by("k").count_window(4).reduce(lambda a, b: {"k": a["k"], "ts": b["ts"], "v": a["v"] + b["v"]})


def test_an_event_time_window_after_a_count_window_is_refused_when_built() -> None:
    _env, fours = _fours()
    windowed = fours.key_by("k").window(TumblingEventTimeWindows.of(1000))
    with pytest.raises(GraphError, match=r"'window_reduce', a GlobalWindows \(count\) window.*with_timestamp"):
        windowed.apply(lambda k, w, r: [(k, w.start, len(list(r)))])
    with pytest.raises(GraphError, match=r"GlobalWindows"):
        fours.key_by("k").window(TumblingEventTimeWindows.of(1000)).aggregate(n=("v", "count"))
    with pytest.raises(GraphError, match=r"GlobalWindows"):  # (through a map: still the count window's stamps)
        fours.map(lambda r: r).window_all(TumblingEventTimeWindows.of(1000)).reduce(lambda a, b: a)


def test_with_timestamp_after_a_count_window_windows_by_the_results_time() -> None:
    env, fours = _fours()
    fours.key_by("k").window(TumblingEventTimeWindows.of(1000)).with_timestamp("ts").apply(
        lambda k, w, r: [(k, w.start, sorted(x["v"] for x in r))]).collect()
    results = run_in_process(env.get_job_graph(), JobConfig(name="count-then-time"), timeout_s=120)["results"]
    got = sorted(r for b in results.values() for r in collected_records(b))
    # each key's fours: k0 gets v 0,2,4,6 (ts 600), 8..14 (ts 1400)...; a result's ts is its last record's
    want: dict[tuple[str, int], list[int]] = {}
    for k in ("k0", "k1"):
        vs = [e for e in EV if e["k"] == k]
        for i in range(0, len(vs), 4):
            chunk = vs[i:i + 4]
            start = chunk[-1]["ts"] - chunk[-1]["ts"] % 1000
            want.setdefault((k, start), []).append(sum(e["v"] for e in chunk))
    assert got == sorted((k, s, sorted(v)) for (k, s), v in want.items())


@pytest.mark.parametrize("case", ["panes", "tumbling_lateness", "sliding", "session"])
def test_a_window_fails_a_record_whose_window_ends_after_the_largest_watermark(case: str) -> None:
    env = rs.StreamEnvironment(parallelism=1)
    s = env.from_collection([("a", 1)]).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1]))
    keyed = s.key_by(0)
    if case == "panes":  # (pane mode: tumbling, default trigger, no lateness)
        w = keyed.window(TumblingEventTimeWindows.of(1000))
    elif case == "tumbling_lateness":  # (the tumbling fast path)
        w = keyed.window(TumblingEventTimeWindows.of(1000)).allowed_lateness(10)
    elif case == "sliding":
        w = keyed.window(SlidingEventTimeWindows.of(1000, 500))
    else:
        w = keyed.window(EventTimeSessionWindows.with_gap(1000))
    h = OperatorHarness(w.reduce(lambda a, b: a).node.operator_factory())
    h.process(Batch.stamped([("a", 1), ("a", 2)], [5, 7]))
    with pytest.raises(ConfigError, match=r"the record \('a', 9\) has the event timestamp 9223372036854775807.*never fire"):
        h.process(Batch.stamped([("a", 8), ("a", 9)], [9, MAX_TS]))
