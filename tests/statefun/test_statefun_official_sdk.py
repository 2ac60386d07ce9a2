"""Cross-checks against the official StateFun Python SDK (skipped when it is not installed).

Our code and the SDK's protobuf-generated classes are independent implementations of the
same ``types.proto`` and ``request-reply.proto``; these tests require them to agree byte
for byte, and the same user function to behave identically under either import.
"""

from __future__ import annotations

import math
from datetime import timedelta
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

statefun = pytest.importorskip("statefun")
types_pb2 = pytest.importorskip("statefun.types_pb2")
rr_pb2 = pytest.importorskip("statefun.request_reply_pb2")

from raystream import statefun_api  # noqa: E402
from raystream.statefun_api import Address, RequestReplyHandler, TypedValue  # noqa: E402
from raystream.statefun_api.reqreply import (  # noqa: E402
    FromFunction,
    ToFunction,
    decode_from_function,
    decode_to_function,
    encode_from_function,
    encode_to_function,
)
from raystream.statefun_api.testing import RequestBuilder  # noqa: E402

# -- built-in types -------------------------------------------------------------------------

TYPE_CASES = [
    ("BoolType", types_pb2.BooleanWrapper, st.booleans()),
    ("IntType", types_pb2.IntWrapper, st.integers(-(2**31), 2**31 - 1)),
    ("LongType", types_pb2.LongWrapper, st.integers(-(2**63), 2**63 - 1)),
    ("FloatType", types_pb2.FloatWrapper, st.floats(width=32)),
    ("DoubleType", types_pb2.DoubleWrapper, st.floats()),
    ("StringType", types_pb2.StringWrapper, st.text()),
]


@pytest.mark.parametrize(("name", "wrapper", "values"), TYPE_CASES, ids=[c[0] for c in TYPE_CASES])
def test_builtin_types_match_the_sdk(name: str, wrapper: type, values) -> None:
    ours = getattr(statefun_api, name)
    theirs = getattr(statefun, name)
    assert ours.typename == theirs.typename

    @given(values)
    def check(value) -> None:
        official = wrapper(value=value).SerializeToString()
        assert ours.serializer().serialize(value) == official
        assert theirs.serializer().serialize(value) == official
        back = ours.serializer().deserialize(official)
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(back)
        else:
            assert back == value

    check()


class _Index:
    """An integer by ``__index__`` only."""

    def __index__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return "_Index()"


class _Truthy:
    """A truth value by ``__bool__`` only (not an integer)."""

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "_Truthy()"


np = pytest.importorskip("numpy")
# what a BoolType value may be besides a bool: what protobuf's bool field takes (a numpy bool
# scalar, an integer of int64 range: numpy integers, anything with __index__) and what it refuses
BOOL_CASES = [
    np.True_, np.False_, np.bool_(1 < 2), np.int64(3), np.int8(0), np.uint64(5), 2, -1, 0,
    2**63 - 1, -(2**63), _Index(),  # taken
    2**63, -(2**63) - 1, np.uint64(2**64 - 1),  # out of int64's range
    1.0, np.float64(1.0), "yes", b"x", None, _Truthy(), np.array(True), np.array(3), np.array([True]),  # no integer
]


def _outcome(call):
    """``("ok", result)`` or ``("error", kind)``: kind ``TypeError`` or ``range`` (protobuf's
    OverflowError, our ValueError)."""
    try:
        return "ok", call()
    except TypeError:
        return "error", "TypeError"
    except (OverflowError, ValueError):
        return "error", "range"


@pytest.mark.parametrize("value", BOOL_CASES, ids=repr)
def test_bool_values_are_taken_as_the_sdk_takes_them(value) -> None:
    """BoolType's serializer, ``message_builder(bool_value=...)`` and
    ``egress_message_builder(..., BoolType)`` take what the SDK takes (protobuf's bool field)
    and refuse what it refuses; a value taken is a Python bool once decoded."""
    theirs = _outcome(lambda: statefun.BoolType.serializer().serialize(value))
    ours = _outcome(lambda: statefun_api.BoolType.serializer().serialize(value))
    assert ours == theirs
    if value is None:  # (the builders treat None as "not given")
        return
    built = _outcome(lambda: statefun.message_builder(target_typename="a/b", target_id="1", bool_value=value).typed_value.value)
    assert _outcome(lambda: statefun_api.message_builder("a/b", "1", bool_value=value).raw_value()) == built
    egress = _outcome(
        lambda: statefun.egress_message_builder(target_typename="a/b", value=value, value_type=statefun.BoolType).typed_value.value
    )
    assert _outcome(lambda: statefun_api.egress_message_builder("a/b", value, statefun_api.BoolType).typed_value.value) == egress
    if theirs[0] == "ok":
        decoded = statefun_api.BoolType.serializer().deserialize(ours[1])
        assert type(decoded) is bool and decoded == bool(int(value) if not isinstance(value, _Index) else 1)
        message = statefun_api.message_builder("a/b", "1", bool_value=value)
        assert type(message.as_bool()) is bool and message.as_bool() is decoded


