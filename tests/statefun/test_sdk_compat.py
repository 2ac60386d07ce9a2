"""raystream's SDK surface behaves as the official StateFun Python SDK (``statefun`` 3.3.0).

The official SDK's unit tests (``statefun-sdk-python/tests``: message, request_reply,
statefun, storage, typename, types, valuespec) ported in spirit: each check here runs the
same user-level code against both packages (``sdk`` is ``statefun`` or
``raystream.statefun_api``) and requires the same outcome. Request-reply round trips build
the request with the official SDK's generated protobuf classes, answer it with each SDK's
``RequestReplyHandler`` and read both replies with the official classes, so the replies
must agree field by field. Where raystream deliberately differs (docs/statefun.md,
"Differences from the official SDK"), the test says so and checks the difference.
"""

from __future__ import annotations

import json
from datetime import timedelta
from types import ModuleType

import pytest

statefun = pytest.importorskip("statefun")
rr_pb2 = pytest.importorskip("statefun.request_reply_pb2")
json_format = pytest.importorskip("google.protobuf.json_format")
from statefun.core import parse_typename as sdk_parse_typename  # noqa: E402
from statefun.utils import to_typed_value as sdk_to_typed_value  # noqa: E402

from raystream import statefun_api  # noqa: E402
from raystream.statefun_api.types import to_typed_value  # noqa: E402

SDKS = pytest.mark.parametrize("sdk", [statefun, statefun_api], ids=["statefun", "raystream"])


def typed(sdk: ModuleType, tpe, value):
    """A TypedValue of ``sdk``'s own kind (protobuf for the SDK, a dataclass for raystream)."""
    return sdk_to_typed_value(tpe, value) if sdk is statefun else to_typed_value(tpe, value)


# ---------------------------------------------------------------- messages (message_test, types_test)
@SDKS
def test_a_message_with_a_primitive_value(sdk):
    m = sdk.message_builder(target_typename="foo/bar", target_id="a", int_value=1)
    assert m.is_int() and not m.is_long() and not m.is_string()
    assert m.as_int() == 1
    assert (m.value_typename(), m.raw_value()) == ("io.statefun.types/int", b"\x0d\x01\x00\x00\x00")


@SDKS
def test_a_message_with_an_explicit_type(sdk):
    m = sdk.message_builder(target_typename="foo/bar", target_id="a", value=5.0, value_type=sdk.FloatType)
    assert m.is_float()
    assert m.as_float() == 5.0


@SDKS
def test_a_message_built_from_a_typed_value(sdk):
    msg = sdk.Message(target_typename="foo/bar", target_id="1", typed_value=typed(sdk, sdk.StringType, "hello world"))
    assert msg.is_string()
    assert msg.as_string() == "hello world"
    assert (msg.target_typename, msg.target_id) == ("foo/bar", "1")
    assert (msg.typed_value.typename, msg.typed_value.has_value) == ("io.statefun.types/string", True)


@SDKS
@pytest.mark.parametrize("bad", [dict(target_typename="", target_id="1"), dict(target_typename="foo/bar", target_id="")])
def test_a_message_needs_a_target(sdk, bad):
    with pytest.raises(ValueError):
        sdk.Message(typed_value=typed(sdk, sdk.StringType, "x"), **bad)


@SDKS
@pytest.mark.parametrize("kwargs", [dict(value="x"), dict(int_value=None), dict(value=None, value_type=None)])
def test_message_builder_refuses_values_it_cannot_type(sdk, kwargs):
    with pytest.raises(ValueError):
        sdk.message_builder("foo/bar", "a", **kwargs)


@SDKS
def test_message_builder_needs_a_value(sdk):
    with pytest.raises(TypeError):
        sdk.message_builder("foo/bar", "a")


@SDKS
def test_the_kafka_egress_message(sdk):
    record = sdk.kafka_egress_message(typename="foo/bar", topic="topic", value=1337420)
    assert record.typename == "foo/bar"
    assert record.value_typename() == "type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord"
    assert record.raw_value() == statefun.kafka_egress_message(typename="foo/bar", topic="topic", value=1337420).raw_value()


