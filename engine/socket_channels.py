"""Unix-domain-socket channel transport between task executors on the same node.

A Ray actor call carrying a channel send costs ~2 ms on the sender, the raylet and the
receiver (``python -m benchmarks.ray_hop``); the same bytes cross a Unix domain socket in
~70 us. Every :class:`~engine.ray_runtime.TaskActor` therefore listens on a Unix socket
(:class:`ChannelServer`), and a channel to a task of another executor *on the same node*
ships its sends through a :class:`SocketSender` instead of ``RaySender`` (which stays for
executors on other nodes and as the fallback when connecting fails).

Wire format, one connection per channel (producer channel -> consumer task key), so that a
connection's byte order is the channel's send order:

* hello (sender -> receiver, once): ``!I`` length + ``pickle((task key, channel index))``
* data frame (sender -> receiver): ``!qQI`` (seq, pickle length, buffer count), one ``!Q``
  length per out-of-band buffer, the pickle (protocol 5) and the raw buffers. Arrow record
  batches pickle their buffers out of band, so they cross without a copy into the pickle;
  the receiver reads each buffer into a fresh 64-byte aligned Arrow buffer and unpickles
  with ``buffers=``.
* reply (receiver -> sender): one byte per send, :data:`ACK` when the consumer has
  processed it (the credit) or :data:`NOT_HOSTED` when the executor does not host the key
  any more (its attempt was released): the sender raises as ``RaySender`` does for a
  ``False`` reply. A send that comes before its consumer is set up waits for the setup
  (the server's ``lookup`` blocks the connection's thread, so the channel's later sends stay
  behind it, in order). A send the receiver cannot take (a pickle that fails to load there;
  a consumer whose setup failed or did not come in time) is answered with :data:`FAILED`,
  ``!I`` length and the error's text, and the connection is closed: the sender raises an
  error naming the channel, the consumer task and the cause (as a Ray call's error would),
  not a bare "connection closed".

Where the socket lives: on Linux in the *abstract namespace* (an address starting with a NUL
byte, ``"\\0rs-<uid>-<pid>-<token>"``): no file is created, and the kernel frees the name when
the listening socket closes, however its process ends (a Ray worker killed with the driver,
by ``ray.shutdown()`` or ``ray.kill`` runs no exit handler, and each such executor left its
socket file in ``/tmp/rs-<uid>`` before 2026-12-07). An abstract name has no file mode, so
the server accepts only connections from processes of its own user (``SO_PEERCRED``): frames
are unpickled. Elsewhere, or when a ``directory`` is given, the socket is a file
``<pid>-<token>.sock`` in a directory private to the user (:func:`private_dir`), removed by
:meth:`ChannelServer.close` and, once its process is gone, by the next server that starts
there.

The module uses no Ray (plain stdlib sockets and threads); :mod:`engine.ray_runtime` wires
it in.

Example:
    >>> import tempfile, os
    >>> got = []
    >>> class Sink:
    ...     def deliver(self, channel, seq, items, ack):
    ...         got.append((channel, seq, items)); ack()
    >>> server = ChannelServer(lambda key: Sink() if key == (1, 0) else None)
    >>> sender = SocketSender(3, 2, server.path, (1, 0), [])
    >>> sender.send(["hello", 42]); sender.drain(); got
    [(3, 0, ['hello', 42])]
    >>> sender.close(); server.close(); os.path.exists(server.path)
    False
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import socket
import stat
import struct
import sys
import tempfile
import threading
import uuid
from typing import Any, Callable, Protocol

import cloudpickle
import pyarrow as pa

from .channels import Cancelled, ChannelSender
from .errors import RaystreamError
from .observability import name_native_thread

__all__ = ["ABSTRACT_NAMES", "ACK", "FAILED", "NOT_HOSTED", "ChannelServer", "SocketSender", "peer_uid", "shown",
           "socket_dir"]

log = logging.getLogger(__name__)

ACK = b"A"
NOT_HOSTED = b"E"
FAILED = b"X"

_HELLO = struct.Struct("!I")
#: a FAILED reply's reason: its length, then the UTF-8 text
_REASON_LEN = struct.Struct("!I")
_HEADER = struct.Struct("!qQI")
_LEN = struct.Struct("!Q")
#: at most this many iovecs per sendmsg (Linux's IOV_MAX is 1024)
_IOV_MAX = 512
#: how often a sender blocked on credit looks at its task's cancellation flag
_CREDIT_POLL_S = 0.1
#: a connect (and the hello) that takes longer fails, and the channel uses Ray calls: the
#: sender is built on the executor's event loop, which must never block on a listener that
#: does not accept (its backlog full, its process stopped)
CONNECT_TIMEOUT_S = 2.0
#: at most this many bytes of a FAILED reply's reason
_MAX_REASON = 4096
#: how long a sender waits for the rest of a FAILED reply it has begun to read
_REASON_WAIT_S = 5.0
#: after an accept() error other than the close (too many open files...), wait this long
_ACCEPT_RETRY_S = 0.05
#: sockets get an abstract name (no file; see the module docstring) where the OS has them
ABSTRACT_NAMES = sys.platform.startswith("linux")
#: ``struct ucred`` of ``SO_PEERCRED``: pid, uid, gid
_PEERCRED = struct.Struct("iII")


class _Consumer(Protocol):
    """What a :class:`ChannelServer` delivers to (a :class:`~engine.task.Task`)."""

    def deliver(self, channel: int, seq: int, items: list, ack: Callable[[], None]) -> None:
        """Enqueue one send; call ``ack`` once its items are processed (any thread)."""


def socket_dir() -> str:
    """The directory of this user's channel sockets: short, since a Unix socket path is
    limited to ~107 bytes (``/tmp/rs-<uid>`` on Linux)."""
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    return os.path.join(base, f"rs-{os.getuid()}")


def private_dir(directory: str) -> str:
    """``directory``, created with mode 0700 if missing, when it is a real directory (not a
    symlink) owned by this user that nobody else may enter; otherwise a fresh private
    directory from :func:`tempfile.mkdtemp`. The sockets carry pickles: a directory another
    user could enter or had planted would let them feed frames to this user's tasks.

    Example:
        >>> import tempfile, os
        >>> d = os.path.join(tempfile.mkdtemp(), "rs")
        >>> private_dir(d) == d, oct(os.stat(d).st_mode & 0o777)
        (True, '0o700')
        >>> os.chmod(d, 0o755); private_dir(d) == d
        False
    """
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077:
            return directory
        log.warning("channel socket directory %s is not private to this user (mode %o, owner %d); using a new one",
                    directory, st.st_mode & 0o777, st.st_uid)
    except OSError as exc:
        log.warning("cannot use channel socket directory %s (%s); using a new one", directory, exc)
    return tempfile.mkdtemp(prefix="rs-")


def peer_uid(sock: socket.socket) -> int | None:
    """The user id of the process at the other end of the Unix socket connection ``sock``
    (``SO_PEERCRED``), or None where the OS does not say."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        return _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size))[1]
    except (OSError, struct.error):
        return None


