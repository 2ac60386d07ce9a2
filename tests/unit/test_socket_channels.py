"""The Unix-domain-socket channel transport without Ray: framing round trips (Arrow batches
and control events, a payload larger than the socket buffers), credits, the error reply for
a task key the executor does not host, cancellation while waiting for credit, and a
consumer that goes away."""

from __future__ import annotations

import os
import queue
import threading

import pyarrow as pa
import pytest

from raystream.engine.channels import Cancelled
from raystream.engine.errors import RaystreamError
from raystream.engine.events import Barrier, EndOfInput, StreamStatus, Watermark
from raystream.engine.records import Batch
from raystream.engine.socket_channels import ChannelServer, SocketSender, decode_frame, encode_frame

KEY = (3, 1)


class Consumer:
    """A task stand-in: records every delivery; acks at once or when told to."""

    def __init__(self, auto_ack: bool = True) -> None:
        self.auto_ack = auto_ack
        self.got: queue.Queue = queue.Queue()
        self.acks: queue.Queue = queue.Queue()

    def deliver(self, channel, seq, items, ack):
        self.got.put((channel, seq, items))
        if self.auto_ack:
            ack()
        else:
            self.acks.put(ack)


class FakeTask:
    cancelled = False


@pytest.fixture
def server_for(tmp_path):
    servers = []

    def make(consumer: Consumer | None) -> ChannelServer:
        server = ChannelServer(lambda key: consumer if key == KEY else None, directory=str(tmp_path))
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.close()


def arrow_batch(n: int) -> pa.RecordBatch:
    return pa.record_batch({"k": [f"key{i % 97}" for i in range(n)], "v": list(range(n)), "f": [i / 3 for i in range(n)]})


def test_frame_round_trip_in_memory():
    rb = arrow_batch(1000)
    items = [rb, Watermark(17), Batch.of_records([("a", 1)]).records(), Barrier(4, 1234, False, False), EndOfInput()]
    seq, got = decode_frame(b"".join(bytes(v) for v in encode_frame(9, items)))
    assert seq == 9
    assert got[0].equals(rb)
    assert got[1:] == items[1:]


def test_items_plain_pickle_cannot_take_go_by_value():
    seq, got = decode_frame(b"".join(bytes(v) for v in encode_frame(1, [lambda x: x + 1])))
    assert got[0](1) == 2


def test_arrow_batches_and_control_items_cross_a_socket_in_order(server_for):
    consumer = Consumer()
    server = server_for(consumer)
    sender = SocketSender(5, 2, server.path, KEY, [])
    sends = [
        [arrow_batch(500), Watermark(10)],
        [StreamStatus(idle=True), StreamStatus(idle=False)],
        [arrow_batch(3), Barrier(1, 99, False, False), arrow_batch(0)],
        [EndOfInput()],
    ]
    for items in sends:
        sender.send(items)
    sender.drain()
    assert sender.metrics.in_flight == 0 and sender.metrics.sends == 4
    for seq, items in enumerate(sends):
        channel, got_seq, got = consumer.got.get(timeout=30)
        assert (channel, got_seq) == (5, seq)
        assert len(got) == len(items)
        for a, b in zip(got, items):
            if isinstance(b, pa.RecordBatch):
                assert a.equals(b)
                for buf in a.column(0).buffers():
                    assert buf is None or buf.address % 8 == 0
            else:
                assert a == b
    sender.close()


def test_payload_larger_than_the_socket_buffers(server_for):
    consumer = Consumer(auto_ack=False)
    server = server_for(consumer)
    sender = SocketSender(0, 1, server.path, KEY, [])
    big = arrow_batch(400_000)  # ~10 MB, far more than a Unix socket buffers
    assert big.nbytes > 4 * 1024 * 1024
    sender.send([big, Watermark(1)])  # sendall finishes while the receiver reads
    _, _, got = consumer.got.get(timeout=60)
    assert got[0].equals(big) and got[1] == Watermark(1)
    assert sender.metrics.in_flight == 1
    consumer.acks.get(timeout=30)()
    sender.send([big.slice(0, 10)])  # waited for the credit of the first send
    assert sender.metrics.in_flight == 1
    consumer.acks.get(timeout=30)()
    sender.drain()
    assert sender.metrics.in_flight == 0
    sender.close()


