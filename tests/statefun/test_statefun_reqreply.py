"""The request-reply codec and the function-side handler (handshake, round trip, errors)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raystream.statefun_api import (
    Address,
    FunctionNotFound,
    IntType,
    ProtocolError,
    RequestReplyHandler,
    StatefulFunctionError,
    StatefulFunctions,
    StringType,
    TypedValue,
    ValueSpec,
    egress_message_builder,
    invoke,
    message_builder,
)
from raystream.statefun_api.reqreply import (
    FromFunction,
    ToFunction,
    build_request,
    decode_from_function,
    decode_to_function,
    encode_from_function,
    encode_to_function,
    incomplete_context_for,
    response_from_result,
    result_from_response,
)
from raystream.statefun_api.testing import RequestBuilder, parse_response, round_trip

MT = FromFunction.PersistedValueMutation.MutationType
MODE = FromFunction.ExpirationSpec.ExpireMode


def greeter_functions() -> StatefulFunctions:
    functions = StatefulFunctions()

    @functions.bind(
        "org.foo/greeter",
        specs=[
            ValueSpec("seen", IntType, expire_after_call=timedelta(hours=1)),
            ValueSpec("name", StringType, expire_after_write=timedelta(seconds=5)),
            ValueSpec("gone", IntType),
        ],
    )
    def greeter(context, message):
        seen = (context.storage.seen or 0) + 1
        context.storage.seen = seen
        del context.storage.gone
        caller = context.caller.id if context.caller else "ingress"
        context.send(
            message_builder(
                "org.foo/greeter-java", "0", str_value=f"{message.as_string()} from {caller}"
            )
        )
        context.send_after(
            timedelta(hours=1), message_builder("night/owl", "1", str_value="hoo"), "token-1234"
        )
        context.cancel_delayed_message("token-1234")
        context.send_egress(egress_message_builder("e/out", seen, IntType))

    return functions


# -- hand-computed bytes --------------------------------------------------------------------


def test_to_function_bytes_by_hand() -> None:
    request = ToFunction(
        ToFunction.InvocationBatchRequest(
            target=Address("a", "b", "1"),
            state=[ToFunction.PersistedValue("s", None)],
            invocations=[ToFunction.Invocation(None, TypedValue("t/i", True, b"\x01"))],
        )
    )
    target = "0a090a01611201621a0131"  # Address: namespace=1, type=2, id=3
    state = "12030a0173"  # PersistedValue: state_name=1, no state_value
    argument = "0a03742f6910011a0101"  # TypedValue: typename=1, has_value=2, value=3
    invocation = "1a0c120a" + argument  # Invocation: argument=2
    batch = target + state + invocation
    expected = bytes.fromhex("a206" + f"{len(bytes.fromhex(batch)):02x}" + batch)  # oneof field 100
    assert encode_to_function(request) == expected
    assert decode_to_function(expected) == request


def test_from_function_bytes_by_hand() -> None:
    reply = FromFunction(
        invocation_result=FromFunction.InvocationResponse(
            state_mutations=[FromFunction.PersistedValueMutation(MT.DELETE, "x")],
            delayed_invocations=[
                FromFunction.DelayedInvocation(
                    is_cancellation_request=True, cancellation_token="t"
                ),
                FromFunction.DelayedInvocation(delay_in_ms=300, target=Address("a", "b", "c")),
            ],
            outgoing_egresses=[FromFunction.EgressMessage("e", "o")],
        )
    )
    mutation = "0a03120178"  # DELETE is 0 (omitted); state_name=2
    cancel = "1a0550015a0174"  # is_cancellation_request=10, cancellation_token=11
    delayed = "1a0e08ac0212090a01611201621a0163"  # delay_in_ms=1, target=2
    egress = "22060a016512016f"
    body = mutation + cancel + delayed + egress
    expected = bytes.fromhex("a206" + f"{len(bytes.fromhex(body)):02x}" + body)
    assert encode_from_function(reply) == expected
    assert decode_from_function(expected) == reply


def test_incomplete_context_bytes_by_hand() -> None:
    reply = incomplete_context_for(
        [ValueSpec("s", IntType, expire_after_call=timedelta(seconds=1))]
    )
    spec = "0a01731205080210e8071a15" + b"io.statefun.types/int".hex()
    body = "0a" + f"{len(bytes.fromhex(spec)):02x}" + spec
    assert encode_from_function(reply) == bytes.fromhex(
        "aa06" + f"{len(bytes.fromhex(body)):02x}" + body
    )


def test_empty_oneof_members_are_still_present() -> None:
    assert encode_from_function(
        FromFunction(invocation_result=FromFunction.InvocationResponse())
    ) == bytes.fromhex("a20600")
    assert (
        decode_from_function(bytes.fromhex("a20600")).invocation_result
        == FromFunction.InvocationResponse()
    )
    assert encode_to_function(ToFunction()) == b""
    assert decode_from_function(b"") == FromFunction()


def test_codec_errors() -> None:
    with pytest.raises(ProtocolError, match="oneof"):
        encode_from_function(
            FromFunction(
                FromFunction.InvocationResponse(), FromFunction.IncompleteInvocationContext()
            )
        )
    with pytest.raises(ProtocolError, match="cannot decode a ToFunction"):
        decode_to_function(b"\xa2\x06\x05\x00")
    with pytest.raises(ProtocolError, match="cannot decode a FromFunction"):
        decode_from_function(b"\xff")
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode_to_function(
            ToFunction(ToFunction.InvocationBatchRequest(target=Address(1, "b", "c")))
        )  # type: ignore[arg-type]


def test_decoder_keeps_last_oneof_member_and_unknown_enum_values() -> None:
    both = bytes.fromhex("a20600aa0600")
    assert decode_from_function(both) == FromFunction(
        incomplete_invocation_context=FromFunction.IncompleteInvocationContext()
    )
    mutation = bytes.fromhex("a206040a020807")  # mutation_type 7: unknown, kept
    assert decode_from_function(mutation).invocation_result.state_mutations[0].mutation_type == 7


# -- property: encode/decode round trip -----------------------------------------------------

text = st.text(max_size=8)
addresses = st.builds(Address, text, text, text)
typed_values = st.builds(TypedValue, text, st.booleans(), st.binary(max_size=16))
opt = st.none().__or__

to_functions = st.builds(
    ToFunction,
    opt(
        st.builds(
            ToFunction.InvocationBatchRequest,
            opt(addresses),
            st.lists(st.builds(ToFunction.PersistedValue, text, opt(typed_values)), max_size=3),
            st.lists(
                st.builds(ToFunction.Invocation, opt(addresses), opt(typed_values)), max_size=3
            ),
        )
    ),
)
responses = st.builds(
    FromFunction.InvocationResponse,
    st.lists(
        st.builds(
            FromFunction.PersistedValueMutation, st.sampled_from(list(MT)), text, opt(typed_values)
        ),
        max_size=3,
    ),
    st.lists(st.builds(FromFunction.Invocation, opt(addresses), opt(typed_values)), max_size=3),
    st.lists(
        st.builds(
            FromFunction.DelayedInvocation,
            st.booleans(),
            text,
            st.integers(-(2**63), 2**63 - 1),
            opt(addresses),
            opt(typed_values),
        ),
        max_size=3,
    ),
    st.lists(st.builds(FromFunction.EgressMessage, text, text, opt(typed_values)), max_size=3),
)
incompletes = st.builds(
    FromFunction.IncompleteInvocationContext,
    st.lists(
        st.builds(
            FromFunction.PersistedValueSpec,
            text,
            opt(
                st.builds(
                    FromFunction.ExpirationSpec,
                    st.sampled_from(list(MODE)),
                    st.integers(-(2**63), 2**63 - 1),
                )
            ),
            text,
        ),
        max_size=3,
    ),
)
from_functions = st.one_of(
    st.just(FromFunction()),
    st.builds(FromFunction, invocation_result=responses),
    st.builds(FromFunction, incomplete_invocation_context=incompletes),
)


@given(to_functions)
def test_to_function_round_trip(msg: ToFunction) -> None:
    assert decode_to_function(encode_to_function(msg)) == msg


@given(from_functions)
def test_from_function_round_trip(msg: FromFunction) -> None:
    assert decode_from_function(encode_from_function(msg)) == msg


# -- the handler ---------------------------------------------------------------------------


def full_request() -> RequestBuilder:
    return (
        RequestBuilder("org.foo/greeter", "0")
        .with_state("seen", 1, IntType)
        .with_state("name")
        .with_state("gone", 5, IntType)
        .with_invocation("hello", StringType, caller=("org.foo/caller", "c1"))
        .with_invocation("again", StringType)
    )


def test_handshake_reports_missing_specs_then_full_request_works() -> None:
    functions = greeter_functions()
    partial = (
        RequestBuilder("org.foo/greeter", "0")
        .with_state("name")
        .with_invocation("hello", StringType)
    )
    reply = round_trip(functions, partial)
    assert reply.invocation_result is None
    assert reply.incomplete_invocation_context.missing_values == [
        FromFunction.PersistedValueSpec(
            "seen",
            FromFunction.ExpirationSpec(MODE.AFTER_INVOKE, 3_600_000),
            "io.statefun.types/int",
        ),
        FromFunction.PersistedValueSpec(
            "gone", FromFunction.ExpirationSpec(MODE.NONE, 0), "io.statefun.types/int"
        ),
    ]
    reply = round_trip(functions, full_request())
    assert reply.incomplete_invocation_context is None
    result = reply.invocation_result
    assert result.state_mutations == [
        FromFunction.PersistedValueMutation(
            MT.MODIFY,
            "seen",
            TypedValue("io.statefun.types/int", True, IntType.serializer().serialize(3)),
        ),
        FromFunction.PersistedValueMutation(MT.DELETE, "gone", None),
    ]
    assert [
        StringType.serializer().deserialize(o.argument.value) for o in result.outgoing_messages
    ] == [
        "hello from c1",
        "again from ingress",
    ]
    assert result.outgoing_messages[0].target == Address("org.foo", "greeter-java", "0")
    first_delay, first_cancel = result.delayed_invocations[:2]
    assert (
        first_delay.delay_in_ms,
        first_delay.cancellation_token,
        first_delay.is_cancellation_request,
    ) == (3_600_000, "token-1234", False)
    assert first_delay.target == Address("night", "owl", "1")
    assert first_cancel == FromFunction.DelayedInvocation(
        is_cancellation_request=True, cancellation_token="token-1234"
    )
    assert [(e.egress_namespace, e.egress_type) for e in result.outgoing_egresses] == [
        ("e", "out")
    ] * 2


def test_handle_async_matches_handle_sync() -> None:
    handler = RequestReplyHandler(greeter_functions())
    data = full_request().to_bytes()
    assert asyncio.run(handler.handle_async(data)) == handler.handle_sync(data)


def test_async_function_through_handler() -> None:
    functions = StatefulFunctions()

    @functions.bind("ns/async", specs=[ValueSpec("n", IntType)])
    async def f(context, message):
        await asyncio.sleep(0)
        context.storage.n = message.as_int() * 2

    reply = round_trip(
        functions, RequestBuilder("ns/async", "1").with_state("n").with_invocation(21, IntType)
    )
    assert (
        IntType.serializer().deserialize(
            reply.invocation_result.state_mutations[0].state_value.value
        )
        == 42
    )


def test_state_sent_with_a_different_typename_is_an_error() -> None:
    request = (
        RequestBuilder("org.foo/greeter", "0")
        .with_state("seen", "x", StringType)
        .with_state("name")
        .with_state("gone")
        .with_invocation("hello", StringType)
    )
    with pytest.raises(
        StatefulFunctionError, match=r"'seen'.*'io.statefun.types/int'.*'io.statefun.types/string'"
    ):
        round_trip(greeter_functions(), request)


def test_handler_errors() -> None:
    handler = RequestReplyHandler(greeter_functions())
    with pytest.raises(FunctionNotFound, match="org.foo/nobody"):
        handler.handle_sync(
            RequestBuilder("org.foo/nobody", "0").with_invocation("x", StringType).to_bytes()
        )
    with pytest.raises(ProtocolError, match="no invocation batch"):
        handler.handle_sync(b"")
    with pytest.raises(ProtocolError, match="incomplete target"):
        handler.handle_sync(
            encode_to_function(
                ToFunction(ToFunction.InvocationBatchRequest(target=Address("a", "b", "")))
            )
        )
    with pytest.raises(ProtocolError):
        handler.handle_sync(b"\x01\x02\x03")
    with pytest.raises(TypeError, match="StatefulFunctions"):
        RequestReplyHandler(None)  # type: ignore[arg-type]


def test_failing_function_through_handler_is_chained() -> None:
    functions = StatefulFunctions()
    functions.register("ns/bad", lambda c, m: 1 / 0)
    with pytest.raises(StatefulFunctionError, match="ns/bad/1") as info:
        round_trip(functions, RequestBuilder("ns/bad", "1").with_invocation(1, IntType))
    assert isinstance(info.value.__cause__, ZeroDivisionError)


# -- engine side: request building and reply interpretation ---------------------------------


def test_engine_side_round_trip_matches_direct_invocation() -> None:
    """A runtime calling a remote function gets the same effects as invoking it locally."""
    functions = greeter_functions()
    target = Address.of("org.foo/greeter", "0")
    state = {
        "seen": TypedValue("io.statefun.types/int", True, IntType.serializer().serialize(1)),
        "name": None,
        "gone": None,
    }
    messages = [message_builder("org.foo/greeter", "0", str_value="hello")]
    request = build_request(target, state, messages)
    reply = decode_from_function(
        RequestReplyHandler(functions).handle_sync(encode_to_function(request))
    )
    remote = result_from_response(target, reply.invocation_result)
    local = invoke(functions, target, state, messages)
    assert remote == local
    assert response_from_result(local, functions.for_typename("org.foo/greeter").specs) == reply


def test_result_from_response_validates() -> None:
    bad_mutation = FromFunction.InvocationResponse(
        state_mutations=[FromFunction.PersistedValueMutation(MT.MODIFY, "x", None)]
    )
    with pytest.raises(ProtocolError, match="neither a DELETE nor a MODIFY"):
        result_from_response(Address.of("a/b", "1"), bad_mutation)
    no_target = FromFunction.InvocationResponse(
        outgoing_messages=[FromFunction.Invocation(None, TypedValue())]
    )
    with pytest.raises(ProtocolError, match="incomplete target"):
        result_from_response(Address.of("a/b", "1"), no_target)


def test_parse_response_helper() -> None:
    assert (
        parse_response(bytes.fromhex("a20600")).invocation_result
        == FromFunction.InvocationResponse()
    )
    assert FromFunction.from_bytes(FromFunction().to_bytes()) == FromFunction()
    assert ToFunction.from_bytes(full_request().build().to_bytes()) == full_request().build()
