"""Bounded work and memory of the FunctionDispatcher (issue 13), in process, no Ray.

* the spilling queue is FIFO across memory and disk, and leaves no file behind;
* ingress is admitted only under ``max_in_flight`` (the rest of a batch is held) and the
  feedback edge is always accepted;
* a mailbox step invokes at most ``drain_step`` messages and holds at most the inbox's
  memory budget, whatever the fan-out; the excess spills and the results are unchanged;
* snapshots taken while messages are spilled restore to the same results.
"""

from __future__ import annotations

import os
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.engine.operator import ManualClock
from raystream.engine.records import Batch, records_to_arrow
from raystream.statefun_api import (
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.dispatcher import DispatcherConfig, FunctionDispatcher
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.routing import message_to_record
from raystream.statefun_api.spill import SpillingQueue
from tests.statefun.test_statefun_dispatcher import _ctx, _Out


def _rec(i: int, size: int = 10) -> tuple:
    return ("f/a", str(i), "f/b", "x", "io.statefun.types/int", b"v" * size, True)


# ---------------------------------------------------------------------------- SpillingQueue
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["push", "arrow", "pop"]), st.integers(1, 300)), max_size=40),
       st.integers(0, 20_000))
def test_spilling_queue_is_fifo_across_memory_and_disk(ops, budget):
    q = SpillingQueue(budget, chunk_rows=64)
    ref: deque = deque()
    n = 0
    try:
        for op, k in ops:
            if op == "pop":
                got = q.pop(k)
                want = [ref.popleft() for _ in range(min(k, len(ref)))]
                assert got == want
            else:
                recs = [_rec(n + i) for i in range(k)]
                n += k
                (q.push(recs) if op == "push" else q.push_arrow(records_to_arrow(recs)))
                ref.extend(recs)
            assert len(q) == len(ref)
            assert q.memory_bytes <= budget + 64 * 400  # the budget plus the head chunk read back
        snap = [r for rb in q.snapshot() for r in Batch.of_arrow(rb).records()]
        assert snap == list(ref)
        assert q.pop(len(ref) + 1) == list(ref)
        assert q.disk_bytes == 0 and len(q) == 0
    finally:
        q.close()


def test_spilled_segments_are_deleted_when_read_and_on_close(tmp_path):
    q = SpillingQueue(0, directory=str(tmp_path), chunk_rows=100, segment_bytes=2_000)
    q.push([_rec(i, 50) for i in range(1_000)])
    files = [f for _, _, fs in os.walk(tmp_path) for f in fs]
    assert q.spilled_messages == 1_000 and q.disk_bytes > 0 and len(files) > 1
    q.pop(950)
    assert len([f for _, _, fs in os.walk(tmp_path) for f in fs]) < len(files)  # read segments are gone
    q.close()
    assert [f for _, _, fs in os.walk(tmp_path) for f in fs] == []


