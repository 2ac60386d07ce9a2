"""Stateful-functions jobs on Ray: greeter, shopping cart, a 100x fan-out burst and delayed
messages with cancellation in ONE job (Ray jobs are expensive here), at parallelism 1 and 3
with identical results; and the error path."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest

import raystream as rs
from raystream.jobs import greeter, shopping_cart
from raystream.operators.sinks import CollectSink, collected_records
from raystream.statefun_api import (
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.job import StatefulFunctionsJob

FANOUT = 100


def counter_functions() -> StatefulFunctions:
    functions = StatefulFunctions()

    @functions.bind("test/counter", specs=[ValueSpec("n", IntType)])
    def counter(context, message):
        if message.is_string():  # a burst: one message to each of FANOUT counters
            for i in range(FANOUT):
                context.send(message_builder("test/counter", f"c{i}", int_value=1))
            return
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        context.send_egress(egress_message_builder("test/counts", n, IntType))

    @functions.bind("test/timer")
    def timer(context, message):
        op, _, token = message.as_string().partition(":")
        if op == "later":
            context.send_after(
                timedelta(milliseconds=300),
                message_builder("test/timer", context.address.id, str_value=f"fired:{token}"),
                cancellation_token=token,
            )
        elif op == "cancel":
            context.cancel_delayed_message(token)
        else:
            context.send_egress(egress_message_builder("test/fired", f"{context.address.id}:{token}", StringType))

    return functions


def timer_commands(record):
    id_, text = record
    return message_builder("test/timer", id_, str_value=text)


def build_all(parallelism: int) -> tuple[rs.StreamEnvironment, dict[str, rs.DataStream]]:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=5)
    streams = {
        "greets": greeter.build(env, argparse.Namespace(names=[], visits=120, people=9)),
        "receipts": shopping_cart.build(env, argparse.Namespace(users=15, items=4, stock=1000)),
    }
    sf = StatefulFunctionsJob(env, counter_functions(), name="counters")
    bursts = env.from_collection([f"src{i}" for i in range(20)]).set_parallelism(1)
    sf.with_ingress(bursts, lambda s: message_builder("test/counter", s, str_value="go"))
    commands = [(f"t{i}", f"later:a{i}") for i in range(6)] + [(f"t{i}", f"cancel:a{i}") for i in range(0, 6, 2)]
    # a second ingress of the same dispatcher, in order per address
    sf.with_ingress(env.from_collection(commands).set_parallelism(1), timer_commands)
    streams["counts"] = sf.egress_stream("test/counts")
    streams["fired"] = sf.egress_stream("test/fired")
    return env, streams


def run_all(parallelism: int) -> dict[str, list]:
    env, streams = build_all(parallelism)
    # one sink subtask per egress: fewer actors to start (actor creation dominates here)
    sinks = {name: s.sink_to(CollectSink(), name=f"collect {name}").set_parallelism(1) for name, s in streams.items()}
    result = env.execute(f"statefun-p{parallelism}")
    return {
        name: sorted(collected_records(result.sink_results.get(sink.node.stable_uid(env.graph), [])), key=repr)
        for name, sink in sinks.items()
    }


@pytest.fixture(scope="module")
def results_p3():
    return run_all(3)


def test_statefun_jobs_at_parallelism_3(results_p3):
    greets = results_p3["greets"]
    assert len(greets) == 120
    assert greeter.greeting("person-0", 14) in greets and greeter.greeting("person-0", 1) in greets
    receipts = results_p3["receipts"]
    assert sorted(r["user"] for r in receipts) == sorted(f"user-{u}" for u in range(15))
    expected = {}
    for e in shopping_cart.generate_events(15, 4):
        if e["type"] == "add":
            items = expected.setdefault(e["user"], {})
            items[e["item"]] = items.get(e["item"], 0) + e["quantity"]
    assert {r["user"]: r["items"] for r in receipts} == expected
    # 20 bursts x 100 counters: every count 1..20 reached by each of the 100 counters
    assert results_p3["counts"] == sorted([n for n in range(1, 21) for _ in range(FANOUT)], key=repr)
    # delayed messages: the cancelled tokens (even ones) never fire
    assert results_p3["fired"] == ["t1:a1", "t3:a3", "t5:a5"]


def test_statefun_jobs_parallelism_1_gives_identical_results(results_p3):
    assert run_all(1) == results_p3


def test_statefun_function_error_fails_the_job_naming_address_and_message_type():
    functions = StatefulFunctions()

    @functions.bind("test/fragile")
    def fragile(context, message):
        if message.as_int() == 13:
            raise ValueError("unlucky")

    env = rs.StreamEnvironment(parallelism=2, flush_ms=5)
    sf = StatefulFunctionsJob(env, functions)
    sf.with_ingress(env.from_collection(list(range(20))), lambda n: message_builder("test/fragile", str(n), int_value=n))
    sf.egress_stream("test/none").collect()
    with pytest.raises(rs.JobFailed) as err:
        env.execute("statefun-error")
    text = str(err.value)
    assert "test/fragile/13" in text and "'io.statefun.types/int'" in text and "unlucky" in text
    assert "statefun" in text


def test_a_router_returning_no_message_fails_the_job_naming_the_router_and_the_record():
    functions = StatefulFunctions()

    @functions.bind("test/sink")
    def sink(context, message):
        pass

    def router(n):
        return message_builder("test/sink", str(n), int_value=n) if n != 7 else f"test/sink/{n}"

    env = rs.StreamEnvironment(parallelism=2, flush_ms=5)
    sf = StatefulFunctionsJob(env, functions, name="routed")
    sf.with_ingress(env.from_collection(list(range(20))), router)
    with pytest.raises(rs.JobFailed) as err:
        env.execute("statefun-router-error")
    text = str(err.value)
    assert "routed-router" in text and "returned 'test/sink/7' for record 7" in text, text


def _rendezvous_functions(n: int) -> StatefulFunctions:
    """An async function whose invocations wait until ``n`` addresses are inside it at once."""
    import asyncio

    functions = StatefulFunctions()
    inside: set = set()
    events: dict = {}

    @functions.bind("test/meet", specs=[ValueSpec("seen", IntType)])
    async def meet(context, message):
        event = events.setdefault("all", asyncio.Event())
        inside.add(context.address.id)
        if len(inside) >= n:
            event.set()
        await asyncio.wait_for(event.wait(), 60)
        context.storage.seen = (context.storage.seen or 0) + 1
        context.send_egress(egress_message_builder("test/met", f"{context.address.id}:{context.storage.seen}", StringType))

    return functions


def test_embedded_async_functions_are_invoked_concurrently_on_ray():
    # one subtask: the 16 addresses can only all be inside the function at once if their
    # invocations overlap (one at a time, the first would wait 60 s and fail the job)
    env = rs.StreamEnvironment(parallelism=1)
    sf = StatefulFunctionsJob(env, _rendezvous_functions(16), name="meet")
    sf.with_ingress(env.from_collection(list(range(32))), lambda i: message_builder("test/meet", f"m{i % 16}", int_value=i))
    sink = sf.egress_stream("test/met").sink_to(CollectSink(), name="collect")
    result = env.execute("async-meet")
    out = collected_records(result.sink_results.get(sink.node.stable_uid(env.graph), []))
    assert sorted(out) == sorted(f"m{i}:{n}" for i in range(16) for n in (1, 2))
