"""Results streamed from a job's ``collect()`` sink to the driver while the job runs.

``execute_and_collect(stream=True)`` (and ``limit=N``, built on it) gives a
:class:`CloseableIterator` over the records a job's collect sink writes, as Flink's
``executeAndCollect()`` does. The records travel from the sink tasks to the driver as
Flink's collect sink sends them to its client: over a socket, not through the job master
(whose committer would hold an unbounded job's whole output):

* the driver listens (:class:`CollectServer`, one per iterator, on a free port of
  ``127.0.0.1`` for a local Ray, else of the address in ``$RAYSTREAM_COLLECT_HOST`` or the
  driver's host name); every sink writer connects to it (:class:`CollectSender`) with the
  iterator's random key (``multiprocessing.connection``'s HMAC handshake: nothing that does
  not hold the key is read);
* a writer's messages go through a bounded outbox and one sender thread; the driver reads
  each connection into a queue bounded in messages and in bytes (:data:`MAX_QUEUED_BYTES`:
  with checkpointing a message is a whole checkpoint's output, of any size) that the
  iterator takes from. A consumer that does not keep up fills the queue, the reading threads
  stop reading, the socket buffers fill, the sender thread waits in ``send``, the outbox fills
  and the sink task stops taking input (``accepts_input``), whose producers then wait on
  their credits: memory stays bounded at every step. While the consumer does not read, the
  job waits, its checkpoint barriers too (behind the data the sink does not take): one
  checkpoint at a time times out and is aborted (the job goes on unless
  ``tolerable_failures`` says otherwise), and checkpoints complete again once the consumer
  reads again; nothing is lost or repeated.

Messages are ``(connection id, seq, subtask, key, batches)`` pickles; ``key`` names a piece
of output once, so that a piece sent twice (after a restart) is delivered once.

No Ray here: this module is plain sockets and threads, used by the driver and by the sink
tasks alike.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, Listener, answer_challenge, deliver_challenge
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pyarrow as pa

from .errors import JobCancelled, RaystreamError
from .records import arrow_to_records, records_to_arrow

if TYPE_CHECKING:  # (annotations only: the iterator takes a JobClient the driver made)
    from .client import JobClient

__all__ = ["CLOSE_DRAIN_S", "CloseableIterator", "CollectEndpoint", "CollectSender", "CollectServer", "collect_host"]

log = logging.getLogger(__name__)

#: environment variable: the address of the driver that sink tasks on other nodes reach
HOST_ENV = "RAYSTREAM_COLLECT_HOST"
#: seconds a sink writer tries to connect to the driver
CONNECT_TIMEOUT_S = 10.0
#: seconds a closing sink writer waits for a driver that does not read to take what it holds
CLOSE_DRAIN_S = 30.0
#: bytes of received messages a :class:`CollectServer` holds for its iterator at most (and one
#: message more, however large, when it holds none)
MAX_QUEUED_BYTES = 8 << 20


def collect_host(address: str | None) -> tuple[str, str]:
    """``(bind, advertised)`` host of a :class:`CollectServer` for a job on Ray ``address``:
    loopback for a local Ray (``None`` or ``"local"`` and no ``$RAY_ADDRESS`` /
    ``$RAYSTREAM_ADDRESS``), else every interface, advertised as ``$RAYSTREAM_COLLECT_HOST``
    or the driver's host address.

    Example:
        >>> collect_host("local")
        ('127.0.0.1', '127.0.0.1')
    """
    explicit = os.environ.get(HOST_ENV)
    if explicit:
        return "0.0.0.0", explicit
    target = address or os.environ.get("RAYSTREAM_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if target in (None, "", "local"):
        return "127.0.0.1", "127.0.0.1"
    return "0.0.0.0", socket.gethostbyname(socket.gethostname())


@dataclass(frozen=True)
class CollectEndpoint:
    """Where sink writers send their output (picklable: it travels inside the job graph)."""

    address: tuple[str, int]
    authkey: bytes

    def __repr__(self) -> str:  # (never the key)
        return f"CollectEndpoint({self.address[0]}:{self.address[1]})"


# ---------------------------------------------------------------------------- driver side
class CollectServer:
    """The driver's end: accepts the sink writers' connections and reads their messages into
    a bounded queue (at most ``max_queued`` messages and ``max_bytes`` of them, or one message
    of any size: a reader thread waits when it is full, which holds its writer back through
    the socket).

    Example:
        >>> server = CollectServer("local", max_bytes=1 << 20)
        >>> server.queued_bytes(), server.get(timeout=0.01)
        (0, None)
        >>> server.close()
    """

    def __init__(self, address: str | None = None, max_queued: int = 16, max_bytes: int = MAX_QUEUED_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"CollectServer max_bytes must be an int >= 1, got {max_bytes!r}")
        bind, advertised = collect_host(address)
        self._authkey = os.urandom(32)
        self._listener = Listener((bind, 0), authkey=self._authkey)
        port = self._listener.address[1]
        self.endpoint = CollectEndpoint((advertised, port), self._authkey)
        self._messages: queue.Queue = queue.Queue(maxsize=max_queued)
        self._max_bytes = max_bytes
        self._bytes = 0  # bytes (as received) of the messages in the queue
        self._room = threading.Condition()  # notified when get() takes a message
        self._lock = threading.Lock()
        self._closed = False
        self._open: dict[str, Connection] = {}  # reader threads running, by a local id
        # what :meth:`received` answers, bounded by the live connections and the subtasks (never
        # one entry a connection the job ever made: each restart makes new ones): a connection
        # being read, or with messages not taken yet, in ``_live``; once it has ended and all
        # its messages were taken, its final count moves to ``_ended``, which keeps, per
        # subtask (of its first message), the connection accepted last - the newest attempt's
        # writer, the one whose count the iterator asks for once the job ended (an attempt's
        # writers connect after the attempt before it ended: the master redeploys after it saw
        # that attempt's tasks gone, and the listener accepts connections in order)
        self._accepted = 0  # connections accepted so far (their order)
        self._live: dict[str, _Reading] = {}  # by local id
        self._ended: dict[int, _Reading] = {}  # by subtask
        self.error: BaseException | None = None  # a message that could not be read (raised by the iterator)
        threading.Thread(target=self._accept, name="raystream-collect-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except OSError:  # (the listener closed: close())
                return
            except Exception as exc:  # noqa: BLE001 - a peer without the key: ignored, never read
                if self._closed:  # (close() woke it)
                    return
                log.warning("collect server %s: refused a connection: %r", self.endpoint, exc)
                continue
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                local = uuid.uuid4().hex
                self._open[local] = conn
                self._accepted += 1
                self._live[local] = _Reading(self._accepted)
            threading.Thread(target=self._read, args=(local, conn), name="raystream-collect-read", daemon=True).start()

    def _read(self, local: str, conn: Connection) -> None:
        try:
            while not self._closed:
                try:
                    data = conn.recv_bytes()
                except (EOFError, OSError):
                    return
                size = len(data)
                with self._room:  # (before unpickling: a message waiting here is held once, as bytes)
                    while not self._closed and self._bytes and self._bytes + size > self._max_bytes:
                        self._room.wait(0.2)
                    self._bytes += size
                try:
                    message = pickle.loads(data)  # (authenticated: only the job's writers hold the key)
                except Exception as exc:  # noqa: BLE001 - raised by the iterator, never dropped unseen
                    self.error = exc
                    return
                del data
                with self._lock:
                    reading = self._live[local]
                    if reading.subtask is None:
                        reading.connection, reading.subtask = message[0], message[2]
                    reading.read += 1
                while not self._closed:
                    try:
                        self._messages.put((message, size, local), timeout=0.2)
                        break
                    except queue.Full:
                        continue
        finally:
            conn.close()
            with self._lock:
                self._open.pop(local, None)
                self._live[local].done = True
                self._retire(local)

    def get(self, timeout: float) -> Any:
        """The next message (a tuple), or None if none came within ``timeout`` seconds; counted
        in :meth:`received` once taken."""
        try:
            message, size, local = self._messages.get(timeout=timeout)
        except queue.Empty:
            return None
        with self._room:
            self._bytes -= size
            self._room.notify_all()
        with self._lock:
            reading = self._live[local]
            reading.taken = max(reading.taken, message[1] + 1)
            reading.queued_taken += 1
            self._retire(local)
        return message

    def _retire(self, local: str) -> None:
        """Keep connection ``local``'s final count (one a subtask) once it has ended and every
        message read from it was taken (``self._lock`` held)."""
        reading = self._live[local]
        if not reading.done or reading.queued_taken < reading.read:
            return
        del self._live[local]
        if reading.subtask is None:  # (it sent nothing: nothing to count)
            return
        kept = self._ended.get(reading.subtask)
        if kept is None or kept.order < reading.order:
            self._ended[reading.subtask] = reading

    def received(self, connection: str) -> int:
        """How many messages of writer connection ``connection`` were taken by :meth:`get`
        (known for the connections still read or with messages not taken, and for the
        newest ended one of each subtask: a finished job's last writers)."""
        with self._lock:
            for reading in (*self._live.values(), *self._ended.values()):
                if reading.connection == connection:
                    return reading.taken
            return 0

    def connections_tracked(self) -> int:
        """How many writer connections :meth:`received` keeps a count of: the live ones and one
        ended one a subtask, however many attempts (restarts) the job went through."""
        with self._lock:
            return len(self._live) + len(self._ended)

    def queued_bytes(self) -> int:
        """Bytes (as received) of the messages read from the writers and not yet taken by
        :meth:`get`: at most ``max_bytes``, or one message's when it is larger."""
        with self._room:
            return self._bytes

    def open_connections(self) -> int:
        """Writer connections still open (their writers may still send)."""
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        """Stop listening and reading; messages not taken are dropped (the iterator is closed)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._open.values())
        with self._room:  # (a reading thread waiting for room sees the end)
            self._room.notify_all()
        address = self._listener.address
        try:
            self._listener.close()
        except OSError:
            pass
        try:  # wake the accepting thread (a closed listening socket does not always)
            socket.create_connection(address, timeout=1).close()
        except OSError:
            pass
        for conn in conns:  # (their reading threads see the end and close them)
            _shut_down(conn)


class _Reading:
    """What a :class:`CollectServer` knows of one writer connection."""

    __slots__ = ("connection", "done", "order", "queued_taken", "read", "subtask", "taken")

    def __init__(self, order: int) -> None:
        self.order = order  # accepted as the order-th connection
        self.connection: str | None = None  # the writer's connection id (of its first message)
        self.subtask: int | None = None  # the subtask of its first message
        self.read = 0  # messages read (put into the queue)
        self.queued_taken = 0  # of those, taken by get()
        self.taken = 0  # the writer's messages taken: the highest seq taken + 1 (received())
        self.done = False  # the connection has ended (its reader returned)


class CloseableIterator(Iterator[Any]):
    """The records of a running job's ``collect()`` sink, as they arrive (Flink's
    ``CloseableIterator`` of ``DataStream.executeAndCollect()``); made by
    ``execute_and_collect(stream=True)``.

    Iterating yields the records in the order each sink subtask wrote them (subtasks
    interleaved) and ends when the job has finished and every record has come. A job that
    fails raises its :class:`~engine.errors.JobFailed` from the iterator. :meth:`close` (or
    leaving a ``with`` block, or the end of a ``for`` loop over it, also by ``break`` or an
    exception) cancels a job that still runs and waits for it to end. ``client`` is the
    job's :class:`~engine.client.JobClient`.

    An iterator dropped without :meth:`close` (a notebook cell run again rebinds ``it = ...``,
    a function returns after ``next(it)``) cancels its job once it is garbage collected, and
    its receiving socket and threads end: nothing can read the job's records any more, and
    before, such a job ran on unseen, holding its executors, with the driver's receiving
    threads waiting forever to hand over what they held.

    What arrives: without checkpointing, each record as the sink writes it (a restart
    replays the job from its start, so after one the iterator may repeat records: at least
    once); with checkpointing, the records a checkpoint covers once the checkpoint completes
    (those after the last one when the job finishes): exactly once across failures and
    restarts, as the ``collect()`` sink of ``execute()``.

    Example:
        >>> with stream.execute_and_collect(stream=True) as records:   # doctest: +SKIP
        ...     for r in records:
        ...         if r["v"] > 10:
        ...             break                                      # cancels the job
    """

    #: seconds to wait, once the job finished, for records its writers sent
    END_WAIT_S = 60.0
    #: seconds :meth:`close` waits for a cancelled job to end
    CANCEL_WAIT_S = 30.0

    def __init__(self, client: JobClient, server: CollectServer, sink_uid: str) -> None:
        self.client = client
        self._server = server
        self._uid = sink_uid
        self._ended = threading.Event()
        self._records: deque[Any] = deque()
        self._batches: deque[pa.RecordBatch] = deque()
        # the newest checkpoint piece taken of each subtask (one entry a subtask, whatever the
        # job's age): a subtask's pieces come in checkpoint order - one connection an attempt,
        # read in order, and a restored writer sends what its checkpoint holds (pieces up to
        # that checkpoint, sent again in order) before anything newer - so a piece at or
        # below it is one taken already
        self._newest_piece: dict[int, int] = {}
        self._tails_seen: set[tuple[int, Any]] = set()  # ("final", attempt) tails taken, by subtask
        self._done = False
        self._closed = False
        client.add_end_callback(self._ended.set)
        # (not __del__: a weakref finalizer, which refers to the client and server, not to self)
        self._abandoned = weakref.finalize(self, _abandon, client, server, self._ended)
        self._abandoned.atexit = False  # (the driver's actors end with it)

    # -------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                try:
                    record = next(self)
                except StopIteration:
                    return
                yield record
        finally:
            self.close()

    def __next__(self) -> Any:
        while not self._records:
            batch = self.next_batch()
            if batch is None:
                raise StopIteration
            self._records.extend(arrow_to_records(batch))
        return self._records.popleft()

    def next_batch(self) -> pa.RecordBatch | None:
        """The next Arrow batch of records as the sink wrote it, or None at the end (what
        ``execute_and_collect(limit=, as_table=True)`` reads); records already taken one at
        a time by ``next()`` are not in it."""
        if self._records:  # (a batch partly taken through next(): its rest)
            from_records = list(self._records)
            self._records.clear()
            return _batch_of(from_records)
        while not self._batches:
            if self._done or self._closed:
                return None
            self._receive()
        return self._batches.popleft()

    def _receive(self) -> None:
        """Wait for the next message (or the job's end) and take it in."""
        self._check_server()
        message = self._server.get(timeout=0.1)
        if message is not None:
            self._take(message)
            return
        if self._ended.is_set():
            self._finish()

    def _check_server(self) -> None:
        error = self._server.error
        if error is not None:
            raise RaystreamError(
                f"execute_and_collect(stream=True): a message of job {self.client.name!r}'s collect sink could not be "
                f"read in the driver ({type(error).__name__}: {error})") from error

    def _take(self, message: tuple) -> None:
        _conn, _seq, subtask, key, batches = message
        if key[0] == "chk":  # (a piece of a checkpoint: sent again after a restart that restored it)
            if key[1] <= self._newest_piece.get(subtask, 0):
                return
            self._newest_piece[subtask] = key[1]
        self._batches.extend(b for b in batches if b.num_rows)

    def _finish(self) -> None:
        """The job has ended: raise how it failed, or take the rest of its output (what its
        writers sent, then what they held after the last checkpoint: the sink's result)."""
        try:
            result = self.client.wait()
        except JobCancelled:
            if self._closed:
                self._done = True
                return
            raise
        deadline = time.monotonic() + self.END_WAIT_S
        tails = result.sink_results.get(self._uid) or []
        # every writer of the last attempt said how many messages it sent: wait for them all
        for conn, sent in {c: n for _s, _t, _b, (c, n) in tails}.items():
            while self._server.received(conn) < sent:
                self._check_server()
                message = self._server.get(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
                if message is None and time.monotonic() < deadline:
                    continue
                if message is None:
                    raise RaystreamError(
                        f"execute_and_collect(stream=True): job {self.client.name!r} finished, but a collect sink "
                        f"writer's last messages did not arrive within {self.END_WAIT_S:g} s "
                        f"({self._server.received(conn)} of {sent})")
                self._take(message)
        while True:  # (connections of earlier attempts: what they sent before they closed)
            message = self._server.get(timeout=0.02)
            if message is not None:
                self._take(message)
            elif not self._server.open_connections() or time.monotonic() > deadline:
                break
        for subtask, tag, batches, _count in tails:
            if (subtask, tag) not in self._tails_seen:
                self._tails_seen.add((subtask, tag))
                self._batches.extend(b for b in batches if b.num_rows)
        self._done = True
        self._server.close()  # (everything came: an iterator read to its end by next() holds no socket)

    # -------------------------------------------------------------- closing
    def close(self) -> None:
        """Cancel the job if it still runs, wait for it to end (at most ``CANCEL_WAIT_S``)
        and stop receiving. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._abandoned.detach()
        self._records.clear()
        self._batches.clear()
        try:
            if not self._ended.is_set():
                self.client.cancel()
        finally:
            # (before the wait: a writer blocked sending to the driver fails and its task ends)
            self._server.close()
        if self._ended.is_set():
            return
        try:
            self.client.wait(timeout=self.CANCEL_WAIT_S)
        except JobCancelled:
            pass
        except Exception as exc:  # noqa: BLE001 - how it ended is not the closer's concern
            log.debug("collect iterator closed; the job ended with %r", exc)

    def __enter__(self) -> CloseableIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _abandon(client: JobClient, server: CollectServer, ended: threading.Event) -> None:
    """A :class:`CloseableIterator` was garbage collected without ``close()``: cancel its job
    if it still runs, then close its server, on a thread of its own (a garbage collection may
    run inside any code, Ray's and the server's locks held; nothing here may wait on them)."""

    def run() -> None:
        try:
            if not ended.is_set():
                log.warning("a collect iterator of job %r was dropped without close(): cancelling the job (nothing can "
                            "read its records any more)", client.name)
                client.cancel()
        except Exception:  # noqa: BLE001 - the connection is gone: so is the job
            log.debug("cancelling the job of a dropped collect iterator failed", exc_info=True)
        finally:
            server.close()

    threading.Thread(target=run, name="raystream-collect-abandon", daemon=True).start()


def _shut_down(conn: Connection) -> None:
    """Shut ``conn``'s socket down, which wakes a thread waiting in a send or receive on it
    (closing the connection from another thread does not, and pulls its handle away from
    under that thread)."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # (closed already)
        pass


def _batch_of(records: list[Any]) -> pa.RecordBatch:
    return records_to_arrow(records)


# ---------------------------------------------------------------------------- task side
class CollectSender:
    """A sink writer's end: a connection to the driver's :class:`CollectServer` and one
    thread sending what :meth:`send` queued, in order. At most about ``max_bytes`` wait in
    the outbox (:meth:`has_room`); ``wake()`` is called (from the sender thread) when room
    frees up after :meth:`has_room` said no."""

    def __init__(self, endpoint: CollectEndpoint, where: str, wake: Callable[[], None] | None = None,
                 max_bytes: int = 8 << 20) -> None:
        self.endpoint = endpoint
        self.where = where
        self.id = uuid.uuid4().hex
        self.sent = 0  # messages handed to the thread (their seq numbers are 0..sent-1)
        self.done = 0  # messages the thread has sent (0..done-1: handed to the socket)
        self._wake = wake
        self._max_bytes = max_bytes
        self._cond = threading.Condition()
        self._outbox: deque[bytes] = deque()
        self._bytes = 0
        self._busy = False  # the thread is sending a message taken from the outbox
        self._asked = False  # has_room() said no: wake when room frees up
        self._error: BaseException | None = None
        self._closed = False
        self._conn: Connection | None = None
        self._thread: threading.Thread | None = None

    def send(self, subtask: int, key: Any, batches: list[pa.RecordBatch]) -> None:
        """Queue ``batches`` as one message (delivered once per ``(subtask, key)``)."""
        self._check()
        data = pickle.dumps((self.id, self.sent, subtask, key, batches), protocol=5)
        self.sent += 1
        with self._cond:
            self._outbox.append(data)
            self._bytes += len(data)
            self._cond.notify_all()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="raystream-collect-send", daemon=True)
            self._thread.start()

    def has_room(self) -> bool:
        """Whether the outbox holds less than ``max_bytes`` (else the writer should pause)."""
        with self._cond:
            room = self._bytes < self._max_bytes
            if not room:
                self._asked = True
            return room

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything queued was sent (or raise why it cannot be); with
        ``timeout``, return False if it was not within that many seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while (self._outbox or self._busy) and self._error is None and not self._closed:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                self._cond.wait(0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic())))
        self._check()
        return True

    def _check(self) -> None:
        if self._error is not None:
            raise RaystreamError(
                f"{self.where}: sending collected records to the driver at {self.endpoint.address[0]}:"
                f"{self.endpoint.address[1]} failed ({type(self._error).__name__}: {self._error}); the driver "
                f"closed the iterator, or does not reach this task's node (set ${HOST_ENV} in the driver to an "
                "address of it that the cluster's nodes reach)") from self._error

    def _run(self) -> None:
        try:
            self._send_all()
        except BaseException as exc:  # noqa: BLE001 - kept, raised in the task thread by _check()
            with self._cond:
                if not self._closed:
                    self._error = exc
                self._busy = False
                self._cond.notify_all()
            if self._wake is not None:
                self._wake()
        finally:  # (the thread owns the connection)
            if self._conn is not None:
                self._conn.close()

    def _send_all(self) -> None:
        # (Client() of multiprocessing.connection, with a timeout: a driver this node does not
        # reach fails the job in seconds, not after the system's minutes of SYN retries)
        sock = socket.create_connection(self.endpoint.address, timeout=CONNECT_TIMEOUT_S)
        sock.settimeout(None)
        conn = self._conn = Connection(sock.detach())
        answer_challenge(conn, self.endpoint.authkey)
        deliver_challenge(conn, self.endpoint.authkey)
        while True:
            with self._cond:
                while not self._outbox and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                data = self._outbox.popleft()
                self._busy = True
            conn.send_bytes(data)  # (waits while the driver does not read: back-pressure)
            with self._cond:
                self._busy = False
                self.done += 1
                self._bytes -= len(data)
                wake = self._asked and self._bytes < self._max_bytes
                if wake:
                    self._asked = False
                self._cond.notify_all()
            if wake and self._wake is not None:
                self._wake()

    def close(self, drain_s: float = 0.0) -> None:
        """Send what is queued (waiting at most ``drain_s`` seconds for a driver that does not
        read; a driver that is gone ends the wait at once), then stop sending (what is left
        is dropped) and close the connection; a send that waits for the driver is woken (the
        socket is shut down)."""
        if drain_s > 0 and self._thread is not None:
            try:
                if not self.flush(drain_s):
                    log.warning("%s: %d messages for the driver were not sent within %.0f s and are dropped",
                                self.where, len(self._outbox), drain_s)
            except RaystreamError:
                pass  # (the driver is gone: nobody to send to)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        conn = self._conn
        if conn is not None:
            _shut_down(conn)
        if self._thread is not None:
            self._thread.join(timeout=5)
