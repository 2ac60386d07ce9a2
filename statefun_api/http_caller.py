"""The HTTP side of remote functions: POST request-reply bytes, with timeouts and retries.

* :class:`RemoteCaller` owns the I/O: one asyncio event loop in a daemon thread and a
  small HTTP/1.1 client on asyncio protocols (keep-alive connections pooled per host and
  port, one request at a time on a connection, ``https`` with the system's CA store,
  ``user:password@`` in the URL sent as HTTP basic authentication, a host name's
  addresses looked up once per 10 s and shared by the connections being opened).
  :meth:`RemoteCaller.submit` hands it the encoded bytes of a ``ToFunction``; the loop
  POSTs them with timeouts and retries and puts one :class:`CallResult` on a thread-safe
  queue, then calls ``notify()`` (the dispatcher passes ``ctx.post``, so the result is
  handled on the task's mailbox thread). It never touches dispatcher state.

  - the call timeout runs from sending the first attempt to the final reply, retries and
    backoff included; the connection pool is uncapped (the requests in flight are capped
    by :class:`RemoteFunctions`), so no time goes to waiting for a pooled connection;
    ``connect_timeout_s`` bounds each connection's set-up and ``read_timeout_s`` the
    silence between two reads of a reply;
  - connection errors, timeouts, HTTP 5xx, 408 and 429 are retried with exponential backoff
    (``backoff_initial_s`` doubling up to ``backoff_max_s``) until ``max_retries`` or the
    call timeout; any other 4xx fails at once (retrying cannot help). A pooled connection
    that the server closed while it was idle is replaced at once (not counted as a retry);
  - a 2xx body is read up to the endpoint's ``max_response_bytes``: a longer one (by its
    Content-Length, or while chunks arrive) fails the call at once;
  - replies framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or the end of the
    connection are read; interim 1xx replies are skipped.

Why not aiohttp's client: every request made it build request, response, payload and
timer objects and run a Task, ~140 us of CPU per request, which made the client, not the
function server, the bottleneck of remote functions (``benchmarks/RESULTS.md``, stop 26).
Here a request is one state machine driven by protocol callbacks: one write, one read
event and one timer per attempt.

The loop's thread takes the submitted requests before each wait for I/O, so a submitter
wakes it (a byte on its self-pipe) only while it waits, once until it looks again; and a
burst of replies posts one ``notify()`` until the consumer takes the completions again
(:meth:`RemoteCaller.rearm_notify`): per-request thread hand-offs were a large share of the
client's CPU (a self-pipe write and a concurrent future per request, a mailbox wake-up
and a dispatcher step per reply; the self-pipe write per step was still 12% of the
mailbox thread).

Its caller is :class:`~statefun_api.remote.RemoteFunctions`, which decides what to send
and applies the replies; this module knows nothing of addresses, state or the dispatcher.

Example:
    >>> CallResult(call_id=1, body=b"", error=None, attempts=1, status=200).error is None
    True
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import queue
import selectors
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from raystream.engine.observability import name_native_thread
from raystream.statefun_api.endpoints import RemoteEndpoint

__all__ = ["RemoteCaller", "CallResult", "excerpt", "redacted"]

log = logging.getLogger(__name__)

_CONTENT_TYPE = "application/octet-stream"
_EXCERPT = 200
_ERROR_BODY_READ = 4096  # bytes of a non-2xx reply read for the error message
# 408 Request Timeout: the server closed a connection it found idle (RFC 9110: the client may
# repeat the request; Node.js and Go servers send it on a keep-alive connection they drop, so a
# request sent on it at that moment reads it); 429 Too Many Requests: come back later
_RETRIED_4XX = frozenset({408, 429})
_MAX_HEAD = 64 * 1024  # bytes of a reply's status line and headers
_MAX_CHUNK_LINE = 4096  # bytes of a chunk-size line (with extensions)
_ONE_WRITE = 1 << 16  # a request body up to this size is sent in one write with its head
_MAX_SETUPS = 16  # connections being opened at once per host (a burst beyond a server's listen backlog
# loses SYNs, and each lost one costs the kernel's 1 s retransmission)
_DNS_TTL_S = 10.0  # how long a host name's addresses are reused (as aiohttp's resolver cache)
_URL_CACHE = 1024  # parsed URLs kept (one per function type in practice)
_SAFE_PATH = "/:@!$&'()*+,;=-._~%?"  # kept as they are in a request target


def excerpt(body: bytes) -> str:
    """A short printable excerpt of ``body`` for error messages."""
    text = body[:_EXCERPT].decode("utf-8", "replace")
    return repr(text + ("..." if len(body) > _EXCERPT else ""))


def redacted(url: str) -> str:
    """``url`` with the password of a ``user:password@`` part replaced, for messages.

    Example:
        >>> redacted("http://fn:s3cret@functions:8000/statefun")
        'http://fn:***@functions:8000/statefun'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _hint_refused(status: int, url: str, location: str | None) -> str:
    """What to do about a reply of ``status`` (3xx or 4xx) that is not retried."""
    if 300 <= status < 400:
        where = f"to {redacted(location)!r}" if location else "without a Location"
        return (
            f"; the server redirects {where}, and redirects are not followed (as by StateFun's async "
            f"transport): point the endpoint's URL (urlPathTemplate) at the address that serves the function"
        )
    if status in (404, 405):
        return f"; is {redacted(url)!r} the request-reply endpoint that serves this function type?"
    if status == 413:
        return (
            "; the server refused the request's size: send smaller batches (max_num_batch_requests / "
            "maxNumBatchRequests) or raise the server's limit (aiohttp's client_max_size is 1 MiB by default)"
        )
    return ""