@pytest.mark.parametrize("value", [np.True_, np.False_, np.int64(2), 1, 0])
def test_a_bool_state_takes_what_the_sdk_takes_and_keeps_a_bool(value) -> None:
    from raystream.statefun_api.local import LocalDispatchers

    functions = statefun_api.StatefulFunctions()
    specs = [
        statefun_api.ValueSpec("b", statefun_api.BoolType),  # a plain slot of the dispatcher's storage
        statefun_api.ValueSpec("c", statefun_api.BoolType, expire_after_write=timedelta(hours=1)),  # through its cell
    ]

    @functions.bind("a/f", specs=specs)
    def f(context, message):
        if message.as_string() == "set":
            context.storage.b = value
            context.storage.c = value

    with LocalDispatchers(functions) as run:
        run.send(statefun_api.message_builder("a/f", "1", str_value="set"))
        run.send(statefun_api.message_builder("a/f", "1", str_value="read"))
        for name in ("b", "c"):
            stored = run.state("a/f", "1", name)
            assert type(stored) is bool and stored == bool(value)


# -- the codec against protobuf ---------------------------------------------------------------

text = st.text(max_size=6)
addresses = st.builds(Address, text, text, text)
typed_values = st.builds(TypedValue, text, st.booleans(), st.binary(max_size=8))
opt = st.none().__or__


def pb_address(target, a: Address) -> None:
    target.namespace, target.type, target.id = a.namespace, a.name, a.id


def pb_typed(target, tv: TypedValue) -> None:
    target.typename, target.has_value, target.value = tv.typename, tv.has_value, tv.value


def pb_to_function(msg: ToFunction):
    pb = rr_pb2.ToFunction()
    batch = msg.invocation
    if batch is None:
        return pb
    pb.invocation.SetInParent()
    if batch.target is not None:
        pb.invocation.target.SetInParent()
        pb_address(pb.invocation.target, batch.target)
    for pv in batch.state:
        p = pb.invocation.state.add(state_name=pv.state_name)
        if pv.state_value is not None:
            p.state_value.SetInParent()
            pb_typed(p.state_value, pv.state_value)
    for inv in batch.invocations:
        i = pb.invocation.invocations.add()
        if inv.caller is not None:
            i.caller.SetInParent()
            pb_address(i.caller, inv.caller)
        if inv.argument is not None:
            i.argument.SetInParent()
            pb_typed(i.argument, inv.argument)
    return pb


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


@given(to_functions)
def test_to_function_bytes_match_protobuf(msg: ToFunction) -> None:
    official = pb_to_function(msg).SerializeToString()
    assert encode_to_function(msg) == official
    assert decode_to_function(official) == msg


delayed = st.builds(
    FromFunction.DelayedInvocation,
    st.booleans(),
    text,
    st.integers(-(2**63), 2**63 - 1),
    opt(addresses),
    opt(typed_values),
)


@given(
    st.lists(delayed, max_size=3),
    st.lists(st.tuples(st.sampled_from([0, 1]), text, opt(typed_values)), max_size=3),
)
def test_from_function_bytes_match_protobuf(delays, mutations) -> None:
    ours = FromFunction(
        invocation_result=FromFunction.InvocationResponse(
            state_mutations=[FromFunction.PersistedValueMutation(*m) for m in mutations],
            delayed_invocations=delays,
        )
    )
    pb = rr_pb2.FromFunction()
    pb.invocation_result.SetInParent()
    for kind, name, value in mutations:
        m = pb.invocation_result.state_mutations.add(mutation_type=kind, state_name=name)
        if value is not None:
            m.state_value.SetInParent()
            pb_typed(m.state_value, value)
    for d in delays:
        x = pb.invocation_result.delayed_invocations.add(
            is_cancellation_request=d.is_cancellation_request,
            cancellation_token=d.cancellation_token,
            delay_in_ms=d.delay_in_ms,
        )
        if d.target is not None:
            x.target.SetInParent()
            pb_address(x.target, d.target)
        if d.argument is not None:
            x.argument.SetInParent()
            pb_typed(x.argument, d.argument)
    assert encode_from_function(ours) == pb.SerializeToString()
    assert decode_from_function(pb.SerializeToString()) == ours


# -- the same function under either import ------------------------------------------------------


def build_functions(sf: ModuleType):
    """User code written against the SDK; ported by passing statefun_api instead."""
    functions = sf.StatefulFunctions()
    profile = sf.make_json_type("com.example/Profile")

    @functions.bind(
        typename="com.example/greeter",
        specs=[
            sf.ValueSpec(name="seen", type=sf.IntType, expire_after_call=timedelta(minutes=5)),
            sf.ValueSpec(name="profile", type=profile, expire_after_write=timedelta(days=1)),
            sf.ValueSpec(name="stale", type=sf.StringType),
        ],
    )
    def greeter(context, message):
        seen = context.storage.seen or 0
        context.storage.seen = seen + 1
        context.storage.profile = {
            "last": message.as_string(),
            "caller": context.caller.id if context.caller else None,
        }
        del context.storage.stale
        context.send(
            sf.message_builder(
                target_typename="com.example/counter", target_id=context.address.id, long_value=seen
            )
        )
        context.send_after(
            timedelta(seconds=90),
            sf.message_builder(
                target_typename="com.example/timer", target_id="t", double_value=0.25
            ),
            cancellation_token="tok",
        )
        context.send_after(
            timedelta(milliseconds=5),
            sf.message_builder(target_typename="com.example/timer", target_id="t", bool_value=True),
        )
        context.cancel_delayed_message("old")
        context.send_egress(
            sf.egress_message_builder(
                target_typename="com.example/out",
                value=f"hi {context.address.id}",
                value_type=sf.StringType,
            )
        )

    @functions.bind(typename="com.example/async")
    async def async_fn(context, message):
        context.send(
            sf.message_builder(
                target_typename="com.example/x", target_id="1", float_value=message.as_float()
            )
        )

    return functions


