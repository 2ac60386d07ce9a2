"""Embedded ``async def`` functions, invoked concurrently across addresses like remote ones.

An async function registered in the job's :class:`~statefun_api.functions.StatefulFunctions`
runs on the process's function loop (:func:`~statefun_api.invocation.function_loop`). Its
messages go through :class:`~statefun_api.remote.RemoteFunctions`, the per-address state
machine that calls remote functions, so it gets the same guarantees: one invocation in
flight per address (messages that arrive meanwhile batch into the next one, in order), up
to the job's ``max_concurrent_requests`` in flight per subtask, the in-flight batches in
every checkpoint (invoked again after a restore), back-pressure on the ingress. Only the
transport differs: :class:`EmbeddedCaller` answers a request with the function's own
:class:`~statefun_api.handler.RequestReplyHandler` on the function loop instead of over HTTP.

So a function that awaits I/O (a web service, a database) overlaps those waits across
addresses, as on a StateFun deployment, instead of holding its subtask for each one.

Example:
    >>> import asyncio
    >>> from raystream.statefun_api import StatefulFunctions, ValueSpec, IntType, message_builder
    >>> from raystream.statefun_api.local import LocalDispatchers
    >>> functions = StatefulFunctions()
    >>> @functions.bind("demo/lookup", specs=[ValueSpec("n", IntType)])
    ... async def lookup(context, message):
    ...     await asyncio.sleep(0.01)  # e.g. an HTTP call: the other addresses run meanwhile
    ...     context.storage.n = (context.storage.n or 0) + message.as_int()
    >>> run = LocalDispatchers(functions)  # (send waits for the invocations)
    >>> run.send(*[message_builder("demo/lookup", f"k{i % 50}", int_value=1) for i in range(200)]).state("demo/lookup", "k7", "n")
    4
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
from collections.abc import Callable
from dataclasses import dataclass

from raystream.statefun_api.functions import StatefulFunctions
from raystream.statefun_api.handler import RequestReplyHandler
from raystream.statefun_api.http_caller import CallResult
from raystream.statefun_api.invocation import function_loop

__all__ = ["EmbeddedEndpoint", "EmbeddedCaller"]


@dataclass(frozen=True)
class EmbeddedEndpoint:
    """Where :class:`~statefun_api.remote.RemoteFunctions` sends the messages of one embedded
    async function type: the endpoint attributes it reads, without a URL.

    Attributes:
        functions: the function's typename (exact).
        max_num_batch_requests: most messages in one invocation of an address (the job's
            ``max_batch_per_address``).
        max_concurrent_requests: invocations of this type in flight per subtask; ``None``:
            only the subtask's own limit applies.

    Example:
        >>> ep = EmbeddedEndpoint("demo/lookup", 1000)
        >>> ep.matches("demo/lookup"), ep.url_for("demo/lookup"), ep.describe()
        (True, 'embedded:demo/lookup', "embedded async function 'demo/lookup'")
    """

    functions: str
    max_num_batch_requests: int
    max_concurrent_requests: int | None = None
    pool_ttl_s: float = 0.0  # (no connections: read with the remote endpoints' keep-alive)

    @property
    def is_pattern(self) -> bool:
        """Always False: an embedded function is one type."""
        return False

    def matches(self, typename: str) -> bool:
        """Whether this is the endpoint of ``typename``."""
        return typename == self.functions

    def url_for(self, typename: str) -> str:
        """A pseudo URL naming the function (for messages; nothing is fetched)."""
        return f"embedded:{typename}"

    def describe(self) -> str:
        """A short description for error messages."""
        return f"embedded async function {self.functions!r}"


class EmbeddedCaller:
    """The caller of :class:`~statefun_api.remote.RemoteFunctions` for embedded async
    functions: :meth:`submit` runs ``RequestReplyHandler.handle_async`` on the function loop
    and queues the reply on :attr:`completions`, calling ``notify()`` once per burst of
    replies (until :meth:`rearm_notify`), as :class:`~statefun_api.http_caller.RemoteCaller`
    does. A function that raises gives a :class:`CallResult` whose ``exception`` is the
    invocation's error (naming the address and message); it is not retried.

    Example:
        >>> caller = EmbeddedCaller(StatefulFunctions(), notify=lambda: None)
        >>> caller.completions.empty(), caller.last_retry
        (True, None)
        >>> caller.close()
    """

    def __init__(
        self,
        functions: StatefulFunctions,
        notify: Callable[[], None],
        completions: queue.SimpleQueue[CallResult] | None = None,
    ) -> None:
        #: finished calls (``completions``: a queue shared with the HTTP caller)
        self.completions: queue.SimpleQueue[CallResult] = queue.SimpleQueue() if completions is None else completions
        #: (the HTTP caller's retry report; an embedded call is never retried)
        self.last_retry: str | None = None
        self._handler = RequestReplyHandler(functions)
        self._notify = notify
        self._notify_pending = False
        self._closed = False
        self._running: set[concurrent.futures.Future[None]] = set()

    def submit(self, call_id: int, endpoint: object, url: str, body: bytes) -> None:
        """Invoke the function with the request ``body`` on the function loop (returns at once)."""
        if self._closed:
            raise RuntimeError("EmbeddedCaller is closed")
        future = asyncio.run_coroutine_threadsafe(self._call(call_id, body), function_loop())
        self._running.add(future)
        future.add_done_callback(self._running.discard)

    async def _call(self, call_id: int, body: bytes) -> None:
        try:
            reply = await self._handler.handle_async(body)
        except Exception as exc:  # the function's error, reported on the mailbox thread
            result = CallResult(call_id, None, f"{type(exc).__name__}: {exc}", 1, None, exception=exc)
        else:
            result = CallResult(call_id, reply, None, 1, 200)
        self.completions.put(result)
        if not self._closed and not self._notify_pending:
            self._notify_pending = True
            self._notify()

    def rearm_notify(self) -> None:
        """The consumer is about to take :attr:`completions`: the next reply notifies again."""
        self._notify_pending = False

    def close(self) -> None:
        """Cancel the invocations still running (their replies are dropped); idempotent."""
        self._closed = True
        for future in list(self._running):
            future.cancel()