@dataclass
class CallResult:
    """The outcome of one remote call (all retries included).

    Attributes:
        call_id: the id given to :meth:`RemoteCaller.submit`.
        body: the 2xx reply's bytes, or ``None`` on failure.
        error: why the call failed for good, or ``None``.
        attempts: HTTP attempts made.
        status: the last HTTP status seen (``None``: no response, e.g. connection refused).
    """

    call_id: int
    body: bytes | None
    error: str | None
    attempts: int
    status: int | None = None


class _Target:
    """A parsed request URL: where to connect, and the request head up to its Content-Length."""

    __slots__ = ("host", "port", "tls", "pool_key", "head", "where", "literal")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {redacted(url)!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.pool_key = (self.host, self.port, self.tls)
        try:
            ipaddress.ip_address(self.host)
            self.literal = True  # nothing to resolve
        except ValueError:
            self.literal = False
        self.where = f"{self.host}:{self.port}"
        authority = parts.netloc.rpartition("@")[2]  # never send user:password@ as the Host
        target = quote(parts.path or "/", safe=_SAFE_PATH) + (f"?{quote(parts.query, safe=_SAFE_PATH)}" if parts.query else "")
        auth = ""
        if parts.username is not None:  # http://user:password@host/...: HTTP basic authentication, as curl does
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            auth = f"Authorization: Basic {base64.b64encode(credentials).decode('ascii')}\r\n"
        self.head = (
            f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {_CONTENT_TYPE}\r\n"
            f"Accept: */*\r\nUser-Agent: raystream-statefun\r\n{auth}Content-Length: "
        ).encode("ascii", "strict")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one call's attempt uses it at a time."""

    def __init__(self, pool_key: tuple[str, int, bool]) -> None:
        self.pool_key = pool_key
        self.transport: Any = None
        self.call: _Call | None = None
        self.idle_since = 0.0
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        call = self.call
        if call is None:  # bytes nobody asked for on an idle connection: never reuse it
            self.close()
            return
        call.on_data(data)

    def eof_received(self) -> bool:
        call = self.call
        if call is not None:
            call.on_eof()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        call, self.call = self.call, None
        if call is not None:
            call.on_lost(exc)

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


# the phases of a call
_QUEUED, _CONNECTING, _HEAD, _BODY, _BACKOFF, _DONE = range(6)
# how a reply's body is framed
_LENGTH, _CHUNKED, _UNTIL_CLOSE = range(3)
# what a chunked reply expects next when not chunk data (``chunk_left`` > 0 counts data bytes)
_SIZE_LINE, _TRAILERS, _DATA_END = -1, -2, -3


class _Call:
    """One remote call (all its attempts): a state machine run by the connection's protocol
    callbacks and one timer on the caller's event loop thread."""

    __slots__ = (
        "caller", "call_id", "ep", "url", "target", "body", "deadline", "attempts", "status",
        "conn", "timer", "phase", "last_read", "head_buf", "framing", "length", "parts", "received",
        "limit", "ok", "keep_alive", "chunk_buf", "chunk_left", "connecting", "reused", "replaced", "location",
    )

    def __init__(self, caller: RemoteCaller, call_id: int, ep: RemoteEndpoint, url: str, target: _Target, body: bytes) -> None:
        self.caller = caller
        self.call_id = call_id
        self.ep = ep
        self.url = url
        self.target = target
        self.body = body
        self.deadline = 0.0
        self.attempts = 0
        self.status: int | None = None
        self.conn: _Connection | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.phase = _CONNECTING
        self.last_read = 0.0
        self.head_buf = b""
        self.framing = _LENGTH
        self.length = 0
        self.parts: list[bytes] = []
        self.received = 0
        self.limit = 0
        self.ok = False  # the reply's status is 2xx
        self.keep_alive = False
        self.chunk_buf = bytearray()
        self.chunk_left = 0
        self.connecting: asyncio.Task[Any] | None = None
        self.reused = False  # the attempt runs on a pooled connection
        self.replaced = False  # this attempt already replaced a stale pooled connection
        self.location: str | None = None  # the Location header of a 3xx reply

    # ------------------------------------------------------------------ attempts
    def start(self) -> None:
        self._attempt()

    def _attempt(self) -> None:
        self.attempts += 1
        self.replaced = False
        caller = self.caller
        conn = caller.take_idle(self.target.pool_key)
        if conn is not None:
            self.send_on(conn)
        else:
            caller.connect_or_wait(self)

    def _begin(self) -> None:
        """The request is being sent now: the call timeout starts (once, at the first attempt)."""
        if not self.deadline:
            self.deadline = self.caller.loop.time() + self.ep.call_timeout_s

    def send_on(self, conn: _Connection) -> None:
        """Send on a pooled connection."""
        self._begin()
        self.reused = True
        self._send(conn)

    def connect(self) -> None:
        """Open a new connection (the caller counted it against the host's set-ups) and send on it
        (through :meth:`RemoteCaller.connect_or_wait`)."""
        self._begin()
        caller = self.caller
        loop = caller.loop
        self.reused = False
        self.phase = _CONNECTING
        task = self.connecting = loop.create_task(caller.open_connection(self.target))
        task.add_done_callback(self._connected)
        self._arm(min(self.deadline, loop.time() + self.ep.connect_timeout_s))

    def _connected(self, task: asyncio.Task[Any]) -> None:
        self.caller.connect_done(self.target.pool_key)
        if task is not self.connecting:  # timed out or closed meanwhile
            if not task.cancelled() and task.exception() is None:
                task.result()[1].close()
            return
        self.connecting = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._cancel_timer()
            if isinstance(exc, ssl.SSLCertVerificationError):  # configuration, not a passing failure
                self._finish(CallResult(self.call_id, None, (
                    f"the TLS certificate of {self.target.where} is not trusted (not retried): {exc}; install the CA "
                    f"that signed it in the system's CA store of the workers, or set SSL_CERT_FILE to a CA bundle "
                    f"holding it in their environment (ray.init(runtime_env={{'env_vars': {{'SSL_CERT_FILE': ...}}}}))"
                ), self.attempts, None))
                return
            self._retry(f"Cannot connect to {self.target.where}: {type(exc).__name__}: {exc}")
            return
        self._send(task.result()[1])

    def _send(self, conn: _Connection) -> None:
        self.conn = conn
        conn.call = self
        self.phase = _HEAD
        self.head_buf = b""
        self.status = None
        self.location = None
        self.ok = False
        body = self.body
        head = self.target.head + b"%d\r\n\r\n" % len(body)
        transport = conn.transport
        # the read timeout runs from the write: armed first, so that nothing the request
        # causes (the reply, a test's clock moved once the server has it) comes before it
        now = self.last_read = self.caller.loop.time()
        read = self.ep.read_timeout_s
        self._arm(self.deadline if read is None else min(self.deadline, now + read))
        if len(body) <= _ONE_WRITE:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)

    # ------------------------------------------------------------------ the reply
    def on_data(self, data: bytes) -> None:
        self.last_read = self.caller.loop.time()
        if self.phase == _BODY:
            self._on_body(data)
            return
        buf = self.head_buf + data if self.head_buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._broken(f"a reply head longer than {_MAX_HEAD} bytes, starting {excerpt(buf)}")
                else:
                    self.head_buf = buf
                return
            rest = buf[end + 4 :]
            if not self._on_head(buf[:end]):
                return  # failed
            if self.phase == _BODY:
                if rest or self.framing == _LENGTH:
                    self._on_body(rest)
                return
            buf = rest  # an interim 1xx reply: the real one follows
            if not buf:
                self.head_buf = b""
                return

    def _on_head(self, head: bytes) -> bool:
        """Read the status line and headers; False when the call moved on (failed or retried)."""
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            self._broken(f"not an HTTP/1.x reply: {excerpt(head)}")
            return False
        status = int(code)
        if 100 <= status < 200 and status != 101:
            return True  # interim (100 Continue, 103 Early Hints): phase stays _HEAD
        length = None
        chunked = False
        close = version == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length < 0:
                    self._broken(f"HTTP {status} with an invalid Content-Length {value.strip()!r}")
                    return False
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"location" and 300 <= status < 400:
                self.location = value.strip().decode("latin-1")
            elif name == b"connection":
                token = value.strip().lower()
                if token == b"close":
                    close = True
                elif token == b"keep-alive":
                    close = False
        self.status = status
        ok = self.ok = 200 <= status < 300
        self.limit = self.ep.max_response_bytes if ok else _ERROR_BODY_READ
        if status in (204, 304):
            length, chunked = 0, False
        if chunked:
            self.framing = _CHUNKED
            self.chunk_buf = bytearray()
            self.chunk_left = _SIZE_LINE
        elif length is not None:
            self.framing = _LENGTH
            self.length = length
            if ok and length > self.limit:
                self._too_large(f"Content-Length {length}")
                return False
        else:
            self.framing = _UNTIL_CLOSE
            close = True
        self.keep_alive = not close
        self.parts = []
        self.received = 0
        self.phase = _BODY
        return True

    def _on_body(self, data: bytes) -> None:
        framing = self.framing
        if framing == _LENGTH:
            if data:
                self.parts.append(data)
                self.received += len(data)
            if self.received >= self.length:
                body = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
                if len(body) > self.length:  # bytes after the reply: the connection is out of step
                    self.keep_alive = False
                    body = body[: self.length]
                self._reply(body)
            elif self.received >= self.limit:  # an error reply's excerpt is all we need
                self.keep_alive = False
                self._reply(b"".join(self.parts))
            return
        if framing == _UNTIL_CLOSE:
            self.parts.append(data)
            self.received += len(data)
            if self.received > self.limit:
                self._over_limit()
            return
        self._on_chunks(data)

    def _on_chunks(self, data: bytes) -> None:
        buf = self.chunk_buf
        buf += data
        while True:
            left = self.chunk_left
            if left > 0:  # chunk data
                take = min(left, len(buf))
                if not take:
                    return
                self.parts.append(bytes(buf[:take]))
                del buf[:take]
                self.received += take
                self.chunk_left = left - take
                if self.chunk_left == 0:
                    self.chunk_left = _DATA_END
                if self.received > self.limit:
                    self._over_limit()
                    return
            elif left == _DATA_END:  # the CRLF after a chunk's data
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    self._broken("a chunked reply without CRLF after a chunk")
                    return
                del buf[:2]
                self.chunk_left = _SIZE_LINE
            else:  # a chunk-size line, or trailer lines after the last chunk
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_CHUNK_LINE:
                        self._broken(f"a chunk line longer than {_MAX_CHUNK_LINE} bytes")
                    return
                line = bytes(buf[:end])
                del buf[: end + 2]
                if left == _TRAILERS:
                    if not line:  # the end of the reply
                        if buf:
                            self.keep_alive = False
                        self._reply(b"".join(self.parts))
                        return
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    if size < 0:
                        raise ValueError(size)
                except ValueError:
                    self._broken(f"a chunked reply with an invalid chunk size {excerpt(line)}")
                    return
                if size == 0:
                    self.chunk_left = _TRAILERS
                elif self.received + size > self.limit and self.ok:
                    self._over_limit()
                    return
                else:
                    self.chunk_left = size

    def _over_limit(self) -> None:
        if self.ok:
            self._too_large("more bytes received")
        else:  # the excerpt of an error reply is read: stop there
            self.keep_alive = False
            self._reply(b"".join(self.parts))

    def _too_large(self, seen: str) -> None:
        self._fail(
            f"HTTP {self.status} with a reply larger than max_response_bytes={self.limit} ({seen}; not retried); "
            f"raise remote_endpoint(max_response_bytes=...) or 'transport.payload_max_bytes' in module.yaml, "
            f"or send smaller batches"
        )

    def on_eof(self) -> None:
        if self.phase == _BODY and self.framing == _UNTIL_CLOSE:
            self.keep_alive = False
            self._reply(b"".join(self.parts))

    def on_lost(self, exc: Exception | None) -> None:
        """The connection closed under this attempt (its ``call`` is already detached)."""
        if self.phase == _DONE:
            return
        self.conn = None
        if exc is None and self.phase == _BODY and self.framing == _UNTIL_CLOSE:
            self.on_eof()  # the end of the connection is the end of this reply
            return
        self._cancel_timer()
        nothing_yet = self.phase == _HEAD and not self.head_buf
        if nothing_yet and self.reused and not self.replaced:
            # the server closed the pooled connection while it was idle (its keep-alive
            # timeout is shorter than ours): send again on a new one, not a retry
            self.replaced = True
            self.caller.connect_or_wait(self)
            return
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "the server closed the connection"
        state = "before replying" if nothing_yet else "in the middle of the reply"
        self._retry(f"{why} {state} ({self.target.where})")

    def _reply(self, body: bytes) -> None:
        """A whole reply was read: succeed, fail, or retry by its status."""
        self._release(self.keep_alive)
        status = self.status or 0
        if self.ok:
            self._finish(CallResult(self.call_id, body, None, self.attempts, status))
            return
        if status < 500 and status not in _RETRIED_4XX:  # the request itself is refused (or sent elsewhere)
            what = "the request was not served here" if status < 400 else "the request itself was refused"
            self._finish(
                CallResult(
                    self.call_id,
                    None,
                    f"HTTP {status} (not retried), body {excerpt(body)}; a {status} reply means "
                    f"{what}{_hint_refused(status, self.url, self.location)}",
                    self.attempts,
                    status,
                )
            )
            return
        self._retry(f"HTTP {status}, body {excerpt(body)}")

    # ------------------------------------------------------------------ timer, retries, the end
    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.caller.loop.call_at(when, self._on_timer)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        loop = self.caller.loop
        now = loop.time()
        ep = self.ep
        phase = self.phase
        if phase == _BACKOFF:
            self._attempt()
            return
        if phase == _CONNECTING:
            task, self.connecting = self.connecting, None
            if task is not None:
                task.cancel()
            what = f"connect timeout of {ep.connect_timeout_s:g} s" if now < self.deadline else "call timeout"
        elif phase in (_HEAD, _BODY):
            read = ep.read_timeout_s
            if now < self.deadline and (read is None or now - self.last_read < read):
                self._arm(self.deadline if read is None else min(self.deadline, self.last_read + read))
                return  # data arrived meanwhile: not yet
            self._release(False)
            what = "call timeout" if now >= self.deadline else f"read timeout of {read:g} s"
        else:
            return
        read_s = "none" if ep.read_timeout_s is None else f"{ep.read_timeout_s:g} s"
        self._retry(
            f"timed out: {what} reached (timeouts: connect {ep.connect_timeout_s:g} s, read {read_s}, call "
            f"{ep.call_timeout_s:g} s) at {self.target.where}"
        )

    def _broken(self, what: str) -> None:
        """The reply breaks HTTP: drop the connection and retry (the server may recover)."""
        self._release(False)
        self._retry(f"{what} from {self.target.where}")

    def _retry(self, last: str) -> None:
        """The attempt failed with ``last``: wait and try again, or give up."""
        ep = self.ep
        loop = self.caller.loop
        now = loop.time()
        if ep.max_retries is not None and self.attempts > ep.max_retries:
            reason = f"{ep.max_retries} retries used up"
        else:
            reason = f"the next attempt would pass the call timeout of {ep.call_timeout_s:g} s"
            delay = min(ep.backoff_max_s, ep.backoff_initial_s * 2 ** (self.attempts - 1))
            if now + delay < self.deadline:
                self.caller.last_retry = f"{self.target.where}: attempt {self.attempts} failed with {last}"
                self.phase = _BACKOFF
                self._arm(now + delay)
                return
        self._finish(
            CallResult(self.call_id, None, f"gave up after {self.attempts} attempt(s), {reason}; last error: {last}", self.attempts, self.status)
        )

    def _fail(self, error: str) -> None:
        """Fail at once (not retried); the connection is dropped."""
        self._release(False)
        self._finish(CallResult(self.call_id, None, error, self.attempts, self.status))

    def _release(self, reuse: bool) -> None:
        self._cancel_timer()
        conn, self.conn = self.conn, None
        if conn is None:
            return
        conn.call = None
        if reuse and not conn.lost:
            self.caller.give_back(conn)
        else:
            conn.close()

    def _finish(self, result: CallResult) -> None:
        self.phase = _DONE
        self._cancel_timer()
        self.body = b""
        self.parts = []
        self.caller.deliver(self, result)

    def cancel(self) -> None:
        """The caller closes: stop without a result (a queued call is skipped when its turn comes)."""
        self.phase = _DONE
        self._cancel_timer()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.call = None
            conn.close()