def greeter_request(with_state: bool = True) -> bytes:
    b = RequestBuilder("com.example/greeter", "alice")
    if with_state:
        b = (
            b.with_state("seen", 7, statefun_api.IntType)
            .with_state("profile")
            .with_state("stale", "x", statefun_api.StringType)
        )
    return (
        b.with_invocation("hello", statefun_api.StringType, caller=("com.example/caller", "bob"))
        .with_invocation("again", statefun_api.StringType)
        .to_bytes()
    )


@pytest.mark.parametrize("with_state", [True, False], ids=["invocation", "missing-state"])
def test_same_function_same_reply_bytes(with_state: bool) -> None:
    request = greeter_request(with_state)
    theirs = statefun.RequestReplyHandler(build_functions(statefun)).handle_sync(request)
    ours = RequestReplyHandler(build_functions(statefun_api)).handle_sync(request)
    assert ours == theirs
    decoded = decode_from_function(theirs)
    if with_state:
        assert len(decoded.invocation_result.outgoing_messages) == 2
    else:
        assert [v.state_name for v in decoded.incomplete_invocation_context.missing_values] == [
            "seen",
            "profile",
            "stale",
        ]


def test_async_function_same_reply_bytes() -> None:
    request = (
        RequestBuilder("com.example/async", "1")
        .with_invocation(1.5, statefun_api.FloatType)
        .to_bytes()
    )
    theirs = statefun.RequestReplyHandler(build_functions(statefun)).handle_sync(request)
    assert RequestReplyHandler(build_functions(statefun_api)).handle_sync(request) == theirs


def test_our_handler_answers_an_sdk_built_request() -> None:
    pb = rr_pb2.ToFunction()
    pb.invocation.target.namespace = "com.example"
    pb.invocation.target.type = "greeter"
    pb.invocation.target.id = "carol"
    for name in ("seen", "profile", "stale"):
        pb.invocation.state.add(state_name=name)
    inv = pb.invocation.invocations.add()
    inv.argument.typename = "io.statefun.types/string"
    inv.argument.has_value = True
    inv.argument.value = types_pb2.StringWrapper(value="yo").SerializeToString()
    reply = rr_pb2.FromFunction()
    reply.ParseFromString(
        RequestReplyHandler(build_functions(statefun_api)).handle_sync(pb.SerializeToString())
    )
    result = reply.invocation_result
    assert [m.state_name for m in result.state_mutations] == ["seen", "profile", "stale"]
    assert (
        result.state_mutations[2].mutation_type == rr_pb2.FromFunction.PersistedValueMutation.DELETE
    )
    assert result.outgoing_messages[0].target.type == "counter"
    egress = types_pb2.StringWrapper()
    egress.ParseFromString(result.outgoing_egresses[0].argument.value)
    assert egress.value == "hi carol"


def test_our_handler_asks_an_sdk_built_request_for_missing_state() -> None:
    """The handshake reply of raystream's handler, decoded by the SDK's protobuf classes."""
    pb = rr_pb2.ToFunction()
    pb.invocation.target.namespace = "com.example"
    pb.invocation.target.type = "greeter"
    pb.invocation.target.id = "dave"
    pb.invocation.state.add(state_name="stale")  # 'seen' and 'profile' are missing
    inv = pb.invocation.invocations.add()
    inv.argument.typename = "io.statefun.types/string"
    inv.argument.has_value = True
    inv.argument.value = types_pb2.StringWrapper(value="hi").SerializeToString()
    reply = rr_pb2.FromFunction()
    reply.ParseFromString(
        RequestReplyHandler(build_functions(statefun_api)).handle_sync(pb.SerializeToString())
    )
    assert reply.WhichOneof("response") == "incomplete_invocation_context"
    missing = {v.state_name: v for v in reply.incomplete_invocation_context.missing_values}
    assert sorted(missing) == ["profile", "seen"]
    mode = rr_pb2.FromFunction.ExpirationSpec.ExpireMode
    assert missing["seen"].type_typename == "io.statefun.types/int"
    assert missing["seen"].expiration_spec.mode == mode.Value("AFTER_INVOKE")
    assert missing["seen"].expiration_spec.expire_after_millis == 5 * 60 * 1000
    assert missing["profile"].expiration_spec.mode == mode.Value("AFTER_WRITE")
