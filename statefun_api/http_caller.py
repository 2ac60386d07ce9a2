"""The HTTP side of remote functions: POST request-reply bytes, with timeouts and retries.

* :class:`RemoteCaller` owns the I/O: one asyncio event loop in a daemon thread, one
  aiohttp ``ClientSession``. :meth:`RemoteCaller.submit` hands it the encoded bytes of a
  ``ToFunction``; the loop POSTs them with timeouts and retries and puts one
  :class:`CallResult` on a thread-safe queue, then calls ``notify()`` (the dispatcher
  passes ``ctx.post``, so the result is handled on the task's mailbox thread). It never
  touches dispatcher state.

  - the call timeout runs from sending the first attempt to the final reply, retries and
    backoff included; the connection pool is uncapped (the requests in flight are capped
    by :class:`RemoteFunctions`), so no time goes to waiting for a pooled connection;
  - connection errors, timeouts, HTTP 5xx and 429 are retried with exponential backoff
    (``backoff_initial_s`` doubling up to ``backoff_max_s``) until ``max_retries`` or the
    call timeout; any other 4xx fails at once (retrying cannot help);
  - a 2xx body is read up to the endpoint's ``max_response_bytes``: a longer one (by its
    Content-Length, or while streaming) fails the call at once.

Requests submitted in one go start with one wake-up of the event loop, and a burst of
replies posts one ``notify()`` until the consumer takes the completions again
(:meth:`RemoteCaller.rearm_notify`): per-request thread hand-offs were a large share of the
client's CPU (a self-pipe write and a concurrent future per request, a mailbox wake-up
and a dispatcher step per reply).

Its caller is :class:`~statefun_api.remote.RemoteFunctions`, which decides what to send
and applies the replies; this module knows nothing of addresses, state or the dispatcher.

Example:
    >>> CallResult(call_id=1, body=b"", error=None, attempts=1, status=200).error is None
    True
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raystream.engine.observability import name_native_thread
from raystream.statefun_api.endpoints import RemoteEndpoint

__all__ = ["RemoteCaller", "CallResult", "require_aiohttp", "excerpt"]

log = logging.getLogger(__name__)

_CONTENT_TYPE = "application/octet-stream"
_EXCERPT = 200
_ERROR_BODY_READ = 4096  # bytes of a non-2xx reply read for the error message
_RETRIED_4XX = frozenset({429})  # Too Many Requests: the server asks to come back later


def require_aiohttp(what: str = "remote stateful functions") -> Any:
    """Import aiohttp or raise an ImportError naming the ``remote`` extra."""
    try:
        import aiohttp
    except ImportError as exc:
        raise ImportError(
            f"{what} need aiohttp: `pip install 'raystream[remote]'` (or `pip install aiohttp`)"
        ) from exc
    return aiohttp


def excerpt(body: bytes) -> str:
    """A short printable excerpt of ``body`` for error messages."""
    text = body[:_EXCERPT].decode("utf-8", "replace")
    return repr(text + ("..." if len(body) > _EXCERPT else ""))


def _hint_4xx(status: int, url: str) -> str:
    if status in (404, 405):
        return f"; is {url!r} the request-reply endpoint that serves this function type?"
    if status == 413:
        return (
            "; the server refused the request's size: send smaller batches (max_num_batch_requests / "
            "maxNumBatchRequests) or raise the server's limit (aiohttp's client_max_size is 1 MiB by default)"
        )
    return ""


async def _read_body(resp: Any, limit: int) -> bytes | None:
    """The reply's body, or None as soon as it is known to exceed ``limit`` bytes."""
    length = resp.content_length
    if length is not None:  # framed by Content-Length: read at once (the common case)
        return None if length > limit else await resp.read()
    buf = bytearray()  # chunked: count while streaming
    async for chunk in resp.content.iter_any():
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


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


