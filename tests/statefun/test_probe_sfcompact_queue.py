"""Ingress messages queued in compact form (issue 13): a routed ingress's batch reaches the
dispatcher as :class:`~statefun_api.routing.IngressRecords` and is held, queued, spilled and
snapshotted as columns (:class:`~statefun_api.routing.CompactMessages`) instead of records.

Each test runs the same batches twice, once as the routed ingress hands them over (compact)
and once as plain lists of the same records (today's record path), and checks that nothing a
user sees differs: the order of messages per address (mixed value typenames and callers on
one address), the in-flight cap and back-pressure counts, spilling and snapshots (the
snapshot format is the records'), the failure of an invocation and its retry. In process,
no Ray.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from datetime import timedelta

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
from raystream.statefun_api.ingress import RoutedIngress
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.queued_state import restored_messages
from raystream.statefun_api.routing import CompactMessages, IngressRecords
from raystream.statefun_api.spill import SpillingQueue, estimate_bytes, estimate_values_bytes
from tests.statefun.test_statefun_dispatcher import _ctx, _Out

INT = "io.statefun.types/int"
SEEN = "t/seen"


def functions(fail_on: set | None = None) -> StatefulFunctions:
    """t/log emits ``id:value:caller:count`` for each message; it raises on a value in ``fail_on``."""
    fns = StatefulFunctions()

    @fns.bind("t/log", specs=[ValueSpec("n", IntType)])
    def log(context, message):
        value = message.as_int() if message.is_int() else message.as_string()
        if fail_on and value in fail_on:
            raise RuntimeError(f"refused {value!r}")
        n = context.storage.n = (context.storage.n or 0) + 1
        caller = context.caller
        text = f"{context.address.id}:{value}:{caller.namespace + '/' + caller.name + '/' + caller.id if caller else '-'}:{n}"
        context.send_egress(egress_message_builder(SEEN, text, StringType))

    return fns


def open_op(fns: StatefulFunctions, **limits):
    posted: list = []
    out = _Out()
    op = FunctionDispatcher(DispatcherConfig(fns, {SEEN: None}, **limits))
    op.open(_ctx(posted, [], ManualClock()), out)
    return op, posted, out


def int_ingress(*pairs) -> Batch:
    return RoutedIngress(["t/log"], IntType).route_batch(Batch.of_records(list(pairs)))


def str_ingress(*pairs) -> Batch:
    return RoutedIngress(["t/log"], StringType).route_batch(Batch.of_records(list(pairs)))


def feedback(*pairs) -> Batch:
    """Messages sent by t/src/s (a caller: they come over the feedback edge)."""
    return Batch.of_records([("t/log", fid, "t/src", "s", INT, v, True) for fid, v in pairs])


def as_records(batch: Batch) -> Batch:
    """The same messages as a plain list of records (the record path)."""
    return Batch.of_records(list(batch.records()))


def mixed_batches() -> list[Batch]:
    return [
        int_ingress(("a", 1), ("b", 2), ("a", 3), ("c", 4)),
        feedback(("a", 5), ("b", 6)),
        str_ingress(("a", "seven"), ("c", "eight")),  # another value typename: records
        int_ingress(*[(k, 9 + i) for i, k in enumerate("abcab" * 3)]),
        feedback(("c", 30)),
        int_ingress(("a", 31), ("b", 32), ("c", 33)),
    ]


def seen_per_address(out: _Out) -> dict[str, list[str]]:
    per: dict[str, list[str]] = {}
    for text in out.side.get("egress:" + SEEN, []):
        per.setdefault(text.split(":")[0], []).append(text)
    return per


def run(op, posted) -> None:
    while posted:
        posted.pop(0)()


def record_state(op, trace: list) -> None:
    c = op.counters
    trace.append((op.in_flight(), op.pending_messages(), c["held_ingress"], c["queued_messages"], op.accepts_input()))


@pytest.fixture
def compact_spy(monkeypatch):
    """Counts the messages queued into the active set in compact form."""
    queued = [0]
    original = FunctionDispatcher._enqueue_compact

    def spy(self, messages):
        queued[0] += len(messages)
        return original(self, messages)

    monkeypatch.setattr(FunctionDispatcher, "_enqueue_compact", spy)
    return queued


def test_a_routed_ingress_hands_its_messages_over_in_compact_form_too():
    records = int_ingress(("a", 1), ("b", 2)).records()
    assert type(records) is IngressRecords
    (compact,) = records.compact
    assert compact.records() == list(records)  # the same messages, in order


@pytest.mark.parametrize("drain_step, memory", [(1, 0), (2, 0), (3, 64 << 20), (100, 64 << 20)])
def test_mixed_typenames_and_callers_on_one_address_keep_their_order(tmp_path, compact_spy, drain_step, memory):
    results = []
    for form in (lambda b: b, as_records):
        op, posted, out = open_op(functions(), drain_step=drain_step, inbox_memory_bytes=memory, spill_dir=str(tmp_path))
        for batch in mixed_batches():
            op.process_batch(form(batch))  # all queued before the first step
        run(op, posted)
        assert op.is_idle() and op.counters["messages"] == 27
        results.append(seen_per_address(out))
        op.close()
    assert compact_spy[0] > 0  # the first run queued ingress messages in compact form
    compact, records = results
    assert compact == records
    assert [t.split(":")[1] for t in compact["a"]] == ["1", "3", "5", "seven", "9", "12", "14", "17", "19", "22", "31"]
    assert compact["a"][2] == "a:5:t/src/s:3"
    assert [t.split(":")[1] for t in compact["c"]] == ["4", "eight", "11", "16", "21", "30", "33"]


def test_the_cap_counts_every_message_of_a_compact_batch(compact_spy):
    traces = []
    for form in (lambda b: b, as_records):
        op, posted, _out = open_op(functions(), max_in_flight=5, drain_step=2)
        trace: list = []
        state = functools.partial(record_state, op, trace)
        op.process_batch(form(int_ingress(*[(f"k{i % 4}", i) for i in range(12)])))
        state()
        assert trace[0] == (5, 12, 7, 12, False)  # 5 admitted, 7 held: the task takes no further batch
        second = [form(int_ingress(*[(f"k{i % 3}", 100 + i) for i in range(9)]))]
        while posted:
            posted.pop(0)()
            state()
            if op.accepts_input() and second:  # (the task hands over its next batch)
                op.process_batch(second.pop())
                state()
        assert op.is_idle() and op.counters["messages"] == 21
        traces.append(trace)
        op.close()
    assert compact_spy[0] > 0
    assert traces[0] == traces[1]


def test_compact_queues_spill_snapshot_and_restore_as_records(tmp_path, compact_spy):
    snapshots, results = [], []
    for form in (lambda b: b, as_records):
        op, posted, _out = open_op(functions(), drain_step=2, inbox_memory_bytes=0, spill_dir=str(tmp_path / "a"), max_in_flight=30)
        for batch in mixed_batches():
            op.process_batch(form(batch))
        # queued in the active set, the queue (spilled to disk: a budget of 0) and held
        assert op.counters["spilled_messages"] > 0 and op.counters["held_ingress"] == 0
        op.process_batch(form(int_ingress(*[("b", 40 + i) for i in range(12)])))
        assert op.counters["held_ingress"] > 0
        snap = op.snapshot_state(1)
        snapshots.append(restored_messages([snap]))
        op.close()
        assert [f for _, _, fs in os.walk(tmp_path / "a") for f in fs] == []
        restored, posted2, out2 = open_op(functions(), drain_step=2, inbox_memory_bytes=0, spill_dir=str(tmp_path / "b"))
        restored.restore_state([snap])
        restored.open(_ctx(posted2, [], ManualClock()), out2)
        run(restored, posted2)
        assert restored.is_idle() and restored.counters["messages"] == 39
        results.append(seen_per_address(out2))
        restored.close()
    assert compact_spy[0] > 0
    assert snapshots[0] == snapshots[1]  # the same records, in the same order: the format is the records'
    assert results[0] == results[1]
    assert [t.split(":")[1] for t in results[0]["b"]][-12:] == [str(40 + i) for i in range(12)]


def test_a_snapshot_of_records_restores_ahead_of_compact_ingress(tmp_path):
    """A snapshot taken by the record path (today's format) restores, and the restored
    messages are invoked before ingress messages queued in compact form after the restore."""
    op, _posted, _out = open_op(functions(), drain_step=2)
    for batch in mixed_batches():
        op.process_batch(as_records(batch))
    snap = op.snapshot_state(1)
    op.close()
    restored, posted, out = open_op(functions(), drain_step=2)
    restored.restore_state([snap])
    restored.open(_ctx(posted, [], ManualClock()), out)
    restored.process_batch(int_ingress(("a", 50), ("c", 51)))
    run(restored, posted)
    seen = seen_per_address(out)
    assert [t.split(":")[1] for t in seen["a"]] == ["1", "3", "5", "seven", "9", "12", "14", "17", "19", "22", "31", "50"]
    assert [t.split(":")[1] for t in seen["c"]][-2:] == ["33", "51"]
    restored.close()


def test_a_failed_invocation_names_its_address_and_message_and_is_retried_in_order():
    failures, results = [], []
    for form in (lambda b: b, as_records):
        fail_on = {12}
        op, posted, out = open_op(functions(fail_on), drain_step=3)
        for batch in mixed_batches():
            op.process_batch(form(batch))
        with pytest.raises(Exception) as info:
            run(op, posted)
        failures.append(str(info.value))
        fail_on.clear()  # the function is fixed: the dispatcher goes on (in process)
        run(op, posted)
        assert op.is_idle() and op.counters["messages"] == 27
        results.append(seen_per_address(out))
        op.close()
    assert failures[0] == failures[1]
    assert "t/log/a" in failures[0] and "refused 12" in failures[0]
    assert results[0] == results[1]
    assert [t.split(":")[1] for t in results[0]["a"]] == ["1", "3", "5", "seven", "9", "12", "14", "17", "19", "22", "31"]


# ---------------------------------------------------------------------------- SpillingQueue
def _compact(start: int, k: int) -> CompactMessages:
    return CompactMessages("f/a", INT, [str(start + i) for i in range(k)], [start + i for i in range(k)])


def _records(start: int, k: int) -> list:
    return [("f/a", str(start + i), "f/b", "x", INT, start + i, True) for i in range(k)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["push", "compact", "arrow", "pop", "pieces"]), st.integers(1, 300)), max_size=40),
       st.integers(0, 20_000))
def test_spilling_queue_keeps_compact_pieces_in_order_across_memory_and_disk(ops, budget):
    q = SpillingQueue(budget, chunk_rows=64)
    ref: deque = deque()
    n = 0
    try:
        for op, k in ops:
            if op == "pop":
                assert q.pop(k) == [ref.popleft() for _ in range(min(k, len(ref)))]
            elif op == "pieces":
                pieces = q.pop_pieces(k)
                got = [r for p in pieces for r in (p.records() if type(p) is CompactMessages else p)]
                assert got == [ref.popleft() for _ in range(min(k, len(ref)))]
            else:
                if op == "compact":
                    c = _compact(n, k)
                    recs = c.records()
                    q.push_compact(c)
                else:
                    recs = _records(n, k)
                    (q.push(recs) if op == "push" else q.push_arrow(records_to_arrow(recs)))
                n += k
                ref.extend(recs)
            assert len(q) == len(ref)
            assert q.memory_bytes <= budget + 64 * 400
        assert [r for rb in q.snapshot() for r in Batch.of_arrow(rb).records()] == list(ref)
        assert q.pop(len(ref) + 1) == list(ref)
        assert q.disk_bytes == 0 and len(q) == 0
    finally:
        q.close()


@pytest.mark.parametrize("values", [[1, 2, 3], ["ab", "", "xyz"], [1.5, 2.0], [True, False], [1, "ab", 2.5], []])
def test_compact_messages_count_as_their_records(values):
    c = CompactMessages("f/a", INT, [str(i) for i in range(len(values))], values)
    assert estimate_values_bytes(values) == estimate_bytes(c.records())


# ---------------------------------------------------------------------------- egress, delayed, async
def effect_functions() -> StatefulFunctions:
    """t/sync (ingress: compact) counts, emits, sends to the async t/async and sends a delayed
    message to t/later for every third value."""
    fns = StatefulFunctions()

    @fns.bind("t/sync", specs=[ValueSpec("n", IntType)])
    def sync(context, message):
        v = message.as_int()
        n = context.storage.n = (context.storage.n or 0) + v
        context.send_egress(egress_message_builder(SEEN, f"sync {context.address.id}:{v}:{n}", StringType))
        context.send(message_builder("t/async", context.address.id, int_value=n))
        if v % 3 == 0:
            context.send_after(timedelta(milliseconds=10), message_builder("t/later", context.address.id, int_value=v))

    @fns.bind("t/async", specs=[ValueSpec("total", IntType)])
    async def total(context, message):
        context.storage.total = (context.storage.total or 0) + message.as_int()
        context.send_egress(egress_message_builder(SEEN, f"async {context.address.id}:{context.storage.total}", StringType))

    @fns.bind("t/later")
    def later(context, message):
        context.send_egress(egress_message_builder(SEEN, f"later {context.address.id}:{message.as_int()}", StringType))

    return fns


def test_egress_delayed_messages_and_async_functions_behind_compact_ingress(compact_spy):
    pairs = [(f"k{i % 5}", i) for i in range(40)]
    results = []
    for compact in (True, False):
        with LocalDispatchers(effect_functions(), egresses=[SEEN]) as run:
            for i in range(0, len(pairs), 16):
                batch = RoutedIngress(["t/sync"], IntType).route_batch(Batch.of_records(pairs[i : i + 16]))
                run.send_batch(batch if compact else as_records(batch))
            before = list(run.egress(SEEN))
            run.advance(10)
            run.run_until_idle()
            states = [(run.state("t/sync", k, "n"), run.state("t/async", k, "total")) for k in sorted({k for k, _ in pairs})]
            results.append((before, list(run.egress(SEEN)), states))
    assert compact_spy[0] == len(pairs)  # every ingress message of the first run, none of the second
    assert results[0] == results[1]
    _before, egress, states = results[0]
    assert sorted(t for t in egress if t.startswith("later")) == sorted(f"later {k}:{v}" for k, v in pairs if v % 3 == 0)
    running = [sum(v for k, v in pairs[: j + 1] if k == "k0") for j, (k, _) in enumerate(pairs) if k == "k0"]
    assert states[0] == (running[-1], sum(running))  # t/async got each n of t/sync/k0, in order
