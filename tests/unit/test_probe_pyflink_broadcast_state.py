"""PyFlink's ``BroadcastState`` methods on ``ctx.get_broadcast_state(descriptor)``:
``put``, ``put_all``, ``remove``, ``contains``, ``is_empty`` (a port of a PyFlink broadcast
job writes ``state.put(k, v)`` and ``state.contains(k)``). Before, the state was a plain dict
and such a port failed with ``'dict' object has no attribute 'put'``; now it runs, keyed or
not, at parallelism 1 and 2, and ``process_element``'s read-only view refuses the writes with
the remedy as it refuses a dict's.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.checkpoint import MapStateDescriptor
from raystream.engine.config import JobConfig
from raystream.engine.errors import ConfigError, JobFailed
from raystream.engine.local_runtime import run_in_process
from raystream.operators.functions import BroadcastState
from raystream.operators.sinks import collected_records
from raystream.operators.testing import OperatorHarness

RULES = MapStateDescriptor("rules")


class Thresholds(rs.KeyedBroadcastProcessFunction):
    """As PyFlink writes it: rules ``(name, limit)`` put, ``(name, None)`` removed."""

    def process_broadcast_element(self, value, ctx):
        state = ctx.get_broadcast_state(RULES)
        name, limit = value
        if limit is None:
            state.remove(name)
        else:
            state.put(name, limit)

    def process_element(self, value, ctx):
        state = ctx.get_broadcast_state(RULES)
        if state.is_empty():
            return
        for name, limit in state.items():
            if state.contains(name) and value[1] > limit:
                yield (name, value[0], value[1])


def run(env):
    result = run_in_process(env.get_job_graph(), JobConfig(name="broadcast-state"), timeout_s=120)
    [batches] = result["results"].values()
    return sorted(collected_records(batches))


def test_pyflink_broadcast_state_methods_in_a_keyed_broadcast_operator():
    env = rs.StreamEnvironment(parallelism=1)
    rules = env.from_collection([("big", 10)])
    events = env.from_collection([("a", 5)])
    factory = events.key_by(lambda e: e[0]).connect(rules.broadcast(RULES)).process(Thresholds()).node.operator_factory
    h = OperatorHarness(factory())
    steps = [(1, [("big", 10), ("huge", 100), ("big", 20), ("gone", 1)]), (0, [("a", 5), ("b", 25), ("a", 150)]),
             (1, [("gone", None)]), (0, [("c", 15), ("d", 30)])]
    expected, limits = [], {}
    for side, records in steps:
        h.process(records, side)
        for r in records:
            if side == 1:
                limits.pop(r[0], None) if r[1] is None else limits.__setitem__(r[0], r[1])
            else:
                expected += [(name, r[0], r[1]) for name, limit in limits.items() if r[1] > limit]
    assert sorted(h.take()) == sorted(expected)
    assert ("gone", "a", 5) in expected and ("gone", "d", 30) not in expected


@pytest.mark.parametrize("parallelism", [1, 2])
def test_pyflink_broadcast_state_methods_in_a_job(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    rules = env.from_collection([("big", 10), ("gone", 1), ("gone", None)]).set_parallelism(1)
    events = env.from_collection([("a", 5), ("b", 25), ("a", 150), ("c", 15)])
    events.key_by(lambda e: e[0]).connect(rules.broadcast(RULES)).process(Thresholds()).collect()
    out = run(env)  # (events and rules interleave as they come: which rules an event meets may vary)
    assert set(out) <= {("big", "b", 25), ("big", "a", 150), ("big", "c", 15), ("gone", "b", 25),
                        ("gone", "a", 150), ("gone", "c", 15)}


class WritesInProcessElement(rs.BroadcastProcessFunction):
    def process_broadcast_element(self, value, ctx):
        ctx.get_broadcast_state(RULES).put(value, True)

    def process_element(self, value, ctx):
        ctx.get_broadcast_state(RULES).put(value, False)
        yield value


def test_the_read_only_view_refuses_pyflinks_writes():
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection([1]).connect(env.from_collection(["x"]).broadcast(RULES)).process(WritesInProcessElement()).collect()
    with pytest.raises(JobFailed, match="broadcast state is read-only in process_element"):
        run(env)


def test_broadcast_state_methods():
    s = BroadcastState()
    assert s.is_empty() and not s.contains("k")
    s.put("k", 1)
    s.put_all({"m": 2})
    s.remove("absent")  # (nothing, as Flink's)
    s.remove("k")
    assert dict(s) == {"m": 2} and s.contains("m") and not s.is_empty()
    from raystream.operators.functions import _ReadOnlyDict

    with pytest.raises(ConfigError, match="read-only"):
        _ReadOnlyDict(s).put("x", 1)