@SDKS
def test_a_generic_egress_message(sdk):
    greet = sdk.make_json_type("foo/Greet")
    record = sdk.egress_message_builder(target_typename="foo/out", value={"name": "Zoë"}, value_type=greet)
    assert (record.typename, record.value_typename()) == ("foo/out", "foo/Greet")
    assert record.raw_value() == '{"name": "Zoë"}'.encode()  # UTF-8, not \\u escapes
    with pytest.raises(ValueError):
        sdk.egress_message_builder(target_typename="", value="x", value_type=sdk.StringType)
    with pytest.raises(ValueError):
        sdk.egress_message_builder(target_typename="foo/out", value=None, value_type=sdk.StringType)


# ---------------------------------------------------------------- types (types_test)
@SDKS
@pytest.mark.parametrize(
    ("name", "value"),
    [("BoolType", True), ("IntType", 0), ("FloatType", 0.5), ("DoubleType", 1e-20), ("LongType", 1 << 45), ("StringType", "hello world")],
)
def test_built_in_types_round_trip_with_the_same_bytes(sdk, name, value):
    serializer = getattr(sdk, name).serializer()
    data = serializer.serialize(value)
    assert serializer.deserialize(data) == value
    assert data == getattr(statefun, name).serializer().serialize(value)
    assert getattr(sdk, name).typename == getattr(statefun, name).typename


@SDKS
def test_a_simple_type_of_two_functions(sdk):
    tpe = sdk.simple_type(typename="org.foo.bar/UserJson", serialize_fn=json.dumps, deserialize_fn=json.loads)
    assert tpe.typename == "org.foo.bar/UserJson"
    user = {"name": "bob", "last": "mop"}
    assert tpe.serializer().deserialize(tpe.serializer().serialize(user)) == user
    with pytest.raises(ValueError):
        sdk.simple_type(typename="org.foo.bar/UserJson", serialize_fn=None, deserialize_fn=json.loads)


@SDKS
def test_custom_types_subclass_type_and_type_serializer(sdk):
    """A hand-written Type, as the SDK's docs show: subclass Type and TypeSerializer."""

    class Upper(sdk.TypeSerializer):
        def serialize(self, value):
            return value.upper().encode()

        def deserialize(self, data):
            return data.decode()

    class UpperType(sdk.Type):
        def __init__(self):
            super().__init__("foo/Upper")

        def serializer(self):
            return Upper()

    tpe = UpperType()
    m = sdk.message_builder("foo/bar", "a", value="shout", value_type=tpe)
    assert m.is_type(tpe) and m.as_type(tpe) == "SHOUT"
    spec = sdk.ValueSpec(name="loud", type=tpe)
    assert spec.type is tpe


@SDKS
def test_protobuf_types_are_named_by_the_message(sdk):
    from tests.statefun.showcase_custom_types_pb2 import UserProfile

    tpe = sdk.make_protobuf_type(UserProfile)
    assert tpe.typename == "type.googleapis.com/org.apache.flink.statefun.playground.showcase.UserProfile"
    assert sdk.make_protobuf_type(UserProfile, namespace="foo.bar").typename.startswith("foo.bar/org.apache")
    profile = UserProfile(name="Joe", favorite_tv_show="The Office")
    assert tpe.serializer().deserialize(tpe.serializer().serialize(profile)) == profile


# ---------------------------------------------------------------- typenames (typename_test)
@pytest.mark.parametrize("parse", [sdk_parse_typename, statefun_api.parse_typename], ids=["statefun", "raystream"])
def test_parse_typename(parse):
    assert parse("foo/bar") == ("foo", "bar")
    assert parse("com.foo/bar/baz") == ("com.foo/bar", "baz")  # the name follows the last slash
    for bad in ["/bar", "n/", "/", "", "no-slash"]:
        with pytest.raises(ValueError):
            parse(bad)


