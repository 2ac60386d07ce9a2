"""Calling remote functions over StateFun's HTTP request-reply protocol, from the dispatcher.

Two parts with a strict thread split:

* :class:`~statefun_api.http_caller.RemoteCaller` (in :mod:`statefun_api.http_caller`)
  owns the I/O: an HTTP/1.1 client on an event loop in a daemon thread, with the call
  timeout, retries, backoff and the response size limit. It never touches dispatcher state.
* :class:`RemoteFunctions` is the per-address state machine, run only on the mailbox
  thread by the :class:`~statefun_api.dispatcher.FunctionDispatcher`:

  - per address at most **one request in flight**; messages arriving meanwhile queue and
    go out as ONE batched request (up to the endpoint's ``max_num_batch_requests``);
  - a batch the server refuses for its size (HTTP 413) is **split**: the endpoint's
    requests are kept below half the size of the smallest one refused from then on (per
    subtask: a batch above it is cut, in order, to the messages that stay below, the rest
    going next), and the refused messages go again at once; so the same messages succeed
    whether they arrived one by one or in a burst, and small messages still batch; a single
    message refused with 413 fails the call;
  - per subtask at most ``max_concurrent_requests`` requests in flight (and per endpoint
    at most its own ``max_concurrent_requests``, StateFun's ``pool_size``): further ready
    addresses wait in FIFO order, their messages still batching; nothing is dropped;
  - a request carries the address's persisted values (the dispatcher's keyed state);
  - the **missing-state handshake**: a reply with an ``IncompleteInvocationContext``
    registers the missing value specs (name, type, TTL) for the function type and the
    same batch is sent again. Until the first reply of a function type has come, only
    one request of that type is out: the other addresses wait for it (their messages
    batching) and then go with their state, instead of all being refused once;
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

Embedded ``async def`` functions go through the same state machine
(:mod:`statefun_api.embedded_caller`): their "endpoint" is an :class:`EmbeddedEndpoint` and
their caller runs the invocation on the function loop, with the values as the dispatcher
holds them (nothing encoded), so they get the same per-address order, caps, back-pressure
and checkpointing as remote functions.

When a call fails for good (retries exhausted, a 4xx other than 408 and 429 (and than a 413 for a
batch of several messages, which is split), an oversized reply, a
reply that is not a ``FromFunction``), a :class:`RemoteFunctionError` naming the function,
address, URL, status and a body excerpt fails the job, so the restart strategy fails over
to the last checkpoint. A failed call (that one, an embedded function's error, a reply whose
effects cannot be applied) is all or nothing: none of its effects are applied and its
messages go back to the head of the address's queue, so a dispatcher that goes on after the
failure (in-process) sends them again first, and nothing else until they succeed.
"""

from __future__ import annotations

import queue
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from raystream.checkpoint import StateTtlConfig, ValueStateDescriptor
from raystream.engine.errors import UserCodeError
from raystream.statefun_api._reqreply_pb import (
    DELETE,
    MODIFY,
    DecodeError,
    FromFunctionPb,
)
from raystream.statefun_api.address import Address
from raystream.statefun_api.effects import (
    DelayedCancellation,
    DelayedMessage,
    InvocationResult,
    OutgoingMessage,
)
from raystream.statefun_api.embedded_caller import EmbeddedCaller, EmbeddedEndpoint, EmbeddedResult
from raystream.statefun_api.endpoints import RemoteEndpoint, resolve_endpoint
from raystream.statefun_api.errors import ProtocolError, StatefulFunctionError
from raystream.statefun_api.http_caller import CallResult, RemoteCaller, excerpt, redacted
from raystream.statefun_api.messages import EgressMessage, Message
from raystream.statefun_api.reqreply import FromFunction, decode_from_function, egress_argument
from raystream.statefun_api.request_encoder import RequestEncoder, StateEntry
from raystream.statefun_api.routing import (
    VALUE_TYPENAME,
    MessageRecord,
    describe_records,
)
from raystream.statefun_api.state_layout import value_state_name
from raystream.statefun_api.storage import dirty_values
from raystream.statefun_api.types import TypedValue, builtin_type

__all__ = ["RemoteCaller", "RemoteFunctions", "InvocationHost", "CallResult", "RemoteFunctionError"]