def test_spill_write_error_names_the_queue_and_a_hint(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    q = SpillingQueue(0, directory=str(blocker / "sub"), label="'statefun' (subtask 1/2)")
    with pytest.raises(OSError):
        q.push([_rec(1)])
    q.close()


# ---------------------------------------------------------------------------- functions
def fanout(n: int) -> StatefulFunctions:
    """test/src sends one message to each of n counters; counters count and emit."""
    fns = StatefulFunctions()

    @fns.bind("test/src")
    def src(context, message):
        for i in range(n):
            context.send(message_builder("test/counter", f"c{i}", int_value=1))

    @fns.bind("test/counter", specs=[ValueSpec("n", IntType)])
    def counter(context, message):
        context.storage.n = (context.storage.n or 0) + 1
        context.send_egress(egress_message_builder("test/counts", f"{context.address.id}", StringType))

    return fns


def open_op(fns: StatefulFunctions, **limits):
    posted: list = []
    out = _Out()
    op = FunctionDispatcher(DispatcherConfig(fns, {"test/counts": None}, **limits))
    op.open(_ctx(posted, [], ManualClock()), out)
    return op, posted, out


def ingress(n: int, typename: str = "test/counter") -> Batch:
    return Batch.of_records([message_to_record(message_builder(typename, f"c{i % 50}", int_value=1)) for i in range(n)])


# ---------------------------------------------------------------------------- admission
def test_ingress_is_admitted_only_under_the_cap_and_the_rest_is_held():
    op, posted, out = open_op(fanout(0), max_in_flight=100, drain_step=30)
    op.process_batch(ingress(500))
    assert op.in_flight() == 100 and op.counters["held_ingress"] == 400
    assert not op.accepts_input()  # the task takes no further ingress batch
    steps = 0
    while posted:
        posted.pop(0)()
        steps += 1
        assert op.in_flight() <= 100  # a function without fan-out: never above the cap
        assert op.accepts_input() == (op.counters["held_ingress"] == 0 and op.in_flight() < 100)
    assert steps >= 500 // 30
    assert len(out.side["egress:test/counts"]) == 500 and op.is_idle() and op.accepts_input()
    op.close()


def test_feedback_is_always_accepted_even_above_the_cap():
    op, posted, _ = open_op(fanout(0), max_in_flight=10, drain_step=5)
    op.process_batch(ingress(10))
    assert not op.accepts_input()
    caller = message_to_record(message_builder("test/counter", "c1", int_value=1))
    feedback = [caller[:2] + ("test/src", "s") + caller[4:]] * 300
    op.process_batch(Batch.of_arrow(records_to_arrow(feedback)))
    assert op.pending_messages() == 310 and op.in_flight() == 310
    while posted:
        posted.pop(0)()
    assert op.is_idle() and op.counters["messages"] == 310
    op.close()


# ---------------------------------------------------------------------------- bounded steps and memory
def test_a_fanout_burst_runs_in_bounded_steps_within_the_memory_budget(tmp_path):
    budget = 64 << 10
    op, posted, out = open_op(fanout(2_000), drain_step=100, inbox_memory_bytes=budget, spill_dir=str(tmp_path))
    op.process_batch(ingress(20, typename="test/src"))
    steps = 0
    while posted:
        before = op.counters["messages"]
        posted.pop(0)()
        steps += 1
        # a src invocation counts as 1 message: a step invokes at most drain_step messages
        assert op.counters["messages"] - before <= 100
        assert op.counters["inbox_memory_bytes"] <= budget + 8192 * 300
    assert op.counters["messages"] == 20 + 40_000
    assert op.counters["spilled_messages"] > 0 and op.counters["spilled_bytes"] > 0
    assert op.counters["spill_disk_bytes"] == 0 and op.is_idle()
    assert sorted(out.side["egress:test/counts"]) == sorted(f"c{i}" for i in range(2_000) for _ in range(20))
    op.close()
    assert [f for _, _, fs in os.walk(tmp_path) for f in fs] == []


@pytest.mark.parametrize("parallelism", [1, 3])
def test_spilling_changes_no_result(parallelism):
    msgs = [message_builder("test/src", f"s{i}", str_value="go") for i in range(30)]
    outs = []
    for limits in ({}, {"inbox_memory_bytes": 0, "drain_step": 7, "max_in_flight": 5}):
        run = LocalDispatchers(fanout(300), parallelism=parallelism, egresses=["test/counts"], seed=parallelism, **limits)
        run.send(*msgs)
        assert run.is_idle()
        outs.append(sorted(run.egress("test/counts")))
        counters = run.counters()
        if limits:
            assert counters["spilled_messages"] > 0
        run.close()
    assert outs[0] == outs[1] and len(outs[0]) == 9_000


def test_a_snapshot_with_spilled_messages_restores_to_the_same_result():
    fns = fanout(500)
    op, posted, out = open_op(fns, drain_step=50, inbox_memory_bytes=0)
    op.process_batch(ingress(4, typename="test/src"))
    posted.pop(0)()  # the sources run: their fan-out beyond the active set is on disk
    assert op.counters["spill_disk_bytes"] > 0 and op.pending_messages() > 1_000
    snap = (op.backend.snapshot(1), op.snapshot_state(1))
    done = list(out.side.get("egress:test/counts", []))
    op.close()
    restored = LocalDispatchers.restore(fns, [snap], parallelism=2, egresses=["test/counts"])
    assert restored.is_idle()
    assert sorted(done + restored.egress("test/counts")) == sorted(f"c{i}" for i in range(500) for _ in range(4))
    restored.close()


def test_checkpoints_taken_with_queued_work_are_counted_when_complete():
    op, posted, _ = open_op(fanout(100), drain_step=10)
    op.process_batch(ingress(1, typename="test/src"))
    posted.pop(0)()
    op.snapshot_state(7)
    op.notify_checkpoint_complete(7)
    while posted:
        posted.pop(0)()
    op.snapshot_state(8)  # idle: not counted
    op.notify_checkpoint_complete(8)
    assert op.counters["checkpoints_with_queued_work"] == 1
    op.close()


def test_config_rejects_bad_limits():
    with pytest.raises(ValueError, match="inbox_memory_bytes"):
        DispatcherConfig(StatefulFunctions(), inbox_memory_bytes=-1)
    with pytest.raises(TypeError, match="spill_dir"):
        DispatcherConfig(StatefulFunctions(), spill_dir=3)  # type: ignore[arg-type]
