"""The driver's collect server of ``execute_and_collect(stream=True)`` keeps what it needs of
its writers' connections in proportion to the live connections and the sink's subtasks, never
to the job's history: every restart connects new writers (one connection a subtask an
attempt), and a job that restarts every few minutes for weeks must not grow by one count a
connection (the soak run found 22 counts after 22 restarts of a p=2 job).

In one process (no Ray): each "attempt" is a writer per subtask that connects, sends, flushes
and closes, as a sink task of that attempt does; the driver side takes the messages as the
iterator does. What the iterator asks once the job ended - how many messages of the last
attempt's writers it took (:meth:`CollectServer.received`) - is still answered."""

from __future__ import annotations

import pyarrow as pa

from raystream.engine.collect import CollectSender, CollectServer
from tests.waiting import wait_for

PARALLELISM = 2
BATCH = [pa.record_batch([pa.array([1, 2, 3])], ["v"])]


def _attempt(server: CollectServer, attempt: int, messages: int = 2) -> list[CollectSender]:
    """One attempt's writers: each sends ``messages`` pieces, then closes."""
    senders = [CollectSender(server.endpoint, f"collect (attempt {attempt}, {s + 1}/{PARALLELISM})")
               for s in range(PARALLELISM)]
    for s, sender in enumerate(senders):
        for i in range(messages):
            sender.send(s, ("chk", attempt * messages + i + 1), BATCH)
    for sender in senders:
        sender.flush(timeout=60)
        sender.close()
    return senders


def _take_all(server: CollectServer, count: int) -> list[tuple]:
    out = []
    while len(out) < count:
        message = server.get(timeout=60)
        assert message is not None, f"only {len(out)} of {count} messages came"
        out.append(message)
    return out


def test_the_counts_kept_do_not_grow_with_restarts():
    server = CollectServer("local")
    try:
        tracked = []
        for attempt in range(30):
            senders = _attempt(server, attempt)
            _take_all(server, 2 * PARALLELISM)
            wait_for(lambda: server.open_connections() == 0, "the attempt's connections to end")
            wait_for(lambda: server.connections_tracked() <= PARALLELISM, "the ended connections to be retired", 10)
            tracked.append(server.connections_tracked())
        assert max(tracked) == PARALLELISM, tracked  # (one a subtask after 30 attempts, as after 1)
        for sender in senders:  # the last attempt's: what a finished job's iterator asks
            assert server.received(sender.id) == sender.sent == 2
    finally:
        server.close()


def test_a_connection_with_messages_not_taken_keeps_its_count_and_the_newest_ended_one_is_kept():
    server = CollectServer("local")
    try:
        old = _attempt(server, 0, messages=3)
        wait_for(lambda: server.open_connections() == 0, "the first attempt's connections to end")
        first = _take_all(server, 1)  # (one of its messages taken, five still queued)
        assert server.connections_tracked() == PARALLELISM  # (nothing retired: not all taken)
        taken_before = {s.id: server.received(s.id) for s in old}
        assert sorted(taken_before.values()) == [0, 1] and taken_before[first[0][0]] == 1
        new = _attempt(server, 1)
        messages = _take_all(server, 5 + 2 * PARALLELISM)
        assert [m[1] for m in messages if m[0] == first[0][0]] == [1, 2]  # (each connection's in order)
        wait_for(lambda: server.open_connections() == 0, "the second attempt's connections to end")
        assert server.connections_tracked() == PARALLELISM
        assert [server.received(s.id) for s in new] == [2, 2]
    finally:
        server.close()
