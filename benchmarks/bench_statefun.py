"""The statefun_counter workload (BENCHMARKS.md #4) in messages/s, and every target of issue 13.

An ingress of N messages to ``bench/counter/<key>`` (keys of ``events(N)``: 10,000 keys,
Zipf s = 1.1); each counter increments its stored count and, every 100th message it
receives, sends a message to another counter (``forward(key)``) and an egress record
``"<key>:<count>"``. Forwarded messages count too, so the workload runs to a fixed point;
messages/s counts ingress + forwarded messages. Every contender's egress is checked against
the dict reference before its time counts.

Contenders (ratios are against baselines measured in the same run):

* ``python``: a plain-Python dict dispatch loop (a deque of pending messages, a dict of
  counts) - the baseline of the in-process and Ray targets;
* ``dispatcher p=1``: one FunctionDispatcher driven as its task drives it (ingress batches
  of 8192 message records made by the router code - ``message_builder`` +
  ``message_to_record`` -, inside the timed region; posted mailbox continuations run
  between batches while ``accepts_input()`` is False), every message local;
* ``dispatcher p=2``: two subtasks in ``LocalDispatchers`` (cross-subtask messages through
  the feedback side output; includes LocalDispatchers' own routing, informational);
* ``sdk handler``: the official apache-flink-statefun 3.3.0 ``RequestReplyHandler``
  in-process (``handle_async`` on one event loop, no network): the same counter written
  with the SDK, requests of up to 64 messages to one address (messages grouped per address
  over the whole input, the most favourable batching for it); only the time inside
  ``handle_async`` counts (request building and reply parsing, done with the SDK's own
  protobuf classes, are not timed);
* ``remote, 1 / 2 server processes``: the SDK counter served by aiohttp in separate
  processes (two: ``reuse_port``, the kernel spreads connections), called by one
  in-process dispatcher (``LocalDispatchers`` p=1) over HTTP with StateFun's request-reply
  protocol; baseline: the SDK handler in-process on the same messages;
* ``ray p=1`` / ``ray p=2``: the StatefulFunctionsJob on Ray (``--ray-n`` messages,
  default 1M), time around ``env.execute()`` (deployment included);
* ``latency``: ingress -> function -> egress on Ray at p=2, a generated source at
  ``--latency-rate`` msg/s stamping each message, the egress stream computing now - stamp;
* ``small job``: the wall time of a whole 1,000-message counter job on Ray at p=1 and p=2
  (median of ``--small-runs``): deployment, the feedback loop's termination, the result.

``--async-io`` measures instead embedded ``async def`` functions (``LocalDispatchers``, p=1):
a function awaiting a simulated I/O call of ``--io-ms`` per message over 1,000 addresses
against the same function written sync (``time.sleep``: one invocation at a time, how every
async batch ran before they were invoked concurrently), and the I/O-free counter written
async against written sync (the cost of the concurrent path).

Run::

    RAY_ADDRESS=local python -m benchmarks.bench_statefun          # --n 200000 --ray-n 1000000 --repeat 3
    python -m benchmarks.bench_statefun --no-ray --no-remote --no-write  # the in-process part only
    python -m benchmarks.bench_statefun --n 20000 --opcodes             # bytecodes per message, per function
    valgrind --tool=cachegrind --cache-sim=no python -m benchmarks.bench_statefun --n 50000 --direct-runs 2  # minus K=0
    (--routed with either: the routed ingress's batches instead of the Python router's)
    python -m benchmarks.bench_statefun --async-io --no-write         # embedded async functions
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from itertools import repeat
from typing import Any

from benchmarks import harness
from benchmarks.datagen import events

__all__ = [
    "forward",
    "python_counter",
    "make_functions",
    "dispatcher_counter",
    "dispatcher_direct",
    "sdk_counter",
    "remote_counter",
    "ray_counter",
    "ray_latency",
    "ray_small_job",
    "ingress_side_cost",
    "opcode_counts",
    "gc_share",
    "async_io_counter",
    "main",
]

TYPENAME = "bench/counter"
EGRESS = "bench/counts"
INGRESS_BATCH = 8192
SDK_BATCH = 64


def forward(key: str) -> str:
    """The counter a counter forwards to every 100th message.

    Example:
        >>> forward("k00001")
        'k00008'
    """
    return f"k{(int(key[1:]) * 7 + 1) % 10000:05d}"


def python_counter(keys: list[str]) -> tuple[list[str], int]:
    """The baseline: a plain dict dispatch loop. Returns (sorted egress, messages handled)."""
    counts: dict[str, int] = {}
    egress: list[str] = []
    pending: deque[str] = deque(keys)
    handled = 0
    while pending:
        key = pending.popleft()
        handled += 1
        n = counts.get(key, 0) + 1
        counts[key] = n
        if n % 100 == 0:
            pending.append(forward(key))
            egress.append(f"{key}:{n}")
    return sorted(egress), handled


def make_functions() -> Any:
    """The counter as a stateful function."""
    from raystream.statefun_api import (
        IntType,
        StatefulFunctions,
        StringType,
        ValueSpec,
        egress_message_builder,
        message_builder,
    )

    functions = StatefulFunctions()

    @functions.bind(TYPENAME, specs=[ValueSpec("n", IntType)])
    def counter(context, message):
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        if n % 100 == 0:
            key = context.address.id
            context.send(message_builder(TYPENAME, forward(key), int_value=1))
            context.send_egress(egress_message_builder(EGRESS, f"{key}:{n}", StringType))

    return functions


def _message(key: str) -> Any:
    """The ingress router: a message to the counter ``key``."""
    return _statefun_api().message_builder(TYPENAME, key, int_value=1)


def _statefun_api() -> Any:
    """``raystream.statefun_api``, imported once (a per-call import costs more than the message)."""
    global _API
    if _API is None:
        import raystream.statefun_api as api

        _API = api
    return _API


_API: Any = None


def dispatcher_counter(keys: list[str], parallelism: int) -> tuple[list[str], dict[str, int]]:
    """FunctionDispatchers in-process (``LocalDispatchers``); returns (sorted egress, counters)."""
    from raystream.statefun_api.local import LocalDispatchers

    run = LocalDispatchers(make_functions(), parallelism=parallelism, egresses=[EGRESS])
    msgs = [_message(k) for k in keys]
    for i in range(0, len(msgs), INGRESS_BATCH):  # ingress batches as a source would deliver them
        run.send(*msgs[i : i + INGRESS_BATCH])
    return sorted(run.egress(EGRESS)), run.counters()


def dispatcher_direct(keys: list[str], routed: bool = False) -> tuple[list[str], dict[str, int]]:
    """One FunctionDispatcher driven as its task drives it: ingress batches of message records
    built by the router code (``routed``: by the routed ingress from ``(key, 1)`` pairs), the
    posted continuations run on a mailbox between batches while the dispatcher does not
    accept input. Returns (sorted egress, counters)."""
    from raystream.engine.keygroups import KeyGroupRange
    from raystream.engine.operator import OperatorContext
    from raystream.engine.records import Batch
    from raystream.statefun_api import IntType, message_builder
    from raystream.statefun_api.dispatcher import DispatcherConfig, FunctionDispatcher
    from raystream.statefun_api.ingress import RoutedIngress
    from raystream.statefun_api.routing import FEEDBACK_TAG, message_to_record

    egress: list[str] = []
    mailbox: deque[Callable[[], None]] = deque()

    class _Output:
        def emit(self, batch: Batch) -> None:
            pass

        def emit_watermark(self, watermark: Any) -> None:
            pass

        def emit_side(self, tag: str, batch: Batch) -> None:
            if tag == FEEDBACK_TAG:
                raise AssertionError("p=1 sends nothing over the feedback edge")
            egress.extend(batch.records())

    op = FunctionDispatcher(DispatcherConfig(make_functions(), {EGRESS: None}))
    ctx = OperatorContext(
        operator_name="statefun",
        operator_uid="statefun",
        task_name="statefun (1/1)",
        subtask_index=0,
        parallelism=1,
        max_parallelism=128,
        key_group_range=KeyGroupRange.for_subtask(0, 1, 128),
        post=mailbox.append,
    )
    op.open(ctx, _Output())
    ingress = RoutedIngress([TYPENAME], IntType)
    for i in range(0, len(keys), INGRESS_BATCH):
        if routed:
            batch = Batch.of_records(ingress.route(Batch.of_records(list(zip(keys[i : i + INGRESS_BATCH], repeat(1))))))
        else:
            batch = Batch.of_records([message_to_record(message_builder(TYPENAME, k, int_value=1)) for k in keys[i : i + INGRESS_BATCH]])
        while mailbox and not op.accepts_input():
            mailbox.popleft()()
        op.process_batch(batch)
    while mailbox:
        mailbox.popleft()()
    op.end_input()
    op.close()
    return sorted(egress), dict(op.counters)


# ---------------------------------------------------------------------------- the official SDK
def _sdk_functions() -> Any:
    import statefun

    functions = statefun.StatefulFunctions()

    @functions.bind(typename=TYPENAME, specs=[statefun.ValueSpec(name="n", type=statefun.IntType)])
    def counter(context, message):
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        if n % 100 == 0:
            key = context.address.id
            context.send(statefun.message_builder(target_typename=TYPENAME, target_id=forward(key), int_value=1))
            context.send_egress(
                statefun.egress_message_builder(target_typename=EGRESS, value=f"{key}:{n}", value_type=statefun.StringType)
            )

    return functions


def sdk_counter(keys: list[str], batch: int = SDK_BATCH) -> tuple[list[str], float, float]:
    """The official SDK's ``RequestReplyHandler`` in-process on the counter workload: requests
    of up to ``batch`` messages to one address (grouped per address over the input, then over
    each round of forwarded messages). Returns (sorted egress, seconds inside handle_async,
    CPU seconds inside handle_async)."""
    import statefun
    from statefun.request_reply_pb2 import FromFunction, ToFunction, TypedValue

    handler = statefun.RequestReplyHandler(_sdk_functions())
    one = TypedValue(typename="io.statefun.types/int", has_value=True, value=statefun.IntType.serializer().serialize(1))
    string_type = statefun.StringType.serializer()
    namespace, name = TYPENAME.split("/")
    state: dict[str, bytes] = {}
    egress: list[str] = []
    wall = cpu = 0.0

    async def run() -> None:
        nonlocal wall, cpu
        round_keys = keys
        while round_keys:
            per_address: dict[str, int] = {}
            for k in round_keys:
                per_address[k] = per_address.get(k, 0) + 1
            forwarded: list[str] = []
            for key, count in per_address.items():
                while count > 0:
                    m = min(batch, count)
                    count -= m
                    req = ToFunction()
                    inv = req.invocation
                    inv.target.namespace, inv.target.type, inv.target.id = namespace, name, key
                    pv = inv.state.add()
                    pv.state_name = "n"
                    if key in state:
                        pv.state_value.typename = "io.statefun.types/int"
                        pv.state_value.has_value = True
                        pv.state_value.value = state[key]
                    for _ in range(m):
                        inv.invocations.add().argument.CopyFrom(one)
                    data = req.SerializeToString()
                    t0, c0 = time.perf_counter(), time.process_time()
                    reply = await handler.handle_async(data)
                    wall += time.perf_counter() - t0
                    cpu += time.process_time() - c0
                    res = FromFunction()
                    res.ParseFromString(reply)
                    r = res.invocation_result
                    for mut in r.state_mutations:
                        state[key] = mut.state_value.value
                    for out in r.outgoing_messages:
                        forwarded.append(out.target.id)
                    for e in r.outgoing_egresses:
                        egress.append(string_type.deserialize(e.argument.value))
            round_keys = forwarded

    asyncio.run(run())
    return sorted(egress), wall, cpu


def _serve(port: int) -> None:
    """A function server (run in a child process): the SDK counter behind aiohttp."""
    import statefun
    from aiohttp import web

    handler = statefun.RequestReplyHandler(_sdk_functions())
    stats = [0.0, 0]  # seconds inside handle_async, requests

    async def endpoint(request: Any) -> Any:
        body = await request.read()
        t0 = time.perf_counter()
        reply = await handler.handle_async(body)
        stats[0] += time.perf_counter() - t0
        stats[1] += 1
        return web.Response(body=reply, content_type="application/octet-stream")

    async def report(request: Any) -> Any:
        text = f"{stats[0]} {stats[1]}"
        stats[0], stats[1] = 0.0, 0
        return web.Response(text=text)

    app = web.Application(client_max_size=64 << 20)
    app.router.add_get("/stats", report)
    app.router.add_post("/{tail:.*}", endpoint)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, reuse_port=True)


def _start_servers(count: int, port: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.bench_statefun", "--serve", str(port)]) for _ in range(count)]
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            time.sleep(0.5 * count)  # let every process bind
            return procs
        except OSError:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.05)
    for p in procs:
        p.kill()
    raise SystemExit("the function servers did not start within 30 s")


def _stop_servers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=10)


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has spent, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_stats(port: int) -> float:
    """Seconds the server spent inside handle_async since the last call (and reset it)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as resp:
        return float(resp.read().split()[0])