# ---------------------------------------------------------------- value specs (valuespec_test)
@SDKS
def test_value_spec(sdk):
    a = sdk.ValueSpec(name="a", type=sdk.IntType)
    assert (a.name, a.type, a.after_write, a.after_call, a.duration) == ("a", sdk.IntType, False, False, 0)
    call = sdk.ValueSpec(name="a", type=sdk.IntType, expire_after_call=timedelta(seconds=1))
    assert (call.after_call, call.after_write, call.duration) == (True, False, 1000)
    write = sdk.ValueSpec(name="a", type=sdk.IntType, expire_after_write=timedelta(seconds=1))
    assert (write.after_call, write.after_write, write.duration) == (False, True, 1000)


@SDKS
@pytest.mark.parametrize("name", ["-a", "def", "Seen", "two words", "1st", ""])
def test_value_spec_names_must_be_attribute_names(sdk, name):
    with pytest.raises(ValueError):
        sdk.ValueSpec(name=name, type=sdk.IntType, expire_after_call=timedelta(1))


@SDKS
def test_value_spec_type_errors(sdk):
    with pytest.raises(ValueError):
        sdk.ValueSpec(name="a", type=None)
    with pytest.raises(TypeError):
        sdk.ValueSpec(name="a", type=int)
    with pytest.raises(ValueError):
        sdk.ValueSpec(name="a", type=sdk.IntType, expire_after_call=timedelta(1), expire_after_write=timedelta(1))


# ---------------------------------------------------------------- the registry (statefun_test)
@SDKS
def test_functions_are_registered_with_their_specs(sdk):
    functions = sdk.StatefulFunctions()
    foo, bar = sdk.ValueSpec(name="foo", type=sdk.IntType), sdk.ValueSpec(name="bar", type=sdk.StringType)

    @functions.bind(typename="org.foo/greeter", specs=[foo, bar])
    def greeter(context, message):
        pass

    @functions.bind(typename="org.foo/async")
    async def greeter_async(context, message):
        pass

    fun = functions.for_typename("org.foo/greeter")
    assert fun.fun is greeter and not fun.is_async
    assert list(fun.storage_spec.specs) == [foo, bar]
    assert fun.storage_spec.names == frozenset({"foo", "bar"})
    assert functions.for_typename("org.foo/async").is_async
    assert list(functions.for_typename("org.foo/async").storage_spec.specs) == []


@SDKS
def test_duplicate_state_names_are_refused(sdk):
    functions = sdk.StatefulFunctions()
    with pytest.raises(ValueError):
        functions.register("org.foo/greeter", lambda context, message: None,
                           [sdk.ValueSpec(name="bar", type=sdk.IntType), sdk.ValueSpec(name="bar", type=sdk.IntType)])


@SDKS
def test_a_function_must_take_context_and_message(sdk):
    functions = sdk.StatefulFunctions()
    with pytest.raises(ValueError):
        @functions.bind(typename="org.foo/greeter")
        def foo(message):  # missing context
            pass


@SDKS
def test_an_unknown_typename_is_a_lookup_error(sdk):
    """The SDK raises KeyError; raystream's FunctionNotFound is a KeyError too, naming what is registered."""
    functions = sdk.StatefulFunctions()
    with pytest.raises(KeyError):
        functions.for_typename("org.foo/nobody")


@pytest.mark.parametrize("ours", [statefun_api.SdkAddress, statefun_api.Address])
def test_an_sdk_address_written_out_with_its_typename(ours):
    fields = dict(namespace="com.foo", name="bar", id="7", typename="com.foo/bar")
    theirs = statefun.SdkAddress(**fields)
    address = ours(**fields)
    assert (address.namespace, address.name, address.id, address.typename) == (theirs.namespace, theirs.name, theirs.id, theirs.typename)
    assert address == statefun_api.Address.of("com.foo/bar", "7")
    with pytest.raises(ValueError, match="'com.foo/baz' does not match"):
        ours(namespace="com.foo", name="bar", id="7", typename="com.foo/baz")


