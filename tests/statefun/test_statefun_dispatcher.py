"""The FunctionDispatcher run in-process (no Ray): routing, batching, delayed messages,
TTL with a ManualClock, back-pressure, snapshots/rescaling and error paths."""

from __future__ import annotations

from datetime import timedelta

import pytest

from raystream.engine.errors import UserCodeError
from raystream.engine.keygroups import KeyGroupRange, key_group_for, subtask_for_key_group
from raystream.engine.operator import ManualClock, OperatorContext
from raystream.engine.records import Batch
from raystream.jobs import greeter, shopping_cart
from raystream.statefun_api import (
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.dispatcher import DispatcherConfig, FunctionDispatcher
from raystream.statefun_api.errors import FunctionNotFound, StatefulFunctionError
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.routing import FEEDBACK_TAG, message_to_record


# ---------------------------------------------------------------------------- fixtures
def fanout_functions(fanout: int) -> StatefulFunctions:
    """counter/<k> counts; a "burst" message makes it send one message to each of
    ``fanout`` counters; every counter reports its count on each increment."""
    functions = StatefulFunctions()

    @functions.bind("test/counter", specs=[ValueSpec("n", IntType)])
    def counter(context, message):
        if message.is_string():  # a burst
            for i in range(fanout):
                context.send(message_builder("test/counter", f"c{i}", int_value=1))
            return
        n = (context.storage.n or 0) + message.as_int()
        context.storage.n = n
        context.send_egress(egress_message_builder("test/counts", f"{context.address.id}={n}", StringType))

    return functions


def delay_functions() -> StatefulFunctions:
    functions = StatefulFunctions()

    @functions.bind("test/timer")
    def timer(context, message):
        cmd = message.as_string()
        op, _, arg = cmd.partition(":")
        if op == "later":  # later:<token>:<ms>
            token, ms = arg.split(":")
            context.send_after(
                timedelta(milliseconds=int(ms)),
                message_builder("test/timer", context.address.id, str_value=f"fired:{token}"),
                cancellation_token=token,
            )
        elif op == "cancel":
            context.cancel_delayed_message(arg)
        elif op == "fired":
            context.send_egress(egress_message_builder("test/fired", f"{context.address.id}:{arg}", StringType))
        elif op == "relay":  # delayed message to ANOTHER address, no token
            context.send_after(timedelta(milliseconds=int(arg)), message_builder("test/timer", "far", str_value="fired:relay"))

    return functions


def cmd(id_: str, text: str):
    return message_builder("test/timer", id_, str_value=text)


# ---------------------------------------------------------------------------- examples
@pytest.mark.parametrize("seed", [None, 7])
def test_greeter_same_result_at_parallelism_1_and_3(seed):
    names = [f"p{i % 7}" for i in range(60)]
    msgs = [greeter.route(n) for n in names]
    results = []
    for p in (1, 3):
        run = LocalDispatchers(greeter.functions, parallelism=p, egresses=[greeter.GREETS], seed=seed)
        run.send(*msgs)
        results.append(sorted(run.egress(greeter.GREETS)))
        assert run.state(greeter.PERSON, "p0", "visits") == names.count("p0")
    assert results[0] == results[1]
    assert greeter.greeting("p0", 9) in results[0] and len(results[0]) == 60


def test_shopping_cart_receipts_and_stock_are_conserved():
    events = shopping_cart.generate_events(users=12, items=3, adds_per_user=4)
    msgs = [shopping_cart.route(e) for e in events]
    restock = shopping_cart.route({"type": "restock", "item": "item-1", "quantity": 5, "user": ""})
    for p, seed in ((1, None), (3, None), (3, 5)):
        run = LocalDispatchers(
            shopping_cart.make_functions(initial_stock=10), parallelism=p, egresses={shopping_cart.RECEIPTS: shopping_cart.Receipt}, seed=seed
        )
        run.send(restock, *msgs)
        receipts = run.egress(shopping_cart.RECEIPTS)
        assert sorted(r["user"] for r in receipts) == sorted(f"user-{u}" for u in range(12))
        for item in ("item-0", "item-1", "item-2"):
            sold = sum(r["items"].get(item, 0) for r in receipts)
            total = 15 if item == "item-1" else 10
            assert sold + run.state(shopping_cart.INVENTORY, item, "stock") == total
            assert 0 < sold <= total
        assert run.state(shopping_cart.USER, "user-0", "cart") is None  # emptied by checkout


def test_shopping_cart_with_ample_stock_is_the_same_at_any_parallelism_and_interleaving():
    msgs = [shopping_cart.route(e) for e in shopping_cart.generate_events(users=12, items=3)]
    outs = []
    for p, seed in ((1, None), (3, None), (3, 11)):
        run = LocalDispatchers(
            shopping_cart.functions, parallelism=p, egresses={shopping_cart.RECEIPTS: shopping_cart.Receipt}, seed=seed
        )
        outs.append(sorted(map(repr, run.send(*msgs).egress(shopping_cart.RECEIPTS))))
    assert outs[0] == outs[1] == outs[2] and len(outs[0]) == 12


def test_shopping_cart_checkout_waits_for_outstanding_answers():
    run = LocalDispatchers(
        shopping_cart.make_functions(initial_stock=1), parallelism=2, egresses={shopping_cart.RECEIPTS: shopping_cart.Receipt}
    )
    events = [
        {"type": "add", "item": "hat", "quantity": 1, "user": "ann"},
        {"type": "add", "item": "hat", "quantity": 1, "user": "ann"},  # out of stock by then
        {"type": "checkout", "item": "", "quantity": 0, "user": "ann"},
    ]
    run.send(*[shopping_cart.route(e) for e in events])
    assert run.egress(shopping_cart.RECEIPTS) == [{"user": "ann", "items": {"hat": 1}}]


# ---------------------------------------------------------------------------- fan-out, locality, back-pressure
@pytest.mark.parametrize("parallelism", [1, 3])
def test_fanout_burst_of_100x_drains_without_deadlock(parallelism):
    run = LocalDispatchers(fanout_functions(100), parallelism=parallelism, egresses=["test/counts"], drain_step=64, max_in_flight=128)
    bursts = [message_builder("test/counter", f"src{i}", str_value="go") for i in range(50)]
    run.send(*bursts)
    assert run.is_idle()
    assert all(run.state("test/counter", f"c{i}", "n") == 50 for i in range(100))
    assert len(run.egress("test/counts")) == 5000
    c = run.counters()
    assert c["local_messages"] + c["remote_messages"] == 5000
    if parallelism == 1:
        assert c["remote_messages"] == 0 and run.feedback_records == 0
    else:
        assert c["remote_messages"] == run.feedback_records > 0 and c["local_messages"] > 0


def _ctx(posted, timers, clock, parallelism=1, index=0):
    from raystream.checkpoint import HeapKeyedStateBackend

    kgr = KeyGroupRange.for_subtask(index, parallelism, 128)
    return OperatorContext(
        "statefun", "statefun", "t", index, parallelism, 128, kgr, clock=clock,
        keyed_backend=HeapKeyedStateBackend(kgr, 128, clock),
        register_processing_timer=lambda t, cb: timers.append((t, cb)),
        post=posted.append,
    )


class _Out:
    def __init__(self):
        self.side: dict[str, list] = {}

    def emit(self, batch):
        raise AssertionError("the dispatcher emits on side outputs only")

    def emit_watermark(self, wm):
        pass

    def emit_side(self, tag, batch):
        self.side.setdefault(tag, []).extend(batch.records())


def test_ingress_back_pressure_caps_queued_messages_but_feedback_is_always_accepted():
    posted, timers = [], []
    op = FunctionDispatcher(DispatcherConfig(fanout_functions(100), {"test/counts": None}, max_in_flight=150, drain_step=10))
    op.open(_ctx(posted, timers, ManualClock()), _Out())
    burst = [message_to_record(message_builder("test/counter", f"s{i}", str_value="go")) for i in range(5)]
    op.process_batch(Batch.of_records(burst))
    # each burst queues 100 local messages: the ingress batch returned only under the cap
    assert 0 < op.pending_messages() <= 150
    assert posted, "the rest of the work is continued through the mailbox"
    feedback = [
        message_to_record(message_builder("test/counter", f"c{i}", int_value=1), caller=greeter_address())
        for i in range(400)
    ]
    op.process_batch(Batch.of_records(feedback))
    assert op.pending_messages() > 150  # feedback never blocks
    assert not op.is_idle()
    while posted:
        posted.pop(0)()
    assert op.is_idle() and op.pending_messages() == 0


def greeter_address():
    from raystream.statefun_api import Address

    return Address.of("test/counter", "x")


def test_drain_step_bounds_work_per_mailbox_step():
    posted, timers = [], []
    op = FunctionDispatcher(DispatcherConfig(fanout_functions(100), {"test/counts": None}, drain_step=25))
    out = _Out()
    op.open(_ctx(posted, timers, ManualClock()), out)
    op.process_batch(Batch.of_records([message_to_record(message_builder("test/counter", "s", str_value="go"))]))
    steps = 0
    while posted:
        before = len(out.side.get("egress:test/counts", []))
        posted.pop(0)()
        steps += 1
        assert len(out.side["egress:test/counts"]) - before <= 25 + 1
    assert steps >= 3 and len(out.side["egress:test/counts"]) == 100


# ---------------------------------------------------------------------------- delayed messages
def test_delayed_messages_fire_on_time_and_cancellation_works():
    run = LocalDispatchers(delay_functions(), parallelism=2, egresses=["test/fired"])
    run.send(cmd("a", "later:t1:100"), cmd("a", "later:t2:200"), cmd("b", "later:t1:100"), cmd("a", "cancel:t2"))
    assert not run.is_idle() and sum(op.pending_delayed() for op in run.dispatchers) == 2
    run.advance(99)
    assert run.egress("test/fired") == []
    run.advance(1)
    assert sorted(run.egress("test/fired")) == ["a:t1", "b:t1"]
    run.advance(1000)
    assert sorted(run.egress("test/fired")) == ["a:t1", "b:t1"]  # t2 was cancelled
    assert run.is_idle()
    # a fired token may be reused; cancelling an unknown token is a no-op
    run.send(cmd("a", "later:t1:10"), cmd("a", "cancel:nope"))
    run.run_until_idle()
    assert sorted(run.egress("test/fired")) == ["a:t1", "a:t1", "b:t1"]
    assert run.counters()["delayed_cancelled"] == 1


def test_cancel_then_reuse_token_in_one_batch_and_relay_to_another_address():
    run = LocalDispatchers(delay_functions(), parallelism=3, egresses=["test/fired"])
    run.send(cmd("a", "later:x:50"), cmd("a", "cancel:x"), cmd("a", "later:x:80"), cmd("a", "relay:30"))
    run.advance(40)
    assert run.egress("test/fired") == ["far:relay"]
    run.advance(20)
    assert run.egress("test/fired") == ["far:relay"]  # the first x was cancelled
    run.advance(20)
    assert run.egress("test/fired") == ["far:relay", "a:x"]
    assert run.is_idle()


def test_duplicate_live_cancellation_token_fails_naming_address_and_type():
    run = LocalDispatchers(delay_functions(), egresses=["test/fired"])
    run.send(cmd("a", "later:t:100"))
    with pytest.raises(UserCodeError) as err:
        run.send(cmd("a", "later:t:100"))
    original = err.value.original
    assert isinstance(original, StatefulFunctionError)
    assert "test/timer/a" in str(original) and "'t'" in str(original) and "still pending" in str(original)
    assert original.message_typename == "io.statefun.types/string"


def test_a_cancelled_far_future_message_does_not_keep_the_dispatcher_busy():
    run = LocalDispatchers(delay_functions(), egresses=["test/fired"], timer_tick_ms=100)
    run.send(cmd("a", "later:t:3600000"), cmd("a", "cancel:t"))
    assert run.is_idle()
    run.advance(100)  # the tick timer fires and is not re-armed
    assert run.pending_timers() == []


def test_cancelled_delayed_messages_leave_the_timer_heap():
    functions = StatefulFunctions()

    @functions.bind("test/many")
    def many(context, message):
        op, _, n = message.as_string().partition(":")
        for i in range(int(n)):
            if op == "send":  # far in the future, behind one message due soon
                context.send_after(timedelta(hours=1), message_builder("test/many", "x", str_value="fired:0"),
                                   cancellation_token=f"t{i}")
            elif op == "cancel":
                context.cancel_delayed_message(f"t{i}")
        if op == "soon":
            context.send_after(timedelta(milliseconds=10), message_builder("test/many", "x", str_value="fired:0"))
        if op == "fired":
            context.send_egress(egress_message_builder("test/fired", context.address.id, StringType))

    run = LocalDispatchers(functions, egresses=["test/fired"])
    (op,) = run.dispatchers
    run.send(message_builder("test/many", "a", str_value="soon:0"))
    run.send(message_builder("test/many", "a", str_value="send:20000"))
    assert op.pending_delayed() == op.delayed_timer_entries() == 20_001
    run.send(message_builder("test/many", "a", str_value="cancel:20000"))
    assert op.pending_delayed() == 1
    assert op.delayed_timer_entries() <= 1 + 64  # not 20,001: the cancelled ones are dropped
    run.advance(10)
    assert run.egress("test/fired") == ["x"] and run.is_idle() and op.delayed_timer_entries() == 0


def test_pending_delayed_messages_survive_snapshot_and_rescale():
    clock = ManualClock(1_000)
    run = LocalDispatchers(delay_functions(), parallelism=1, egresses=["test/fired"], clock=clock)
    run.send(*[cmd(f"k{i}", f"later:t:{100 + i}") for i in range(20)], cmd("k0", "cancel:t"))
    run.advance(50)
    snaps = run.snapshot()
    restored = LocalDispatchers.restore(delay_functions(), snaps, parallelism=3, egresses=["test/fired"], clock=clock)
    assert not restored.is_idle()
    assert sum(op.pending_delayed() for op in restored.dispatchers) == 19
    restored.advance(100)
    assert sorted(restored.egress("test/fired")) == sorted(f"k{i}:t" for i in range(1, 20))
    assert restored.is_idle()


def test_delayed_messages_fire_exactly_once_after_a_restore_on_the_owning_subtask():
    """A checkpoint holds the pending delayed messages (keyed state); after a restore at
    another parallelism each fires once, on the subtask owning its sender, and a
    cancellation sent after the restore reaches the new owner's timer."""
    clock = ManualClock(0)
    run = LocalDispatchers(delay_functions(), parallelism=2, egresses=["test/fired"], clock=clock)
    run.send(*[cmd(f"k{i}", f"later:t:{100 + 10 * i}") for i in range(10)])
    run.advance(125)  # k0..k2 fire before the checkpoint
    fired_before = sorted(run.egress("test/fired"))
    assert fired_before == ["k0:t", "k1:t", "k2:t"]
    snap = run.snapshot()
    run.advance(1_000)  # the failure-free run: every message fires once
    assert sorted(run.egress("test/fired")) == sorted(f"k{i}:t" for i in range(10))

    clock.set(125)  # the restored job resumes at the checkpoint's time
    restored = LocalDispatchers.restore(delay_functions(), snap, parallelism=3, egresses=["test/fired"], clock=clock)
    owners = [subtask_for_key_group(key_group_for(("test/timer", f"k{i}"), 128), 3, 128) for i in range(3, 10)]
    assert [op.pending_delayed() for op in restored.dispatchers] == [owners.count(i) for i in range(3)]
    restored.send(cmd("k5", "cancel:t"))
    restored.advance(1_000)
    assert sorted(restored.egress("test/fired")) == sorted(f"k{i}:t" for i in range(3, 10) if i != 5)
    assert restored.counters()["delayed_fired"] == 6 and restored.counters()["delayed_cancelled"] == 1
    assert restored.is_idle() and restored.pending_timers() == []


def test_queued_messages_are_in_the_operator_snapshot():
    posted, timers = [], []
    functions = fanout_functions(10)
    out = _Out()
    op = FunctionDispatcher(DispatcherConfig(functions, {"test/counts": None}, drain_step=3))
    op.open(_ctx(posted, timers, ManualClock()), out)
    op.process_batch(Batch.of_records([message_to_record(message_builder("test/counter", "s", str_value="go"))]))
    assert not out.side and op.pending_messages() == 1  # queued only: invocations run in mailbox steps
    while "egress:test/counts" not in out.side:
        posted.pop(0)()  # one bounded step (drain_step=3) at a time
    queued = op.pending_messages()
    done = out.side["egress:test/counts"]
    assert queued > 0 and len(done) + queued == 10
    snap = (op.backend.snapshot(1), op.snapshot_state(1))  # the remaining continuations never run
    restored = LocalDispatchers.restore(functions, [snap], parallelism=2, egresses=["test/counts"])
    assert restored.is_idle()
    assert sorted(done + restored.egress("test/counts")) == sorted(f"c{i}=1" for i in range(10))


# ---------------------------------------------------------------------------- TTL
def test_expire_after_write_and_after_call_with_manual_clock():
    functions = StatefulFunctions()

    @functions.bind(
        "test/ttl",
        specs=[
            ValueSpec("written", IntType, expire_after_write=timedelta(seconds=10)),
            ValueSpec("touched", IntType, expire_after_call=timedelta(seconds=10)),
        ],
    )
    def ttl(context, message):
        if message.as_string() == "set":
            context.storage.written = 1
            context.storage.touched = 1
        context.send_egress(
            egress_message_builder("test/seen", f"{context.storage.written}/{context.storage.touched}", StringType)
        )

    run = LocalDispatchers(functions, egresses=["test/seen"])
    poke = message_builder("test/ttl", "a", str_value="read")
    run.send(message_builder("test/ttl", "a", str_value="set"))
    run.advance(6_000).send(poke)  # a call at 6 s refreshes "touched" only
    run.advance(6_000).send(poke)  # 12 s: "written" expired (10 s after its write)
    run.advance(9_000).send(poke)  # 21 s: "touched" lives 10 s after its last call (12 s)
    run.advance(11_000).send(poke)  # 32 s: both gone
    assert run.egress("test/seen") == ["1/1", "1/1", "None/1", "None/1", "None/None"]
    assert run.state("test/ttl", "a", "touched") is None


# ---------------------------------------------------------------------------- errors
def test_message_to_an_unregistered_function_type_fails_naming_address_and_type():
    functions = StatefulFunctions()

    @functions.bind("test/a")
    def a(context, message):
        context.send(message_builder("test/missing", "7", int_value=1))

    run = LocalDispatchers(functions)
    with pytest.raises(UserCodeError) as err:
        run.send(message_builder("test/a", "1", int_value=1))
    original = err.value.original
    assert isinstance(original, FunctionNotFound)
    assert "test/missing/7" in str(original) and "'io.statefun.types/int'" in str(original)
    assert "from test/a/1" in str(original) and "test/a" in str(original)
    assert "from test/a/1" in repr(err.value.record)


def test_egress_that_does_not_exist_fails():
    run = LocalDispatchers(fanout_functions(1), egresses=["test/other"])
    with pytest.raises(UserCodeError) as err:
        run.send(message_builder("test/counter", "x", int_value=1))
    text = str(err.value.original)
    assert "'test/counts'" in text and "does not exist" in text and "test/counter/x" in text
    assert "test/other" in text


def test_function_raising_fails_with_address_and_message_type():
    functions = StatefulFunctions()

    @functions.bind("test/boom")
    def boom(context, message):
        raise ValueError("kaputt")

    run = LocalDispatchers(functions)
    with pytest.raises(UserCodeError) as err:
        run.send(message_builder("test/boom", "z", long_value=3))
    original = err.value.original
    assert isinstance(original, StatefulFunctionError) and isinstance(original.__cause__, ValueError)
    assert "test/boom/z" in str(original) and "'io.statefun.types/long'" in str(original) and "kaputt" in str(original)


def test_state_type_mismatch_after_restore_fails():
    v1 = StatefulFunctions()

    @v1.bind("test/f", specs=[ValueSpec("v", IntType)])
    def f1(context, message):
        context.storage.v = 1

    v2 = StatefulFunctions()

    @v2.bind("test/f", specs=[ValueSpec("v", StringType)])
    def f2(context, message):
        context.storage.v = "x"

    run = LocalDispatchers(v1)
    run.send(message_builder("test/f", "a", int_value=0))
    restored = LocalDispatchers.restore(v2, run.snapshot())
    with pytest.raises(UserCodeError) as err:
        restored.send(message_builder("test/f", "a", int_value=0))
    text = str(err.value.original)
    assert "test/f/a" in text and "io.statefun.types/int" in text and "io.statefun.types/string" in text


def test_egress_value_type_mismatch_fails():
    run = LocalDispatchers(fanout_functions(1), egresses={"test/counts": IntType})
    with pytest.raises(UserCodeError) as err:
        run.send(message_builder("test/counter", "x", int_value=1))
    assert "'io.statefun.types/int'" in str(err.value.original) and "test/counts" in str(err.value.original)


def test_records_are_routed_to_the_feedback_side_output_only_when_remote():
    posted, timers = [], []
    out = _Out()
    op = FunctionDispatcher(DispatcherConfig(fanout_functions(30), {"test/counts": None}))
    op.open(_ctx(posted, timers, ManualClock(), parallelism=2, index=0), out)
    from raystream.engine.keygroups import key_group_for

    # a burst source that this subtask owns
    src = next(f"s{i}" for i in range(100) if key_group_for(("test/counter", f"s{i}"), 128) in op.ctx.key_group_range)
    op.process_batch(Batch.of_records([message_to_record(message_builder("test/counter", src, str_value="go"))]))
    while posted:
        posted.pop(0)()
    remote = out.side.get(FEEDBACK_TAG, [])
    assert remote and all(key_group_for((r[0], r[1]), 128) not in op.ctx.key_group_range for r in remote)
    assert all(r[2:4] == ("test/counter", src) for r in remote)
    assert len(remote) + len(out.side["egress:test/counts"]) == 30


# ---------------------------------------------------------------------------- reused objects
def test_messages_contexts_and_storages_a_function_keeps_are_not_reused():
    """The dispatcher reuses one Message, Context and storage object across messages and
    invocations only while the function keeps none of them: kept ones keep their values."""
    kept_messages, kept_storages, kept_contexts = [], [], []
    functions = StatefulFunctions()

    @functions.bind("test/keeper", specs=[ValueSpec("n", IntType)])
    def keeper(context, message):
        context.storage.n = message.as_int()
        if context.address.id == "keep":
            kept_messages.append(message)
            kept_storages.append(context.storage)
            kept_contexts.append(context)

    run = LocalDispatchers(functions)
    run.send(*[message_builder("test/keeper", "keep", int_value=i) for i in range(3)])
    run.send(*[message_builder("test/keeper", f"other{i}", int_value=100 + i) for i in range(5)])
    run.send(message_builder("test/keeper", "keep", int_value=7))
    assert [m.as_int() for m in kept_messages] == [0, 1, 2, 7]
    assert [s.n for s in kept_storages] == [2, 2, 2, 7]  # one storage per invocation, never refilled
    assert [c.address.id for c in kept_contexts] == ["keep"] * 4
    assert [run.state("test/keeper", f"other{i}", "n") for i in range(5)] == [100, 101, 102, 103, 104]


def test_sync_and_async_functions_interleaved_in_one_step_keep_their_own_state_and_outputs():
    """One mailbox step invokes addresses of a sync and an async function in turn (the reused
    context and message of the sync path, the async path's own): every address counts its
    messages, sends reach their targets and egress in order, and an async function that
    keeps its storage does not share it with the next address."""
    functions = StatefulFunctions()
    kept = []

    @functions.bind("test/sync", specs=[ValueSpec("n", IntType)])
    def sync_counter(context, message):
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        context.send(message_builder("test/async", context.address.id, int_value=n))

    @functions.bind("test/async", specs=[ValueSpec("total", IntType)])
    async def async_total(context, message):
        context.storage.total = (context.storage.total or 0) + message.as_int()
        if context.address.id == "k0":
            kept.append(context.storage)
        context.send_egress(egress_message_builder("test/out", f"{context.address.id}:{context.storage.total}", StringType))

    run = LocalDispatchers(functions, egresses=["test/out"])
    keys = ["k0", "k1", "k2", "k1", "k2", "k2"]  # k0 once, k1 twice, k2 three times
    run.send(*[message_builder("test/sync", k, int_value=1) for k in keys])
    assert [run.state("test/sync", f"k{i}", "n") for i in range(3)] == [1, 2, 3]
    assert [run.state("test/async", f"k{i}", "total") for i in range(3)] == [1, 3, 6]  # 1, 1 + 2, 1 + 2 + 3
    out = run.egress("test/out")
    expected = {"k0": ["k0:1"], "k1": ["k1:1", "k1:3"], "k2": ["k2:1", "k2:3", "k2:6"]}
    for k, values in expected.items():
        assert [v for v in out if v.startswith(f"{k}:")] == values
    assert [s.total for s in kept] == [1]  # k0's kept storage is not refilled by k1's and k2's invocations


def test_async_functions_keep_what_they_made_on_the_loop_between_calls_and_dispatchers():
    """As on an SDK server, whose one event loop serves every request: an async function may
    start a client (here a queue served by a task it starts and never awaits, as a
    connection pool does) in its first call and use it in later calls, also of another
    dispatcher in the same process (a job run again on a warm executor)."""
    import asyncio

    client: dict = {}

    async def service() -> asyncio.Queue:
        if "queue" not in client:
            queue: asyncio.Queue = asyncio.Queue()

            async def serve() -> None:
                while True:
                    n, answer = await queue.get()
                    answer.set_result(n * 10)

            client["queue"], client["task"] = queue, asyncio.create_task(serve())
        return client["queue"]

    functions = StatefulFunctions()

    @functions.bind("test/client", specs=[ValueSpec("total", IntType)])
    async def use_client(context, message):
        answer = asyncio.get_running_loop().create_future()
        await (await service()).put((message.as_int(), answer))
        context.storage.total = (context.storage.total or 0) + await asyncio.wait_for(answer, 10)

    for _ in range(2):  # two dispatchers, one after the other, in this process
        run = LocalDispatchers(functions)
        for i in range(1, 4):  # three mailbox steps
            run.send(message_builder("test/client", "a", int_value=i), message_builder("test/client", "b", int_value=i))
        assert [run.state("test/client", k, "total") for k in ("a", "b")] == [60, 60]
    assert not client["task"].done()


@pytest.mark.parametrize("parallelism", [1, 3])
def test_addresses_met_for_the_first_time_get_their_key_groups_per_batch(parallelism, monkeypatch):
    """A batch of messages to addresses the dispatcher has not met (ids seen once) has its
    key groups computed at once, each equal to key_group_for; state, egress and routing as
    when each is hashed on its own."""
    from raystream.statefun_api import dispatcher as dispatcher_module

    hashed = []
    original = dispatcher_module.key_group_for
    monkeypatch.setattr(dispatcher_module, "key_group_for", lambda key, mp: hashed.append(key) or original(key, mp))
    ids = [f"order-{i}" for i in range(600)]
    run = LocalDispatchers(fanout_functions(0), parallelism=parallelism, egresses=["test/counts"])
    run.send(*[message_builder("test/counter", i, int_value=2) for i in ids])
    run.send(*[message_builder("test/counter", i, int_value=3) for i in ids[::3]])
    run.run_until_idle()
    expected = sorted([f"{i}=2" for i in ids] + [f"{i}=5" for i in ids[::3]])
    assert sorted(run.egress("test/counts")) == expected
    assert all(run.state("test/counter", i, "n") == (5 if k % 3 == 0 else 2) for k, i in enumerate(ids))
    for op in run.dispatchers:
        for key, kg in op._kg_cache.items():
            assert kg == key_group_for(key, op._max_parallelism)
            assert kg in op._range
    assert len(hashed) < 50, f"{len(hashed)} addresses hashed one by one"


@pytest.mark.parametrize("parallelism", [1, 3])
def test_a_fan_out_to_new_addresses_gets_their_key_groups_at_once(parallelism, monkeypatch):
    from raystream.statefun_api import dispatcher as dispatcher_module

    hashed = []
    original = dispatcher_module.key_group_for
    monkeypatch.setattr(dispatcher_module, "key_group_for", lambda key, mp: hashed.append(key) or original(key, mp))
    run = LocalDispatchers(fanout_functions(600), parallelism=parallelism, egresses=["test/counts"])
    run.send(message_builder("test/counter", "origin", str_value="burst"))
    run.run_until_idle()
    assert sorted(run.egress("test/counts")) == sorted(f"c{i}=1" for i in range(600))
    for op in run.dispatchers:
        for key, kg in op._kg_cache.items():
            assert kg == key_group_for(key, op._max_parallelism)
    assert len(hashed) < 50, f"{len(hashed)} addresses hashed one by one"


def test_the_key_group_cache_stays_bounded_under_a_fan_out_larger_than_it(monkeypatch):
    from raystream.statefun_api import dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "_KG_CACHE_LIMIT", 100)
    run = LocalDispatchers(fanout_functions(450), parallelism=1, egresses=["test/counts"])
    sizes = []
    op = run.dispatchers[0]
    original = op._cache_key_groups

    def watched(keys):
        original(keys)
        sizes.append(len(op._kg_cache))

    monkeypatch.setattr(op, "_cache_key_groups", watched)
    run.send(message_builder("test/counter", "origin", str_value="burst"))
    run.run_until_idle()
    assert sorted(run.egress("test/counts")) == sorted(f"c{i}=1" for i in range(450))
    assert sizes and max(sizes) <= 100
    assert len(op._kg_cache) <= 100