def shown(address: str) -> str:
    """A socket address for messages: an abstract name as ``ss`` shows it (``@name``)."""
    return "@" + address[1:] if address.startswith("\0") else address


def _remove_stale(directory: str) -> None:
    """Remove socket files of processes that are gone (an executor killed by a signal
    cannot remove its own): names are ``<pid>-<uuid>.sock``."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        pid_text = name.split("-", 1)[0]
        if not name.endswith(".sock") or not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
        except OSError:  # alive, another user's process
            pass


def _send_views(sock: socket.socket, views: list[memoryview]) -> None:
    """Write every byte of ``views`` in order (``sendmsg`` gathers them; partial writes resumed)."""
    views = [v for v in views if v.nbytes]
    while views:
        n = sock.sendmsg(views[:_IOV_MAX])
        while n:
            first = views[0]
            if n >= first.nbytes:
                n -= first.nbytes
                views.pop(0)
            else:
                views[0] = first[n:]
                n = 0


def _recv_exact(sock: socket.socket, view: memoryview) -> bool:
    """Fill ``view`` from ``sock``; False on end of stream before any byte, raises
    :class:`EOFError` on end of stream within it."""
    got = 0
    size = view.nbytes
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if got == 0:
                return False
            raise EOFError("connection closed inside a frame")
        got += n
    return True


def encode_frame(seq: int, items: list[Any]) -> list[memoryview]:
    """The data frame of send ``seq`` as views to write in order (see the module docstring).

    Example:
        >>> views = encode_frame(0, ["x"])
        >>> decode_frame(b"".join(bytes(v) for v in views))
        (0, ['x'])
    """
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = pickle.dumps(items, protocol=5, buffer_callback=buffers.append)
    except (pickle.PicklingError, AttributeError, TypeError):
        # something plain pickle cannot take (a lambda, a local class): by value, as Ray would
        buffers = []
        data = cloudpickle.dumps(items, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    head = bytearray(_HEADER.pack(seq, len(data), len(raws)))
    for r in raws:
        head += _LEN.pack(r.nbytes)
    return [memoryview(head), memoryview(data), *raws]


def decode_frame(frame: bytes) -> tuple[int, list[Any]]:
    """``(seq, items)`` of one whole data frame held in memory (tests, diagnostics)."""
    seq, size, nbufs = _HEADER.unpack_from(frame, 0)
    pos = _HEADER.size
    lengths = [_LEN.unpack_from(frame, pos + i * _LEN.size)[0] for i in range(nbufs)]
    pos += nbufs * _LEN.size
    data = frame[pos:pos + size]
    pos += size
    buffers = []
    for n in lengths:
        buffers.append(pa.py_buffer(frame[pos:pos + n]))
        pos += n
    return seq, pickle.loads(data, buffers=buffers)


class SocketSender(ChannelSender):
    """Channel transport over a Unix domain socket to a :class:`ChannelServer` of an executor
    on the same node. ``key``: the consumer task's key at that executor; ``task_ref``:
    ``[Task]`` of the producing task once built (its cancellation ends a wait for credit).

    Raises :class:`OSError` when connecting fails (the caller falls back to Ray calls).

    Example (see the module docstring for a whole round trip):
        >>> SocketSender(0, 4, "/nonexistent/x.sock", (1, 0), [])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: ...
    """

    transport = "socket"

    def __init__(self, channel_index: int, window: int | None, path: str, key: tuple, task_ref: list) -> None:
        super().__init__(channel_index, window)
        self.path = path
        self.key = key
        self._task_ref = task_ref
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(path)
            hello = pickle.dumps((key, channel_index), protocol=5)
            sock.sendall(_HELLO.pack(len(hello)) + hello)
            sock.settimeout(None)  # sends block (the credit window bounds them), replies are polled
        except OSError:
            sock.close()
            raise
        self._sock = sock
        # poll, not select: select() fails on descriptors >= 1024, which a busy executor reaches
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._closed = False

    def _cancelled(self) -> bool:
        task = self._task_ref[0] if self._task_ref else None
        return task is not None and bool(task.cancelled)

    def _broken(self, what: str) -> Exception:
        """The error of a connection that broke: Cancelled when our task is cancelled anyway."""
        if self._cancelled():
            return Cancelled()
        return RaystreamError(
            f"channel {self.channel_index}: the socket connection to consumer task {self.key} at {shown(self.path)} "
            f"broke ({what}): its executor died or closed the connection"
        )

    def _transmit(self, seq: int, items: list[Any]) -> None:
        if self._closed:
            raise RaystreamError(f"channel {self.channel_index}: send on a closed socket channel")
        self._collect(0.0)
        views = encode_frame(seq, items)
        try:
            _send_views(self._sock, views)
        except OSError as exc:
            raise self._broken(f"{type(exc).__name__}: {exc}") from exc

    def _collect(self, timeout: float) -> int:
        """Read the replies that arrive within ``timeout`` seconds (0: those already here);
        returns the number of acknowledgements taken."""
        try:
            if timeout > 0:
                if not self._poll.poll(timeout * 1000.0):
                    return 0
            data = self._sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._broken(f"{type(exc).__name__}: {exc}") from exc
        if not data:
            raise self._broken("end of stream")
        if FAILED in data:
            raise self._failed(data[data.index(FAILED) + 1:])
        if NOT_HOSTED in data:
            if self._cancelled():
                raise Cancelled()
            raise RaystreamError(
                f"channel {self.channel_index}: the consumer task {self.key} is no longer hosted by its executor "
                "(its attempt was released); this sender belongs to an attempt that ended"
            )
        n = len(data)
        self._acked(n)
        return n

    def _failed(self, rest: bytes) -> Exception:
        """The error of a :data:`FAILED` reply whose bytes after the marker are ``rest`` (the
        rest of the message is read here: the receiver closes the connection after it)."""
        if self._cancelled():
            return Cancelled()
        data = bytearray(rest)
        head = _REASON_LEN.size
        try:
            self._sock.settimeout(_REASON_WAIT_S)
            while len(data) < head or len(data) < head + _REASON_LEN.unpack_from(data)[0]:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        text = "(no reason given)"
        if len(data) >= head:
            (length,) = _REASON_LEN.unpack_from(data)
            text = bytes(data[head:head + length]).decode("utf-8", "replace")
        return RaystreamError(f"channel {self.channel_index}: consumer task {self.key} could not take a send: {text}")

    def _wait_for_credit(self) -> None:
        while self.metrics.in_flight > 0:
            if self._collect(_CREDIT_POLL_S):
                return
            if self._cancelled():
                raise Cancelled()

    def close(self) -> None:
        """Close the connection (idempotent); the consumer's connection thread ends."""
        if not self._closed:
            self._closed = True
            try:
                self._sock.close()
            except OSError:
                pass