class RemoteCaller:
    """An aiohttp client on an event loop in a daemon thread (see the module docstring).

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
    """

    def __init__(self, notify: Callable[[], None], name: str = "raystream-statefun-remote", keepalive_s: float = 15.0) -> None:
        self._aiohttp = require_aiohttp()
        self.completions: queue.SimpleQueue[CallResult] = queue.SimpleQueue()
        self._notify = notify
        self._notify_pending = False  # a notify() was made that the consumer has not answered yet
        self._outbox: deque[tuple[int, RemoteEndpoint, str, bytes]] = deque()  # submitted, not yet started
        self._wakeup_pending = False  # the loop will start the outbox's calls
        self._tasks: set[asyncio.Task[None]] = set()  # the calls running (strong references)
        self._keepalive_s = keepalive_s
        self._loop = asyncio.new_event_loop()
        self._session: Any = None
        self._closed = False
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        name_native_thread("rs-remote-http")
        loop = self._loop
        asyncio.set_event_loop(loop)
        aiohttp = self._aiohttp

        async def make_session() -> Any:
            # limit=0: no pool cap (RemoteFunctions bounds the requests in flight)
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=self._keepalive_s)
            return aiohttp.ClientSession(connector=connector)

        self._session = loop.run_until_complete(make_session())
        self._started.set()
        try:
            loop.run_forever()
        finally:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(self._session.close())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def submit(self, call_id: int, endpoint: RemoteEndpoint, url: str, body: bytes) -> None:
        """POST ``body`` to ``url`` (with the endpoint's timeouts and retries) in the background.

        Calls submitted while the loop has not yet started the earlier ones start together
        (one wake-up of the I/O thread for all of them)."""
        if self._closed:
            raise RuntimeError("RemoteCaller is closed")
        self._outbox.append((call_id, endpoint, url, body))
        if not self._wakeup_pending:
            self._wakeup_pending = True
            self._loop.call_soon_threadsafe(self._start_submitted)

    def _start_submitted(self) -> None:
        """On the loop: start every submitted call. The flag is cleared before the outbox is
        read, so a call submitted meanwhile is either read here or schedules another wake-up."""
        self._wakeup_pending = False
        outbox, loop, tasks = self._outbox, self._loop, self._tasks
        while outbox:
            task = loop.create_task(self._call(*outbox.popleft()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def rearm_notify(self) -> None:
        """The consumer is about to take :attr:`completions`: the next result calls ``notify()``
        again. Results queued before this call are taken by that consumer; a result queued
        after it notifies (at worst once more than needed, never a result without one)."""
        self._notify_pending = False

    async def _call(self, call_id: int, ep: RemoteEndpoint, url: str, body: bytes) -> None:
        try:
            result = await self._attempts(call_id, ep, url, body)
        except asyncio.CancelledError:
            raise  # closed: nobody waits for the result
        except Exception as exc:  # never leave the dispatcher waiting for a call that died
            result = CallResult(call_id, None, f"unexpected {type(exc).__name__}: {exc}", 1, None)
        self.completions.put(result)
        if not self._closed and not self._notify_pending:
            self._notify_pending = True
            self._notify()

    async def _attempts(self, call_id: int, ep: RemoteEndpoint, url: str, body: bytes) -> CallResult:
        """POST until a 2xx reply, a reply that cannot succeed on retry (4xx but 429, an
        oversized body), ``max_retries`` or the call timeout, whichever comes first."""
        aiohttp = self._aiohttp
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ep.call_timeout_s  # the request is being sent now
        attempts = 0
        last = ""
        reason = f"call timeout of {ep.call_timeout_s:g} s reached"
        status = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            attempts += 1
            timeout = aiohttp.ClientTimeout(total=remaining, sock_connect=ep.connect_timeout_s, sock_read=ep.read_timeout_s)
            try:
                async with self._session.post(
                    url, data=body, headers={"Content-Type": _CONTENT_TYPE}, timeout=timeout, allow_redirects=False
                ) as resp:
                    status = resp.status
                    if 200 <= status < 300:
                        data = await _read_body(resp, ep.max_response_bytes)
                        if data is None:
                            size = f"Content-Length {resp.content_length}" if resp.content_length is not None else "more bytes received"
                            return CallResult(
                                call_id,
                                None,
                                f"HTTP {status} with a reply larger than max_response_bytes={ep.max_response_bytes} "
                                f"({size}; not retried); raise remote_endpoint(max_response_bytes=...) or "
                                f"'transport.payload_max_bytes' in module.yaml, or send smaller batches",
                                attempts,
                                status,
                            )
                        return CallResult(call_id, data, None, attempts, status)
                    data = await resp.content.read(_ERROR_BODY_READ)
                    last = f"HTTP {status}, body {excerpt(data)}"
                    if status < 500 and status not in _RETRIED_4XX:  # the request itself is refused
                        return CallResult(
                            call_id,
                            None,
                            f"HTTP {status} (not retried), body {excerpt(data)}; a {status} reply means the "
                            f"request itself was refused{_hint_4xx(status, url)}",
                            attempts,
                            status,
                        )
            except asyncio.TimeoutError:
                read = "none" if ep.read_timeout_s is None else f"{ep.read_timeout_s:g} s"
                last = f"timed out (connect {ep.connect_timeout_s:g} s, read {read}, call {ep.call_timeout_s:g} s)"
                status = None
            except aiohttp.ClientError as exc:
                last = f"{type(exc).__name__}: {exc}"
                status = None
            if ep.max_retries is not None and attempts > ep.max_retries:
                reason = f"{ep.max_retries} retries used up"
                break
            delay = min(ep.backoff_max_s, ep.backoff_initial_s * 2 ** (attempts - 1))
            if loop.time() + delay >= deadline:
                break
            await asyncio.sleep(delay)
        return CallResult(call_id, None, f"gave up after {attempts} attempt(s), {reason}; last error: {last}", attempts, status)

    def close(self) -> None:
        """Cancel calls in flight, close the session and stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._loop.is_running() or not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._loop.stop)
            except RuntimeError:  # the loop is already closed
                pass
        self._thread.join(timeout=10)
        if self._thread.is_alive():  # pragma: no cover - diagnostic only
            log.warning("the remote-function I/O thread did not stop within 10 s")