# ---------------------------------------------------------------- request-reply (request_reply_test)
def request(target=("org.foo", "greeter", "0"), state=(), invocations=()) -> bytes:
    """A ToFunction built with the official generated classes, as the SDK's own tests do."""
    to = rr_pb2.ToFunction()
    batch = to.invocation
    batch.target.namespace, batch.target.type, batch.target.id = target
    for name, value, tpe in state:
        entry = batch.state.add()
        entry.state_name = name
        if value is not None:
            entry.state_value.CopyFrom(sdk_to_typed_value(tpe, value))
    for value, tpe, caller in invocations:
        invocation = batch.invocations.add()
        if caller:
            invocation.caller.namespace, invocation.caller.type, invocation.caller.id = caller
        invocation.argument.CopyFrom(sdk_to_typed_value(tpe, value))
    return to.SerializeToString()


def round_trip(sdk: ModuleType, functions, data: bytes) -> dict:
    reply = rr_pb2.FromFunction()
    reply.ParseFromString(sdk.RequestReplyHandler(functions).handle_sync(data))
    return json_format.MessageToDict(reply, preserving_proto_field_name=True)


NO_EFFECTS = {"invocation_result": {}}


def both(register, data: bytes) -> dict:
    """The reply of each SDK's handler to ``data`` for the functions ``register(sdk)``
    returns; they must be the same.

    One deliberate difference: for an invocation without effects the SDK sends an empty
    body and raystream an empty ``invocation_result`` (see
    test_a_reply_without_effects_is_an_empty_invocation_result); both mean the same to a
    StateFun runtime, so the SDK's ``{}`` counts as ``NO_EFFECTS`` here.
    """
    theirs, ours = (round_trip(sdk, register(sdk), data) for sdk in (statefun, statefun_api))
    assert ours == (theirs or NO_EFFECTS)
    return ours


def test_a_whole_invocation_round_trip():
    calls = []

    def register(sdk):
        functions = sdk.StatefulFunctions()

        @functions.bind(typename="org.foo/greeter", specs=[sdk.ValueSpec(name="seen", type=sdk.IntType)])
        def fun(context, message):
            calls.append((sdk.__name__, message.as_string(), context.caller.typename, context.caller.id,
                          context.address.namespace, context.address.name, context.address.id, context.address.typename))
            # an address written out as the SDK's dataclass compares equal
            assert context.caller == sdk.SdkAddress(namespace="org.foo", name="greeter-java", id="0", typename="org.foo/greeter-java")
            assert context.address == sdk.SdkAddress(namespace="org.foo", name="greeter", id="0", typename="org.foo/greeter")
            seen = context.storage.seen
            context.storage.seen += 1
            context.send(sdk.message_builder(target_typename="org.foo/greeter-java", target_id="0", int_value=seen))
            context.send_after(timedelta(hours=1), sdk.message_builder(target_typename="night/owl", target_id="1", str_value="hoo hoo"))
            context.send_after(timedelta(hours=1), sdk.message_builder(target_typename="night/owl", target_id="1", str_value="hoo hoo"),
                               cancellation_token="token-1234")
            context.cancel_delayed_message("token-1234")
            context.send_egress(sdk.kafka_egress_message(typename="e/kafka", topic="out", key="abc", value=1337420))
            context.send_egress(sdk.kinesis_egress_message(typename="e/kinesis", stream="out", partition_key="abc", value="hello there"))

        return functions

    data = request(state=[("seen", 1, statefun.IntType)], invocations=[("Hello", statefun.StringType, ("org.foo", "greeter-java", "0"))])
    result = both(register, data)["invocation_result"]
    assert [c[0] for c in calls] == ["statefun", "raystream.statefun_api"]
    assert [c[1:] for c in calls] == [("Hello", "org.foo/greeter-java", "0", "org.foo", "greeter", "0", "org.foo/greeter")] * 2
    assert result["outgoing_messages"][0]["target"] == {"namespace": "org.foo", "type": "greeter-java", "id": "0"}
    assert result["outgoing_messages"][0]["argument"]["typename"] == "io.statefun.types/int"
    assert [(m["mutation_type"], m["state_name"]) for m in result["state_mutations"]] == [("MODIFY", "seen")]
    delayed = result["delayed_invocations"]
    assert int(delayed[0]["delay_in_ms"]) == 3_600_000
    assert delayed[1]["cancellation_token"] == "token-1234"
    assert delayed[2] == {"is_cancellation_request": True, "cancellation_token": "token-1234"}
    assert [(e["egress_namespace"], e["egress_type"], e["argument"]["typename"]) for e in result["outgoing_egresses"]] == [
        ("e", "kafka", "type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord"),
        ("e", "kinesis", "type.googleapis.com/io.statefun.sdk.egress.KinesisEgressRecord"),
    ]


