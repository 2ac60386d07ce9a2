"""A fan-out burst on Ray at p=2 (issue 13): each task's memory stays under a stated cap,
the queue spills to disk, checkpoints complete while the burst is being worked off, and
exactly once holds through the loop with spilling and killed tasks.

Conditions, not timings: RSS is sampled by the functions themselves (each sample is the
resident size of the process running the dispatcher subtask at that moment); "checkpoints
completed during the burst" is the dispatcher's ``checkpoints_with_queued_work`` counter
(completed checkpoints whose snapshot held queued messages).
"""

from __future__ import annotations

import os

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
from tests.integration import test_statefun_recovery as recovery
from tests.integration.test_fault_tolerance import kill_tasks, make_env

pytestmark = pytest.mark.ray

SOURCES = 40  # ingress messages, each fanning out to every counter
FANOUT = 6_000  # -> 240,000 messages, most over the feedback edge or the local queue
#: stated cap on the resident memory of each process running a dispatcher subtask (with
#: slot sharing it also hosts the source, router and sink subtasks of its index)
RSS_CAP = 600 << 20
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def burst_functions() -> StatefulFunctions:
    fns = StatefulFunctions()

    @fns.bind("burst/src")
    def src(context, message):
        for i in range(FANOUT):
            context.send(message_builder("burst/counter", f"c{i}", int_value=1))

    @fns.bind("burst/counter", specs=[ValueSpec("n", IntType)])
    def counter(context, message):
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        if n % 10 == 0:  # samples of this process's memory while the burst runs
            context.send_egress(egress_message_builder("burst/rss", f"{os.getpid()}:{_rss()}", StringType))
        if n == SOURCES:
            context.send_egress(egress_message_builder("burst/done", context.address.id, StringType))

    return fns


def test_fanout_burst_on_ray_is_bounded_spills_and_keeps_checkpointing(ray_session, tmp_path):
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(100, checkpoint_dir=str(tmp_path / "chk"))
    # ONE source message's fan-out (~3,000 local messages at once) overflows the active set
    # (drain_step) and the inbox budget, so spilling does not depend on how fast the
    # dispatcher works off each burst
    sf = StatefulFunctionsJob(
        env, burst_functions(), name="burst", max_in_flight=2_000, drain_step=256, inbox_memory_bytes=16 << 10,
        spill_dir=str(tmp_path / "spill"),
    )
    # the source runs while the burst is worked off: its barriers cross the paused ingress
    sf.with_ingress(env.generate(lambda i: i, count=SOURCES, rate=4, batch_size=1).set_parallelism(1),
                    lambda i: message_builder("burst/src", f"s{i}", int_value=i))
    done = sf.egress_stream("burst/done").sink_to(CollectSink(), name="done").set_parallelism(1)
    rss = sf.egress_stream("burst/rss").sink_to(CollectSink(), name="rss").set_parallelism(1)
    result = env.execute("statefun-burst")

    def out(sink) -> list:
        return collected_records(result.sink_results.get(sink.node.stable_uid(env.graph), []))

    assert sorted(out(done)) == sorted(f"c{i}" for i in range(FANOUT))  # every counter reached SOURCES
    peaks: dict[str, int] = {}
    for sample in out(rss):
        pid, size = sample.split(":")
        peaks[pid] = max(peaks.get(pid, 0), int(size))
    assert len(peaks) == 2, peaks  # both dispatcher subtasks sampled
    assert all(size < RSS_CAP for size in peaks.values()), {p: f"{s / 2**20:.0f} MiB" for p, s in peaks.items()}
    m = result.metrics["operators"]["burst"]
    assert m["messages"] == SOURCES + SOURCES * FANOUT
    assert m["spilled_messages"] > 0 and m["spill_disk_bytes"] == 0  # spilled, and all read back
    assert m["checkpoints_with_queued_work"] >= 2, (result.checkpoints, m)  # barriers were served during the burst
    assert 0 < m["rss_peak_bytes"] < RSS_CAP  # the largest subtask's peak (not a sum of two processes' peaks)
    assert not os.path.exists(tmp_path / "spill") or not any(files for _, _, files in os.walk(tmp_path / "spill"))


def test_exactly_once_through_the_loop_with_spilling_and_killed_tasks(ray_session, tmp_path):
    reference = recovery.python_reference()
    env = make_env(2, tmp_path)
    # everything that queues goes through the spill files (budget 0, a tiny active set: since 39f94c7 the
    # active set holds 2 * drain_step, and the metrics are the last attempt's, so with drain_step=16 an
    # attempt that took little ingress could queue nothing beyond it; with 4, every ingress batch of 100
    # admitted up to max_in_flight=64 queues past the 8 of the active set)
    sf = StatefulFunctionsJob(env, recovery.functions(), name="fwd", drain_step=4, max_in_flight=64,
                              inbox_memory_bytes=0, spill_dir=str(tmp_path / "spill"))
    sf.with_ingress(
        env.generate(recovery.ingress, count=recovery.N, rate=recovery.RATE, batch_size=100).set_parallelism(1).uid("src"),
        recovery.route,
    )
    sink = sf.egress_stream(recovery.EGRESS).sink_to(CollectSink(), name="collect").set_parallelism(1)
    parallelisms = [v.parallelism for v in env.get_job_graph().vertices]
    client = env.execute_async("statefun-exactly-once-spilling")
    killed = kill_tasks(client, parallelisms, 2, seed=11)
    result = client.wait()
    got = sorted(collected_records(result.sink_results.get(sink.node.stable_uid(env.graph), [])))
    assert killed, "the job ended before any task could be killed"
    assert result.metrics["restarts"] >= 1
    assert result.metrics["operators"]["fwd"]["spilled_messages"] > 0
    assert len(got) == len(reference)
    assert got == reference