def test_feedback_channel_never_waits_and_collects_its_acks(server_for):
    consumer = Consumer()
    server = server_for(consumer)
    sender = SocketSender(1, None, server.path, KEY, [])
    for i in range(300):
        sender.send([i])
    for i in range(300):
        assert consumer.got.get(timeout=30)[1:] == (i, [i])
    sender.drain()
    assert sender.metrics.in_flight == 0
    sender.close()


def test_unknown_task_key_gets_an_error_reply(server_for):
    server = server_for(Consumer())
    sender = SocketSender(2, 1, server.path, (99, 0), [])
    sender.send(["x"])
    with pytest.raises(RaystreamError, match="channel 2: the consumer task .* is no longer hosted"):
        sender.drain()
    sender.close()


def test_unknown_task_key_of_a_cancelled_sender_is_cancelled(server_for):
    server = server_for(Consumer())
    task = FakeTask()
    task.cancelled = True
    sender = SocketSender(2, 1, server.path, (99, 0), [task])
    sender.send(["x"])
    with pytest.raises(Cancelled):
        sender.drain()
    sender.close()


def test_cancellation_while_waiting_for_credit(server_for):
    consumer = Consumer(auto_ack=False)
    server = server_for(consumer)
    task = FakeTask()
    sender = SocketSender(0, 1, server.path, KEY, [task])
    sender.send(["first"])
    outcome: queue.Queue = queue.Queue()

    def second_send():
        try:
            sender.send(["second"])  # blocks: the window is 1 and nothing is acknowledged
            outcome.put("sent")
        except Cancelled:
            outcome.put("cancelled")

    t = threading.Thread(target=second_send)
    t.start()
    consumer.got.get(timeout=30)  # the first send arrived; the second is waiting for credit
    assert outcome.empty()
    task.cancelled = True
    assert outcome.get(timeout=30) == "cancelled"
    t.join()
    assert consumer.got.empty()  # the second send never left
    sender.close()


def test_a_consumer_that_goes_away_fails_the_sender_naming_the_channel(server_for):
    consumer = Consumer(auto_ack=False)
    server = server_for(consumer)
    sender = SocketSender(7, 1, server.path, KEY, [])
    sender.send(["x"])
    consumer.got.get(timeout=30)
    server.close()  # the executor is gone: its connections close
    with pytest.raises(RaystreamError, match=r"channel 7: the socket connection to consumer task \(3, 1\)"):
        sender.send(["y"])  # waits for credit and meets the end of the stream
        sender.drain()
    sender.close()


def _refuse_to_load():
    raise ValueError("this record cannot be rebuilt here")


class Unloadable:
    """Pickles fine, fails to unpickle (as a record of a class the consumer cannot import)."""

    def __reduce__(self):
        return (_refuse_to_load, ())


def test_a_send_the_consumer_cannot_unpickle_fails_the_sender_with_the_cause(server_for):
    consumer = Consumer()
    server = server_for(consumer)
    sender = SocketSender(6, 2, server.path, KEY, [])
    with pytest.raises(RaystreamError, match=r"channel 6: consumer task \(3, 1\) could not take a send: send 0 of "
                                             r"channel 6 cannot be unpickled in the consumer's process: ValueError: "
                                             r"this record cannot be rebuilt here"):
        sender.send([Unloadable()])
        sender.drain()
    assert consumer.got.empty()  # nothing half-delivered
    sender.close()


def test_connecting_to_a_missing_socket_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        SocketSender(0, 1, str(tmp_path / "none.sock"), KEY, [])