def test_missing_state_is_asked_for_with_its_type_and_expiration():
    def register(sdk):
        functions = sdk.StatefulFunctions()
        functions.register("org.foo/bar", lambda context, message: None, [
            sdk.ValueSpec("seen", type=sdk.IntType),
            sdk.ValueSpec("missing_state_1", type=sdk.StringType),
            sdk.ValueSpec("missing_state_2", type=sdk.FloatType, expire_after_write=timedelta(milliseconds=2000)),
            sdk.ValueSpec("missing_state_3", type=sdk.LongType, expire_after_call=timedelta(minutes=1)),
        ])
        return functions

    reply = both(register, request(target=("org.foo", "bar", "0"), state=[("seen", None, None)], invocations=[(1, statefun.IntType, None)]))
    missing = reply["incomplete_invocation_context"]["missing_values"]
    assert [m["state_name"] for m in missing] == ["missing_state_1", "missing_state_2", "missing_state_3"]
    assert missing[0]["type_typename"] == "io.statefun.types/string"
    assert missing[1]["expiration_spec"] == {"mode": "AFTER_WRITE", "expire_after_millis": "2000"}
    assert missing[2]["expiration_spec"] == {"mode": "AFTER_INVOKE", "expire_after_millis": "60000"}


def test_an_ingress_message_has_no_caller():
    callers = []

    def register(sdk):
        functions = sdk.StatefulFunctions()

        @functions.bind(typename="org.foo/greeter")
        def fun(context, message):
            callers.append(context.caller)

        return functions

    assert both(register, request(invocations=[("Hello", statefun.StringType, None)])) == NO_EFFECTS
    assert callers == [None, None]


def test_async_functions_run_the_batch_in_order():
    def register(sdk):
        functions = sdk.StatefulFunctions()

        @functions.bind(typename="org.foo/greeter", specs=[sdk.ValueSpec(name="names", type=sdk.make_json_type("org.foo/Names"))])
        async def fun(context, message):
            context.storage.names = (context.storage.names or []) + [message.as_string()]

        return functions

    reply = both(register, request(state=[("names", None, None)], invocations=[(n, statefun.StringType, None) for n in ("a", "b", "c")]))
    value = reply["invocation_result"]["state_mutations"][0]["state_value"]
    assert value["typename"] == "org.foo/Names"


# ---------------------------------------------------------------- storage (storage_test)
def storage_case(body, state, specs=None):
    """Run ``body(storage)`` in a function of both SDKs, against ``state`` (name, value, type)
    sent in the request; returns the (identical) replies' state mutations."""

    def register(sdk):
        functions = sdk.StatefulFunctions()
        declared = specs(sdk) if specs else [sdk.ValueSpec(name="a", type=sdk.IntType), sdk.ValueSpec(name="b", type=sdk.StringType)]

        @functions.bind(typename="example/func", specs=declared)
        def fun(context, message):
            body(context.storage)

        return functions

    reply = both(register, request(target=("example", "func", "0"), state=state, invocations=[("x", statefun.StringType, None)]))
    # MessageToDict leaves out proto3 defaults: DELETE is mutation type 0
    return [(m.get("mutation_type", "DELETE"), m["state_name"], m.get("state_value", {}).get("value"))
            for m in reply["invocation_result"].get("state_mutations", [])]


