"""The operator test harness runs its operator inside a real Task, driven step by step: state
goes through the job's StateBackend, snapshots are barriers the task acknowledges, restore
re-splits keyed state by key group, errors surface as the operator raised them. No Ray."""

from __future__ import annotations

import pytest

from raystream.checkpoint.backends import HeapStateBackend
from raystream.engine.errors import JobFailed, UserCodeError
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.partitioners import KeySelector
from raystream.operators.functions import CoProcessFunction
from raystream.operators.keyed import ReduceOperator
from raystream.operators.testing import OperatorHarness
from raystream.operators.two_input import CoProcessOperator

MAXP = 128


def _sum() -> ReduceOperator:
    return ReduceOperator(KeySelector(0), lambda a, b: (a[0], a[1] + b[1]))


class CountingBackend(HeapStateBackend):
    """The heap backend, counting what the task asks of it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def create_keyed_backend(self, ctx):
        self.calls.append(f"create {ctx.key_group_range.start}-{ctx.key_group_range.end}")
        return super().create_keyed_backend(ctx)

    def serialize_snapshot(self, snapshot):
        self.calls.append("serialize")
        return super().serialize_snapshot(snapshot)

    def deserialize_snapshot(self, data, key_group_range):
        self.calls.append(f"deserialize for {key_group_range.start}-{key_group_range.end}")
        return super().deserialize_snapshot(data, key_group_range)


def test_keyed_state_goes_through_the_state_backend_and_rescales_by_key_group():
    keys = [f"k{i}" for i in range(40)]
    backend = CountingBackend()
    h = OperatorHarness(_sum(), max_parallelism=MAXP, state_backend=backend)
    h.process([(k, 1) for k in keys])
    h.process([(k, 10) for k in keys])
    snap = h.snapshot()
    assert isinstance(snap["keyed"], bytes) and backend.calls == ["create 0-127", "serialize"]

    # restore at parallelism 2: each subtask gets exactly the keys of its key groups
    seen = {}
    for sub in range(2):
        b2 = CountingBackend()
        h2 = OperatorHarness(_sum(), subtask_index=sub, parallelism=2, max_parallelism=MAXP,
                             restore=[snap], state_backend=b2)
        kgr = KeyGroupRange.for_subtask(sub, 2, MAXP)
        assert b2.calls == [f"create {kgr.start}-{kgr.end}", f"deserialize for {kgr.start}-{kgr.end}"]
        mine = [k for k in keys if key_group_for(k, MAXP) in kgr]
        h2.process([(k, 100) for k in mine])
        seen.update(dict(h2.records()))
    assert seen == {k: 111 for k in keys}


def test_snapshot_is_a_barrier_through_every_input_of_a_two_input_operator():
    class Both(CoProcessFunction):
        def process_element1(self, value, ctx):
            yield ("left", value)

        def process_element2(self, value, ctx):
            yield ("right", value)

    h = OperatorHarness(CoProcessOperator(Both()))
    assert h.num_inputs == 2
    h.process([1], 0)
    h.process([2], 1)
    first, second = h.snapshot(), h.snapshot()  # each acknowledged only once both inputs had the barrier
    assert set(first) == set(second) == {"operator"}
    h.process([3], 0)
    assert h.records() == [("left", 1), ("right", 2), ("left", 3)]


def test_a_user_error_surfaces_as_raised_with_the_tasks_report_as_context():
    def boom(a, b):
        raise ZeroDivisionError("no sums today")

    h = OperatorHarness(ReduceOperator(KeySelector(0), boom))
    h.process([("a", 1)])
    with pytest.raises(UserCodeError, match="no sums today") as info:
        h.process([("a", 2)])
    assert isinstance(info.value.original, ZeroDivisionError)
    report = info.value.__context__
    assert isinstance(report, JobFailed) and "('a', 2)" in str(report)


def test_watermarks_pass_the_tasks_valve_only_when_they_advance():
    h = OperatorHarness(_sum())
    h.advance_watermark(10)
    h.advance_watermark(5)  # behind: the valve holds it back
    h.advance_watermark(10)
    h.advance_watermark(20)
    assert h.watermarks == [10, 20]
