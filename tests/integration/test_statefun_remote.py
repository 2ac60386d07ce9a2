"""Remote functions on Ray: a StatefulFunctionsJob mixing embedded functions with functions
written with the official ``statefun`` SDK and served by aiohttp in this (driver) process,
called from the dispatcher task actors over localhost.

Exactly once across killed dispatcher tasks: the remote function's state lives in
raystream (it travels with every request), so when a dispatcher task is killed while
requests are in flight, the job restores its last checkpoint, re-sends the requests that
were in flight then, and the egress must equal a failure-free run's. The remote side
sees at-least-once calls; the egress multiset (``"<id>:<count>"`` for every count) shows a
lost message as a missing record and a replayed one as a duplicate.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta

import pytest
import ray

import raystream as rs
from raystream.engine.client import ENDED_STATUSES
from raystream.engine.errors import RaystreamError
from raystream.operators.sinks import CollectSink, collected_records
from raystream.statefun_api import IntType, StatefulFunctions, ValueSpec, message_builder
from raystream.statefun_api.endpoints import remote_endpoint
from raystream.statefun_api.job import StatefulFunctionsJob
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.testing import FunctionServer
from tests.integration.test_fault_tolerance import make_env

statefun = pytest.importorskip("statefun")
pytest.importorskip("aiohttp")

N = 1_500  # ingress messages
RATE = 500  # ingress messages/s: the job runs ~3 s
HOPS = 2  # each ingress message: embedded relay -> remote counter -> relay -> remote counter
KEYS = 41
EGRESS = "test/counts"
NAME = "remote-fwd"


def sdk_functions():
    """The remote counter, written with the official SDK: counts, reports, bounces back."""
    fns = statefun.StatefulFunctions()

    @fns.bind(typename="remote/counter", specs=[statefun.ValueSpec(name="n", type=statefun.IntType)])
    async def counter(context, message):
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        context.send_egress(
            statefun.egress_message_builder(
                target_typename=EGRESS, value=f"{context.address.id}:{n}", value_type=statefun.StringType
            )
        )
        hops = message.as_int()
        if hops > 0:
            context.send(statefun.message_builder(target_typename="local/relay", target_id=context.address.id, int_value=hops - 1))

    return fns


def nxt(key: str) -> str:
    return f"c{(int(key[1:]) * 17 + 3) % KEYS}"


def embedded() -> StatefulFunctions:
    fns = StatefulFunctions()

    @fns.bind("local/relay", specs=[ValueSpec("seen", IntType)])
    def relay(context, message):  # forwards to the remote counter of the next key
        context.storage.seen = (context.storage.seen or 0) + 1
        context.send(message_builder("remote/counter", nxt(context.address.id), int_value=message.as_int()))

    return fns


def route(i: int):
    return message_builder("local/relay", f"c{(i * 7919) % KEYS}", int_value=HOPS)


def python_reference() -> list[str]:
    counts: dict[str, int] = {}
    out = []
    for i in range(N):
        key, hops = f"c{(i * 7919) % KEYS}", HOPS
        while True:
            key = nxt(key)  # relay -> counter of the next key
            counts[key] = counts.get(key, 0) + 1
            out.append(f"{key}:{counts[key]}")
            if hops == 0:
                break
            hops -= 1  # counter -> relay of the same key
    return sorted(out)


@pytest.fixture(scope="module")
def server():
    with FunctionServer(statefun.RequestReplyHandler(sdk_functions())) as srv:
        yield srv


def endpoint(server: FunctionServer):
    return remote_endpoint(
        "remote/*", server.url + "/{function.name}", call_timeout=timedelta(seconds=30), backoff_initial=0.02
    )


def build(env: rs.StreamEnvironment, server: FunctionServer):
    sf = StatefulFunctionsJob(env, embedded(), name=NAME, endpoints=[endpoint(server)])
    sf.with_ingress(env.generate(lambda i: i, count=N, rate=RATE, batch_size=50).set_parallelism(1).uid("src"), route)
    return sf.egress_stream(EGRESS).sink_to(CollectSink(), name="collect").set_parallelism(1)


def kill_dispatchers(client: rs.JobClient, server: FunctionServer, vertex: int, parallelism: int, kills: int, seed: int) -> list:
    """Kill a dispatcher task actor ``kills`` times, each time once the current attempt has
    completed a checkpoint and called the remote functions (so requests are in flight)."""
    rng = random.Random(seed)
    done = []
    for _ in range(kills):
        info = client.info()
        base_requests = server.requests
        base_checkpoint = (info.get("checkpoints") or {}).get("latest_completed") or 0
        deadline = time.time() + 30
        while time.time() < deadline:
            info = client.info()
            latest = (info.get("checkpoints") or {}).get("latest_completed") or 0
            if info["status"] in ENDED_STATUSES:
                break  # (CREATED / RESTARTING: still deploying, wait)
            if info["status"] == "RUNNING" and latest > base_checkpoint and server.requests >= base_requests + 60:
                break
            time.sleep(0.02)
        if info["status"] != "RUNNING":
            break
        time.sleep(rng.uniform(0.0, 0.2))
        s = rng.randrange(parallelism)
        try:
            actor = client.task_actor(vertex, s)
        except (ValueError, RaystreamError):  # gone, or the attempt changed meanwhile
            continue
        ray.kill(actor, no_restart=True)
        done.append((s, info["attempt"]))
        deadline = time.time() + 20
        while client.info()["attempt"] == info["attempt"] and time.time() < deadline:
            time.sleep(0.05)
    return done


def test_killed_dispatchers_give_exactly_the_failure_free_egress(server, tmp_path):
    reference = python_reference()
    # the failure-free run: the same functions and server, in-process
    with LocalDispatchers(embedded(), parallelism=2, egresses=[EGRESS], endpoints=[endpoint(server)], seed=1) as run:
        for start in range(0, N, 250):
            run.send(*[route(i) for i in range(start, min(N, start + 250))]).run_until_idle()
        assert sorted(run.egress(EGRESS)) == reference

    env = make_env(2, tmp_path)
    sink = build(env, server)
    graph = env.get_job_graph()
    vertex = next(v for v in graph.vertices if v.name == NAME)
    requests_before = server.requests
    client = env.execute_async("statefun-remote-exactly-once")
    killed = kill_dispatchers(client, server, vertex.id, vertex.parallelism, kills=2, seed=11)
    result = client.wait()
    got = sorted(collected_records(result.sink_results.get(sink.node.stable_uid(env.graph), [])))
    assert killed, "the job ended before a dispatcher could be killed"
    assert result.metrics["restarts"] >= 1
    assert result.checkpoints["completed"] >= 1
    assert server.requests > requests_before
    assert len(got) == len(reference)
    assert got == reference