Endpoint = RemoteEndpoint | EmbeddedEndpoint
"""Where the messages of a function type go: an HTTP endpoint, or an embedded async function."""


class InvocationHost(Protocol):
    """What :class:`RemoteFunctions` uses of the runtime that owns it (the
    :class:`~statefun_api.dispatcher.FunctionDispatcher`), all on the mailbox thread.

    Attributes:
        backend: the keyed state backend holding the functions' values.
        counters: the runtime's metrics (``remote_retries``, ``remote_handshakes`` and
            ``remote_requests`` are added to).
    """

    @property
    def backend(self) -> Any: ...

    @property
    def counters(self) -> MutableMapping[str, int]: ...

    def address_of(self, key: tuple[str, str]) -> Address:
        """The (shared) address of ``key``."""

    def set_current_address(self, key: tuple[str, str]) -> None:
        """Make ``key`` the backend's current key."""

    def apply_result(
        self,
        key: tuple[str, str],
        records: list[MessageRecord],
        result: InvocationResult,
        state_changes: Iterable[tuple[Any, TypedValue | None]] = (),
    ) -> None:
        """Apply an invocation's effects (state, messages, delayed messages, egress)."""

    def embedded_invocation(self, key: tuple[str, str], records: list[MessageRecord]) -> tuple[Any, ...]:
        """``(function, address, storage, messages, callers)`` to invoke the embedded async
        function at ``key`` with ``records``: a storage of its own holding the address's
        current values (for :meth:`EmbeddedCaller.submit`)."""


class RemoteFunctionError(StatefulFunctionError):
    """A remote function could not be invoked (the job fails over to its last checkpoint)."""


def _stored_type_changed(
    address: Address, name: str, declared: str, stored: str, records: list[MessageRecord]
) -> RemoteFunctionError:
    """The error of an address whose stored value has another type than the one its remote
    function declares (the spec changed since the checkpoint or savepoint the job restored):
    raised before the request is sent, since no retry can make the function accept it."""
    return RemoteFunctionError(
        f"cannot load the state of {address} for remote function {address.typename!r}: state {name!r} is "
        f"declared as {declared!r} (by the function's ValueSpec) but the stored value has type {stored!r}, "
        f"as written before the function changed; keep the old type, or declare the value under a new "
        f"name (and delete the old one) to start it afresh",
        address=address,
        message_typename=records[0][VALUE_TYPENAME] if records else None,
    )


class _Slot:
    """What :class:`RemoteFunctions` keeps per endpoint: its requests in flight, the addresses
    parked behind its ``max_concurrent_requests``, and the request size it refused (HTTP 413).
    Calls and function types hold their endpoint's slot, so nothing hashes the endpoint (a
    frozen dataclass of 16 fields) per request."""

    __slots__ = ("endpoint", "embedded", "in_flight", "parked", "request_limit")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.embedded = type(endpoint) is EmbeddedEndpoint
        self.in_flight = 0  # requests (or embedded invocations) in flight
        self.parked: deque[tuple[str, str]] = deque()  # addresses waiting for a free slot, in order
        # half the size of the smallest request the endpoint refused with HTTP 413 (a batch of
        # several messages): requests to it are cut to stay below that
        self.request_limit: int | None = None


_TYPE_CACHE = 1024  # function types whose endpoint slot and URL are kept (cleared when full)


@dataclass
class _Call:
    call_id: int
    records: list[MessageRecord]
    endpoint: Endpoint
    url: str
    slot: _Slot
    handshakes: int = 0
    sent_state: frozenset[str] = frozenset()  # the value names the last request carried
    size: int = 0  # bytes of the last request