def remote_counter(keys: list[str], url: str) -> tuple[list[str], dict[str, int]]:
    """The counter served remotely, called by one in-process dispatcher over HTTP."""
    from raystream.statefun_api import StatefulFunctions
    from raystream.statefun_api.endpoints import remote_endpoint
    from raystream.statefun_api.local import LocalDispatchers

    ep = remote_endpoint("bench/*", url)
    msgs = [_message(k) for k in keys]
    with LocalDispatchers(StatefulFunctions(), egresses=[EGRESS], endpoints=[ep]) as run:
        for i in range(0, len(msgs), INGRESS_BATCH):
            run.send(*msgs[i : i + INGRESS_BATCH])
        run.run_until_idle()
        return sorted(run.egress(EGRESS)), run.counters()


# ---------------------------------------------------------------------------- Ray
def ray_counter(keys: list[str], parallelism: int, routed: bool = False) -> tuple[list[str], float]:
    """The StatefulFunctionsJob on Ray, the ingress ``(key, 1)`` pairs through a Python router
    or (``routed``) a routed ingress; returns (sorted egress, job duration in s)."""
    import raystream as rs
    from raystream.operators.sinks import CollectSink, collected_records
    from raystream.operators.sources import GeneratorSource
    from raystream.statefun_api.job import StatefulFunctionsJob

    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=5)
    sf = StatefulFunctionsJob(env, make_functions(), name="counter")
    # a parallel ingress (like a Kafka source with `parallelism` partitions): subtask i reads
    # keys i, i + p, ...; the router runs chained to it, at the same parallelism
    source = GeneratorSource(batch_fn=_KeysAt(keys), count=len(keys), batch_size=INGRESS_BATCH)
    if routed:
        sf.with_routed_ingress(env.from_source(source, "keys"), TYPENAME, _statefun_api().IntType)
    else:
        sf.with_ingress(env.from_source(source, "keys"), _pair_message)
    sink = sf.egress_stream(EGRESS).sink_to(CollectSink(), name="collect").set_parallelism(1)
    result = env.execute("bench-statefun")
    out = collected_records(result.sink_results.get(sink.node.stable_uid(env.graph), []))
    return sorted(out), result.duration_s


