"""raystream's threads carry their names at the operating-system level (Linux), so ``top -H``
and per-thread CPU accounting from /proc tell a task's mailbox thread from a channel
connection's (in a Ray worker every thread otherwise reads ``ray::TaskActor``)."""

from __future__ import annotations

import sys
import threading

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.engine.observability import name_native_thread
from raystream.engine.socket_channels import ChannelServer, SocketSender
from raystream.operators.sinks import collected_records

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names from /proc (Linux)")


def os_thread_name() -> str:
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
        return f.read().strip()


@linux_only
def test_a_long_name_is_cut_to_what_the_kernel_keeps():
    seen = []

    def run():
        seen.append((name_native_thread("rs-a-name-longer-than-fifteen-bytes"), os_thread_name()))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [(True, "rs-a-name-longe")]


@linux_only
def test_a_task_runs_on_a_thread_named_after_its_vertex_and_subtask():
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection(list(range(40))).map(lambda i: os_thread_name()).collect()
    graph = env.get_job_graph()
    result = run_in_process(graph, JobConfig(name="thread-names"), timeout_s=120)
    names = {r for rows in result["results"].values() for r in collected_records(rows)}
    assert names and names <= {f"rs-task-{v.id}-{s}" for v in graph.vertices for s in range(v.parallelism)}, names


@linux_only
def test_channel_connection_threads_are_named(tmp_path):
    seen = []

    class Consumer:
        def deliver(self, channel, seq, items, ack):
            seen.append(os_thread_name())
            ack()

    server = ChannelServer(lambda key: Consumer(), directory=str(tmp_path))
    sender = SocketSender(0, 1, server.path, (1, 0), [])
    sender.send(["x"])
    sender.drain()
    sender.close()
    server.close()
    assert seen == ["rs-chan-conn"]
