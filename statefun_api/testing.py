"""Helpers for testing stateful functions without an engine or a network.

* :class:`RequestBuilder` builds a ``ToFunction`` request like a StateFun runtime would;
  :func:`parse_response` decodes the reply and :func:`round_trip` does both around a
  :class:`~statefun_api.handler.RequestReplyHandler`.
* :func:`run_function` invokes a function directly with Python-valued state and returns a
  :class:`FunctionRun` listing what it sent and its state afterwards.

Example:
    >>> from statefun_api import StatefulFunctions, ValueSpec, IntType, message_builder
    >>> functions = StatefulFunctions()
    >>> @functions.bind("com.example/counter", specs=[ValueSpec("seen", IntType)])
    ... def counter(context, message):
    ...     context.storage.seen = (context.storage.seen or 0) + 1
    >>> msg = message_builder("com.example/counter", "a", str_value="hi")
    >>> run_function(functions, "com.example/counter", "a", [msg], state={"seen": 4}).state
    {'seen': 5}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from statefun_api.address import Address
from statefun_api.effects import DelayedMessage, InvocationResult, OutgoingMessage
from statefun_api.functions import StatefulFunctions
from statefun_api.handler import RequestReplyHandler
from statefun_api.invocation import Invocation, invoke
from statefun_api.messages import EgressMessage, Message
from statefun_api.reqreply import FromFunction, ToFunction, decode_from_function, encode_to_function
from statefun_api.types import Type, to_typed_value

__all__ = ["RequestBuilder", "parse_response", "round_trip", "run_function", "FunctionRun"]


def _address(value: Address | tuple[str, str] | tuple[str, str, str]) -> Address:
    if isinstance(value, Address):
        return value
    if len(value) == 2:
        return Address.of(value[0], value[1])  # type: ignore[misc]
    return Address(*value)  # type: ignore[misc]


class RequestBuilder:
    """Builds a ``ToFunction`` invocation request, step by step (each step returns a copy).

    Example:
        >>> from statefun_api import IntType, StringType
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