class _KeysAt:
    """``indices -> [keys[i] for i in indices]`` for the generated ingress. The keys travel as
    one Arrow string array (buffers: pickled and unpickled at memory speed; a list of 1M str
    is ~1M objects to pickle per source subtask in the job master and to rebuild in each
    worker, a start-up cost p=2 pays twice)."""

    def __init__(self, keys: list[str]) -> None:
        import pyarrow as pa

        self.keys = pa.array(keys, pa.string())

    def __call__(self, indices: range) -> list[tuple[str, int]]:
        """The ingress records ``(key, 1)`` at ``indices``."""
        return list(zip(self.keys[indices.start : indices.stop : indices.step].to_pylist(), repeat(1)))


def new_addresses_section(n: int, rounds: int = 3) -> str:
    """CPU ns per message of the p=1 dispatcher in this process (routed ingress, as
    :func:`dispatcher_direct`) on the counter's Zipf keys and on ``n`` ids seen once (every
    message to an address the dispatcher meets for the first time), with a task actor's
    garbage-collector settings; median of ``rounds``, alternating."""
    import gc

    from raystream.engine.ray_runtime import tune_task_gc

    before = gc.get_threshold()
    tune_task_gc()
    try:
        cases = {"10,000 Zipf keys": events(n).column("key").to_pylist(), "ids seen once": [f"k{i:09d}" for i in range(n)]}
        figures: dict[str, list[float]] = {label: [] for label in cases}
        for _ in range(rounds):
            for label, keys in cases.items():
                gc.collect()
                t = time.process_time()
                dispatcher_direct(keys, routed=True)
                figures[label].append((time.process_time() - t) / n * 1e9)
        fan: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(rounds):
            for p in (1, 2):
                gc.collect()
                fan[p].append(_fan_out_to_new_addresses(n, p))
    finally:
        gc.set_threshold(*before)
    cells = " | ".join(f"{statistics.median(v):,.0f}" for v in [*figures.values(), *fan.values()])
    return (f"**Addresses met for the first time** (in-process; CPU ns per message, median of {rounds}): the p=1 "
            f"dispatcher on {n:,} ingress messages (routed ingress), and functions each sending 1,000 messages to "
            f"addresses not met before, {n:,} in all (`LocalDispatchers`)\n\n"
            f"| {' | '.join(cases)} | fan-out to new addresses, p=1 | same, p=2 |\n|---:|---:|---:|---:|\n| {cells} |")


