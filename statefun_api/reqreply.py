"""StateFun's request-reply protocol (``io.statefun.sdk.reqreply``): messages and codec.

The dataclasses mirror ``request-reply.proto`` message for message and field for field
(nested messages are nested classes: ``ToFunction.Invocation``,
``FromFunction.DelayedInvocation``...). An absent embedded message is ``None``; the proto's
``Address.type`` is :attr:`Address.name <statefun_api.address.Address.name>`. Bytes are
produced and parsed by :mod:`statefun_api._protowire`, byte-identical to protobuf.

Both sides of the protocol are covered: a runtime (the engine) encodes a
:class:`ToFunction` and decodes the :class:`FromFunction` reply of a remote SDK
(:func:`build_request`, :func:`result_from_response`); a function server does the reverse
(:class:`~statefun_api.handler.RequestReplyHandler`, :func:`response_from_result`).

Example:
    >>> from raystream.statefun_api import Address, TypedValue
    >>> req = ToFunction(ToFunction.InvocationBatchRequest(target=Address("a", "b", "1")))
    >>> encode_to_function(req)
    b'\\xa2\\x06\\x0b\\n\\t\\n\\x01a\\x12\\x01b\\x1a\\x011'
    >>> decode_to_function(encode_to_function(req)) == req
    True
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from raystream.statefun_api._protowire import DecodeError, Fields, Writer
from raystream.statefun_api.address import Address, parse_typename
from raystream.statefun_api.effects import (
    DelayedCancellation,
    DelayedMessage,
    InvocationResult,
    OutgoingMessage,
)
from raystream.statefun_api.errors import ProtocolError
from raystream.statefun_api.invocation import Invocation
from raystream.statefun_api.messages import EgressMessage, Message
from raystream.statefun_api.spec import ValueSpec
from raystream.statefun_api.types import TypedValue

__all__ = [
    "ToFunction",
    "FromFunction",
    "encode_to_function",
    "decode_to_function",
    "encode_from_function",
    "decode_from_function",
    "build_request",
    "result_from_response",
    "egress_argument",
    "response_from_result",
    "incomplete_context_for",
]

E = TypeVar("E", bound=enum.IntEnum)


@dataclass
class ToFunction:
    """The request a runtime sends to a function (``oneof request { invocation = 100 }``)."""

    @dataclass
    class PersistedValue:
        """A state value: ``state_name = 1``, ``state_value = 2`` (absent -> ``None``)."""

        state_name: str = ""
        state_value: TypedValue | None = None

    @dataclass
    class Invocation:
        """One message: ``caller = 1`` (``None`` for ingress), ``argument = 2``."""

        caller: Address | None = None
        argument: TypedValue | None = None

    @dataclass
    class InvocationBatchRequest:
        """``target = 1``, ``state = 2`` (repeated), ``invocations = 3`` (repeated)."""

        target: Address | None = None
        state: list[ToFunction.PersistedValue] = field(default_factory=list)
        invocations: list[ToFunction.Invocation] = field(default_factory=list)

    invocation: ToFunction.InvocationBatchRequest | None = None

    def to_bytes(self) -> bytes:
        """Encode; same as :func:`encode_to_function`."""
        return encode_to_function(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> ToFunction:
        """Decode; same as :func:`decode_to_function`."""
        return decode_to_function(data)


@dataclass
class FromFunction:
    """A function's reply: ``oneof response { invocation_result = 100;
    incomplete_invocation_context = 101 }``."""

    @dataclass
    class PersistedValueMutation:
        """``mutation_type = 1``, ``state_name = 2``, ``state_value = 3``."""

        class MutationType(enum.IntEnum):
            DELETE = 0
            MODIFY = 1

        mutation_type: int = 0
        state_name: str = ""
        state_value: TypedValue | None = None

    @dataclass
    class Invocation:
        """An outgoing message: ``target = 1``, ``argument = 2``."""

        target: Address | None = None
        argument: TypedValue | None = None

    @dataclass
    class DelayedInvocation:
        """``delay_in_ms = 1``, ``target = 2``, ``argument = 3``,
        ``is_cancellation_request = 10``, ``cancellation_token = 11``."""

        is_cancellation_request: bool = False
        cancellation_token: str = ""
        delay_in_ms: int = 0
        target: Address | None = None
        argument: TypedValue | None = None

    @dataclass
    class EgressMessage:
        """``egress_namespace = 1``, ``egress_type = 2``, ``argument = 3``."""

        egress_namespace: str = ""
        egress_type: str = ""
        argument: TypedValue | None = None

    @dataclass
    class InvocationResponse:
        """``state_mutations = 1``, ``outgoing_messages = 2``, ``delayed_invocations = 3``,
        ``outgoing_egresses = 4`` (all repeated)."""

        state_mutations: list[FromFunction.PersistedValueMutation] = field(default_factory=list)
        outgoing_messages: list[FromFunction.Invocation] = field(default_factory=list)
        delayed_invocations: list[FromFunction.DelayedInvocation] = field(default_factory=list)
        outgoing_egresses: list[FromFunction.EgressMessage] = field(default_factory=list)

    @dataclass
    class ExpirationSpec:
        """``mode = 1``, ``expire_after_millis = 2``."""

        class ExpireMode(enum.IntEnum):
            NONE = 0
            AFTER_WRITE = 1
            AFTER_INVOKE = 2

        mode: int = 0
        expire_after_millis: int = 0

    @dataclass
    class PersistedValueSpec:
        """``state_name = 1``, ``expiration_spec = 2``, ``type_typename = 3``."""

        state_name: str = ""
        expiration_spec: FromFunction.ExpirationSpec | None = None
        type_typename: str = ""

    @dataclass
    class IncompleteInvocationContext:
        """``missing_values = 1`` (repeated)."""

        missing_values: list[FromFunction.PersistedValueSpec] = field(default_factory=list)

    invocation_result: FromFunction.InvocationResponse | None = None
    incomplete_invocation_context: FromFunction.IncompleteInvocationContext | None = None

    def to_bytes(self) -> bytes:
        """Encode; same as :func:`encode_from_function`."""
        return encode_from_function(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> FromFunction:
        """Decode; same as :func:`decode_from_function`."""
        return decode_from_function(data)


# -- encoding ------------------------------------------------------------------------------


def _address(a: Address) -> bytes:
    w = Writer()
    w.string(1, a.namespace)
    w.string(2, a.name)
    w.string(3, a.id)
    return w.getvalue()


def _typed(tv: TypedValue) -> bytes:
    w = Writer()
    w.string(1, tv.typename)
    w.bool(2, tv.has_value)
    w.bytes(3, tv.value)
    return w.getvalue()


def _opt(w: Writer, number: int, value: object, encode: Callable[[object], bytes]) -> None:
    if value is not None:
        w.message(number, encode(value))


def _to_function(msg: ToFunction) -> bytes:
    w = Writer()
    batch = msg.invocation
    if batch is not None:
        b = Writer()
        _opt(b, 1, batch.target, _address)  # type: ignore[arg-type]
        for pv in batch.state:
            p = Writer()
            p.string(1, pv.state_name)
            _opt(p, 2, pv.state_value, _typed)  # type: ignore[arg-type]
            b.message(2, p.getvalue())
        for inv in batch.invocations:
            i = Writer()
            _opt(i, 1, inv.caller, _address)  # type: ignore[arg-type]
            _opt(i, 2, inv.argument, _typed)  # type: ignore[arg-type]
            b.message(3, i.getvalue())
        w.message(100, b.getvalue())
    return w.getvalue()


def _invocation_response(r: FromFunction.InvocationResponse) -> bytes:
    w = Writer()
    for m in r.state_mutations:
        x = Writer()
        x.enum(1, m.mutation_type)
        x.string(2, m.state_name)
        _opt(x, 3, m.state_value, _typed)  # type: ignore[arg-type]
        w.message(1, x.getvalue())
    for o in r.outgoing_messages:
        x = Writer()
        _opt(x, 1, o.target, _address)  # type: ignore[arg-type]
        _opt(x, 2, o.argument, _typed)  # type: ignore[arg-type]
        w.message(2, x.getvalue())
    for d in r.delayed_invocations:
        x = Writer()
        x.int64(1, d.delay_in_ms)
        _opt(x, 2, d.target, _address)  # type: ignore[arg-type]
        _opt(x, 3, d.argument, _typed)  # type: ignore[arg-type]
        x.bool(10, d.is_cancellation_request)
        x.string(11, d.cancellation_token)
        w.message(3, x.getvalue())
    for e in r.outgoing_egresses:
        x = Writer()
        x.string(1, e.egress_namespace)
        x.string(2, e.egress_type)
        _opt(x, 3, e.argument, _typed)  # type: ignore[arg-type]
        w.message(4, x.getvalue())
    return w.getvalue()


def _incomplete(c: FromFunction.IncompleteInvocationContext) -> bytes:
    w = Writer()
    for spec in c.missing_values:
        x = Writer()
        x.string(1, spec.state_name)
        if spec.expiration_spec is not None:
            e = Writer()
            e.enum(1, spec.expiration_spec.mode)
            e.int64(2, spec.expiration_spec.expire_after_millis)
            x.message(2, e.getvalue())
        x.string(3, spec.type_typename)
        w.message(1, x.getvalue())
    return w.getvalue()


def encode_to_function(msg: ToFunction) -> bytes:
    """Serialize a :class:`ToFunction` to protobuf bytes.

    Raises:
        ProtocolError: a field holds a value of the wrong type.
    """
    try:
        return _to_function(msg)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"cannot encode ToFunction {msg!r}: {exc}") from exc


def encode_from_function(msg: FromFunction) -> bytes:
    """Serialize a :class:`FromFunction` to protobuf bytes.

    Raises:
        ProtocolError: both oneof members are set, or a field has the wrong type.
    """
    if msg.invocation_result is not None and msg.incomplete_invocation_context is not None:
        raise ProtocolError(
            "FromFunction has both invocation_result and incomplete_invocation_context set; "
            "they are a oneof"
        )
    try:
        w = Writer()
        if msg.invocation_result is not None:
            w.message(100, _invocation_response(msg.invocation_result))
        if msg.incomplete_invocation_context is not None:
            w.message(101, _incomplete(msg.incomplete_invocation_context))
        return w.getvalue()
    except (TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"cannot encode FromFunction {msg!r}: {exc}") from exc


# -- decoding ------------------------------------------------------------------------------


def _d_address(data: bytes | None) -> Address | None:
    if data is None:
        return None
    f = Fields.parse(data)
    return Address(f.string(1), f.string(2), f.string(3))


def _d_typed(data: bytes | None) -> TypedValue | None:
    if data is None:
        return None
    f = Fields.parse(data)
    return TypedValue(f.string(1), f.bool(2), f.bytes(3))


def _enum(cls: type[E], value: int) -> int:
    try:
        return cls(value)
    except ValueError:  # proto3 enums are open: keep unknown numbers
        return value


def _d_to_function(data: bytes) -> ToFunction:
    top = Fields.parse(data)
    raw = top.message(100)
    if raw is None:
        return ToFunction()
    f = Fields.parse(raw)
    batch = ToFunction.InvocationBatchRequest(target=_d_address(f.message(1)))
    for chunk in f.repeated(2):
        p = Fields.parse(chunk)
        batch.state.append(ToFunction.PersistedValue(p.string(1), _d_typed(p.message(2))))
    for chunk in f.repeated(3):
        i = Fields.parse(chunk)
        batch.invocations.append(
            ToFunction.Invocation(_d_address(i.message(1)), _d_typed(i.message(2)))
        )
    return ToFunction(batch)


def _d_invocation_response(data: bytes) -> FromFunction.InvocationResponse:
    f = Fields.parse(data)
    r = FromFunction.InvocationResponse()
    mt = FromFunction.PersistedValueMutation.MutationType
    for chunk in f.repeated(1):
        x = Fields.parse(chunk)
        r.state_mutations.append(
            FromFunction.PersistedValueMutation(
                _enum(mt, x.enum(1)), x.string(2), _d_typed(x.message(3))
            )
        )
    for chunk in f.repeated(2):
        x = Fields.parse(chunk)
        r.outgoing_messages.append(
            FromFunction.Invocation(_d_address(x.message(1)), _d_typed(x.message(2)))
        )
    for chunk in f.repeated(3):
        x = Fields.parse(chunk)
        r.delayed_invocations.append(
            FromFunction.DelayedInvocation(
                is_cancellation_request=x.bool(10),
                cancellation_token=x.string(11),
                delay_in_ms=x.int64(1),
                target=_d_address(x.message(2)),
                argument=_d_typed(x.message(3)),
            )
        )
    for chunk in f.repeated(4):
        x = Fields.parse(chunk)
        r.outgoing_egresses.append(
            FromFunction.EgressMessage(x.string(1), x.string(2), _d_typed(x.message(3)))
        )
    return r


def _d_incomplete(data: bytes) -> FromFunction.IncompleteInvocationContext:
    f = Fields.parse(data)
    c = FromFunction.IncompleteInvocationContext()
    mode = FromFunction.ExpirationSpec.ExpireMode
    for chunk in f.repeated(1):
        x = Fields.parse(chunk)
        raw = x.message(2)
        expiration = None
        if raw is not None:
            e = Fields.parse(raw)
            expiration = FromFunction.ExpirationSpec(_enum(mode, e.enum(1)), e.int64(2))
        c.missing_values.append(
            FromFunction.PersistedValueSpec(x.string(1), expiration, x.string(3))
        )
    return c


def decode_to_function(data: bytes | bytearray | memoryview) -> ToFunction:
    """Parse protobuf bytes into a :class:`ToFunction`.

    Raises:
        ProtocolError: the bytes are not a valid encoding.
    """
    try:
        return _d_to_function(bytes(data))
    except DecodeError as exc:
        raise ProtocolError(f"cannot decode a ToFunction from {len(data)} bytes: {exc}") from exc


def decode_from_function(data: bytes | bytearray | memoryview) -> FromFunction:
    """Parse protobuf bytes into a :class:`FromFunction` (last oneof member on the wire wins).

    Raises:
        ProtocolError: the bytes are not a valid encoding.
    """
    try:
        top = Fields.parse(bytes(data))
        which = top.last_of(100, 101)
        if which == 100:
            return FromFunction(invocation_result=_d_invocation_response(top.message(100) or b""))
        if which == 101:
            return FromFunction(
                incomplete_invocation_context=_d_incomplete(top.message(101) or b"")
            )
        return FromFunction()
    except DecodeError as exc:
        raise ProtocolError(f"cannot decode a FromFunction from {len(data)} bytes: {exc}") from exc


# -- conversions between the protocol and the invocation core ------------------------------


def build_request(
    target: Address,
    state: Mapping[str, TypedValue | None],
    messages: Sequence[Message | Invocation],
) -> ToFunction:
    """Build the request a runtime sends to invoke ``target`` with a batch of messages.

    ``state`` maps each state name the function declared to its value; ``None`` (or a
    TypedValue without a value) is sent as a state entry without a value.

    Example:
        >>> from raystream.statefun_api import message_builder
        >>> m = message_builder("com.example/f", "1", int_value=5)
        >>> req = build_request(m.target, {"seen": None}, [m])
        >>> [pv.state_name for pv in req.invocation.state], len(req.invocation.invocations)
        (['seen'], 1)
    """
    batch = ToFunction.InvocationBatchRequest(target=target)
    for name, value in state.items():
        batch.state.append(ToFunction.PersistedValue(name, value))
    for item in messages:
        inv = item if isinstance(item, Invocation) else Invocation(item)
        batch.invocations.append(ToFunction.Invocation(inv.caller, inv.message.typed_value))
    return ToFunction(batch)


def _egress_typename(e: FromFunction.EgressMessage) -> str:
    return f"{e.egress_namespace}/{e.egress_type}"


def _require_target(a: Address | None, what: str) -> Address:
    if a is None or not (a.namespace and a.name and a.id):
        raise ProtocolError(f"{what} has an incomplete target address {a!r}")
    return a


def result_from_response(
    caller: Address, response: FromFunction.InvocationResponse
) -> InvocationResult:
    """Turn a remote function's reply into the effects the engine applies.

    ``caller`` is the address that was invoked; it becomes the caller of the messages it
    sent. A MODIFY mutation maps to the new value's bytes, a DELETE to ``None``.

    Raises:
        ProtocolError: a message lacks its target or a mutation lacks its value.
    """
    result = InvocationResult()
    mt = FromFunction.PersistedValueMutation.MutationType
    for m in response.state_mutations:
        if m.mutation_type == mt.DELETE:
            result.state_mutations[m.state_name] = None
        elif m.mutation_type == mt.MODIFY and m.state_value is not None:
            result.state_mutations[m.state_name] = m.state_value.value
        else:
            raise ProtocolError(
                f"{caller}: state mutation {m!r} is neither a DELETE nor a MODIFY with a value"
            )
    for o in response.outgoing_messages:
        target = _require_target(o.target, f"a message sent by {caller}")
        message = Message(target.typename, target.id, o.argument or TypedValue())
        result.outgoing.append(OutgoingMessage(target, message, caller))
    for d in response.delayed_invocations:
        if d.is_cancellation_request:
            result.delayed_actions.append(DelayedCancellation(d.cancellation_token))
            continue
        target = _require_target(d.target, f"a delayed message sent by {caller}")
        message = Message(target.typename, target.id, d.argument or TypedValue())
        result.delayed_actions.append(
            DelayedMessage(d.delay_in_ms, target, message, d.cancellation_token, caller)
        )
    for e in response.outgoing_egresses:
        result.egress.append(EgressMessage(_egress_typename(e), egress_argument(caller, _egress_typename(e), e.argument)))
    return result


def egress_argument(caller: Address, egress: str, argument: TypedValue | None) -> TypedValue:
    """The value of an egress message sent by the remote function ``caller`` to ``egress``.

    StateFun's runtime hands a missing argument on as protobuf's empty ``TypedValue``, which
    its Kafka and Kinesis egresses refuse (no typename); an egress here is any sink, which
    would receive that empty value silently, so the reply is refused instead.

    Example:
        >>> egress_argument(Address("a", "f", "1"), "a/out", None)
        Traceback (most recent call last):
        ...
        raystream.statefun_api.errors.ProtocolError: a/f/1 sent a message to the egress 'a/out' without an argument (no TypedValue): an egress message carries a value

    Raises:
        ProtocolError: the argument is missing or has no typename.
    """
    if argument is None:
        raise ProtocolError(f"{caller} sent a message to the egress {egress!r} without an argument (no TypedValue): an egress message carries a value")
    if not argument.typename:
        raise ProtocolError(
            f"{caller} sent a message to the egress {egress!r} whose value has no typename "
            f"(TypedValue(has_value={argument.has_value!r}, {len(argument.value)} bytes)): an egress value is typed"
        )
    return argument


def response_from_result(result: InvocationResult, specs: Iterable[ValueSpec]) -> FromFunction:
    """Turn the effects of a local invocation into the reply a function server sends.

    ``specs`` are the function's declared specs; they give mutated values their typename.
    """
    types = {spec.name: spec.type.typename for spec in specs}
    mt = FromFunction.PersistedValueMutation.MutationType
    response = FromFunction.InvocationResponse()
    for name, value in result.state_mutations.items():
        if value is None:
            response.state_mutations.append(FromFunction.PersistedValueMutation(mt.DELETE, name))
        else:
            response.state_mutations.append(
                FromFunction.PersistedValueMutation(
                    mt.MODIFY, name, TypedValue(types[name], True, value)
                )
            )
    for o in result.outgoing:
        response.outgoing_messages.append(FromFunction.Invocation(o.target, o.message.typed_value))
    for action in result.delayed_actions:
        if isinstance(action, DelayedCancellation):
            response.delayed_invocations.append(
                FromFunction.DelayedInvocation(
                    is_cancellation_request=True, cancellation_token=action.cancellation_token
                )
            )
        else:
            response.delayed_invocations.append(
                FromFunction.DelayedInvocation(
                    cancellation_token=action.cancellation_token,
                    delay_in_ms=action.delay_ms,
                    target=action.target,
                    argument=action.message.typed_value,
                )
            )
    for e in result.egress:
        namespace, name = parse_typename(e.typename)
        response.outgoing_egresses.append(
            FromFunction.EgressMessage(namespace, name, e.typed_value)
        )
    return FromFunction(invocation_result=response)


def incomplete_context_for(missing: Iterable[ValueSpec]) -> FromFunction:
    """The reply asking the runtime to register ``missing`` specs and retry.

    Example:
        >>> from raystream.statefun_api import ValueSpec, IntType
        >>> reply = incomplete_context_for([ValueSpec("seen", IntType)])
        >>> reply.incomplete_invocation_context.missing_values[0].type_typename
        'io.statefun.types/int'
    """
    mode = FromFunction.ExpirationSpec.ExpireMode
    modes = {"none": mode.NONE, "after_call": mode.AFTER_INVOKE, "after_write": mode.AFTER_WRITE}
    context = FromFunction.IncompleteInvocationContext()
    for spec in missing:
        expiration = FromFunction.ExpirationSpec(
            modes[spec.expiration_mode], spec.expire_after_millis
        )
        context.missing_values.append(
            FromFunction.PersistedValueSpec(spec.name, expiration, spec.type.typename)
        )
    return FromFunction(incomplete_invocation_context=context)
