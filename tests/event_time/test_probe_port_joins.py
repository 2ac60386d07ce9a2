"""Joins and unions as a Flink user ports them, checked against a plain-Python reference
at parallelism 1 and 2 (in process), now that records carry their timestamps:

* an interval join's pair carries ``max(left, right)`` (Flink's ``IntervalJoinOperator``):
  an event-time window after the join groups the pairs by it, with no time field in them;
* a window join (Flink builds it as a co-group over a window) and a co-group stamp their
  results with the window's ``max_timestamp()``: a process function after them sees it;
* a union of a stamped and an unstamped stream before an event-time window: Flink fails the
  job ("Record has Long.MIN_VALUE timestamp"); here the job is refused when it is built,
  naming the union and saying to assign timestamps after it; never a silent drop or window.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import GraphError
from raystream.operators.windows import TumblingEventTimeWindows
from tests.event_time.test_probe_port_contexts import Stamp, run

STRATEGY = rs.WatermarkStrategy.for_bounded_out_of_orderness(50).with_timestamp_column("ts")
#: two streams in event-time order, 4 keys, at different paces
LEFT = [{"k": f"k{i % 4}", "ts": i * 37, "i": i} for i in range(80)]
RIGHT = [{"k": f"k{i % 4}", "ts": i * 53 + 11, "i": i} for i in range(60)]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_window_after_an_interval_join_groups_pairs_by_the_later_timestamp(parallelism: int) -> None:
    env = rs.StreamEnvironment(parallelism=parallelism)
    left = env.from_collection(LEFT).assign_timestamps_and_watermarks(STRATEGY)
    right = env.from_collection(RIGHT).assign_timestamps_and_watermarks(STRATEGY)
    pairs = (left.key_by("k").interval_join(right.key_by("k")).between(-100, 100)
             .process(lambda a, b: (a["k"], a["i"], b["i"])))  # (no time field in a pair)
    per_window = pairs.key_by(lambda p: p[0]).window(TumblingEventTimeWindows.of(500)).apply(
        lambda k, w, ps: [(k, w.start, sorted(ps))])
    got = run(env, {"pairs": pairs.process(Stamp()), "per_window": per_window}, "interval-join-window")
    want: list[tuple[tuple, int]] = [((a["k"], a["i"], b["i"]), max(a["ts"], b["ts"]))
                                     for a in LEFT for b in RIGHT
                                     if a["k"] == b["k"] and a["ts"] - 100 <= b["ts"] <= a["ts"] + 100]
    assert len(want) > 50
    assert sorted(got["pairs"]) == sorted(want)
    windows: dict[tuple[str, int], list[tuple]] = {}
    for pair, t in want:
        windows.setdefault((pair[0], t - t % 500), []).append(pair)
    assert sorted(got["per_window"]) == sorted((k, s, sorted(ps)) for (k, s), ps in windows.items())


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_process_function_after_a_window_join_or_co_group_sees_the_windows_last_millisecond(parallelism: int) -> None:
    env = rs.StreamEnvironment(parallelism=parallelism)
    left = env.from_collection(LEFT).assign_timestamps_and_watermarks(STRATEGY)
    right = env.from_collection(RIGHT).assign_timestamps_and_watermarks(STRATEGY)
    joined = (left.join(right).where("k").equal_to("k").window(TumblingEventTimeWindows.of(500))
              .apply(lambda a, b: (a["k"], a["i"], b["i"])))
    grouped = (left.co_group(right).where("k").equal_to("k").window(TumblingEventTimeWindows.of(500))
               .apply(lambda k, a, b: [(k, len(list(a)), len(list(b)))]))
    got = run(env, {"joined": joined.process(Stamp()), "grouped": grouped.process(Stamp())}, "window-join-process")

    def last_ms(ts: int) -> int:
        return ts - ts % 500 + 499

    want = [((a["k"], a["i"], b["i"]), last_ms(a["ts"])) for a in LEFT for b in RIGHT
            if a["k"] == b["k"] and a["ts"] // 500 == b["ts"] // 500]
    assert len(want) > 100
    assert sorted(got["joined"]) == sorted(want)
    counts: dict[tuple[str, int], list[int]] = {}
    for side, records in enumerate((LEFT, RIGHT)):
        for r in records:
            counts.setdefault((r["k"], last_ms(r["ts"])), [0, 0])[side] += 1
    assert sorted(got["grouped"]) == sorted(((k, n[0], n[1]), t) for (k, t), n in counts.items())


def test_a_window_after_a_union_of_a_stamped_and_an_unstamped_stream_is_refused_naming_the_union() -> None:
    env = rs.StreamEnvironment(parallelism=2)
    stamped = env.from_collection(LEFT).assign_timestamps_and_watermarks(STRATEGY)
    unstamped = env.from_collection(RIGHT)
    for union in (stamped.union(unstamped), unstamped.union(stamped), stamped.map(dict).union(unstamped.filter(bool))):
        with pytest.raises(GraphError, match=r"'union' merges streams with different event timestamps.*"
                                             r"assign_timestamps_and_watermarks\(\) after the union"):
            union.key_by("k").window(TumblingEventTimeWindows.of(500)).apply(lambda k, w, rs_: [len(list(rs_))])
    # the remedy: stamp the merged stream (bounded by the whole span: the union interleaves them)
    restamped = stamped.union(unstamped).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_bounded_out_of_orderness(10_000).with_timestamp_column("ts"))
    counted = restamped.key_by("k").window(TumblingEventTimeWindows.of(500)).apply(
        lambda k, w, rs_: [(k, w.start, len(list(rs_)))])
    got = run(env, {"counted": counted}, "union-restamped")
    counts: dict[tuple[str, int], int] = {}
    for r in LEFT + RIGHT:
        counts[(r["k"], r["ts"] - r["ts"] % 500)] = counts.get((r["k"], r["ts"] - r["ts"] % 500), 0) + 1
    assert sorted(got["counted"]) == sorted((k, s, n) for (k, s), n in counts.items())