class _Connection:
    """The receiving end of one channel connection: a thread reading frames."""

    def __init__(self, sock: socket.socket, lookup: Callable[[tuple], _Consumer | None], server: ChannelServer) -> None:
        self.sock = sock
        self.lookup = lookup
        self.server = server
        self._write_lock = threading.Lock()
        self._dead = False
        self.thread = threading.Thread(target=self._serve, name="rschan-conn", daemon=True)

    def _reply(self, byte: bytes) -> None:
        with self._write_lock:
            if self._dead:
                return
            try:
                self.sock.sendall(byte)
            except OSError:  # the sender is gone: its attempt ended, nobody waits for credit
                self._dead = True

    def ack(self) -> None:
        """Return one credit to the sender (any thread)."""
        self._reply(ACK)

    def fail(self, text: str) -> None:
        """Tell the sender that a send could not be taken, and why (:data:`FAILED`); the
        connection is then closed."""
        reason = text.encode("utf-8", "replace")[:_MAX_REASON]
        self._reply(FAILED + _REASON_LEN.pack(len(reason)) + reason)

    def _serve(self) -> None:
        name_native_thread("rs-chan-conn")
        try:
            self._loop()
        except (OSError, EOFError) as exc:
            log.debug("channel connection ended: %s", exc)
        except Exception:  # noqa: BLE001 - a frame that does not unpickle: drop the connection
            log.exception("channel connection failed; closing it")
        finally:
            with self._write_lock:
                self._dead = True
            try:
                self.sock.close()
            except OSError:
                pass
            self.server._forget(self)

    def _loop(self) -> None:
        sock = self.sock
        head = bytearray(_HELLO.size)
        if not _recv_exact(sock, memoryview(head)):
            return
        hello = bytearray(_HELLO.unpack(head)[0])
        _recv_exact(sock, memoryview(hello))
        key, channel = pickle.loads(hello)
        header = bytearray(_HEADER.size)
        ack = self.ack
        while True:
            if not _recv_exact(sock, memoryview(header)):
                return
            seq, size, nbufs = _HEADER.unpack(header)
            lengths = bytearray(nbufs * _LEN.size)
            _recv_exact(sock, memoryview(lengths))
            data = bytearray(size)
            _recv_exact(sock, memoryview(data))
            buffers = []
            for (n,) in _LEN.iter_unpack(lengths):
                buf = pa.allocate_buffer(n)  # 64-byte aligned, as Arrow likes its buffers
                _recv_exact(sock, memoryview(buf))
                buffers.append(buf)
            try:  # (may wait for the consumer's setup: the connection's later frames wait behind)
                consumer = self.lookup(key)
            except RaystreamError as exc:  # its setup failed or did not come: the sender hears why
                self.fail(str(exc))
                return
            if consumer is None:
                self._reply(NOT_HOSTED)
                continue
            try:
                items = pickle.loads(data, buffers=buffers)
            except Exception as exc:
                self.fail(f"send {seq} of channel {channel} cannot be unpickled in the consumer's process: "
                          f"{type(exc).__name__}: {exc}")
                raise
            consumer.deliver(channel, seq, items, ack)