class RemoteFunctions:
    """The remote functions of one dispatcher subtask (mailbox thread only; see module docstring).

    Args:
        host: the owning runtime (keyed state, applying results, counters).
        endpoints: the declared endpoints.
        max_in_flight: queued messages (all addresses) above which input is refused.
        max_concurrent_requests: requests in flight at once.
        wake: called (from the I/O thread) when replies are ready: it must arrange for
            :meth:`apply_completions` to run on the mailbox thread; ``None``: no mailbox,
            sending fails with a clear error.
        name: the I/O thread's name.
    """

    def __init__(
        self,
        host: InvocationHost,
        endpoints: Iterable[Endpoint],
        *,
        max_in_flight: int,
        max_concurrent_requests: int,
        wake: Callable[[], None] | None,
        name: str = "raystream-statefun-remote",
    ) -> None:
        self.host = host
        self.endpoints = list(endpoints)
        self.max_in_flight = max_in_flight
        self.max_concurrent_requests = max_concurrent_requests
        self._wake = wake
        self._name = name
        self._types: dict[str, Endpoint | None] = {}
        self._queues: dict[tuple[str, str], deque[MessageRecord]] = {}
        self._inflight: dict[tuple[str, str], _Call] = {}
        self._records_inflight = 0  # messages in the calls of _inflight (kept, not summed per query)
        self._by_id: dict[int, tuple[str, str]] = {}  # call id -> address of the call in flight
        # addresses with queued messages and no call, in the order they became ready
        self._ready: OrderedDict[tuple[str, str], None] = OrderedDict()
        # per endpoint (by identity; the endpoint is held by its slot): requests in flight,
        # addresses held back behind its max_concurrent_requests, its HTTP 413 request limit
        self._slots: dict[int, _Slot] = {}
        # function type -> (its endpoint's slot, its URL), for the types met (bounded)
        self._type_slots: dict[str, tuple[_Slot, str]] = {}
        self._embedded_inflight = 0  # calls of _inflight to embedded async functions
        self._parked_keys: set[tuple[str, str]] = set()
        # function types whose first request is out and not answered yet -> the addresses
        # of that type waiting for its answer (which tells the type's value specs)
        self._probing: dict[str, deque[tuple[str, str]]] = {}
        self._full: set[tuple[str, str]] = set()
        self._queued = 0
        # addresses whose last call failed, in the order they failed: they go again first and
        # alone (send_ready) until their call succeeds (a dispatcher that goes on: in-process)
        self._failed: dict[tuple[str, str], None] = {}
        # typename -> spec name -> (ValueState, spec typename), registered by handshakes
        self._specs: dict[str, dict[str, tuple[Any, str]]] = {}
        self._caller: RemoteCaller | None = None
        # embedded async functions (EmbeddedEndpoint): invoked on the function loop
        self._embedded: EmbeddedCaller | None = None
        self._completions: queue.SimpleQueue[CallResult | EmbeddedResult] = queue.SimpleQueue()  # both callers'
        self._encoder = RequestEncoder(host.address_of)
        self._next_id = 0
        self._closed = False
        #: calls whose replies (or failures) were applied so far: a waiter's sign of progress
        self.completed = 0
        self.requests = 0
        self.handshakes = 0
        #: batches the server refused for their size (HTTP 413) and that were sent again in parts
        self.splits = 0

    # ------------------------------------------------------------------ queries
    def endpoint_for(self, typename: str) -> Endpoint | None:
        """The endpoint serving ``typename`` (cached), or None."""
        try:
            return self._types[typename]
        except KeyError:
            ep = self._types[typename] = resolve_endpoint(self.endpoints, typename)
            return ep

    def is_idle(self) -> bool:
        """No call in flight and no message queued."""
        return not self._inflight and not self._queued

    def last_retry(self) -> str | None:
        """The last failed attempt of a call being retried (see ``RemoteCaller.last_retry``)."""
        return None if self._caller is None else self._caller.last_retry

    def register_specs(self, typename: str, specs: dict[str, tuple[Any, str]]) -> None:
        """Declare the values of function type ``typename`` up front (name -> (its
        ``ValueState``, the spec's typename)), as the missing-state handshake would: requests
        carry them from the first one (the dispatcher does this for embedded functions)."""
        self._specs[typename] = dict(specs)

    def in_flight(self) -> int:
        """Requests in flight."""
        return len(self._inflight)

    def embedded_in_flight(self) -> int:
        """Invocations of embedded async functions in flight."""
        return self._embedded_inflight

    def retrying(self) -> bool:
        """A failed call is queued again or in flight again (see :meth:`_failed_call`):
        nothing else is sent until it succeeds."""
        return bool(self._failed)

    def retries_in_flight(self) -> int:
        """Calls in flight that invoke the messages of a failed call again."""
        return sum(1 for key in self._failed if key in self._inflight)

    def retry_ready(self) -> bool:
        """A failed call waits to be sent again (by :meth:`send_ready`)."""
        return any(key in self._ready for key in self._failed)

    def has_completions(self) -> bool:
        """Finished calls wait for :meth:`apply_completions`."""
        return not self._completions.empty()

    def records_in_flight(self) -> int:
        """Messages in the requests in flight."""
        return self._records_inflight

    def queued(self) -> int:
        """Messages queued behind requests in flight (or not sent yet)."""
        return self._queued

    def accepts_input(self) -> bool:
        """False while an address's queue is full or all queues exceed ``max_in_flight``."""
        return not self._full and self._queued <= self.max_in_flight

    @property
    def has_ready(self) -> bool:
        return bool(self._ready)

    # ------------------------------------------------------------------ queueing
    def enqueue(self, key: tuple[str, str], record: MessageRecord, endpoint: Endpoint) -> None:
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
        are in flight; the others wait, and their messages keep batching. While a failed
        call is to be invoked again (:meth:`retrying`), only the failed calls are sent."""
        limit = self.max_concurrent_requests
        ready, inflight = self._ready, self._inflight
        if self._failed:
            for key in [k for k in self._failed if k in ready]:
                if len(inflight) >= limit:
                    return
                del ready[key]
                self._send_queued(key)
            return
        while ready and len(inflight) < limit:
            key, _ = ready.popitem(last=False)
            self._send_queued(key)

    def _send_queued(self, key: tuple[str, str]) -> None:
        """Send the queued messages of the ready address ``key`` (taken off the ready
        addresses) as one request, or park it: behind the first request of its function type,
        or behind its endpoint's ``max_concurrent_requests``."""
        if key in self._inflight:
            return
        q = self._queues.get(key)
        if not q:
            return
        typename = key[0]
        probe = typename not in self._specs  # the type's value specs are not known yet
        if probe:
            waiting = self._probing.get(typename)
            if waiting is not None:  # its first request is out: wait for what it tells
                waiting.append(key)
                self._parked_keys.add(key)
                return
        target = self._type_slots.get(typename)
        if target is None:
            target = self._type_slot(typename)
        slot = target[0]
        ep = slot.endpoint
        cap = ep.max_concurrent_requests
        if cap is not None and slot.in_flight >= cap:
            # (not yet the type's first request: one parked here never waits behind itself)
            slot.parked.append(key)
            self._parked_keys.add(key)
            return
        if probe:  # this request is the type's first: the type's other addresses wait for its reply
            self._probing[typename] = deque()
        n = len(q)
        if n <= ep.max_num_batch_requests:  # (the usual case: all of them, no pop per message)
            records = list(q)
            del self._queues[key]
            self._full.discard(key)
        else:
            n = ep.max_num_batch_requests
            records = [q.popleft() for _ in range(n)]
            if len(q) < n:
                self._full.discard(key)
        self._queued -= n
        slot.in_flight += 1
        call = _Call(0, records, ep, target[1], slot)
        try:
            self._send(key, call)
        except Exception:  # (an embedded function's stored value that does not load)
            if self._inflight.get(key) is not call:  # (failed before it was in flight)
                slot.in_flight -= 1
            self._failed_call(key, call)
            raise

    def _type_slot(self, typename: str) -> tuple[_Slot, str]:
        """The slot of the endpoint serving ``typename`` and the type's URL (cached)."""
        ep = self.endpoint_for(typename)
        assert ep is not None
        slot = self._slots.get(id(ep))
        if slot is None:
            slot = self._slots[id(ep)] = _Slot(ep)  # (the slot holds ep: its id stays its own)
        target = (slot, ep.url_for(typename))
        if len(self._type_slots) >= _TYPE_CACHE:
            self._type_slots.clear()
        self._type_slots[typename] = target
        return target

    def _finished(self, key: tuple[str, str], call: _Call) -> None:
        """The call of ``key`` is over: free its request slot and let the next address go."""
        del self._inflight[key]
        self._records_inflight -= len(call.records)
        slot = call.slot
        slot.in_flight -= 1
        if slot.embedded:
            self._embedded_inflight -= 1
        parked = slot.parked
        if parked:  # one slot of this endpoint is free: its longest-waiting address goes first
            first = parked.popleft()
            self._parked_keys.discard(first)
            self._ready[first] = None
            self._ready.move_to_end(first, last=False)
        if key in self._queues:
            self._ready[key] = None

    def _failed_call(self, key: tuple[str, str], call: _Call) -> None:
        """All or nothing after the call of ``key`` failed (its error is raised next): none
        of its effects were applied (:meth:`InvocationHost.apply_result` checks before it
        applies); its request slot is freed and its messages go back to the head of the
        address's queue, the address first among the ready ones and marked failed, so a
        dispatcher that goes on (in-process) invokes them again, from the same state, before
        anything else is sent, and a snapshot holds them. A first request of its function
        type that failed no longer holds the type's other addresses back: the next one asks
        again. On a cluster the task fails and restarts from its last checkpoint instead."""
        self._requeue(key, call)
        self._failed[key] = None

    def _caller_for(self, endpoint: Endpoint) -> RemoteCaller | EmbeddedCaller:
        """The caller of ``endpoint`` (started on first use): the HTTP client, or the
        function loop for an embedded async function."""
        if type(endpoint) is EmbeddedEndpoint:
            if self._embedded is None:
                if self._wake is None:
                    raise RemoteFunctionError("embedded async functions invoked concurrently need a task mailbox")
                self._embedded = EmbeddedCaller(self._wake, self._completions)
            return self._embedded
        if self._caller is None:
            if self._wake is None:
                raise RemoteFunctionError(
                    "remote functions need a task mailbox (OperatorContext.post) to receive replies on; "
                    "run the dispatcher in a raystream task or statefun_api.local.LocalDispatchers"
                )
            keepalive = max(ep.pool_ttl_s for ep in self.endpoints)
            self._caller = RemoteCaller(self._wake, name=self._name, keepalive_s=keepalive, completions=self._completions)
        return self._caller

    def _send(self, key: tuple[str, str], call: _Call) -> None:
        caller = self._caller_for(call.endpoint)
        self._next_id += 1
        self._by_id.pop(call.call_id, None)  # a resent batch (handshake) gets a new id
        call.call_id = self._next_id
        if key not in self._inflight:
            self._records_inflight += len(call.records)
            if call.slot.embedded:
                self._embedded_inflight += 1
        self._inflight[key] = call
        self._by_id[call.call_id] = key
        ep = call.endpoint
        if isinstance(caller, EmbeddedCaller):  # nothing encoded: the values as the dispatcher holds them
            caller.submit(call.call_id, *self.host.embedded_invocation(key, call.records))
            return
        assert isinstance(ep, RemoteEndpoint)  # (_caller_for gives the HTTP caller to these only)
        body, call.sent_state = self._encode(key, call, call.slot.request_limit)
        call.size = len(body)
        self.requests += 1
        caller.submit(call.call_id, ep, call.url, body)

    def _cut(self, key: tuple[str, str], call: _Call, n: int) -> None:
        """Keep the first ``n`` messages of ``call`` (in flight, being sent); the others go
        back to the head of the address's queue, in order, and go next."""
        tail = call.records[n:]
        del call.records[n:]
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = deque()
        q.extendleft(reversed(tail))
        self._queued += len(tail)
        self._records_inflight -= len(tail)
        if len(q) >= call.endpoint.max_num_batch_requests:
            self._full.add(key)

    def _encode(self, key: tuple[str, str], call: _Call, limit: int | None = None) -> tuple[bytes, frozenset[str]]:
        """The ``ToFunction`` request invoking ``key`` with the messages of ``call`` (the
        address's declared values attached); and the names of the values sent. With
        ``limit`` (bytes an endpoint refused), a batch whose request would reach it is cut
        first (:meth:`_cut`) to the messages that stay below it (at least one)."""
        records = call.records
        address = self.host.address_of(key)
        specs = self._specs.get(key[0])
        state: list[StateEntry] = []
        if specs:
            self.host.set_current_address(key)
            for name, (st, spec_typename) in specs.items():
                tv = st.value()
                if type(tv) is tuple:  # (typename, value) of a built-in type, kept decoded by the dispatcher
                    stored, obj = tv
                    if stored != spec_typename and stored:
                        raise _stored_type_changed(address, name, spec_typename, stored, records)
                    tpe = builtin_type(stored)
                    assert tpe is not None
                    state.append((name, stored, True, bytes(tpe.serializer().serialize(obj))))
                    continue
                if tv is None or not tv.has_value:
                    state.append((name, spec_typename, False, b""))
                else:
                    if tv.typename != spec_typename and tv.typename:
                        raise _stored_type_changed(address, name, spec_typename, tv.typename, records)
                    state.append((name, tv.typename, True, tv.value))
        target = (address.namespace, address.name, address.id)
        if limit is not None and len(records) > 1:
            n = self._encoder.fitting(target, state, records, limit)
            if n < len(records):
                self._cut(key, call, n)
        body = self._encoder.request(target, state, records)
        return body, frozenset(specs) if specs else frozenset()

    # ------------------------------------------------------------------ replies (mailbox thread)
    @property
    def closed(self) -> bool:
        """:meth:`close` was called (replies still arriving are ignored)."""
        return self._closed

    def apply_completions(self, block_s: float | None = None) -> int:
        """Apply the finished calls (remote and embedded, in the order they finished); with
        ``block_s``, wait up to that long for the first one."""
        if self._caller is None and self._embedded is None:
            return 0
        for caller in (self._caller, self._embedded):
            if caller is not None:
                caller.rearm_notify()  # (before taking: a reply queued from now on posts again)
        completions = self._completions
        n = 0
        while True:
            try:
                if block_s is not None and n == 0:
                    result = completions.get(timeout=block_s)
                else:
                    result = completions.get_nowait()
            except queue.Empty:
                return n
            n += 1
            self.completed += 1
            self._complete(result)

    def _complete(self, result: CallResult | EmbeddedResult) -> None:
        """Apply one finished call; a call that failed (or whose effects cannot be applied)
        is queued again (:meth:`_failed_call`) and its error raised."""
        key = self._by_id.pop(result.call_id, None)
        if key is None:
            return  # not (or no longer) in flight: ignore
        call = self._inflight[key]
        try:
            if type(result) is EmbeddedResult:
                self._embedded_done(key, call, result)
            else:
                assert isinstance(result, CallResult)
                self._remote_done(key, call, result)
        except Exception:
            self._failed_call(key, call)
            raise

    def _remote_done(self, key: tuple[str, str], call: _Call, result: CallResult) -> None:
        """Apply the reply of a remote call: a handshake sends the batch again; a result is
        applied; a failed call or an invalid reply raises :class:`RemoteFunctionError`."""
        if result.attempts > 1:
            self.host.counters["remote_retries"] += result.attempts - 1
        if result.error is not None:
            if result.status == 413 and len(call.records) > 1:
                self._split(key, call)
                return
            raise self._call_error(key, call, f"failed: {result.error}")
        body = result.body or b""
        try:
            reply = FromFunctionPb.FromString(body)
        except DecodeError as exc:
            raise self._call_error(
                key, call,
                f"answered HTTP {result.status} with a body that is not a StateFun FromFunction ({exc}); body "
                f"{excerpt(body)}. Does the URL point at a StateFun request-reply endpoint?",
            ) from exc
        if reply.WhichOneof("response") == "incomplete_invocation_context":  # rare: the hand decoder reads it
            try:
                context = decode_from_function(body).incomplete_invocation_context
            except ProtocolError as exc:
                raise self._call_error(key, call, f"sent an invalid reply: {exc}") from exc
            assert context is not None
            self._handshake(key, call, context)
            return
        # no invocation result (the official SDK's empty body when the function had no
        # effects): an empty InvocationResponse (the default), as StateFun's RequestReplyFunction reads it
        self._apply(key, call, reply.invocation_result)
        self._finished(key, call)
        self._failed.pop(key, None)
        if key[0] in self._probing:
            self._learned(key[0])

    def _call_error(self, key: tuple[str, str], call: _Call, what: str) -> RemoteFunctionError:
        """The error of the call of ``key`` that cannot succeed: ``what`` after the function
        type, URL, address and batch size; it carries the address and the first message's type."""
        address = self.host.address_of(key)
        return RemoteFunctionError(
            f"remote function {key[0]!r} at {redacted(call.url)!r} (address {address}, {len(call.records)} "
            f"message(s)) {what}",
            address=address,
            message_typename=call.records[0][VALUE_TYPENAME] if call.records else None,
        )

    def _split(self, key: tuple[str, str], call: _Call) -> None:
        """The server refused the batch of ``key`` for its size (HTTP 413): keep the endpoint's
        requests below half that size (halving again while they are refused) and send the
        messages again (nothing of the refused call was applied; they keep their order at the
        head of the queue, and the next request goes at once)."""
        slot = call.slot
        limit = max(call.size // 2, 1)
        slot.request_limit = limit if slot.request_limit is None else min(slot.request_limit, limit)
        self.splits += 1
        counters = self.host.counters
        counters["remote_splits"] += 1
        self._requeue(key, call)

    def _requeue(self, key: tuple[str, str], call: _Call) -> None:
        """The call of ``key`` is over without effects: its request slot is freed and its
        messages go back to the head of the address's queue, the address first among the
        ready ones. A first request of its function type no longer holds the type's other
        addresses back (they go, the next one asks for the type's values again)."""
        if self._inflight.get(key) is call:
            self._finished(key, call)
        self._by_id.pop(call.call_id, None)
        waiting = self._probing.pop(key[0], None)
        if waiting is not None:
            for other in waiting:
                self._parked_keys.discard(other)
                if other in self._queues and other not in self._inflight:
                    self._ready[other] = None
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = deque()
        q.extendleft(reversed(call.records))
        self._queued += len(call.records)
        if len(q) >= call.endpoint.max_num_batch_requests:
            self._full.add(key)
        self._ready[key] = None
        self._ready.move_to_end(key, last=False)

    def _embedded_done(self, key: tuple[str, str], call: _Call, done: EmbeddedResult) -> None:
        """Apply an embedded invocation's effects (its storage changes as Python values, as a
        sync function's), or raise its error as a sync function's would be."""
        if done.exception is not None:
            raise UserCodeError(describe_records(call.records), done.exception) from done.exception
        assert done.result is not None and done.storage is not None
        specs = self._specs[key[0]]
        changes = [(specs[name][0], value) for name, value in dirty_values(done.storage)]
        self.host.apply_result(key, call.records, done.result, changes)
        self._finished(key, call)
        self._failed.pop(key, None)

    def _learned(self, typename: str) -> None:
        """The first reply of ``typename`` came (a result, or the missing values it declares):
        its value specs are known, and the addresses that waited for that go now."""
        self._specs.setdefault(typename, {})
        for key in self._probing.pop(typename, ()):
            self._parked_keys.discard(key)
            if key in self._queues and key not in self._inflight:
                self._ready[key] = None

    def _handshake(self, key: tuple[str, str], call: _Call, context: FromFunction.IncompleteInvocationContext) -> None:
        """Register the missing value specs for the function type and send the same batch again."""
        typename = key[0]
        specs = self._specs.setdefault(typename, {})
        mode = FromFunction.ExpirationSpec.ExpireMode
        new = []
        for missing in context.missing_values:
            name = missing.state_name
            if not name:
                raise self._call_error(key, call, f"reported a missing value without a name: {missing!r}")
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
            st = self.host.backend.get_state(ValueStateDescriptor(value_state_name(typename, name), ttl=ttl))
            specs[name] = (st, missing.type_typename)
        if not new:
            names = [m.state_name for m in context.missing_values]
            raise self._call_error(
                key, call,
                f"reported missing values {names} that were already sent with the request; "
                f"the function keeps rejecting its state (handshake round {call.handshakes + 1})",
            )
        self.handshakes += 1
        self.host.counters["remote_handshakes"] += 1
        call.handshakes += 1
        if typename in self._probing:
            self._learned(typename)
        self._send(key, call)

    def _apply(self, key: tuple[str, str], call: _Call, response: Any) -> None:
        """Check a reply's ``InvocationResponse`` (upb message) and apply it through the
        host's one path for invocation results (:meth:`InvocationHost.apply_result`)."""
        caller = self.host.address_of(key)
        try:
            result = _result_from_pb(caller, response)
        except (ProtocolError, ValueError, TypeError) as exc:  # (a value our constructors refuse: invalid too)
            raise self._call_error(key, call, f"sent an invalid reply: {exc}") from exc
        changes: list[tuple[Any, TypedValue | None]] = []
        mutations = response.state_mutations
        if mutations:
            specs = self._specs.get(key[0], {})
            for m in mutations[:]:  # (a list: see _result_from_pb)
                kind = m.mutation_type
                if kind != DELETE and (kind != MODIFY or not m.HasField("state_value")):
                    raise self._call_error(
                        key, call,
                        f"sent an invalid reply: {caller}: state mutation {m.state_name!r} is neither a DELETE nor "
                        f"a MODIFY with a value",
                    )
                entry = specs.get(m.state_name)
                if entry is None:
                    raise self._call_error(
                        key, call, f"changed value {m.state_name!r}, which it never declared (declared: {sorted(specs) or 'none'})"
                    )
                if kind == DELETE:
                    changes.append((entry[0], None))
                else:
                    tv = m.state_value
                    if tv.typename and entry[1] and tv.typename != entry[1]:
                        # as StateFun's PersistedRemoteFunctionValues.validateType: nothing of the reply is applied
                        raise self._call_error(
                            key, call,
                            f"wrote value {m.state_name!r} with type {tv.typename!r}, but declared it as "
                            f"{entry[1]!r} (its ValueSpec); nothing of the reply was applied. A value keeps the "
                            f"type it was declared with: write it with that type, or declare it under a new name",
                        )
                    changes.append((entry[0], TypedValue(tv.typename or entry[1], True, tv.value)))
        self.host.apply_result(key, call.records, result, changes)
        self.host.counters["remote_requests"] += 1

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop the I/O thread; replies still on their way are dropped."""
        self._closed = True
        if self._caller is not None:
            self._caller.close()
            self._caller = None
        if self._embedded is not None:
            self._embedded.close()
            self._embedded = None


def _pb_address(a: Any) -> Address | None:
    return Address(a.namespace, a.type, a.id) if (a.namespace and a.type and a.id) else None


def _pb_typed(tv: Any) -> TypedValue:
    return TypedValue(tv.typename, tv.has_value, tv.value)


def _result_from_pb(caller: Address, response: Any) -> InvocationResult:
    """:func:`~statefun_api.reqreply.result_from_response` for a upb ``InvocationResponse``
    (same checks and errors), without its state mutations: :meth:`RemoteFunctions._apply`
    checks them and resolves them to state handles in one pass."""
    result = InvocationResult()
    # (a upb repeated field has no __iter__: a for loop over it indexes until IndexError, whose
    # message is formatted, ~2,000 instructions a loop; [:] is a list at once, and empty
    # fields, the usual case, are skipped by their length)
    outgoing = response.outgoing_messages
    for o in outgoing[:] if outgoing else ():
        target = _pb_address(o.target)
        if target is None:
            raise ProtocolError(f"a message sent by {caller} has an incomplete target address {o.target!r}")
        result.outgoing.append(OutgoingMessage(target, Message(target.typename, target.id, _pb_typed(o.argument)), caller))
    delayed = response.delayed_invocations
    for dl in delayed[:] if delayed else ():
        if dl.is_cancellation_request:
            result.delayed_actions.append(DelayedCancellation(dl.cancellation_token))
            continue
        target = _pb_address(dl.target)
        if target is None:
            raise ProtocolError(f"a delayed message sent by {caller} has an incomplete target address {dl.target!r}")
        message = Message(target.typename, target.id, _pb_typed(dl.argument))
        result.delayed_actions.append(DelayedMessage(dl.delay_in_ms, target, message, dl.cancellation_token, caller))
    egresses = response.outgoing_egresses
    for e in egresses[:] if egresses else ():
        typename = f"{e.egress_namespace}/{e.egress_type}"
        try:
            egress = EgressMessage(typename, TypedValue())
        except ValueError as exc:
            raise ProtocolError(
                f"an egress message sent by {caller} has an invalid egress (namespace {e.egress_namespace!r}, "
                f"type {e.egress_type!r}): {exc}"
            ) from exc
        # (an argument absent or without typename: refused, see reqreply.egress_argument)
        egress.typed_value = egress_argument(caller, typename, _pb_typed(e.argument) if e.HasField("argument") else None)
        result.egress.append(egress)
    return result