def test_a_listener_that_never_accepts_fails_the_connect_instead_of_blocking(tmp_path):
    # senders are built on the executor's event loop: a listener whose backlog is full (its
    # process stopped, its accept thread stuck) must fail the connect (the channel then uses
    # Ray calls), never block the loop
    import socket

    path = str(tmp_path / "stuck.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)  # and never accepts
    senders = []
    try:
        with pytest.raises(OSError):
            for _ in range(64):
                senders.append(SocketSender(0, 1, path, KEY, []))
        assert 1 <= len(senders) < 64  # the backlog took some, then connecting failed
    finally:
        for sender in senders:
            sender.close()
        listener.close()


def test_the_listener_survives_a_failed_accept(server_for, monkeypatch):
    # accept() can fail without the listener being closed (too many open files): the server
    # keeps accepting; a sender whose connection could not be served sees it broke
    import errno
    import socket

    real_accept = socket.socket.accept
    failures = iter([OSError(errno.EMFILE, "Too many open files")])

    def flaky_accept(self):
        error = next(failures, None)
        if error is not None:
            raise error
        return real_accept(self)

    monkeypatch.setattr(socket.socket, "accept", flaky_accept)
    consumer = Consumer()
    server = server_for(consumer)
    sender = SocketSender(2, 1, server.path, KEY, [])
    sender.send(["after a failed accept"])
    sender.drain()
    assert consumer.got.get(timeout=30) == (2, 0, ["after a failed accept"])
    sender.close()


def test_a_connection_without_a_thread_is_closed_not_left_unread(server_for, monkeypatch):
    real_start = threading.Thread.start
    refused = []

    def start(self):
        if self.name == "rschan-conn" and not refused:
            refused.append(self)
            raise RuntimeError("can't start new thread")
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    consumer = Consumer()
    server = server_for(consumer)
    try:
        first = SocketSender(4, 1, server.path, KEY, [])
    except OSError:  # closed before the hello went out: the runtime falls back to Ray calls
        pass
    else:  # closed after: the sender's next send or credit wait sees it broke
        with pytest.raises(RaystreamError, match="channel 4: the socket connection"):
            first.send(["never served"])
            first.drain()
        first.close()
    assert refused  # (either way the connection was not left unread, and nothing hangs)
    second = SocketSender(5, 1, server.path, KEY, [])  # the listener still serves new ones
    second.send(["served"])
    second.drain()
    assert consumer.got.get(timeout=30) == (5, 0, ["served"])
    second.close()


def test_server_removes_its_socket_and_stale_ones(tmp_path):
    stale = tmp_path / "999999999-deadbeef0000.sock"  # no such pid
    stale.write_text("")
    server = ChannelServer(lambda key: None, directory=str(tmp_path))
    assert not stale.exists()
    assert os.path.exists(server.path) and len(server.path) < 107
    server.close()
    assert not os.path.exists(server.path)


def test_a_socket_directory_others_may_enter_is_not_used(tmp_path):
    """Frames are unpickled: the server listens only in a directory private to this user."""
    from raystream.engine.socket_channels import ChannelServer, private_dir

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    server = ChannelServer(lambda key: None, directory=str(shared))
    try:
        assert os.path.dirname(server.path) != str(shared)
        assert os.stat(os.path.dirname(server.path)).st_mode & 0o077 == 0
    finally:
        server.close()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "private", target_is_directory=True)
    (tmp_path / "private").mkdir(mode=0o700)
    assert private_dir(str(link)) != str(link)  # a symlink is not followed
    assert private_dir(str(tmp_path / "private")) == str(tmp_path / "private")


def test_waiting_for_credit_works_on_descriptors_above_1024(server_for):
    """An executor with many connections has socket descriptors >= 1024, where select()
    fails: the credit wait polls."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"RLIMIT_NOFILE {soft} < 1200")
    consumer = Consumer(auto_ack=False)
    server = server_for(consumer)
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        sender = SocketSender(0, 1, server.path, KEY, [])
        assert sender._sock.fileno() >= 1024
        sender.send(["first"])
        done: queue.Queue = queue.Queue()
        t = threading.Thread(target=lambda: (sender.send(["second"]), done.put("sent")))
        t.start()
        consumer.got.get(timeout=30)
        consumer.acks.get(timeout=30)()  # the credit of the first send: the second goes out
        assert done.get(timeout=30) == "sent"
        t.join()
        sender.close()
    finally:
        for fd in filler:
            os.close(fd)
