"""Embedded async functions run concurrently across addresses (statefun_api.embedded_caller).

Like remote functions on StateFun, an ``async def`` function holds its subtask only while it
computes: addresses waiting on I/O overlap, while each address still sees its messages one at
a time and in order, and a function's error fails the job naming the address and message.
"""

from __future__ import annotations

import asyncio

import pytest

from raystream.engine.errors import UserCodeError
from raystream.statefun_api import (
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.errors import StatefulFunctionError
from raystream.statefun_api.local import LocalDispatchers


def test_invocations_of_different_addresses_overlap():
    # each invocation waits until all N addresses are inside the function at once: run one
    # address at a time, the first would wait for the others forever (here: fail after 30 s)
    n = 8
    inside: set[str] = set()
    everyone: dict[str, asyncio.Event] = {}
    functions = StatefulFunctions()

    @functions.bind("test/rendezvous", specs=[ValueSpec("seen", IntType)])
    async def rendezvous(context, message):
        event = everyone.setdefault("event", asyncio.Event())
        inside.add(context.address.id)
        if len(inside) == n:
            event.set()
        await asyncio.wait_for(event.wait(), 30)
        context.storage.seen = (context.storage.seen or 0) + 1

    with LocalDispatchers(functions) as run:
        run.send(*[message_builder("test/rendezvous", f"a{i}", int_value=i) for i in range(n)])
        assert [run.state("test/rendezvous", f"a{i}", "seen") for i in range(n)] == [1] * n
        assert run.counters()["invocations"] == n


@pytest.mark.parametrize("seed", [None, 1, 2])
def test_an_address_sees_its_messages_one_at_a_time_and_in_order(seed):
    running: set[str] = set()
    overlaps: list[str] = []
    functions = StatefulFunctions()

    @functions.bind("test/seq", specs=[ValueSpec("last", IntType), ValueSpec("count", IntType)])
    async def seq(context, message):
        me = context.address.id
        if me in running:
            overlaps.append(me)
        running.add(me)
        await asyncio.sleep(0)  # let the other addresses' invocations run
        n = message.as_int()
        last = context.storage.last
        if last is not None and n != last + 1:
            raise AssertionError(f"{me}: message {n} after {last}")
        context.storage.last = n
        context.storage.count = (context.storage.count or 0) + 1
        context.send_egress(egress_message_builder("test/out", f"{me}:{n}", StringType))
        running.discard(me)

    keys = [f"k{i}" for i in range(5)]
    with LocalDispatchers(functions, parallelism=2, egresses=["test/out"], seed=seed, max_batch_per_address=7) as run:
        for start in range(0, 60, 20):  # three ingress batches, interleaved addresses
            run.send(*[message_builder("test/seq", k, int_value=i) for i in range(start, start + 20) for k in keys])
        assert not overlaps
        assert [run.state("test/seq", k, "count") for k in keys] == [60] * 5
        assert [run.state("test/seq", k, "last") for k in keys] == [59] * 5
        out = run.egress("test/out")
        for k in keys:
            assert [int(v.split(":")[1]) for v in out if v.startswith(f"{k}:")] == list(range(60))
        counters = run.counters()
        assert counters["messages"] == 300 and counters["invocations"] < 300  # messages batched per address


def test_async_and_sync_functions_message_each_other():
    functions = StatefulFunctions()

    @functions.bind("test/ping", specs=[ValueSpec("n", IntType)])
    async def ping(context, message):
        await asyncio.sleep(0)
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        if message.as_int() > 0:
            context.send(message_builder("test/pong", context.address.id, int_value=message.as_int() - 1))

    @functions.bind("test/pong", specs=[ValueSpec("n", IntType)])
    def pong(context, message):
        context.storage.n = (context.storage.n or 0) + 1
        context.send_egress(egress_message_builder("test/out", f"{context.address.id}:{message.as_int()}", StringType))
        if message.as_int() > 0:
            context.send(message_builder("test/ping", context.address.id, int_value=message.as_int() - 1))

    with LocalDispatchers(functions, parallelism=2, egresses=["test/out"]) as run:
        run.send(*[message_builder("test/ping", f"p{i}", int_value=9) for i in range(10)])
        assert [run.state("test/ping", f"p{i}", "n") for i in range(10)] == [5] * 10
        assert [run.state("test/pong", f"p{i}", "n") for i in range(10)] == [5] * 10
        assert sorted(run.egress("test/out")) == sorted(f"p{i}:{h}" for i in range(10) for h in (8, 6, 4, 2, 0))


def test_an_async_function_that_raises_fails_naming_the_address_and_the_message():
    functions = StatefulFunctions()

    @functions.bind("test/boom", specs=[ValueSpec("n", IntType)])
    async def boom(context, message):
        await asyncio.sleep(0)
        if message.as_int() == 3:
            raise ValueError("kaputt at three")
        context.storage.n = message.as_int()

    with LocalDispatchers(functions) as run:
        with pytest.raises(UserCodeError) as err:  # as for a sync function
            run.send(*[message_builder("test/boom", "z", int_value=i) for i in range(5)])
    original = err.value.original
    assert isinstance(original, StatefulFunctionError) and isinstance(original.__cause__, ValueError)
    assert "kaputt at three" in str(original) and "test/boom/z" in str(original)
    assert "io.statefun.types/int" in str(err.value.record)  # the batch's first message


def test_a_snapshot_holds_the_invocations_in_flight_and_a_restore_runs_them_again():
    release = {"go": False}
    calls: list[tuple[str, int]] = []
    functions = StatefulFunctions()

    @functions.bind("test/slow", specs=[ValueSpec("sum", IntType)])
    async def slow(context, message):
        calls.append((context.address.id, message.as_int()))
        while not release["go"]:  # held until the test releases it (after the snapshot)
            await asyncio.sleep(0.001)
        context.storage.sum = (context.storage.sum or 0) + message.as_int()

    run = LocalDispatchers(functions)
    harness, op = run.subtasks[0], run.dispatchers[0]
    # deliver without LocalDispatchers.run (which would wait for the invocations)
    run._deliver([_record("test/slow", f"s{i}", i) for i in range(4)])
    run._run_one(next(iter(run._mail)))
    while op.embedded_in_flight() < 4:
        harness.step(wait_s=0.01)
    snapshot = run.snapshot()  # all four invocations in flight: their effects are not applied
    release["go"] = True
    run.run()
    assert [run.state("test/slow", f"s{i}", "sum") for i in range(4)] == [0, 1, 2, 3]
    run.close()

    restored = LocalDispatchers.restore(functions, snapshot)  # the four run again, from the snapshot
    assert [restored.state("test/slow", f"s{i}", "sum") for i in range(4)] == [0, 1, 2, 3]
    assert sorted(calls) == sorted([(f"s{i}", i) for i in range(4)] * 2)
    restored.close()


def _record(typename: str, id_: str, value: int):
    from raystream.statefun_api.routing import message_to_record

    return message_to_record(message_builder(typename, id_, int_value=value))