def _nothing() -> None:
    """A callback that only wakes the loop."""


class _DoorbellSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    """The loop's selector, which starts the submitted calls before each wait.

    The order makes a lost wake-up impossible: the loop clears ``_rung``, takes the
    outbox, marks itself ``_sleeping``, then looks at the outbox once more (not waiting if a
    call came in between); a submitter appends, then rings only if ``_sleeping``. A call
    appended before ``_sleeping`` was set is seen by the second look; one appended after
    finds ``_sleeping`` set and rings (the byte on the loop's self-pipe ends the wait).
    """

    def __init__(self, caller: RemoteCaller) -> None:
        super().__init__()
        self._caller = caller

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        caller = self._caller
        caller._rung = False
        if caller._outbox:
            caller._start_submitted()
            timeout = 0  # (the calls just started may have scheduled callbacks)
        caller._sleeping = True
        if caller._outbox:
            timeout = 0
        try:
            return super().select(timeout)  # type: ignore[no-any-return]
        finally:
            caller._sleeping = False


class RemoteCaller:
    """The HTTP client of remote functions on an event loop in a daemon thread (see the
    module docstring).

    Args:
        notify: called (from the I/O thread) after each result is queued; the dispatcher
            passes a function that posts the result handling to its mailbox.
        name: the thread's name.
        keepalive_s: how long an idle connection stays pooled.

    The connection pool is not capped: the caller (:class:`RemoteFunctions`) caps the
    requests it submits, so a request never waits for a pooled connection and its call
    timeout starts when it is sent.

    Thread safety: :meth:`submit` and :meth:`close` may be called from any thread;
    :attr:`completions` is a thread-safe queue.

    Example:
        >>> import queue
        >>> caller = RemoteCaller(notify=lambda: None, name="doc-remote")
        >>> isinstance(caller.completions, queue.SimpleQueue)
        True
        >>> caller.close()
    """

    def __init__(
        self,
        notify: Callable[[], None],
        name: str = "raystream-statefun-remote",
        keepalive_s: float = 15.0,
        completions: queue.SimpleQueue[Any] | None = None,
    ) -> None:
        #: finished calls (``completions``: a queue shared with another caller, e.g. the embedded one)
        self.completions: queue.SimpleQueue[Any] = queue.SimpleQueue() if completions is None else completions
        self._notify = notify
        self._notify_pending = False  # a notify() was made that the consumer has not answered yet
        self._outbox: deque[tuple[int, RemoteEndpoint, str, bytes]] = deque()  # submitted, not yet started
        self._sleeping = False  # the loop's thread is (about to be) waiting in epoll
        self._rung = False  # a submitter woke it and the loop has not looked at the outbox since
        self._calls: set[_Call] = set()  # started, not finished
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}  # pooled connections, newest last
        self._setups: dict[tuple[str, int, bool], int] = {}  # connections being opened, per host
        self._waiting: dict[tuple[str, int, bool], deque[_Call]] = {}  # calls waiting for a connection
        self._sweep_pending = False
        self._targets: dict[str, _Target] = {}
        self._resolved: dict[tuple[str, int], tuple[float, list[str]]] = {}  # (host, port) -> (valid until, addresses)
        self._resolving: dict[tuple[str, int], asyncio.Task[list[str]]] = {}
        self._tls: ssl.SSLContext | None = None
        self._keepalive_s = keepalive_s
        #: the last failed attempt of a call that is retried (where, which attempt, the error;
        #: written by the I/O thread): what a caller waiting for replies can tell its user
        self.last_retry: str | None = None
        self.loop = asyncio.SelectorEventLoop(_DoorbellSelector(self))
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        name_native_thread("rs-remote-http")
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            self._shutdown()
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(asyncio.sleep(0))  # let the aborted transports close their sockets
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # ------------------------------------------------------------------ any thread
    def submit(self, call_id: int, endpoint: RemoteEndpoint, url: str, body: bytes) -> None:
        """POST ``body`` to ``url`` (with the endpoint's timeouts and retries) in the background.

        The loop's thread takes the outbox before each wait for I/O, so a submitter wakes it
        only when it is waiting (and once until it looked again): calls submitted together,
        or while the loop is busy with replies, cost no wake-up each."""
        if self._closed:
            raise RuntimeError("RemoteCaller is closed")
        self._outbox.append((call_id, endpoint, url, body))
        if self._sleeping and not self._rung:
            self._rung = True
            self.loop.call_soon_threadsafe(_nothing)

    def rearm_notify(self) -> None:
        """The consumer is about to take :attr:`completions`: the next result calls ``notify()``
        again. Results queued before this call are taken by that consumer; a result queued
        after it notifies (at worst once more than needed, never a result without one)."""
        self._notify_pending = False

    def close(self) -> None:
        """Cancel calls in flight, close the connections and stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # the loop is already closed
            pass
        self._thread.join(timeout=10)
        if self._thread.is_alive():  # pragma: no cover - diagnostic only
            log.warning("the remote-function I/O thread did not stop within 10 s")

    # ------------------------------------------------------------------ the loop's thread
    def _start_submitted(self) -> None:
        """Start every submitted call (from :class:`_DoorbellSelector`, before a wait)."""
        outbox = self._outbox
        while outbox:
            if self._closed:
                return
            self._start(*outbox.popleft())

    def _start(self, call_id: int, ep: RemoteEndpoint, url: str, body: bytes) -> None:
        """Start one call (a test may replace this to answer without HTTP, through :meth:`deliver`)."""
        target = self._targets.get(url)
        if target is None:
            try:
                target = _Target(url)
            except (ValueError, UnicodeEncodeError) as exc:
                self.deliver(None, CallResult(call_id, None, f"bad URL {redacted(url)!r}: {exc}", 0, None))
                return
            if len(self._targets) >= _URL_CACHE:
                self._targets.clear()
            self._targets[url] = target
        call = _Call(self, call_id, ep, url, target, body)
        self._calls.add(call)
        call.start()

    def deliver(self, call: _Call | None, result: CallResult) -> None:
        """Queue ``result`` for the consumer and notify it (once per burst)."""
        if call is not None:
            self._calls.discard(call)
        self.completions.put(result)
        if not self._closed and not self._notify_pending:
            self._notify_pending = True
            self._notify()

    async def open_connection(self, target: _Target) -> tuple[Any, _Connection]:
        """A new connection to ``target``: a host name's addresses (from the cache, or one
        lookup shared by every set-up that needs it) are tried in order; when none
        connects, they are forgotten, so the next attempt looks the name up again (the
        service may have moved)."""
        loop = self.loop
        key = target.pool_key
        tls: dict[str, Any] = {"ssl": self.tls_context(), "server_hostname": target.host} if target.tls else {}
        if target.literal:
            return await loop.create_connection(lambda: _Connection(key), target.host, target.port, **tls)  # type: ignore[return-value]
        last: OSError = OSError(f"the name {target.host!r} has no address")
        for host in await self._resolve(target.host, target.port):
            try:
                return await loop.create_connection(lambda: _Connection(key), host, target.port, **tls)  # type: ignore[return-value]
            except OSError as exc:
                last = exc
        self._resolved.pop((target.host, target.port), None)
        raise last

    async def _resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host``, cached for ``_DNS_TTL_S``; concurrent callers share one lookup."""
        key = (host, port)
        cached = self._resolved.get(key)
        if cached is not None and cached[0] > self.loop.time():
            return cached[1]
        lookup = self._resolving.get(key)
        if lookup is None:
            lookup = self._resolving[key] = self.loop.create_task(self._lookup(host, port))

            def done(task: asyncio.Task[list[str]]) -> None:
                self._resolving.pop(key, None)
                if not task.cancelled():
                    task.exception()  # (retrieved: every waiter may have been cancelled)

            lookup.add_done_callback(done)
        return await asyncio.shield(lookup)  # a timed-out set-up must not cancel the others' lookup

    async def _lookup(self, host: str, port: int) -> list[str]:
        infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))  # in the resolver's order, once each
        self._resolved[(host, port)] = (self.loop.time() + _DNS_TTL_S, addresses)
        return addresses

    def tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def take_idle(self, key: tuple[str, int, bool]) -> _Connection | None:
        """A pooled connection to ``key`` that is open and fresh, or None."""
        idle = self._idle.get(key)
        if not idle:
            return None
        expired = self.loop.time() - self._keepalive_s
        while idle:
            conn = idle.pop()
            if not conn.lost and conn.idle_since > expired:
                return conn
            conn.close()
        return None

    def connect_or_wait(self, call: _Call) -> None:
        """``call`` opens a new connection if fewer than ``_MAX_SETUPS`` to its host are being
        opened; otherwise it waits for the next set-up slot or connection given back."""
        key = call.target.pool_key
        n = self._setups.get(key, 0)
        if n < _MAX_SETUPS:
            self._setups[key] = n + 1
            call.connect()
            return
        call.phase = _QUEUED
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = deque()
        waiting.append(call)

    def _next_waiting(self, key: tuple[str, int, bool]) -> _Call | None:
        """The call that waited longest for a connection to ``key`` (cancelled ones skipped)."""
        waiting = self._waiting.get(key)
        while waiting:
            call = waiting.popleft()
            if call.phase == _QUEUED:
                return call
        return None

    def connect_done(self, key: tuple[str, int, bool]) -> None:
        """A connection set-up to ``key`` ended (either way): its slot goes to a waiting call."""
        call = self._next_waiting(key)
        if call is not None:
            call.connect()  # takes over the slot
        else:
            self._setups[key] -= 1

    def give_back(self, conn: _Connection) -> None:
        call = self._next_waiting(conn.pool_key)
        if call is not None:  # a call waiting for a connection takes it at once
            call.send_on(conn)
            return
        conn.idle_since = self.loop.time()
        idle = self._idle.get(conn.pool_key)
        if idle is None:
            idle = self._idle[conn.pool_key] = []
        idle.append(conn)
        if not self._sweep_pending:
            self._sweep_pending = True
            self.loop.call_later(self._keepalive_s, self._sweep)

    def _sweep(self) -> None:
        """Close the pooled connections idle for longer than ``keepalive_s``."""
        self._sweep_pending = False
        expired = self.loop.time() - self._keepalive_s
        for key, idle in list(self._idle.items()):
            keep = []
            for conn in idle:
                if conn.lost or conn.idle_since <= expired:
                    conn.close()
                else:
                    keep.append(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle and not self._closed:
            self._sweep_pending = True
            self.loop.call_later(self._keepalive_s, self._sweep)

    def _shutdown(self) -> None:
        """On the loop, while closing: stop every call and close every connection."""
        for call in list(self._calls):
            call.cancel()
        self._calls.clear()
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