AB = [("a", 1, statefun.IntType), ("b", "hello", statefun.StringType)]


def test_storage_reads_the_values_sent():
    seen = []
    assert storage_case(lambda s: seen.append((s.a, s.b)), AB) == []  # reading changes nothing
    assert seen == [(1, "hello")] * 2


def test_storage_ignores_values_it_did_not_declare():
    seen = []

    def body(s):
        seen.append(s.a)
        with pytest.raises(AttributeError):
            s.b  # noqa: B018 - the read is the check

    assert storage_case(body, AB, specs=lambda sdk: [sdk.ValueSpec(name="a", type=sdk.IntType)]) == []
    assert seen == [1, 1]


def test_storage_attribute_manipulation():
    seen = []

    def body(s):
        s.a += 1
        seen.append(s.a)
        s.a = 1337
        seen.append(s.a)
        del s.a
        seen.append(s.a)
        s.a = 0
        seen.append(s.a)

    mutations = storage_case(body, AB)
    assert seen == [2, 1337, None, 0] * 2
    assert [(kind, name) for kind, name, _ in mutations] == [("MODIFY", "a")]


def test_storage_modification_deletion_and_missing_values():
    assert [(k, n) for k, n, _ in storage_case(lambda s: setattr(s, "a", 23249425), AB)] == [("MODIFY", "a")]
    assert storage_case(lambda s: delattr(s, "a"), AB) == [("DELETE", "a", None)]
    seen = []

    def body(s):
        seen.append(s.a)
        s.a = 121314

    no_value = [("a", None, None), ("b", None, None)]
    assert [(k, n) for k, n, _ in storage_case(body, no_value)] == [("MODIFY", "a")]
    assert seen == [None, None]


def test_storage_refuses_none_and_undeclared_names():
    def body(s):
        with pytest.raises((ValueError, TypeError)):
            s.a = None  # delete with del, as both SDKs say
        with pytest.raises(AttributeError):
            s.nope = 1

    assert storage_case(body, AB) == []


def test_a_stateless_function_needs_no_state():
    assert storage_case(lambda s: None, [], specs=lambda sdk: []) == []


def test_a_reply_without_effects_is_an_empty_invocation_result():
    """The one byte-level difference: the SDK's handler answers an invocation that changed
    nothing with an EMPTY body (protobuf leaves an untouched sub-message out), raystream's
    with an explicit empty ``invocation_result`` (field 100). StateFun's runtime reads both
    as an empty invocation response, and so does raystream's (docs/statefun.md)."""

    def register(sdk):
        functions = sdk.StatefulFunctions()
        functions.register("org.foo/logger", lambda context, message: None)
        return functions

    data = request(target=("org.foo", "logger", "0"), invocations=[("x", statefun.StringType, None)])
    assert statefun.RequestReplyHandler(register(statefun)).handle_sync(data) == b""
    ours = statefun_api.RequestReplyHandler(register(statefun_api)).handle_sync(data)
    assert ours == b"\xa2\x06\x00"
    parsed = rr_pb2.FromFunction()
    parsed.ParseFromString(ours)
    assert parsed.HasField("invocation_result") and parsed.invocation_result.ByteSize() == 0


def test_the_storage_module_star_import_gives_value_spec_as_the_sdk_does() -> None:
    namespace: dict = {}
    exec("from raystream.statefun_api.storage import *", namespace)  # as ported `from statefun.storage import *`
    from raystream.statefun_api import ValueSpec

    assert namespace["ValueSpec"] is ValueSpec
