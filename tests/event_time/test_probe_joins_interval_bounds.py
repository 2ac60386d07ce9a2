"""Interval join bounds: ``between(lo, hi)`` is inclusive on both ends, and
``lower_bound_exclusive()`` / ``upper_bound_exclusive()`` exclude an end (Flink's
``lowerBoundExclusive()`` / ``upperBoundExclusive()``, PyFlink's names).

Before, the interval join had neither method: a Flink port's
``.between(0, 5).lower_bound_exclusive()`` failed when the job was built with
``AttributeError: 'IntervalJoin' object has no attribute 'lower_bound_exclusive'``, and the
only way round was to shift the bounds by hand. Bounds that exclude every timestamp
(``between(0, 0)`` with an exclusive end) are refused when the job is built. Checked against
a plain-Python reference on the operator (harness) and on Ray at parallelism 1 and 2.
"""

from __future__ import annotations

import itertools

import pytest

import raystream as rs
from raystream.engine.errors import GraphError
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import WatermarkStrategy

STRATEGY = WatermarkStrategy.for_bounded_out_of_orderness(100).with_timestamp_column("ts")
LEFT = [{"k": k, "ts": t, "side": "l"} for k, t in [("a", 10), ("a", 15), ("b", 10), ("a", 20), ("b", 30), ("a", 10)]]
RIGHT = [{"k": k, "ts": t, "side": "r"} for k, t in
         [("a", 10), ("a", 12), ("a", 15), ("b", 5), ("b", 15), ("a", 25), ("b", 30), ("a", 20), ("a", 8)]]


def reference(lo, hi, lower_exclusive, upper_exclusive):
    out = []
    for left, right in itertools.product(LEFT, RIGHT):
        d = right["ts"] - left["ts"]
        if left["k"] == right["k"] and (lo < d if lower_exclusive else lo <= d) and (d < hi if upper_exclusive else d <= hi):
            out.append((left["k"], left["ts"], right["ts"]))
    return sorted(out)


def interval_join(env, lo, hi, lower_exclusive, upper_exclusive, left=LEFT, right=RIGHT):
    a = env.from_collection(left).assign_timestamps_and_watermarks(STRATEGY).key_by("k")
    b = env.from_collection(right).assign_timestamps_and_watermarks(STRATEGY).key_by("k")
    joined = a.interval_join(b).between(lo, hi)
    if lower_exclusive:
        joined = joined.lower_bound_exclusive()
    if upper_exclusive:
        joined = joined.upper_bound_exclusive()
    return joined.process(lambda left, right: (left["k"], left["ts"], right["ts"]))


BOUNDS = [(-5, 5), (0, 5), (-5, 0), (0, 0), (2, 10), (-10, -2), (-1, 1)]
EXCLUSIVE = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("lower_exclusive,upper_exclusive", EXCLUSIVE)
@pytest.mark.parametrize("lo,hi", BOUNDS)
def test_bounds_on_the_operator_equal_the_reference(lo, hi, lower_exclusive, upper_exclusive):
    env = rs.StreamEnvironment(parallelism=2)
    if (lower_exclusive or upper_exclusive) and hi - lo < lower_exclusive + upper_exclusive:
        with pytest.raises(GraphError, match="holds no timestamp"):
            interval_join(env, lo, hi, lower_exclusive, upper_exclusive)
        return
    stream = interval_join(env, lo, hi, lower_exclusive, upper_exclusive, [], [])
    h = OperatorHarness(stream.node.operator_factory())
    for i in range(max(len(LEFT), len(RIGHT))):  # interleaved, out of order, equal timestamps
        if i < len(LEFT):
            h.process([LEFT[i]], 0)
        if i < len(RIGHT):
            h.process([RIGHT[i]], 1)
    h.end_input()
    assert sorted(h.records()) == reference(lo, hi, lower_exclusive, upper_exclusive)


def test_an_empty_interval_is_refused_when_the_job_is_built():
    env = rs.StreamEnvironment(parallelism=1)
    with pytest.raises(GraphError, match=r"between\(0, 0\) with lower_bound_exclusive\(\) holds no timestamp"):
        interval_join(env, 0, 0, True, False)
    with pytest.raises(GraphError, match=r"between\(3, 4\) with lower_bound_exclusive\(\) and upper_bound_exclusive\(\)"):
        interval_join(env, 3, 4, True, True)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("parallelism", [1, 2])
def test_exclusive_bounds_on_ray(parallelism):
    for lo, hi, lower_exclusive, upper_exclusive in [(-5, 5, True, False), (0, 5, True, True), (-5, 0, False, True)]:
        env = rs.StreamEnvironment(parallelism=parallelism)
        got = interval_join(env, lo, hi, lower_exclusive, upper_exclusive).execute_and_collect()
        assert sorted(got) == reference(lo, hi, lower_exclusive, upper_exclusive), (lo, hi, lower_exclusive, upper_exclusive)
