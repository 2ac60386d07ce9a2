"""NaN keys in the per-key state that keyed operators keep themselves (reduce, sum/min/max,
the combiners before the shuffle, heap timers of a KeyedProcessFunction).

Python holds ``nan != nan`` and a dict finds a NaN key only under the very object it was
stored with. The keyed state backends made NaN keys canonical, but the operators that keep
per-key dicts of their own looked them up by the raw key, a new float object per record
(each one unpickled from a channel): a rolling ``reduce`` of three ``(nan, 1)`` gave 1, 1, 1
instead of 1, 2, 3, a final sum gave three rows of 1, and a KeyedProcessFunction that
registered one event-time timer per record of a NaN key fired it once per record. The key
selector now gives every keyed operator canonical keys (one float object per NaN, also in
tuples), at parallelism 1 and 2 alike.
"""

from __future__ import annotations

import pickle
from collections import Counter

import pytest

import raystream as rs
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch
from raystream.operators.keyed import ReduceOperator
from raystream.operators.testing import OperatorHarness


def nan() -> float:
    """A new NaN object, as a record unpickled from a channel carries one."""
    return pickle.loads(pickle.dumps(float("nan")))


def records() -> list:
    return [(nan(), 1) for _ in range(3)] + [((1, nan()), 1) for _ in range(3)] + [("a", 1)]


def rolling_reference(recs: list) -> Counter:
    """The rolling sums a reduce emits, per key, computed with one NaN per key."""
    out: Counter = Counter()
    totals: dict = {}
    for k, v in recs:
        name = repr(k)  # ('nan', '(1, nan)', "'a'"): one name per NaN key
        totals[name] = totals.get(name, 0) + v
        out[(name, totals[name])] += 1
    return out


def named(out: list) -> Counter:
    return Counter((repr(k), v) for k, v in out)


def test_key_selector_gives_one_object_per_nan():
    sel = KeySelector(0)
    a, b = sel.key_of((nan(), 1)), sel.key_of((nan(), 2))
    assert a is b
    keys = sel.keys_of(Batch.of_records([((1, nan()), 1), ((1, nan()), 2)]))
    assert keys[0] == keys[1]
    fn_sel = KeySelector(lambda r: r[0])
    assert fn_sel.key_of((nan(), 1)) is a


def test_reduce_operator_finds_a_nan_key_again_without_ray():
    h = OperatorHarness(ReduceOperator(KeySelector(0), lambda x, y: (x[0], x[1] + y[1])))
    h.process([(nan(), 1)])
    h.process([(nan(), 1)])
    h.process([((1, nan()), 1), ((1, nan()), 1)])
    assert [v for _, v in h.records()] == [1, 2, 1, 2]


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("parallelism", [1, 2])
def test_rolling_reduce_and_sum_of_nan_keys(parallelism):
    recs = records()
    env = rs.StreamEnvironment(parallelism=parallelism)
    out = env.from_collection(recs).key_by(0).reduce(lambda x, y: (x[0], x[1] + y[1])).execute_and_collect()
    assert named(out) == rolling_reference(recs)
    env = rs.StreamEnvironment(parallelism=parallelism)
    out = env.from_collection(recs).key_by(lambda r: r[0]).sum(1).execute_and_collect()
    assert named(out) == rolling_reference(recs)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("parallelism", [1, 2])
def test_final_sum_and_combinable_reduce_of_nan_keys(parallelism):
    recs = records()
    want = Counter({("nan", 3): 1, ("(1, nan)", 3): 1, ("'a'", 1): 1})
    env = rs.StreamEnvironment(parallelism=parallelism)
    out = env.from_collection(recs).key_by(0).sum(1, emit="final").execute_and_collect()
    assert named(out) == want
    env = rs.StreamEnvironment(parallelism=parallelism)
    out = (env.from_collection(recs).key_by(0)
           .reduce(lambda x, y: (x[0], x[1] + y[1]), emit="final", combinable=True).execute_and_collect())
    assert named(out) == want


class OneTimerPerKey(rs.KeyedProcessFunction):
    """Registers the same event-time timer for every record: one firing per key (Flink
    de-duplicates a key's timers of one time)."""

    def process_element(self, value, ctx):
        ctx.timer_service().register_event_time_timer(100)
        return None

    def on_timer(self, timestamp, ctx):
        yield repr(ctx.get_current_key())


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("parallelism", [1, 2])
def test_heap_timers_of_a_nan_key_fire_once(parallelism):
    recs = [{"k": nan(), "v": i} for i in range(4)] + [{"k": ("x", nan()), "v": 9}] * 2
    env = rs.StreamEnvironment(parallelism=parallelism)
    out = env.from_collection(recs).key_by("k").process(OneTimerPerKey()).execute_and_collect()
    assert sorted(out) == ["('x', nan)", "nan"]
