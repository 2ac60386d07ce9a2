"""Exactly once through the feedback loop: a stateful-functions job with heavy
function-to-function messaging survives killed task actors, and rescales from a savepoint
(p=2 -> 3), with egress equal to a failure-free run.

The workload: counters that forward. Each ingress message carries a hop budget; a counter
increments its count, emits ``"<id>:<count>"`` on the egress and, while hops remain,
forwards the message (hops - 1) to another counter, so most messages travel over the
feedback edge (local or cross-subtask). The egress multiset holds ``<id>:1 .. <id>:<final
count>`` for every counter, so it encodes the final state exactly: a lost message shows as
a missing record, a replayed one as a duplicate.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import raystream as rs
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
from raystream.statefun_api.local import LocalDispatchers
from tests.integration import gated
from tests.integration.test_fault_tolerance import kill_tasks, make_env

N = 6_000  # ingress messages
RATE = 2_000  # ingress messages/s: the job runs ~3 s
HOPS = 3  # each ingress message is handled by 1 + HOPS counters -> 24,000 messages
KEYS = 97
TYPENAME = "test/fwd-counter"
EGRESS = "test/counts"


def nxt(key: str) -> str:
    return f"c{(int(key[1:]) * 31 + 7) % KEYS}"


def functions(asynchronous: bool = False) -> StatefulFunctions:
    """The forwarding counter; ``asynchronous``: as an ``async def`` that awaits (yields to
    the function loop) before it counts, so invocations of many addresses are in flight at
    once when barriers and kills come."""
    fns = StatefulFunctions()

    def count(context, message):
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        key = context.address.id
        context.send_egress(egress_message_builder(EGRESS, f"{key}:{n}", StringType))
        hops = message.as_int()
        if hops > 0:
            context.send(message_builder(TYPENAME, nxt(key), int_value=hops - 1))

    if asynchronous:
        @fns.bind(TYPENAME, specs=[ValueSpec("n", IntType)])
        async def async_counter(context, message):
            await asyncio.sleep(0)
            count(context, message)
    else:
        fns.bind(TYPENAME, specs=[ValueSpec("n", IntType)])(count)
    return fns


def ingress(i: int) -> int:
    return i


def route(i: int):
    return message_builder(TYPENAME, f"c{(i * 7919) % KEYS}", int_value=HOPS)


def python_reference() -> list[str]:
    counts: dict[str, int] = {}
    out = []
    for i in range(N):
        key, hops = f"c{(i * 7919) % KEYS}", HOPS
        while True:
            counts[key] = counts.get(key, 0) + 1
            out.append(f"{key}:{counts[key]}")
            if hops == 0:
                break
            key, hops = nxt(key), hops - 1
    return sorted(out)


@pytest.fixture(scope="module")
def reference() -> list[str]:
    ref = python_reference()
    # the same functions failure-free, in-process, at parallelism 2 (feedback between subtasks)
    run = LocalDispatchers(functions(), parallelism=2, egresses=[EGRESS], seed=3)
    for start in range(0, N, 500):
        run.send(*[route(i) for i in range(start, min(N, start + 500))])
    assert sorted(run.egress(EGRESS)) == ref
    return ref


def build(
    env: rs.StreamEnvironment, gate: str | None = None, asynchronous: bool = False, sources: int = 1, batch: int = 100,
    rate: float | None = RATE,
) -> tuple[rs.DataStream, StatefulFunctionsJob]:
    """The job; with ``gate``, the ingress pauses halfway until that file exists. By default
    one source subtask, so the ingress order is fixed (the egress multiset does not depend on
    it); with ``sources=2`` and batches of 256 or more the router runs in parallel and emits
    Arrow message batches (``IngressRouter.route_batch``). ``rate=None``: the ingress at full
    speed (a job restored from a savepoint: the rate is no state)."""
    sf = StatefulFunctionsJob(env, functions(asynchronous), name="fwd")
    sf.with_ingress(gated.generate(env, ingress, N, rate, batch, gate).set_parallelism(sources).uid("src"), route)
    sink = sf.egress_stream(EGRESS).sink_to(CollectSink(), name="collect").set_parallelism(1)
    return sink, sf


def egress_of(result: rs.JobResult, env: rs.StreamEnvironment, sink) -> list[str]:
    return collected_records(result.sink_results.get(sink.node.stable_uid(env.graph), []))


def wait_for_messages(client: rs.JobClient, n: int, timeout_s: float = 120.0) -> None:
    """Wait until the dispatchers invoked ``n`` messages (a condition, not a time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ops = client.metrics().get("operators", {})
        if ops.get("fwd", {}).get("messages", 0) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the dispatchers did not invoke {n} messages within {timeout_s} s")


@pytest.mark.parametrize("asynchronous, sources, batch, seed", [
    (False, 1, 100, 5),
    (True, 1, 100, 5),
    (False, 2, 300, 11),
], ids=["sync", "async", "parallel-router"])
def test_killed_tasks_give_exactly_the_failure_free_egress(reference, tmp_path, asynchronous, sources, batch, seed):
    """``parallel-router``: two source subtasks with batches of 300, so the router runs in
    parallel and sends Arrow message batches into the exchange."""
    env = make_env(2, tmp_path)
    sink, _ = build(env, asynchronous=asynchronous, sources=sources, batch=batch)
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    assert parallelisms[0] == sources  # (the source and its router)
    client = env.execute_async("statefun-exactly-once")
    killed = kill_tasks(client, parallelisms, 2, seed=seed)
    result = client.wait()
    got = sorted(egress_of(result, env, sink))
    assert killed, "the job ended before any task could be killed"
    assert result.metrics["restarts"] >= 1
    assert result.checkpoints["completed"] >= 1
    assert len(got) == len(reference)
    assert got == reference


def test_rescale_from_savepoint_2_to_3(reference, tmp_path):
    env = make_env(2, tmp_path / "run0")
    sink, _ = build(env, gate=str(tmp_path / "gate"))
    client = env.execute_async("statefun-rescale-2")
    gated.wait_until_paused(str(tmp_path / "gate"), 1)  # the ingress paused halfway: the savepoint is mid-run
    wait_for_messages(client, 1_000)
    savepoint = client.stop_with_savepoint(str(tmp_path / "sp"))
    first = client.wait()
    assert first.savepoint == savepoint
    out = egress_of(first, env, sink)
    assert 0 < len(out) < len(reference), "the savepoint should be taken mid-run"

    env = make_env(3, tmp_path / "run1")
    sink, _ = build(env, rate=None)  # (the rest at full speed)
    second = env.execute("statefun-rescale-3", from_savepoint=savepoint)
    out += egress_of(second, env, sink)
    assert sorted(out) == reference