class ChannelServer:
    """Listens on a Unix domain socket for :class:`SocketSender` connections and delivers
    their sends to ``lookup(task key)`` (None: not hosted, answered with :data:`NOT_HOSTED`;
    ``lookup`` may block, bounded, until the task is set up, and raise
    :class:`~engine.errors.RaystreamError`: answered with :data:`FAILED` and the error's text).
    One thread accepts, one thread per connection reads frames (``deliver`` never blocks, so
    a connection is always read and a sender never blocks on a full socket for long, except
    while ``lookup`` waits for a consumer's setup).

    ``path`` is the address senders connect to: an abstract name on Linux (no file, freed by
    the kernel with the socket, however the process ends), or with ``directory`` given, or
    on other systems, a socket file in that private directory (see the module docstring).
    Connections from another user's processes are closed unread.

    Example:
        >>> server = ChannelServer(lambda key: None)
        >>> len(server.path) < 100
        True
        >>> server.close()
    """

    def __init__(self, lookup: Callable[[tuple], _Consumer | None], directory: str | None = None) -> None:
        token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._abstract = directory is None and ABSTRACT_NAMES
        if self._abstract:
            self.path = f"\0rs-{os.getuid()}-{token}"
        else:
            directory = private_dir(directory or socket_dir())
            _remove_stale(directory)
            self.path = os.path.join(directory, f"{token}.sock")
        self.lookup = lookup
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(128)
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._closed = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="rschan-accept", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        name_native_thread("rs-chan-accept")
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError as exc:
                if self._closed:
                    return
                # (too many open files, a connection aborted before accept...): the listener
                # stays up; a sender it cannot serve sees its connection close, never a hang
                log.warning("channel socket %s: accept failed (%s); retrying", shown(self.path), exc)
                self._stopped.wait(_ACCEPT_RETRY_S)
                continue
            uid = peer_uid(sock)
            if uid != os.getuid() and (uid is not None or self._abstract):
                # (an abstract name has no file mode to keep other users out: frames are pickles)
                log.warning("channel socket %s: refused a connection from user id %s (not this user's)",
                            shown(self.path), uid)
                sock.close()
                continue
            conn = _Connection(sock, self.lookup, self)
            with self._lock:
                if self._closed:
                    sock.close()
                    return
                self._connections.add(conn)
            try:
                conn.thread.start()
            except RuntimeError as exc:  # no thread to serve it: close it, the sender sees it broke
                log.warning("channel socket %s: cannot start a connection thread (%s)", shown(self.path), exc)
                self._forget(conn)
                sock.close()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    @property
    def connections(self) -> int:
        """Open channel connections (diagnostics, tests)."""
        with self._lock:
            return len(self._connections)

    def close(self) -> None:
        """Stop accepting, close every connection and remove the socket file, if it has one
        (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._connections)
        self._stopped.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        for conn in conns:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if not self._abstract:
            try:
                os.unlink(self.path)
            except OSError:
                pass
