"""Helpers for testing stateful functions without an engine or a network.

* :class:`RequestBuilder` builds a ``ToFunction`` request like a StateFun runtime would;
  :func:`parse_response` decodes the reply and :func:`round_trip` does both around a
  :class:`~statefun_api.handler.RequestReplyHandler`.
* :func:`run_function` invokes a function directly with Python-valued state and returns a
  :class:`FunctionRun` listing what it sent and its state afterwards.
* :class:`FunctionServer` serves a request-reply handler (ours, or the official SDK's
  ``statefun.RequestReplyHandler``) over HTTP on localhost in a background thread, to test
  remote functions end to end (needs aiohttp).

Example:
    >>> from raystream.statefun_api import StatefulFunctions, ValueSpec, IntType, message_builder
    >>> functions = StatefulFunctions()
    >>> @functions.bind("com.example/counter", specs=[ValueSpec("seen", IntType)])
    ... def counter(context, message):
    ...     context.storage.seen = (context.storage.seen or 0) + 1
    >>> msg = message_builder("com.example/counter", "a", str_value="hi")
    >>> run_function(functions, "com.example/counter", "a", [msg], state={"seen": 4}).state
    {'seen': 5}
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from raystream.statefun_api.address import Address
from raystream.statefun_api.effects import DelayedMessage, InvocationResult, OutgoingMessage
from raystream.statefun_api.functions import StatefulFunctions
from raystream.statefun_api.handler import RequestReplyHandler
from raystream.statefun_api.invocation import Invocation, invoke
from raystream.statefun_api.messages import EgressMessage, Message
from raystream.statefun_api.reqreply import (
    FromFunction,
    ToFunction,
    decode_from_function,
    encode_to_function,
)
from raystream.statefun_api.server import aiohttp_web
from raystream.statefun_api.types import Type, to_typed_value

__all__ = ["RequestBuilder", "parse_response", "round_trip", "run_function", "FunctionRun", "FunctionServer", "free_port"]


def _address(value: Address | tuple[str, str] | tuple[str, str, str]) -> Address:
    if isinstance(value, Address):
        return value
    if len(value) == 2:
        return Address.of(value[0], value[1])  # type: ignore[misc]
    return Address(*value)  # type: ignore[misc]


class RequestBuilder:
    """Builds a ``ToFunction`` invocation request, step by step (each step returns a copy).

    Example:
        >>> from raystream.statefun_api import IntType, StringType
        >>> req = (RequestBuilder("com.example/f", "1")
        ...        .with_state("seen", 3, IntType)
        ...        .with_state("name")
        ...        .with_invocation("hi", StringType, caller=("com.example/g", "2")))
        >>> len(req.build().invocation.invocations)
        1
    """

    __slots__ = ("_target", "_state", "_invocations")

    def __init__(
        self,
        typename: str,
        id: str,
        *,
        _state: tuple[ToFunction.PersistedValue, ...] = (),
        _invocations: tuple[ToFunction.Invocation, ...] = (),
    ) -> None:
        self._target = Address.of(typename, id)
        self._state = _state
        self._invocations = _invocations

    def _with(self, **changes: Any) -> RequestBuilder:
        return RequestBuilder(
            self._target.typename,
            self._target.id,
            _state=changes.get("state", self._state),
            _invocations=changes.get("invocations", self._invocations),
        )

    def with_state(self, name: str, value: Any = None, type: Type | None = None) -> RequestBuilder:  # noqa: A002
        """Add a state entry; with ``value=None`` it is sent without a value."""
        if value is None:
            typed = None
        elif type is None:
            raise ValueError(f"with_state({name!r}): pass type= to serialize {value!r}")
        else:
            typed = to_typed_value(type, value)
        return self._with(state=(*self._state, ToFunction.PersistedValue(name, typed)))

    def with_invocation(
        self,
        value: Any,
        type: Type,  # noqa: A002
        caller: Address | tuple[str, str] | tuple[str, str, str] | None = None,
    ) -> RequestBuilder:
        """Add a message carrying ``value`` of ``type``, from ``caller`` (``None``: ingress).

        ``caller`` is an Address, ``(typename, id)`` or ``(namespace, name, id)``.
        """
        invocation = ToFunction.Invocation(
            None if caller is None else _address(caller), to_typed_value(type, value)
        )
        return self._with(invocations=(*self._invocations, invocation))

    def build(self) -> ToFunction:
        """The request object."""
        return ToFunction(
            ToFunction.InvocationBatchRequest(
                self._target, list(self._state), list(self._invocations)
            )
        )

    def to_bytes(self) -> bytes:
        """The encoded request."""
        return encode_to_function(self.build())


def parse_response(data: bytes) -> FromFunction:
    """Decode a ``FromFunction`` reply."""
    return decode_from_function(data)


def round_trip(functions: StatefulFunctions, request: RequestBuilder | ToFunction) -> FromFunction:
    """Encode ``request``, answer it with a RequestReplyHandler, decode the reply."""
    data = request.to_bytes()
    return parse_response(RequestReplyHandler(functions).handle_sync(data))


@dataclass(frozen=True)
class FunctionRun:
    """What a direct invocation produced.

    Attributes:
        result: the raw effects.
        state: the state after the batch, as Python values (absent values omitted).
    """

    result: InvocationResult
    state: dict[str, Any]

    @property
    def sent(self) -> list[OutgoingMessage]:
        """Messages sent with ``context.send``."""
        return self.result.outgoing

    @property
    def delayed(self) -> list[DelayedMessage]:
        """Messages sent with ``context.send_after``."""
        return self.result.delayed

    @property
    def cancellations(self) -> list[str]:
        """Tokens passed to ``context.cancel_delayed_message``."""
        return self.result.cancellations

    @property
    def egress(self) -> list[EgressMessage]:
        """Messages sent with ``context.send_egress``."""
        return self.result.egress


def run_function(
    functions: StatefulFunctions,
    typename: str,
    id: str,
    messages: Iterable[Message | Invocation],
    *,
    state: Mapping[str, Any] | None = None,
) -> FunctionRun:
    """Invoke ``typename``/``id`` directly with Python-valued ``state``.

    ``state`` maps declared spec names to Python values (serialized with the spec's type);
    the returned :class:`FunctionRun` holds the effects and the resulting state.
    """
    target = Address.of(typename, id)
    fn = functions.for_typename(typename)
    specs = {spec.name: spec for spec in fn.specs}
    stored: dict[str, bytes | None] = {}
    for name, value in (state or {}).items():
        if name not in specs:
            raise KeyError(f"{name!r} is not a declared ValueSpec of {typename!r}: {sorted(specs)}")
        stored[name] = None if value is None else specs[name].type.serializer().serialize(value)
    result = invoke(functions, target, stored, list(messages))
    stored.update(result.state_mutations)
    after = {
        name: specs[name].type.serializer().deserialize(data)
        for name, data in stored.items()
        if data is not None
    }
    return FunctionRun(result, after)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for a server started later on a known port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


Handle = Callable[[bytes], Awaitable["bytes | tuple[int, bytes]"]]


class FunctionServer:
    """Serve a request-reply handler over HTTP on ``host:port`` from a daemon thread.

    Every POST path is answered (so any ``urlPathTemplate`` works). ``handler`` is an object
    with ``async handle_async(bytes) -> bytes`` (:class:`~statefun_api.handler.RequestReplyHandler`,
    ``statefun.RequestReplyHandler``) or an async callable ``bytes -> bytes`` that may also
    return ``(status, body)`` to inject HTTP errors. A handler exception answers 500.
    An ``aiohttp.web.Application`` (e.g. the one a StateFun example builds around the
    official SDK) is served as it is, with its own routes.

    Args:
        handler: see above.
        host: interface to bind.
        port: 0 for an ephemeral port (see :attr:`port` after :meth:`start`).

    Example:
        >>> from raystream.statefun_api import StatefulFunctions
        >>> with FunctionServer(RequestReplyHandler(StatefulFunctions())) as server:  # doctest: +SKIP
        ...     url = server.url + "/{function.name}"
    """

    def __init__(self, handler: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._app: Any = None
        if hasattr(handler, "router") and hasattr(handler, "on_startup"):  # an aiohttp web.Application
            self._app, handler = handler, None
        handle = getattr(handler, "handle_async", handler)
        if self._app is None and not callable(handle):
            raise TypeError(
                f"FunctionServer needs a handler with handle_async, an async callable or an aiohttp "
                f"web.Application, got {handler!r}"
            )
        self._handle: Handle = handle
        self.host = host
        self.port = port
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None

    @property
    def url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FunctionServer:
        """Start serving (again on the same port after :meth:`stop`)."""
        aiohttp_web("statefun_api.testing.FunctionServer")
        if self._thread is not None:
            raise RuntimeError("FunctionServer is already running")
        started = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(started, failure), name=f"FunctionServer:{self.port}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def _run(self, started: threading.Event, failure: list[BaseException]) -> None:
        from aiohttp import web

        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)

        async def endpoint(request: Any) -> Any:
            body = await request.read()
            self.requests += 1
            try:
                reply = await self._handle(body)
            except Exception as exc:  # a failing function: 500, the runtime retries
                return web.Response(status=500, text=f"{type(exc).__name__}: {exc}")
            status = 200
            if isinstance(reply, tuple):
                status, reply = reply
            return web.Response(status=status, body=reply, content_type="application/octet-stream")

        async def setup() -> None:
            app = self._app
            if app is None:
                app = web.Application(client_max_size=64 * 1024 * 1024)  # not aiohttp's 1 MiB: batches get big
                app.router.add_post("/{tail:.*}", endpoint)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
            await site.start()
            if not self.port:
                self.port = self._runner.addresses[0][1]

        try:
            loop.run_until_complete(setup())
        except BaseException as exc:
            failure.append(exc)
            started.set()
            loop.close()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent); the port is kept for :meth:`start`."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> FunctionServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
