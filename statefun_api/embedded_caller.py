"""Embedded ``async def`` functions, invoked concurrently across addresses like remote ones.

An async function registered in the job's :class:`~statefun_api.functions.StatefulFunctions`
runs on the process's function loop (:func:`~statefun_api.invocation.function_loop`). Its
messages go through :class:`~statefun_api.remote.RemoteFunctions`, the per-address state
machine that calls remote functions, so it gets the same guarantees: one invocation in
flight per address (messages that arrive meanwhile batch into the next one, in order), up
to the job's ``max_concurrent_requests`` in flight per subtask, the in-flight batches in
every checkpoint (invoked again after a restore), back-pressure on the ingress. Only the
transport differs: :class:`EmbeddedCaller` runs the invocation on the function loop instead
of sending it over HTTP, and nothing is encoded on the way: the function gets the messages
and its stored values as the dispatcher holds them (decoded built-in values stay decoded),
and its storage changes come back as Python values, as for a sync function.

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
import queue
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raystream.statefun_api.address import Address
from raystream.statefun_api.effects import InvocationResult
from raystream.statefun_api.functions import StatefulFunction
from raystream.statefun_api.invocation import function_loop, invoke_prepared_async
from raystream.statefun_api.messages import Message
from raystream.statefun_api.storage import AddressScopedStorage

__all__ = ["EmbeddedEndpoint", "EmbeddedCaller", "EmbeddedResult"]


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


@dataclass
class EmbeddedResult:
    """The outcome of one embedded invocation (queued with the HTTP caller's ``CallResult``).

    Attributes:
        call_id: the id given to :meth:`EmbeddedCaller.submit`.
        result: the invocation's effects (``None`` when it failed).
        storage: the storage the function ran with: its changes are read from it.
        exception: the invocation's error (naming the address and message), else ``None``.
    """

    call_id: int
    result: InvocationResult | None
    storage: AddressScopedStorage | None
    exception: BaseException | None = None


class EmbeddedCaller:
    """The caller of :class:`~statefun_api.remote.RemoteFunctions` for embedded async
    functions: :meth:`submit` runs one invocation on the function loop and queues its
    :class:`EmbeddedResult` on :attr:`completions`, calling ``notify()`` once per burst of
    results (until :meth:`rearm_notify`), as :class:`~statefun_api.http_caller.RemoteCaller`
    does. A failed invocation is not retried.

    Example:
        >>> caller = EmbeddedCaller(notify=lambda: None)
        >>> caller.completions.empty(), caller.last_retry
        (True, None)
        >>> caller.close()
    """

    def __init__(self, notify: Callable[[], None], completions: queue.SimpleQueue[Any] | None = None) -> None:
        #: finished invocations (``completions``: a queue shared with the HTTP caller)
        self.completions: queue.SimpleQueue[Any] = queue.SimpleQueue() if completions is None else completions
        #: (the HTTP caller's retry report; an embedded invocation is never retried)
        self.last_retry: str | None = None
        self._notify = notify
        self._notify_pending = False
        self._closed = False
        self._loop = function_loop()
        # submitted, not started: the loop takes them all at once (one wake-up per burst)
        self._outbox: deque[tuple[int, tuple[Any, ...]]] = deque()
        self._scheduled = False  # a _start_submitted is on its way to the loop
        self._running: set[asyncio.Task[None]] = set()  # (touched on the loop's thread only)

    def submit(
        self,
        call_id: int,
        fn: StatefulFunction,
        target: Address,
        storage: AddressScopedStorage,
        messages: list[Message],
        callers: list[Address | None],
    ) -> None:
        """Invoke ``fn`` at ``target`` with ``messages`` (sent by ``callers``) and a storage
        of its own, on the function loop (returns at once)."""
        if self._closed:
            raise RuntimeError("EmbeddedCaller is closed")
        self._outbox.append((call_id, (fn, target, storage, messages, callers)))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._start_submitted)

    def _start_submitted(self) -> None:
        """On the loop: start every submitted invocation as a task."""
        self._scheduled = False  # (before taking: a submit from now on schedules again)
        outbox, running = self._outbox, self._running
        while outbox:
            if self._closed:
                outbox.clear()
                return
            task = self._loop.create_task(self._call(*outbox.popleft()))
            running.add(task)
            task.add_done_callback(running.discard)

    async def _call(self, call_id: int, invocation: tuple[Any, ...]) -> None:
        """Run one submitted invocation (the arguments of :meth:`submit` after ``call_id``)."""
        try:
            result = await invoke_prepared_async(*invocation)
        except Exception as exc:  # the invocation's error, raised on the mailbox thread
            out = EmbeddedResult(call_id, None, None, exc)
        else:
            out = EmbeddedResult(call_id, result, invocation[2])
        self.completions.put(out)
        if not self._closed and not self._notify_pending:
            self._notify_pending = True
            self._notify()

    def rearm_notify(self) -> None:
        """The consumer is about to take :attr:`completions`: the next result notifies again."""
        self._notify_pending = False

    def close(self) -> None:
        """Cancel the invocations still running (their results are dropped); idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.call_soon_threadsafe(self._cancel_running)
        except RuntimeError:  # the loop is closed (the interpreter is exiting): nothing runs
            pass

    def _cancel_running(self) -> None:
        for task in list(self._running):
            task.cancel()
