"""The Unix-domain-socket channel transport between task executors on one node
(``channel_transport="auto"``, the default) gives the same output as Ray actor calls
(``"ray"``), for a keyed job, a stateful-functions job with its feedback loop, and a
checkpointed job whose consumer executor is killed mid-job."""

from __future__ import annotations

import collections
import os
import socket
import time

import pytest
import ray

import raystream as rs
from raystream.engine.errors import ConfigError, RaystreamError
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

N = 20_000


def record(i: int) -> dict:
    return {"key": f"k{(i * 7919) % 37:02d}", "value": i % 101, "i": i}


def build_keyed(env: rs.StreamEnvironment, rate: float | None = None) -> None:
    # one source subtask keeps every key's records in order: the running sums are deterministic
    (
        env.generate(record, count=N, rate=rate, batch_size=200)
        .set_parallelism(1)
        .key_by("key")
        .reduce(lambda a, b: {"key": a["key"], "value": a["value"] + b["value"], "i": b["i"]})
        .uid("running-sum")
        .map(lambda r: (r["key"], r["value"], r["i"]))
        .collect()
    )


def run_keyed(transport: str, slot_sharing: bool = True) -> tuple[list, collections.Counter]:
    env = rs.StreamEnvironment(parallelism=2, flush_ms=10, channel_transport=transport, slot_sharing=slot_sharing)
    build_keyed(env)
    result = env.execute("socket-keyed")
    out = sorted(collected_records(next(iter(result.sink_results.values()))))
    transports = collections.Counter(c["transport"] for c in result.metrics["channels"] if c["sends"])
    return out, transports


@pytest.mark.parametrize("slot_sharing", [True, False])
def test_keyed_job_equal_over_socket_and_ray_calls(slot_sharing):
    by_ray, ray_transports = run_keyed("ray", slot_sharing)
    by_socket, socket_transports = run_keyed("auto", slot_sharing)
    assert len(by_ray) == N
    assert by_socket == by_ray
    assert "socket" not in ray_transports and ray_transports["ray"] >= 1, ray_transports
    assert "ray" not in socket_transports and socket_transports["socket"] >= 1, socket_transports


def test_unknown_channel_transport_is_a_config_error():
    with pytest.raises(ConfigError, match="channel_transport must be one of 'auto', 'ray'"):
        rs.StreamEnvironment(channel_transport="tcp")


def counter_functions() -> StatefulFunctions:
    functions = StatefulFunctions()

    @functions.bind("t/counter", specs=[ValueSpec("n", IntType)])
    def counter(context, message):
        # message: origin * 10 + hops; the egress names the origin, not the arrival order
        # (which the feedback loop interleaves differently in every run)
        value = message.as_int()
        context.storage.n = (context.storage.n or 0) + 1
        if value % 10 > 0:  # through the feedback loop to another counter, often in the other actor
            context.send(message_builder("t/counter", f"c{(int(context.address.id[1:]) * 7 + 3) % 41}",
                                         int_value=value - 1))
        else:
            context.send_egress(egress_message_builder("t/counts", f"{context.address.id}:{value // 10}", StringType))

    return functions


def run_statefun(transport: str) -> tuple[list, collections.Counter]:
    env = rs.StreamEnvironment(parallelism=2, flush_ms=5, channel_transport=transport)
    sf = StatefulFunctionsJob(env, counter_functions(), name="counters")
    ingress = env.from_collection([(f"c{i % 41}", i * 10 + i % 4) for i in range(3000)]).set_parallelism(1)
    sf.with_ingress(ingress, lambda r: message_builder("t/counter", r[0], int_value=r[1]))
    sink = sf.egress_stream("t/counts").sink_to(CollectSink(), name="collect").set_parallelism(1)
    result = env.execute("socket-statefun")
    out = collected_records(result.sink_results.get(sink.node.stable_uid(env.graph), []))
    transports = collections.Counter(c["transport"] for c in result.metrics["channels"] if c["sends"])
    return sorted(out), transports


def test_statefun_feedback_loop_equal_over_socket_and_ray_calls():
    by_ray, _ = run_statefun("ray")
    by_socket, transports = run_statefun("auto")
    expect = []
    for i in range(3000):
        c = i % 41
        for _ in range(i % 4):
            c = (c * 7 + 3) % 41
        expect.append(f"c{c}:{i}")
    assert by_ray == sorted(expect)
    assert by_socket == by_ray
    assert transports["socket"] >= 2 and "ray" not in transports, transports


def _processed(client: rs.JobClient, rows: int) -> bool:
    """The job runs and one of its operators has taken in at least ``rows`` records."""
    if client.info()["status"] != "RUNNING":
        return False
    return any(m.get("records_in", 0) >= rows for m in client.metrics().get("operators", {}).values())


def test_killed_consumer_executor_still_gives_the_failure_free_output(tmp_path):
    reference, _ = run_keyed("ray")
    env = rs.StreamEnvironment(parallelism=2, flush_ms=10, channel_transport="auto")
    env.enable_checkpointing(100, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(5, 100))
    build_keyed(env, rate=8000)  # ~2.5 s: the kill lands mid-job
    vertices = env.get_job_graph().vertices
    keyed = next(v.id for v in vertices if v.parallelism == 2)
    client = env.execute_async("socket-kill")
    deadline = time.time() + 60
    while not _processed(client, 2000) and time.time() < deadline:
        time.sleep(0.02)  # polling for the condition
    try:
        # subtask 1 of the keyed vertex: its executor does not host the source, whose
        # channel to it is a socket connection
        actor = client.task_actor(keyed, 1)
    except (ValueError, RaystreamError):
        pytest.fail("the keyed task's executor could not be found while the job runs")
    ray.kill(actor, no_restart=True)
    result = client.wait()
    got = sorted(collected_records(next(iter(result.sink_results.values()))))
    assert result.metrics["restarts"] >= 1
    assert got == reference


def test_shutdown_workers_removes_the_executors_channel_sockets():
    from raystream.engine.pool import WorkerPool

    run_keyed("auto")  # the pool now holds idle executors
    pool = WorkerPool.existing()
    assert pool is not None
    _, executors = pool.idle_actors()
    addresses = ray.get([e.actor.channel_address.remote() for e in executors], timeout=60)
    paths = [path for _, path in addresses]
    # (on Linux an abstract name, no file: tests/integration/test_probe_citizen_socket_files.py)
    assert paths and all(p is not None and _listening(p) for p in paths), addresses
    rs.shutdown_workers()
    assert not any(_listening(p) or os.path.exists(p) for p in paths)


def _listening(path: str) -> bool:
    """Whether a channel server accepts connections at ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()
