"""Calling remote functions over StateFun's HTTP request-reply protocol, from the dispatcher.

Two parts with a strict thread split:

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

* :class:`RemoteFunctions` is the per-address state machine, run only on the mailbox
  thread by the :class:`~statefun_api.dispatcher.FunctionDispatcher`:

  - per address at most **one request in flight**; messages arriving meanwhile queue and
    go out as ONE batched request (up to the endpoint's ``max_num_batch_requests``);
  - per subtask at most ``max_concurrent_requests`` requests in flight (and per endpoint
    at most its own ``max_concurrent_requests``, StateFun's ``pool_size``): further ready
    addresses wait in FIFO order, their messages still batching; nothing is dropped;
  - a request carries the address's persisted values (the dispatcher's keyed state);
  - the **missing-state handshake**: a reply with an ``IncompleteInvocationContext``
    registers the missing value specs (name, type, TTL) for the function type and the
    same batch is sent again;
  - an ``InvocationResponse`` is applied as for an embedded function: state mutations,
    outgoing messages (local ones skip the network), delayed messages and cancellations,
    egress. A reply with neither (the official SDK's empty body for a function without
    effects) is an empty ``InvocationResponse``, as on StateFun;
  - :meth:`RemoteFunctions.accepts_input` is False while an address has
    ``max_num_batch_requests`` messages queued (or all remote queues together hold more
    than the dispatcher's ``max_in_flight``): the task then stops taking input, which
    back-pressures the ingress;
  - the in-flight batches and queued messages are operator state: a checkpoint taken while
    a request is in flight holds its messages (their effects are not applied yet), and
    they are sent again after a restore. The remote side sees at-least-once calls;
    raystream's state and egress stay exactly once.

When a call fails for good (retries exhausted, a 4xx other than 429, an oversized reply, a
reply that is not a ``FromFunction``), a :class:`RemoteFunctionError` naming the function,
address, URL, status and a body excerpt fails the job, so the restart strategy fails over
to the last checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checkpoint import StateTtlConfig, ValueStateDescriptor
from statefun_api.address import Address
from statefun_api.endpoints import RemoteEndpoint, resolve_endpoint
from statefun_api.errors import ProtocolError, StatefulFunctionError
from statefun_api.reqreply import (
    FromFunction,
    ToFunction,
    decode_from_function,
    encode_to_function,
    result_from_response,
)
from statefun_api.routing import MessageRecord, message_to_record
from statefun_api.state_layout import value_state_name
from statefun_api.types import TypedValue

if TYPE_CHECKING:
    from statefun_api.dispatcher import FunctionDispatcher

__all__ = ["RemoteCaller", "RemoteFunctions", "CallResult", "RemoteFunctionError", "require_aiohttp"]

log = logging.getLogger(__name__)

_CONTENT_TYPE = "application/octet-stream"
_EXCERPT = 200
_ERROR_BODY_READ = 4096  # bytes of a non-2xx reply read for the error message
_RETRIED_4XX = frozenset({429})  # Too Many Requests: the server asks to come back later


class RemoteFunctionError(StatefulFunctionError):
    """A remote function could not be invoked (the job fails over to its last checkpoint)."""


def require_aiohttp(what: str = "remote stateful functions") -> Any:
    """Import aiohttp or raise an ImportError naming the ``remote`` extra."""
    try:
        import aiohttp
    except ImportError as exc:
        raise ImportError(
            f"{what} need aiohttp: `pip install 'raystream[remote]'` (or `pip install aiohttp`)"
        ) from exc
    return aiohttp


def _excerpt(body: bytes) -> str:
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
    if length is not None and length > limit:
        return None
    buf = bytearray()
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
        self._keepalive_s = keepalive_s
        self._loop = asyncio.new_event_loop()
        self._session: Any = None
        self._closed = False
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
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
        """POST ``body`` to ``url`` (with the endpoint's timeouts and retries) in the background."""
        if self._closed:
            raise RuntimeError("RemoteCaller is closed")
        asyncio.run_coroutine_threadsafe(self._call(call_id, endpoint, url, body), self._loop)

    async def _call(self, call_id: int, ep: RemoteEndpoint, url: str, body: bytes) -> None:
        try:
            result = await self._attempts(call_id, ep, url, body)
        except asyncio.CancelledError:
            raise  # closed: nobody waits for the result
        except Exception as exc:  # never leave the dispatcher waiting for a call that died
            result = CallResult(call_id, None, f"unexpected {type(exc).__name__}: {exc}", 1, None)
        self.completions.put(result)
        if not self._closed:
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
                    last = f"HTTP {status}, body {_excerpt(data)}"
                    if status < 500 and status not in _RETRIED_4XX:  # the request itself is refused
                        return CallResult(
                            call_id,
                            None,
                            f"HTTP {status} (not retried), body {_excerpt(data)}; a {status} reply means the "
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


@dataclass
class _Call:
    call_id: int
    records: list[MessageRecord]
    endpoint: RemoteEndpoint
    url: str
    handshakes: int = 0
    sent_state: frozenset[str] = frozenset()  # the value names the last request carried


class RemoteFunctions:
    """The remote functions of one dispatcher subtask (mailbox thread only; see module docstring).

    Args:
        dispatcher: the owning dispatcher (for state, routing, egress and counters).
        endpoints: the declared endpoints.
    """

    def __init__(self, dispatcher: FunctionDispatcher, endpoints: Iterable[RemoteEndpoint]) -> None:
        self.d = dispatcher
        self.endpoints = list(endpoints)
        self._types: dict[str, RemoteEndpoint | None] = {}
        self._queues: dict[tuple[str, str], deque[MessageRecord]] = {}
        self._inflight: dict[tuple[str, str], _Call] = {}
        self._by_id: dict[int, tuple[str, str]] = {}  # call id -> address of the call in flight
        # addresses with queued messages and no call, in the order they became ready
        self._ready: OrderedDict[tuple[str, str], None] = OrderedDict()
        # addresses held back because their endpoint has max_concurrent_requests in flight
        self._parked: dict[RemoteEndpoint, deque[tuple[str, str]]] = {}
        self._parked_keys: set[tuple[str, str]] = set()
        self._per_endpoint: dict[RemoteEndpoint, int] = {}  # requests in flight per endpoint
        self._full: set[tuple[str, str]] = set()
        self._queued = 0
        # typename -> spec name -> (ValueState, spec typename), registered by handshakes
        self._specs: dict[str, dict[str, tuple[Any, str]]] = {}
        self._caller: RemoteCaller | None = None
        self._next_id = 0
        self._closed = False
        self.requests = 0
        self.handshakes = 0

    # ------------------------------------------------------------------ queries
    def endpoint_for(self, typename: str) -> RemoteEndpoint | None:
        """The endpoint serving ``typename`` (cached), or None."""
        try:
            return self._types[typename]
        except KeyError:
            ep = self._types[typename] = resolve_endpoint(self.endpoints, typename)
            return ep

    def is_idle(self) -> bool:
        """No call in flight and no message queued."""
        return not self._inflight and not self._queued

    def in_flight(self) -> int:
        """Requests in flight."""
        return len(self._inflight)

    def queued(self) -> int:
        """Messages queued behind requests in flight (or not sent yet)."""
        return self._queued

    def accepts_input(self) -> bool:
        """False while an address's queue is full or all queues exceed ``max_in_flight``."""
        return not self._full and self._queued <= self.d.config.max_in_flight

    @property
    def has_ready(self) -> bool:
        return bool(self._ready)

    # ------------------------------------------------------------------ queueing
    def enqueue(self, key: tuple[str, str], record: MessageRecord, endpoint: RemoteEndpoint) -> None:
        """Queue a message to the remote address ``key``; it goes out with the next request."""
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = deque()
        q.append(record)
        self._queued += 1
        if len(q) >= endpoint.max_num_batch_requests:
            self._full.add(key)
        if key not in self._inflight and key not in self._parked_keys:
            self._ready[key] = None

    def pending_records(self) -> list[MessageRecord]:
        """In-flight batches then queued messages, per address in order (for snapshots)."""
        out: list[MessageRecord] = []
        for key, call in self._inflight.items():
            out.extend(call.records)
            out.extend(self._queues.get(key, ()))
        for key, q in self._queues.items():
            if key not in self._inflight:
                out.extend(q)
        return out

    def send_ready(self) -> None:
        """Send one request to each ready address (queued messages, no call in flight), in
        the order they became ready, while fewer than ``max_concurrent_requests`` requests
        are in flight; the others wait, and their messages keep batching."""
        limit = self.d.config.max_concurrent_requests
        ready, inflight = self._ready, self._inflight
        while ready and len(inflight) < limit:
            key, _ = ready.popitem(last=False)
            if key in inflight:
                continue
            q = self._queues.get(key)
            if not q:
                continue
            ep = self.endpoint_for(key[0])
            assert ep is not None
            cap = ep.max_concurrent_requests
            if cap is not None and self._per_endpoint.get(ep, 0) >= cap:
                self._parked.setdefault(ep, deque()).append(key)
                self._parked_keys.add(key)
                continue
            n = min(len(q), ep.max_num_batch_requests)
            records = [q.popleft() for _ in range(n)]
            self._queued -= n
            if len(q) < ep.max_num_batch_requests:
                self._full.discard(key)
            if not q:
                del self._queues[key]
            self._per_endpoint[ep] = self._per_endpoint.get(ep, 0) + 1
            self._send(key, _Call(0, records, ep, ep.url_for(key[0])))

    def _finished(self, key: tuple[str, str], call: _Call) -> None:
        """The call of ``key`` is over: free its request slot and let the next address go."""
        del self._inflight[key]
        ep = call.endpoint
        self._per_endpoint[ep] -= 1
        parked = self._parked.get(ep)
        if parked:  # one slot of this endpoint is free: its longest-waiting address goes first
            first = parked.popleft()
            self._parked_keys.discard(first)
            if not parked:
                del self._parked[ep]
            self._ready[first] = None
            self._ready.move_to_end(first, last=False)
        if key in self._queues:
            self._ready[key] = None

    def _send(self, key: tuple[str, str], call: _Call) -> None:
        if self._caller is None:
            post = self.d.ctx.post
            if post is None:
                raise RemoteFunctionError(
                    "remote functions need a task mailbox (OperatorContext.post) to receive replies on; "
                    "run the dispatcher in a raystream task or statefun_api.local.LocalDispatchers"
                )
            keepalive = max(ep.pool_ttl_s for ep in self.endpoints)
            self._caller = RemoteCaller(
                lambda: post(self.on_completions), name=f"raystream-statefun-remote {self.d.ctx.task_name}", keepalive_s=keepalive
            )
        self._next_id += 1
        self._by_id.pop(call.call_id, None)  # a resent batch (handshake) gets a new id
        call.call_id = self._next_id
        self._inflight[key] = call
        self._by_id[call.call_id] = key
        request = self._request(key, call.records)
        call.sent_state = frozenset(pv.state_name for pv in request.invocation.state)  # type: ignore[union-attr]
        body = encode_to_function(request)
        self.requests += 1
        self._caller.submit(call.call_id, call.endpoint, call.url, body)

    def _request(self, key: tuple[str, str], records: list[MessageRecord]) -> ToFunction:
        typename, fid = key
        batch = ToFunction.InvocationBatchRequest(target=self._address(key))
        specs = self._specs.get(typename)
        if specs:
            self.d._set_key(key)
            for name, (st, spec_typename) in specs.items():
                tv = st.value()
                if tv is None or not tv.has_value:
                    tv = TypedValue(spec_typename, False, b"")
                batch.state.append(ToFunction.PersistedValue(name, tv))
        callers = self.d._callers
        for r in records:
            caller = None
            if r[2]:
                caller = callers.get((r[2], r[3])) or Address.of(r[2], r[3])
            batch.invocations.append(ToFunction.Invocation(caller, TypedValue(r[4], r[6], r[5])))
        return ToFunction(batch)

    def _address(self, key: tuple[str, str]) -> Address:
        address = self.d._callers.get(key)
        if address is None:
            address = self.d._callers[key] = Address.of(key[0], key[1])
        return address

    # ------------------------------------------------------------------ replies (mailbox thread)
    def on_completions(self) -> None:
        """Posted by the I/O thread: apply every finished call, then continue the dispatcher's work."""
        if self._closed:
            return
        d = self.d
        try:
            self.apply_completions()
            d._drain(d.config.drain_step)
            d._flush()
        except Exception as exc:
            raise d._job_failed(exc) from exc
        d._schedule_continuation()

    def apply_completions(self, block_s: float | None = None) -> int:
        """Apply the finished calls; with ``block_s``, wait up to that long for the first one."""
        caller = self._caller
        if caller is None:
            return 0
        n = 0
        while True:
            try:
                if block_s is not None and n == 0:
                    result = caller.completions.get(timeout=block_s)
                else:
                    result = caller.completions.get_nowait()
            except queue.Empty:
                return n
            n += 1
            self._complete(result)

    def _complete(self, result: CallResult) -> None:
        key = self._by_id.pop(result.call_id, None)
        if key is None:
            return  # not (or no longer) in flight: ignore
        call = self._inflight[key]
        address = self._address(key)
        if result.attempts > 1:
            self.d.counters["remote_retries"] += result.attempts - 1
        where = f"remote function {key[0]!r} at {call.url!r} (address {address}, {len(call.records)} message(s))"
        if result.error is not None:
            raise RemoteFunctionError(f"{where} failed: {result.error}", address=address, message_typename=call.records[0][4])
        try:
            reply = decode_from_function(result.body or b"")
        except ProtocolError as exc:
            raise RemoteFunctionError(
                f"{where} answered HTTP {result.status} with a body that is not a StateFun FromFunction "
                f"({exc}); body {_excerpt(result.body or b'')}. Does the URL point at a StateFun "
                f"request-reply endpoint?",
                address=address,
                message_typename=call.records[0][4],
            ) from exc
        if reply.incomplete_invocation_context is not None:
            self._handshake(key, call, reply.incomplete_invocation_context, where)
            return
        # no invocation result (the official SDK's empty body when the function had no
        # effects): an empty InvocationResponse, as StateFun's RequestReplyFunction reads it
        response = reply.invocation_result or FromFunction.InvocationResponse()
        self._finished(key, call)
        self._apply(key, address, call, response, where)

    def _handshake(self, key: tuple[str, str], call: _Call, context: FromFunction.IncompleteInvocationContext, where: str) -> None:
        """Register the missing value specs for the function type and send the same batch again."""
        typename = key[0]
        specs = self._specs.setdefault(typename, {})
        mode = FromFunction.ExpirationSpec.ExpireMode
        new = []
        for missing in context.missing_values:
            name = missing.state_name
            if not name:
                raise RemoteFunctionError(f"{where} reported a missing value without a name: {missing!r}")
            if name in call.sent_state:
                continue
            new.append(name)
            if name in specs:  # registered by the handshake of another address meanwhile
                continue
            ttl = None
            exp = missing.expiration_spec
            if exp is not None and exp.mode != mode.NONE and exp.expire_after_millis > 0:
                update = "on_read_and_write" if exp.mode == mode.AFTER_INVOKE else "on_create_and_write"
                ttl = StateTtlConfig(int(exp.expire_after_millis), update_type=update)
            st = self.d.backend.get_state(ValueStateDescriptor(value_state_name(typename, name), ttl=ttl))
            specs[name] = (st, missing.type_typename)
        if not new:
            names = [m.state_name for m in context.missing_values]
            raise RemoteFunctionError(
                f"{where} reported missing values {names} that were already sent with the request; "
                f"the function keeps rejecting its state (handshake round {call.handshakes + 1})",
                address=self._address(key),
            )
        self.handshakes += 1
        self.d.counters["remote_handshakes"] += 1
        call.handshakes += 1
        self._send(key, call)

    def _apply(self, key: tuple[str, str], address: Address, call: _Call, response: FromFunction.InvocationResponse, where: str) -> None:
        d = self.d
        records = call.records
        try:
            result = result_from_response(address, response)
        except ProtocolError as exc:
            raise RemoteFunctionError(f"{where} sent an invalid reply: {exc}", address=address) from exc
        d._set_key(key)
        if response.state_mutations:
            specs = self._specs.get(key[0], {})
            mt = FromFunction.PersistedValueMutation.MutationType
            for m in response.state_mutations:
                entry = specs.get(m.state_name)
                if entry is None:
                    raise RemoteFunctionError(
                        f"{where} changed value {m.state_name!r}, which it never declared (declared: "
                        f"{sorted(specs) or 'none'})",
                        address=address,
                    )
                if m.mutation_type == mt.DELETE:
                    entry[0].clear()
                else:
                    tv = m.state_value
                    assert tv is not None  # result_from_response checked MODIFY has a value
                    entry[0].update(TypedValue(tv.typename or entry[1], True, tv.value))
        for out in result.outgoing:
            d._route(message_to_record(out.message, out.caller))
        if result.delayed_actions:
            d._apply_delayed(key, address, result)
        egress = d._egress_of(address, records, result)
        for tag, value in egress:
            d._egress_out.setdefault(tag, []).append(value)
        counters = d.counters
        counters["invocations"] += 1
        counters["messages"] += len(records)
        counters["remote_requests"] += 1
        counters["egress_messages"] += len(egress)

    # ------------------------------------------------------------------ lifecycle
    def wait_idle(self, poll_s: float = 0.5) -> None:
        """Block (mailbox thread, end of input only) until every call and queued message is done."""
        d = self.d
        while not self.is_idle() or d._pending_count:
            d._drain(d.config.drain_step)
            d._flush()  # sends ready addresses
            if self._inflight:
                self.apply_completions(block_s=poll_s)

    def close(self) -> None:
        """Stop the I/O thread; replies still on their way are dropped."""
        self._closed = True
        if self._caller is not None:
            self._caller.close()
            self._caller = None