def _fan_out_to_new_addresses(n: int, parallelism: int) -> float:
    """CPU ns per message of ``n // 1000`` invocations that each send 1,000 messages to new
    addresses, each of which counts (``LocalDispatchers``); the counts are checked."""
    from raystream.statefun_api import IntType, StatefulFunctions, ValueSpec, message_builder
    from raystream.statefun_api.local import LocalDispatchers

    functions = StatefulFunctions()

    @functions.bind("bench/fan")
    def fan(context: Any, message: Any) -> None:
        base = message.as_int()
        for i in range(1000):
            context.send(message_builder("bench/leaf", f"{base}-{i}", int_value=1))

    @functions.bind("bench/leaf", specs=[ValueSpec("n", IntType)])
    def leaf(context: Any, message: Any) -> None:
        context.storage.n = (context.storage.n or 0) + 1

    bursts = max(1, n // 1000)
    run = LocalDispatchers(functions, parallelism=parallelism)
    t = time.process_time()
    for b in range(0, bursts, 20):
        run.send(*[message_builder("bench/fan", str(i), int_value=i) for i in range(b, min(b + 20, bursts))])
    run.run_until_idle()
    cpu = time.process_time() - t
    if run.state("bench/leaf", f"{bursts - 1}-999", "n") != 1:
        raise AssertionError("fan-out: a leaf was not counted once")
    return cpu / (bursts * 1000) * 1e9


def ingress_side_cost(keys: list[str], routed: bool, rounds: int = 3) -> list[float]:
    """CPU ns per message of the ingress side of a p=2 job, in this process: the ingress
    (a Python router, or ``routed``: the routed ingress) on ``(key, 1)`` batches as the
    source delivers them, then the exchange into the dispatcher (key groups, the split per
    subtask), the Arrow form of the other subtask's part (what its channel sends), and the
    records both dispatchers make of their parts (the other one's from Arrow; the local
    one's from Arrow when the ingress emitted Arrow). One figure per round; the first round
    meets every key for the first time."""
    import raystream as rs
    from raystream.engine.keygroups import KeyGroupRange
    from raystream.engine.operator import OperatorContext
    from raystream.engine.records import Batch
    from raystream.statefun_api.job import StatefulFunctionsJob

    env = rs.StreamEnvironment(parallelism=2)
    sf = StatefulFunctionsJob(env, make_functions(), name="counter")
    stream = env.from_collection([("k00000", 1)])
    if routed:
        sf.with_routed_ingress(stream, TYPENAME, _statefun_api().IntType)
    else:
        sf.with_ingress(stream, _pair_message)
    ingress = next(n for n in env.graph.nodes if n.name in ("counter-router", "counter-ingress"))
    dispatcher = next(n for n in env.graph.nodes if n.name == "counter")
    partitioner = next(e for e in dispatcher.inputs if e.source is ingress).partitioner
    partitioner.setup(0, 2, 128)
    op = ingress.operator_factory()

    class _Out:
        batch: Any = None

        def emit(self, batch: Any) -> None:
            self.batch = batch

    out = _Out()
    op.open(OperatorContext(operator_name=ingress.name, operator_uid=ingress.name, task_name=f"{ingress.name} (1/2)",
                            subtask_index=0, parallelism=2, max_parallelism=128,
                            key_group_range=KeyGroupRange.for_subtask(0, 2, 128)), out)
    batches = [Batch.of_records(list(zip(keys[i : i + INGRESS_BATCH], repeat(1)))) for i in range(0, len(keys), INGRESS_BATCH)]
    figures = []
    for _ in range(rounds):
        fresh = [Batch.of_records(list(b.records())) for b in batches]
        t = time.process_time()
        for batch in fresh:
            op.process_batch(batch)
            for target, part in partitioner.select(out.batch):
                if target == 1:  # shipped as Arrow, read as records by the other dispatcher
                    Batch.of_arrow(part.arrow()).records()
                else:
                    part.records()
        figures.append((time.process_time() - t) / len(keys) * 1e9)
    return figures


def ingress_side_section(n: int) -> str:
    """The table of :func:`ingress_side_cost` for the counter's Zipf keys and for ids seen once."""
    zipf = events(n).column("key").to_pylist()
    unique = [f"user-{i:09d}" for i in range(n)]
    lines = [
        f"**Ingress side of a p=2 job** ({n:,} messages in batches of {INGRESS_BATCH:,}; CPU ns per message: the ingress, "
        "the key groups and split of the exchange, the other subtask's part as Arrow, both parts as the dispatchers' "
        "records; rounds 1 / 2 / 3, round 1 "
        "meets every id for the first time)",
        "",
        "| ingress | 10,000 Zipf keys | ids seen once |",
        "|---|---:|---:|",
    ]
    for routed in (False, True):
        cells = [" / ".join(f"{x:,.0f}" for x in ingress_side_cost(k, routed)) for k in (zipf, unique)]
        lines.append(f"| {'routed ingress' if routed else 'Python router'} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _pair_message(pair: tuple[str, int]) -> Any:
    """The ingress router of the Ray contenders: a message to the counter ``pair[0]``."""
    return _statefun_api().message_builder(TYPENAME, pair[0], int_value=pair[1])


def ray_small_job(keys: list[str], parallelism: int, runs: int) -> list[float]:
    """Wall seconds of ``runs`` whole counter jobs over ``keys`` (each checked) on Ray."""
    reference = python_counter(keys)[0]
    walls = []
    for _ in range(runs):
        dt, _ct, (out, _duration) = _timed(lambda: ray_counter(keys, parallelism, routed=True))
        _check(f"small job p={parallelism}", out, reference)
        walls.append(dt)
    return walls


def _stamp(i: int) -> tuple[int, float]:
    return (i, time.time())


def _stamped_message(record: tuple[int, float]) -> Any:
    from raystream.statefun_api import message_builder

    return message_builder("bench/echo", f"k{record[0] % 1000:03d}", double_value=record[1])


def _latency_ms(stamp: float) -> float:
    return (time.time() - stamp) * 1000.0


def ray_latency(rate: int, seconds: float, parallelism: int = 2) -> dict[str, float]:
    """ingress -> function -> egress latency on Ray: a generated source at ``rate`` msg/s
    stamps each message (a double), the function counts and sends the stamp to the egress,
    the egress stream computes now - stamp. The first second is dropped (warm-up)."""
    import numpy as np

    import raystream as rs
    from raystream.statefun_api import (
        DoubleType,
        IntType,
        StatefulFunctions,
        ValueSpec,
        egress_message_builder,
    )
    from raystream.statefun_api.job import StatefulFunctionsJob

    functions = StatefulFunctions()

    @functions.bind("bench/echo", specs=[ValueSpec("n", IntType)])
    def echo(context, message):
        context.storage.n = (context.storage.n or 0) + 1
        context.send_egress(egress_message_builder("bench/stamps", message.as_double(), DoubleType))

    count = int(rate * seconds)
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=5)
    sf = StatefulFunctionsJob(env, functions, name="latency")
    sf.with_ingress(env.generate(_stamp, count=count, rate=rate, batch_size=1024).set_parallelism(1), _stamped_message)
    sf.egress_stream("bench/stamps").map(_latency_ms).collect()
    rows = env.execute_and_collect("bench-statefun-latency")
    lat = np.array(rows[rate:] if len(rows) > 2 * rate else rows)
    return {
        "records": float(len(rows)),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
    }


# ---------------------------------------------------------------------------- async functions
def _io_functions(io_ms: float, asynchronous: bool) -> Any:
    """A counter that makes a (simulated) I/O call of ``io_ms`` per message first: awaited
    (``asynchronous``) or blocking; ``io_ms=0``: no call."""
    from raystream.statefun_api import IntType, StatefulFunctions, ValueSpec

    functions = StatefulFunctions()

    def count(context, message):
        context.storage.n = (context.storage.n or 0) + message.as_int()

    if asynchronous:
        @functions.bind("bench/io", specs=[ValueSpec("n", IntType)])
        async def io_async(context, message):
            if io_ms:
                await asyncio.sleep(io_ms / 1000)
            count(context, message)
    else:
        @functions.bind("bench/io", specs=[ValueSpec("n", IntType)])
        def io_sync(context, message):
            if io_ms:
                time.sleep(io_ms / 1000)
            count(context, message)
    return functions


def async_io_counter(keys: list[str], io_ms: float, asynchronous: bool) -> tuple[float, int]:
    """Seconds to run ``keys`` (one message each) through the I/O counter in ``LocalDispatchers``
    (p=1, ingress batches of 4,096), and the total count (checked by the caller)."""
    from raystream.statefun_api import message_builder
    from raystream.statefun_api.local import LocalDispatchers

    msgs = [message_builder("bench/io", k, int_value=1) for k in keys]
    with LocalDispatchers(_io_functions(io_ms, asynchronous)) as run:
        t0 = time.perf_counter()
        for i in range(0, len(msgs), 4096):
            run.send(*msgs[i : i + 4096])
        run.run_until_idle()
        dt = time.perf_counter() - t0
        total = sum(run.state("bench/io", k, "n") or 0 for k in set(keys))
    return dt, total


def async_io_section(io_ms: float, repeat: int) -> str:
    """The ``--async-io`` table: async vs sync, with and without I/O, interleaved rounds."""
    io_keys = [f"a{i % 1000:04d}" for i in range(2000)]
    cpu_keys = events(100_000).column("key").to_pylist()
    cases = [
        (f"I/O of {io_ms:g} ms a message, 1,000 addresses, 2,000 messages", io_keys, io_ms),
        ("no I/O (the counter), 10,000 Zipf keys, 100,000 messages", cpu_keys, 0.0),
    ]
    rows = []
    for label, keys, ms in cases:
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(repeat):
            for asynchronous in (True, False):
                if ms and not asynchronous and times[False]:
                    continue  # the blocking run is deterministic (2,000 x io_ms): once is enough
                dt, total = async_io_counter(keys, ms, asynchronous)
                if total != len(keys):
                    raise SystemExit(f"async-io {label}: counted {total}, expected {len(keys)}")
                times[asynchronous].append(dt)
        a = len(keys) / statistics.median(times[True])
        b = len(keys) / statistics.median(times[False])
        rows.append(f"| {label} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |")
    return (
        f"## `{harness.command_line()}`: embedded async functions\n\n"
        f"Run {harness.now()}. {harness.machine_line()}\n\n"
        "`LocalDispatchers` p=1, ingress batches of 4,096 messages, counts checked; median of the interleaved "
        "rounds. The sync contender is the same function with a blocking call: one invocation at a time, as every "
        "async batch ran before async functions were invoked concurrently.\n\n"
        "| workload | async def (concurrent) msg/s | sync def msg/s | async / sync |\n|---|---:|---:|---:|\n"
        + "\n".join(rows) + "\n"
    )


# ---------------------------------------------------------------------------- driver
def opcode_counts(fn: Callable[[], Any], messages: int, top: int = 25) -> str:
    """Python bytecodes executed by ``fn()`` per message, per function (``sys.settrace``
    opcode events: deterministic, unlike times on a shared machine), most first.

    Example:
        >>> print(opcode_counts(lambda: python_counter(["k00001"] * 3), 3, top=1))  # doctest: +ELLIPSIS
        total ... bytecodes/message, ... Python calls/message
        ... bench_statefun.py:python_counter
    """
    ops: dict[tuple[str, str], int] = {}
    calls: dict[tuple[str, str], int] = {}

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        where = (frame.f_code.co_filename.rsplit("/", 1)[-1], frame.f_code.co_name)
        if event == "call":
            frame.f_trace_opcodes = True
            calls[where] = calls.get(where, 0) + 1
        elif event == "opcode":
            ops[where] = ops.get(where, 0) + 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    lines = [f"total {sum(ops.values()) / messages:.1f} bytecodes/message, {sum(calls.values()) / messages:.2f} Python calls/message"]
    for where, n in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{n / messages:8.2f} ops/msg {calls.get(where, 0) / messages:6.3f} calls/msg  {where[0]}:{where[1]}")
    return "\n".join(lines)


def gc_share(fn: Callable[[], Any]) -> tuple[float, dict[int, int], dict[int, float]]:
    """Run ``fn()`` once and measure the CPU time its garbage collections took (``gc.callbacks``):
    ``(share of the run's CPU time, collections per generation, CPU seconds per generation)``.
    The dispatcher's message records are containers that live until invoked, so they trigger
    collections, and a full one traverses every tracked object of the process.

    Example:
        >>> share, counts, _secs = gc_share(lambda: [(i,) for i in range(10_000)])
        >>> 0.0 <= share <= 1.0, sorted(counts)
        (True, [0, 1, 2])
    """
    import gc

    counts = {0: 0, 1: 0, 2: 0}
    secs = {0: 0.0, 1: 0.0, 2: 0.0}
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.process_time()
        else:
            counts[info["generation"]] += 1
            secs[info["generation"]] += time.process_time() - started[0]

    gc.callbacks.append(callback)
    try:
        c0 = time.process_time()
        fn()
        cpu = time.process_time() - c0
    finally:
        gc.callbacks.remove(callback)
    return (sum(secs.values()) / cpu if cpu > 0 else 0.0), counts, secs


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def _check(name: str, out: list[str], reference: list[str]) -> None:
    if out != reference:
        raise SystemExit(f"{name}: WRONG egress ({len(out)} records, expected {len(reference)})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _remote_section(
    label: str, rkeys: list[str], repeat: int, sections: list[str], targets: list[tuple[str, str, str, float, float]]
) -> None:
    """Remote contenders on ``rkeys``: 1 and 2 server processes, the server's own handler
    rate (1 server) and the SDK handler in-process, ``repeat`` interleaved rounds."""
    rref, rtotal = python_counter(rkeys)
    handler_wall: list[float] = []
    server_handler: list[float] = []
    remote_times: dict[int, list[float]] = {1: [], 2: []}
    notes: dict[int, str] = {}
    per_request: dict[str, list[float]] = {"client": [], "server": [], "handler": [], "wall": []}  # 1 server, us
    for _ in range(repeat):
        out, wall, _cpu = sdk_counter(rkeys)
        _check("sdk handler (remote workload)", out, rref)
        handler_wall.append(wall)
        for servers in (1, 2):
            port = _free_port()
            procs = _start_servers(servers, port)
            try:
                url = f"http://127.0.0.1:{port}/{{function.name}}"
                remote_counter(rkeys[:2000], url)  # warm-up (connections, server code)
                _server_stats(port)  # reset
                server_cpu = sum(_process_cpu(p.pid) for p in procs)
                dt, ct, (out, counters) = _timed(lambda url=url: remote_counter(rkeys, url))
                server_cpu = sum(_process_cpu(p.pid) for p in procs) - server_cpu
                if servers == 1:
                    inside = _server_stats(port)
                    server_handler.append(inside)
                    n = counters["remote_requests"]
                    for what, v in (("client", ct), ("server", server_cpu), ("handler", inside), ("wall", dt)):
                        per_request[what].append(v / n * 1e6)
            finally:
                _stop_servers(procs)
            _check(f"remote ({servers} server process(es))", out, rref)
            remote_times[servers].append(dt)
            notes[servers] = f"{counters['remote_requests']:,} requests, {rtotal / counters['remote_requests']:.1f} msg/request"
    h64 = rtotal / statistics.median(handler_wall)
    h = rtotal / statistics.median(server_handler)
    r1 = rtotal / statistics.median(remote_times[1])
    r2 = rtotal / statistics.median(remote_times[2])
    us = {what: statistics.median(v) for what, v in per_request.items()}
    sections.append(
        f"**Remote, {label}** (official SDK 3.3.0 counter behind aiohttp in separate processes, one in-process "
        f"dispatcher calling it over HTTP on localhost): {len(rkeys):,} ingress + {rtotal - len(rkeys):,} "
        f"forwarded = {rtotal:,} messages, checked; median of {repeat} rounds.\n\n"
        "| contender | median msg/s | notes |\n|---|---:|---|\n"
        f"| the server's own handler rate (its time inside handle_async on the requests it got, 1 server) | {h:,.0f} | baseline |\n"
        f"| SDK handler in-process, <=64 msg/request grouped per address over the input | {h64:,.0f} | reference |\n"
        f"| remote, 1 server process | {r1:,.0f} | {notes[1]} |\n"
        f"| remote, 2 server processes (reuse_port) | {r2:,.0f} | {notes[2]} |\n\n"
        f"Per request at 1 server (median; process CPU from /proc): the client process {us['client']:.0f} us, the server "
        f"process {us['server']:.0f} us of which {us['handler']:.0f} us inside handle_async; wall {us['wall']:.0f} us. "
        f"The server's own CPU bounds the end-to-end rate at handler / server CPU = "
        f"{us['handler'] / us['server']:.2f}x the handler rate on these requests, even with a client that cost nothing."
    )
    targets.append((f"remote (1 server) >= 0.8x that server's own handler rate; {label}", f"{r1:,.0f}", f"{h:,.0f}", r1 / h, 0.8))
    targets.append((f"remote, 2 server processes >= 1.6x one; {label}", f"{r2:,.0f}", f"{r1:,.0f}", r2 / r1, 1.6))


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="bench_statefun", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="ingress messages (in-process contenders)")
    p.add_argument("--repeat", type=int, default=3, help="timed rounds of every contender (interleaved)")
    p.add_argument("--remote-n", type=int, default=50_000, help="ingress messages (remote contenders)")
    p.add_argument("--ray-n", type=int, default=1_000_000, help="ingress messages (Ray contenders)")
    p.add_argument("--ray-repeat", type=int, default=2, help="timed runs of each Ray contender (alternating)")
    p.add_argument("--latency-rate", type=int, default=5000, help="msg/s of the latency probe")
    p.add_argument("--latency-s", type=float, default=10.0, help="seconds of the latency probe")
    p.add_argument("--small-runs", type=int, default=20, help="runs of the 1,000-message job at each parallelism")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray contenders and the latency probe")
    p.add_argument("--no-remote", action="store_true", help="skip the remote contenders")
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: be a function server
    p.add_argument("--async-io", action="store_true", help="only measure embedded async functions (see above)")
    p.add_argument("--io-ms", type=float, default=5.0, help="simulated I/O per message of --async-io")
    p.add_argument(
        "--direct-runs", type=int, default=None, metavar="K",
        help="only run the p=1 dispatcher contender on --n messages: once checked, then K more times (for "
        "instruction counters such as valgrind: compare K=0 with K=2), and print nothing else",
    )
    p.add_argument(
        "--gc-threshold", type=int, default=None, metavar="N",
        help="set the garbage collector's generation-0 threshold to N for the whole run (a what-if: the default "
        "is Python's, 700; every contender runs under it)",
    )
    p.add_argument(
        "--routed", action="store_true",
        help="with --direct-runs or --opcodes: the ingress batches are made by the routed ingress from (key, 1) "
        "pairs instead of the Python router",
    )
    p.add_argument(
        "--new-addresses", action="store_true",
        help="only the p=1 dispatcher in this process on Zipf keys and on --n ids seen once",
    )
    p.add_argument(
        "--ingress-side", action="store_true",
        help="only measure the ingress side of a p=2 job in this process (router or routed ingress, the exchange)",
    )
    p.add_argument(
        "--opcodes", action="store_true",
        help="only count the Python bytecodes of one p=1 dispatcher run on --n messages, per function (deterministic)",
    )
    args = p.parse_args(argv)
    if args.gc_threshold is not None:
        import gc

        if args.gc_threshold < 1:
            raise SystemExit(f"--gc-threshold must be >= 1, got {args.gc_threshold}")
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    if args.serve:
        _serve(args.serve)
        return ""
    if args.async_io:
        body = async_io_section(args.io_ms, args.repeat)
        print(body)
        if not args.no_write:
            harness.update_results("bench_statefun --async-io", body)
        return body
    if args.new_addresses:
        text = new_addresses_section(args.n)
        print(text)
        return text
    if args.ingress_side:
        text = ingress_side_section(args.n)
        print(text)
        return text
    if args.direct_runs is not None or args.opcodes:
        keys = events(args.n).column("key").to_pylist()
        reference, total = python_counter(keys)
        _check("dispatcher p=1", dispatcher_direct(keys, args.routed)[0], reference)
        if args.opcodes:
            text = opcode_counts(lambda: dispatcher_direct(keys, args.routed), total)
            print(text)
            return text
        for _ in range(args.direct_runs):
            dispatcher_direct(keys, args.routed)
        return ""
    load_before = harness.load_average()
    sections: list[str] = []
    targets: list[tuple[str, str, str, float, float]] = []  # (target, measured, baseline, ratio, goal)

    # ------------------------------------------------------------------ in-process
    keys = events(args.n).column("key").to_pylist()
    reference, total = python_counter(keys)
    sdk_wall: list[float] = []
    sdk_cpu: list[float] = []

    def sdk_run() -> Any:
        out, wall, cpu = sdk_counter(keys)
        sdk_wall.append(wall)
        sdk_cpu.append(cpu)
        return out

    contenders: list[tuple[str, Callable[[], Any]]] = [
        ("python dict loop (baseline)", lambda: python_counter(keys)[0]),
        ("dispatcher in-process, p=1 (task-driven, router included)", lambda: dispatcher_direct(keys)[0]),
        ("dispatcher in-process, p=1 (task-driven, routed ingress included)", lambda: dispatcher_direct(keys, True)[0]),
        ("dispatcher in-process, p=2 (LocalDispatchers, feedback output)", lambda: dispatcher_counter(keys, 2)[0]),
        ("official SDK 3.3.0 RequestReplyHandler in-process, <=64 msg/request (loop)", sdk_run),
    ]
    for name, fn in contenders:  # check, untimed (also warms up)
        _check(name, fn(), reference)
    sdk_wall.clear()
    sdk_cpu.clear()
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    cpus: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for _ in range(args.repeat):
        for name, fn in contenders:
            dt, ct, _out = _timed(fn)
            times[name].append(dt)
            cpus[name].append(ct)
    rate = {name: total / statistics.median(t) for name, t in times.items()}
    cpu_rate = {name: total / statistics.median(c) for name, c in cpus.items()}
    sdk_name = "official SDK 3.3.0 handler alone (time inside handle_async)"
    rate[sdk_name] = total / statistics.median(sdk_wall)
    cpu_rate[sdk_name] = total / statistics.median(sdk_cpu)
    base = contenders[0][0]
    lines = [
        "| contender | median msg/s | vs python | CPU-time msg/s | vs python (CPU) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in [n for n, _ in contenders] + [sdk_name]:
        lines.append(
            f"| {name} | {rate[name]:,.0f} | {rate[name] / rate[base]:.3f}x | {cpu_rate[name]:,.0f} | "
            f"{cpu_rate[name] / cpu_rate[base]:.3f}x |"
        )
    share, counts, secs = gc_share(lambda: dispatcher_direct(keys, True))
    import gc

    sections.append(
        f"**In-process**: {args.n:,} ingress + {total - args.n:,} forwarded = {total:,} messages, "
        f"{len(reference):,} egress records (all checked); median of {args.repeat} interleaved rounds.\n\n"
        + "\n".join(lines)
        + f"\n\nGarbage collection (gc thresholds {gc.get_threshold()}): {share:.1%} of the CPU time of one more "
        f"routed-ingress run; collections per generation {counts}, CPU seconds "
        f"{ {g: round(v, 3) for g, v in secs.items()} }."
    )
    for p1, how in ((contenders[1][0], "Python router"), (contenders[2][0], "routed ingress")):
        targets.append(
            (f"in-process dispatcher ({how}) >= 0.15x the dict loop", f"{rate[p1]:,.0f}", f"{rate[base]:,.0f}", rate[p1] / rate[base], 0.15)
        )
        targets.append(
            (f"embedded ({how}) >= 5x the official SDK handler", f"{rate[p1]:,.0f}", f"{rate[sdk_name]:,.0f}",
             rate[p1] / rate[sdk_name], 5.0)
        )

    # ------------------------------------------------------------------ remote
    if not args.no_remote:
        zipf = keys[: args.remote_n] if args.remote_n <= len(keys) else events(args.remote_n).column("key").to_pylist()
        hot = [f"k{(i * 7919) % 100:05d}" for i in range(args.remote_n)]
        for label, rkeys in (("the counter workload (10,000 Zipf keys)", zipf), ("100 keys, uniform", hot)):
            _remote_section(label, rkeys, args.repeat, sections, targets)

    # ------------------------------------------------------------------ Ray
    if not args.no_ray:
        import ray

        rkeys = events(args.ray_n).column("key").to_pylist()
        ray_ref, ray_total = python_counter(rkeys)
        loop_times = [_timed(lambda: python_counter(rkeys))[0] for _ in range(3)]
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        _check("ray warm-up", ray_counter(rkeys[:20_000], 2)[0], python_counter(rkeys[:20_000])[0])
        runs = [(par, routed) for routed in (False, True) for par in (1, 2)]
        ray_times: dict[tuple[int, bool], list[float]] = {run: [] for run in runs}
        durations: dict[tuple[int, bool], list[float]] = {run: [] for run in runs}
        for _ in range(args.ray_repeat):
            for par, routed in runs:
                dt, _ct, (out, duration) = _timed(lambda par=par, routed=routed: ray_counter(rkeys, par, routed))
                _check(f"ray p={par}{' routed' if routed else ''}", out, ray_ref)
                ray_times[par, routed].append(dt)
                durations[par, routed].append(duration)
            loop_times.append(_timed(lambda: python_counter(rkeys))[0])
        loop = ray_total / statistics.median(loop_times)
        rp = {run: ray_total / statistics.median(t) for run, t in ray_times.items()}
        lat = ray_latency(args.latency_rate, args.latency_s)
        small_keys = rkeys[:1000]
        ray_small_job(small_keys, 1, 2)  # warm
        small = {par: statistics.median(ray_small_job(small_keys, par, args.small_runs)) for par in (1, 2)}
        sections.append(
            f"**On Ray** (local Ray, embedded functions): {args.ray_n:,} ingress + {ray_total - args.ray_n:,} forwarded "
            f"= {ray_total:,} messages, checked; wall time around `env.execute()` (deployment included), "
            f"median of {args.ray_repeat} alternating runs; the dict loop on the same messages in this process.\n\n"
            "| contender | median msg/s | vs python | job durations (s) |\n|---|---:|---:|---|\n"
            f"| python dict loop | {loop:,.0f} | 1.000x | |\n"
            + "\n".join(
                f"| raystream on Ray, p={par}, {'routed ingress' if routed else 'Python router'} | {rp[par, routed]:,.0f} | "
                f"{rp[par, routed] / loop:.3f}x | {', '.join(f'{d:.2f}' for d in durations[par, routed])} |"
                for par, routed in runs
            )
            + f"\n\n**Latency** (p=2, {args.latency_rate:,} msg/s for {args.latency_s:.0f} s, first second dropped): "
            f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms over "
            f"{lat['records']:,.0f} messages."
            + f"\n\n**A small job** (1,000 ingress messages, routed ingress, checked; median of {args.small_runs} "
            f"whole jobs, wall time around `env.execute()`): p=1 {small[1] * 1000:.1f} ms, p=2 {small[2] * 1000:.1f} ms."
        )
        for routed, how in ((False, "Python router"), (True, "routed ingress")):
            p2, p1 = rp[2, routed], rp[1, routed]
            targets.append((f"Ray p=2 ({how}), {args.ray_n:,} msgs >= 0.10x the dict loop", f"{p2:,.0f}", f"{loop:,.0f}", p2 / loop, 0.10))
            targets.append((f"Ray p=2 >= 1.5x p=1 ({how})", f"{p2:,.0f}", f"{p1:,.0f}", p2 / p1, 1.5))
        targets.append(
            (f"ingress -> egress p99 < 20 ms at {args.latency_rate:,} msg/s (baseline: the 20 ms goal)",
             f"{lat['p99_ms']:.1f} ms", "20 ms", 20.0 / lat["p99_ms"], 1.0)
        )

    tlines = ["| target | measured | baseline (same run) | ratio | met |", "|---|---:|---:|---:|---|"]
    for target, measured, baseline, ratio, goal in targets:
        tlines.append(f"| {target} | {measured} | {baseline} | {ratio:.3f}x | {'yes' if ratio >= goal else '**no**'} |")
    body = (
        f"## `{harness.command_line()}`: stateful functions (issue 13 targets)\n\n"
        f"Run {harness.now()}. {harness.machine_line()} Load average (1 min) before/after: "
        f"{load_before} / {harness.load_average()}.\n\n" + "\n".join(tlines) + "\n\n" + "\n\n".join(sections) + "\n"
    )
    print(body)
    if not args.no_write:
        harness.update_results("bench_statefun", body)
    return body


if __name__ == "__main__":
    main()
