"""``RequestReplyHandler``: serve functions over StateFun's request-reply protocol, sans I/O.

The handler turns the bytes of a ``ToFunction`` request into the bytes of a
``FromFunction`` reply; moving the bytes (HTTP, a test, the engine) is the caller's job.

Protocol, function side:

1. Decode the request; look up the function registered for the target typename.
2. If the request lacks a state entry for any declared ValueSpec, reply with an
   ``IncompleteInvocationContext`` listing the missing specs (name, typename, TTL): the
   runtime registers them and resends the batch with those values.
3. Otherwise run the batch through :func:`~statefun_api.invocation.invoke` and reply with
   an ``InvocationResponse``: changed/deleted state, outgoing, delayed and egress messages.

Example:
    >>> from raystream.statefun_api import StatefulFunctions, ValueSpec, IntType
    >>> from raystream.statefun_api.testing import RequestBuilder, parse_response
    >>> functions = StatefulFunctions()
    >>> @functions.bind("com.example/counter", specs=[ValueSpec("seen", IntType)])
    ... def counter(context, message):
    ...     context.storage.seen = (context.storage.seen or 0) + 1
    >>> handler = RequestReplyHandler(functions)
    >>> request = RequestBuilder("com.example/counter", "a").with_invocation(1, IntType)
    >>> reply = parse_response(handler.handle_sync(request.to_bytes()))
    >>> [m.state_name for m in reply.incomplete_invocation_context.missing_values]
    ['seen']
    >>> request = request.with_state("seen", 41, IntType)
    >>> reply = parse_response(handler.handle_sync(request.to_bytes()))
    >>> IntType.serializer().deserialize(reply.invocation_result.state_mutations[0].state_value.value)
    42
"""

from __future__ import annotations

from raystream.statefun_api.address import Address
from raystream.statefun_api.errors import BadRequest, ProtocolError
from raystream.statefun_api.functions import StatefulFunction, StatefulFunctions
from raystream.statefun_api.invocation import Invocation, invoke, invoke_async
from raystream.statefun_api.messages import Message
from raystream.statefun_api.reqreply import (
    FromFunction,
    decode_to_function,
    encode_from_function,
    incomplete_context_for,
    response_from_result,
)
from raystream.statefun_api.storage import StateValue
from raystream.statefun_api.types import TypedValue

__all__ = ["RequestReplyHandler"]

Request = tuple[StatefulFunction, Address, dict[str, StateValue], list[Invocation]]


class RequestReplyHandler:
    """Answers request-reply invocations for a set of functions.

    Errors are raised as :class:`~statefun_api.errors.StatefulFunctionError` subclasses:
    :class:`~statefun_api.errors.BadRequest` for a malformed request and
    :class:`~statefun_api.errors.FunctionNotFound` for an unknown function type (an HTTP
    layer answers 4xx: retrying cannot help), anything else for a failing function (5xx,
    so the runtime retries).

    Example:
        >>> from raystream.statefun_api import StatefulFunctions
        >>> RequestReplyHandler(StatefulFunctions())
        RequestReplyHandler(StatefulFunctions([]))
    """

    __slots__ = ("functions",)

    def __init__(self, functions: StatefulFunctions) -> None:
        if not isinstance(functions, StatefulFunctions):
            raise TypeError(f"RequestReplyHandler needs a StatefulFunctions, got {functions!r}")
        self.functions = functions

    def _prepare(self, request_bytes: bytes | bytearray | memoryview) -> Request | FromFunction:
        try:
            request = decode_to_function(request_bytes)
        except ProtocolError as exc:
            raise BadRequest(f"the request is not a StateFun ToFunction message: {exc}") from exc
        batch = request.invocation
        if batch is None:
            raise BadRequest("the ToFunction request carries no invocation batch")
        target = batch.target
        if target is None or not (target.namespace and target.name and target.id):
            raise BadRequest(f"the invocation batch has an incomplete target {target!r}")
        fn = self.functions.for_typename(target.typename)
        state = {pv.state_name: pv.state_value or TypedValue() for pv in batch.state}
        missing = fn.missing_specs(state)
        if missing:
            return incomplete_context_for(missing)
        invocations = [
            Invocation(
                Message(target.typename, target.id, inv.argument or TypedValue()),
                _caller(inv.caller),
            )
            for inv in batch.invocations
        ]
        return fn, target, dict(state), invocations

    def handle_sync(self, request_bytes: bytes | bytearray | memoryview) -> bytes:
        """Answer one request; async functions run on a private event loop.

        Must not be called from a running event loop when the target function is async;
        use :meth:`handle_async` there.
        """
        prepared = self._prepare(request_bytes)
        if isinstance(prepared, FromFunction):
            return encode_from_function(prepared)
        fn, target, state, invocations = prepared
        result = invoke(self.functions, target, state, invocations)
        return encode_from_function(response_from_result(result, fn.specs))

    async def handle_async(self, request_bytes: bytes | bytearray | memoryview) -> bytes:
        """Answer one request, awaiting async functions on the running event loop."""
        prepared = self._prepare(request_bytes)
        if isinstance(prepared, FromFunction):
            return encode_from_function(prepared)
        fn, target, state, invocations = prepared
        result = await invoke_async(self.functions, target, state, invocations)
        return encode_from_function(response_from_result(result, fn.specs))

    def __repr__(self) -> str:
        return f"RequestReplyHandler({self.functions!r})"


def _caller(address: Address | None) -> Address | None:
    if address is None or not (address.namespace or address.name or address.id):
        return None
    return address
