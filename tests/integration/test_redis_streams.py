"""Jobs on Ray reading and writing Redis streams (a real ``redis-server`` per module):
a bounded keyed sum equal to a Python reference; the kill-and-compare drill through Redis
in and out (task actors and the job master killed: the output stream equals the failure-free
one as a multiset); an unbounded source stopped with a savepoint and resumed; and Redis as
a stateful-functions ingress and egress."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
import ray

import raystream as rs
from raystream.engine.client import ENDED_STATUSES
from raystream.engine.errors import RaystreamError
from raystream.operators.redis_streams import RedisStreamSink, RedisStreamSource
from raystream.statefun_api import (
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.job import StatefulFunctionsJob
from tests.waiting import wait_for

IN = ["in:0", "in:1"]
N = 12_000


def record(i: int) -> dict:
    return {"key": f"k{(i * 7919) % 31:02d}", "value": i % 97, "i": i}


def fill_input(redis_client, n: int = N) -> None:
    """Each key goes to one stream, so its records keep their order (a deterministic output)."""
    pipe = redis_client.pipeline()
    for i in range(n):
        rec = record(i)
        pipe.xadd(IN[int(rec["key"][1:]) % 2], rec)
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def running_sums(n: int = N) -> Counter:
    sums: dict = {}
    out: Counter = Counter()
    for i in range(n):
        rec = record(i)
        sums[rec["key"]] = sums.get(rec["key"], 0) + rec["value"]
        out[(rec["key"], sums[rec["key"]], i)] += 1
    return out


def parse(d: dict) -> dict:
    return {"key": d["key"], "value": int(d["value"]), "i": int(d["i"])}


def build(env: rs.StreamEnvironment, redis_url: str, rate: float | None = None) -> rs.DataStream:
    source = RedisStreamSource(IN, redis_url, batch_size=200, deserializer=parse, rate=rate)
    return (
        env.from_source(source)
        .key_by("key")
        .reduce(lambda a, b: {"key": a["key"], "value": a["value"] + b["value"], "i": b["i"]})
        .uid("running-sum")
    )


def output(redis_client, key: str = "out") -> Counter:
    return Counter((e["key"], int(e["value"]), int(e["i"])) for _id, e in redis_client.xrange(key))


def lost_and_duplicated(got: Counter, want: Counter) -> tuple[int, int]:
    return sum((want - got).values()), sum((got - want).values())


# ---------------------------------------------------------------- bounded, no failure
def test_bounded_keyed_sum_into_redis_equals_python(redis_url, redis_client, tmp_path):
    fill_input(redis_client)
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(200, checkpoint_dir=str(tmp_path / "chk"))
    sums = build(env, redis_url)
    sums.sink_to(RedisStreamSink("out", redis_url)).uid("redis-out")
    totals = env.from_source(RedisStreamSource(IN, redis_url, deserializer=parse)).key_by("key").aggregate(
        total=("value", "sum"), n=("value", "count"), emit="final")
    totals.sink_to(RedisStreamSink("totals", redis_url)).uid("redis-totals")
    result = env.execute("redis-keyed-sum")
    assert output(redis_client) == running_sums()
    want: dict = {}
    for i in range(N):
        rec = record(i)
        total, n = want.get(rec["key"], (0, 0))
        want[rec["key"]] = (total + rec["value"], n + 1)
    got = {e["key"]: (int(float(e["total"])), int(e["n"])) for _id, e in redis_client.xrange("totals")}
    assert got == want and redis_client.xlen("totals") == len(want)
    assert result.sink_results["redis-out"]["entries"] == N
    # every committed committable left a marker, and every marker expires
    markers = list(redis_client.scan_iter("raystream:commit:*"))
    assert markers and all(0 < redis_client.pttl(m) for m in markers)


# ---------------------------------------------------------------- the drill
def _completed(client: rs.JobClient) -> int:
    return (client.info().get("checkpoints") or {}).get("completed", 0)


def _kill_a_task(client: rs.JobClient, parallelisms: list[int], rng: random.Random) -> bool:
    """Kill the actor hosting a random task, once the current attempt has deployed it."""
    v = rng.randrange(len(parallelisms))
    s = rng.randrange(parallelisms[v])
    found: list = []

    def deployed() -> bool:
        try:
            found[:] = [client.info(), client.task_actor(v, s)]
            return True
        except (ValueError, RaystreamError):  # not deployed yet (a restart or takeover goes on)
            return client.status() in ENDED_STATUSES

    wait_for(deployed, f"task ({v}, {s}) to be deployed")
    if not found:
        return False
    info, actor = found
    ray.kill(actor, no_restart=True)
    wait_for(lambda: client.info()["attempt"] != info["attempt"] or client.status() != "RUNNING",
             "the restart after a task kill")
    return True


def _kill_the_master(client: rs.JobClient) -> bool:
    before = client.failovers
    ray.kill(client.job_master(), no_restart=True)
    # the next call to the dead master notices it, and a new master takes the job over
    wait_for(lambda: client.info() is not None and client.failovers > before, "a new job master")
    return True


@pytest.mark.parametrize("seed", [3, 8])
def test_drill_kill_tasks_and_the_master_through_redis(redis_url, redis_client, tmp_path, seed):
    """Kill two task actors and the job master, in a seeded order, each once the output
    stream has reached a seeded length (so every kill lands mid-job, after commits); the
    output must equal the failure-free output: 0 lost, 0 duplicated."""
    fill_input(redis_client)
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(150, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(6, 100))
    build(env, redis_url, rate=2_000).sink_to(RedisStreamSink("out", redis_url)).uid("redis-out")
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    rng = random.Random(seed)
    events = ["task", "task", "master"]
    rng.shuffle(events)
    marks = sorted(int(rng.uniform(0.08, 0.7) * N) for _ in events)
    client = env.execute_async("redis-drill")
    done = []
    for event, mark in zip(events, marks):
        wait_for(lambda mark=mark: (redis_client.xlen("out") >= mark and client.info()["status"] == "RUNNING")
                 or client.status() in ENDED_STATUSES, f"{mark} committed entries")
        if client.status() in ENDED_STATUSES:
            break
        if _kill_a_task(client, parallelisms, rng) if event == "task" else _kill_the_master(client):
            done.append((event, redis_client.xlen("out")))
    result = client.wait()
    lost, duplicated = lost_and_duplicated(output(redis_client), running_sums())
    print(f"seed {seed}: killed {done}, restarts {result.metrics['restarts']}, failovers {result.failovers}, "
          f"lost {lost}, duplicated {duplicated}, sink {result.sink_results}")
    assert sorted(e for e, _ in done) == ["master", "task", "task"], f"the job ended before every kill: {done}"
    # the job result is the last master's: its restarts are those after the failover
    assert result.failovers == 1
    assert result.metrics["restarts"] >= len(done) - 1 - [e for e, _ in done].index("master")
    assert (lost, duplicated) == (0, 0)


# ---------------------------------------------------------------- unbounded
def test_unbounded_source_with_a_live_producer_and_a_kill_exactly_once(redis_url, redis_client, tmp_path):
    """Entries appended while an unbounded job copies them; a task actor is killed midway
    (the restored readers resume from their checkpointed entry ids); every entry reaches the
    output once."""
    total = 4_000
    stop = threading.Event()

    def produce() -> None:
        import redis

        client = redis.Redis.from_url(redis_url)
        for start in range(0, total, 20):
            pipe = client.pipeline()
            for i in range(start, min(total, start + 20)):
                pipe.xadd("live", {"n": i})
            pipe.execute()
            if stop.wait(0.01):  # a steady trickle, not one burst
                break
        client.close()

    env = rs.StreamEnvironment(parallelism=2, flush_ms=10)
    env.enable_checkpointing(100, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(3, 100))
    source = RedisStreamSource("live", redis_url, bounded=False, id_field="id")
    (env.from_source(source)
        .map(lambda d: {"n": int(d["n"]), "id": d["id"]})
        .sink_to(RedisStreamSink("copied", redis_url)))
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    producer = threading.Thread(target=produce)
    producer.start()
    client = env.execute_async("redis-live")
    try:
        wait_for(lambda: redis_client.xlen("copied") >= 300, "the first committed entries")
        assert _kill_a_task(client, parallelisms, random.Random(5))
        wait_for(lambda: redis_client.xlen("copied") >= total, "every entry in the output", 120)
        seen = _completed(client)
        wait_for(lambda: _completed(client) >= seen + 2, "two more checkpoints (a late duplicate would show)")
        restarts = client.info()["restarts"]
    finally:
        stop.set()
        producer.join()
        client.cancel()
    with pytest.raises(rs.JobCancelled):
        client.wait()
    got = Counter(int(e["n"]) for _id, e in redis_client.xrange("copied"))
    assert restarts >= 1
    assert got == Counter(range(total))


# ---------------------------------------------------------------- stateful functions
def test_redis_as_statefun_ingress_and_egress(redis_url, redis_client, tmp_path):
    functions = StatefulFunctions()

    @functions.bind("demo/greeter", specs=[ValueSpec("seen", IntType)])
    def greeter(context, message):
        seen = (context.storage.seen or 0) + 1
        context.storage.seen = seen
        context.send_egress(egress_message_builder("demo/greets", f"hello {message.as_string()} #{seen}", StringType))

    names = [f"user{i % 13}" for i in range(400)]
    pipe = redis_client.pipeline()
    for name in names:
        pipe.xadd("visits", {"name": name})
    pipe.execute()
    env = rs.StreamEnvironment(parallelism=2, flush_ms=10)
    env.enable_checkpointing(150, checkpoint_dir=str(tmp_path / "chk"))
    sf = StatefulFunctionsJob(env, functions, name="greeter")
    sf.with_ingress(env.from_source(RedisStreamSource("visits", redis_url)),
                    lambda d: message_builder("demo/greeter", d["name"], str_value=d["name"]))
    sf.with_egress("demo/greets", sink=RedisStreamSink("greets", redis_url))
    sf.execute("redis-statefun")
    want: Counter = Counter()
    seen: Counter = Counter()
    for name in names:
        seen[name] += 1
        want[f"hello {name} #{seen[name]}"] += 1
    assert Counter(e["value"] for _id, e in redis_client.xrange("greets")) == want
