"""A savepoint's uid restored into another kind of keyed operator (a ``reduce``'s uid now on a
``KeyedProcessFunction``, a ``KeyedProcessFunction``'s on a ``reduce``, a ``reduce``'s on a
vectorized ``aggregate`` or on a ``sum``) fails the restore with a ``CheckpointError`` naming
the operator, its uid, both kinds and the remedies. Before 2026-12-07 the first two started
from empty state silently (the reduce's values, the timers dropped; on both backends) and a
reduce's state read as an aggregate's failed with a bare ``TypeError``/``KeyError`` from
inside the operator. Snapshots written before carry no kind: their fields are checked.
Both backends; operators run in a real task (``OperatorHarness``), no Ray."""

from __future__ import annotations

import re

import pytest

from raystream.checkpoint import ValueStateDescriptor
from raystream.checkpoint.backends import HeapStateBackend
from raystream.engine.errors import CheckpointError
from raystream.engine.partitioners import KeySelector
from raystream.operators.functions import KeyedProcessFunction
from raystream.operators.keyed import AggregateOperator, KeyedProcessOperator, ReduceOperator
from raystream.operators.keyed_final import FieldAggregateOperator
from raystream.operators.testing import OperatorHarness

RECORDS = [{"k": f"k{i % 5}", "v": i} for i in range(40)]


class Count(KeyedProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        ctx.timer_service().register_event_time_timer(1_000)
        yield (ctx.get_current_key(), self.count.value())


def reduce_op():
    return ReduceOperator(KeySelector("k"), lambda a, b: {**a, "v": a["v"] + b["v"]})


def process_op():
    return KeyedProcessOperator(KeySelector("k"), Count())


def aggregate_op():
    return AggregateOperator("k", {"v": ("v", "sum")}, emit="final")


def sum_op():
    return FieldAggregateOperator(KeySelector("k"), "v", "sum")  # (emits at the end of input)


MAKERS = {"reduce": reduce_op, "KeyedProcessFunction": process_op, "aggregate": aggregate_op,
          "field aggregate (sum/min/max)": sum_op}


@pytest.fixture(params=["heap", "rocksdb"])
def state_backend(request):
    if request.param == "heap":
        return HeapStateBackend
    pytest.importorskip("rocksdict")
    from raystream.checkpoint import RocksDBStateBackend

    return RocksDBStateBackend


def savepoint_of(kind: str, state_backend) -> dict:
    h = OperatorHarness(MAKERS[kind](), state_backend=state_backend())
    h.process(RECORDS)
    return h.snapshot()


@pytest.mark.parametrize("old,new", [("reduce", "KeyedProcessFunction"), ("KeyedProcessFunction", "reduce"),
                                     ("reduce", "aggregate"), ("reduce", "field aggregate (sum/min/max)"),
                                     ("field aggregate (sum/min/max)", "KeyedProcessFunction")])
def test_a_uid_restored_into_another_kind_of_operator_is_refused_naming_both(old, new, state_backend):
    snap = savepoint_of(old, state_backend)
    with pytest.raises(CheckpointError) as err:
        OperatorHarness(MAKERS[new](), restore=[snap], state_backend=state_backend())
    message = str(err.value)
    article = {"aggregate": "an"}
    assert (f"is {article.get(new, 'a')} {new}, but the state restored under its uid was written by "
            f"{article.get(old, 'a')} {old}") in message
    if old == "reduce" and state_backend is HeapStateBackend:  # (a reduce names no kind: older format)
        assert "(or, in a snapshot written before 2026-12-07, another operator of per-key values)" in message
    assert "(uid 'harness')" in message
    assert "new uid()" in message and "allow_non_restored_state=True" in message


@pytest.mark.parametrize("kind", list(MAKERS))
def test_the_same_kind_restores(kind, state_backend):
    snap = savepoint_of(kind, state_backend)
    h = OperatorHarness(MAKERS[kind](), restore=[snap], state_backend=state_backend())
    h.process([{"k": "k0", "v": 1000}])
    h.end_input()
    out = h.records()
    if kind == "KeyedProcessFunction":
        assert out == [("k0", 9)]  # the count went on
    else:
        (k0,) = [r for r in out if r["k"] == "k0"][-1:]
        assert k0["v"] == sum(r["v"] for r in RECORDS if r["k"] == "k0") + 1000


def test_a_snapshot_without_a_kind_is_checked_by_its_fields():
    """Snapshots written before 2026-12-07 name no kind: checked by their fields and the shape
    of their entries."""
    for kind in ("aggregate", "field aggregate (sum/min/max)", "KeyedProcessFunction"):
        snap = savepoint_of(kind, HeapStateBackend)
        old = {**snap, "operator": {k: v for k, v in snap["operator"].items() if k != "operator_kind"}}
        h = OperatorHarness(MAKERS[kind](), restore=[old])  # its own kind: restored
        h.process([{"k": "k0", "v": 1000}])
        h.end_input()
        if kind != "KeyedProcessFunction":
            assert [r for r in h.records() if r["k"] == "k0"][-1]["v"] == sum(
                r["v"] for r in RECORDS if r["k"] == "k0") + 1000
        for other in ("reduce", "aggregate", "field aggregate (sum/min/max)", "KeyedProcessFunction"):
            if other != kind and not (other == "reduce" and kind != "KeyedProcessFunction"):
                with pytest.raises(CheckpointError, match=f"is an? {re.escape(other)}, but the state restored"):
                    OperatorHarness(MAKERS[other](), restore=[old])
