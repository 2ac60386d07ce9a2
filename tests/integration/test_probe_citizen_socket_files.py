"""A job leaves no channel socket file behind, however its task executors end.

Executors on one node exchange records over a Unix domain socket. Executors that end without
running exit handlers (killed at the end of a ``reuse_workers=False`` job or of a failed
attempt, by ``ray.shutdown()``, with the driver) left their socket file in
``/tmp/rs-<uid>``: one file per executor, until another raystream executor happened to start
on the machine. On Linux the socket now has an abstract name, which the kernel frees with
the socket; since an abstract name has no file mode, the server takes connections only from
its own user's processes."""

from __future__ import annotations

import collections
import os
import sys
import time

import pytest

import raystream as rs
from raystream.engine import socket_channels
from raystream.engine.errors import RaystreamError
from raystream.engine.socket_channels import ChannelServer, SocketSender, socket_dir
from raystream.operators.sinks import collected_records

pytestmark = [pytest.mark.ray, pytest.mark.skipif(not sys.platform.startswith("linux"),
                                                  reason="abstract socket names are Linux's")]


def _files_of(pids: set[int]) -> list[str]:
    try:
        names = os.listdir(socket_dir())
    except OSError:  # no socket directory at all
        return []
    return [n for n in names if n.split("-", 1)[0].isdigit() and int(n.split("-", 1)[0]) in pids]


def _wait_gone(pids: set[int], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids), f"executor processes {pids} did not end"


def test_executors_killed_at_the_end_of_their_job_leave_no_socket_file():
    env = rs.StreamEnvironment(parallelism=2, reuse_workers=False)  # its executors are killed at its end
    env.from_collection(list(range(200))).rebalance().map(lambda x: (x, os.getpid())).collect()
    result = env.execute("socket-files")
    (batches,) = result.sink_results.values()
    records = collected_records(batches)
    assert sorted(x for x, _ in records) == list(range(200))
    transports = collections.Counter(c["transport"] for c in result.metrics["channels"] if c["sends"])
    assert transports["socket"] >= 1, transports  # the records did cross executors over sockets
    pids = {pid for _, pid in records}
    assert len(pids) == 2
    _wait_gone(pids)
    assert _files_of(pids) == []  # (before: one <pid>-<token>.sock per killed executor)


class _Consumer:
    def __init__(self) -> None:
        self.got: list = []

    def deliver(self, channel, seq, items, ack):
        self.got.append(items)
        ack()


def test_the_channel_socket_has_no_file_and_serves_only_its_own_user(monkeypatch):
    consumer = _Consumer()
    server = ChannelServer(lambda key: consumer if key == (1, 0) else None)
    try:
        assert server.path.startswith("\0")  # an abstract name: nothing in the file system
        sender = SocketSender(0, 1, server.path, (1, 0), [])
        sender.send(["mine"])
        sender.drain()
        sender.close()
        assert consumer.got == [["mine"]]
        # a process of another user: its connection is closed unread
        monkeypatch.setattr(socket_channels, "peer_uid", lambda sock: os.getuid() + 1)
        try:
            intruder = SocketSender(0, 1, server.path, (1, 0), [])
        except OSError:
            intruder = None  # closed before the hello went out
        if intruder is not None:
            with pytest.raises(RaystreamError, match="the socket connection"):
                intruder.send(["not mine"])
                intruder.drain()
            intruder.close()
        assert consumer.got == [["mine"]]
    finally:
        server.close()
    with pytest.raises(OSError):  # the name is gone with the socket
        SocketSender(0, 1, server.path, (1, 0), [])
