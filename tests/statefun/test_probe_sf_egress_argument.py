"""A remote function's egress message without an argument (no ``TypedValue``) is an invalid reply.

StateFun's runtime hands ``EgressMessage.getArgument()`` to the egress, which for a missing
argument is protobuf's empty default ``TypedValue`` (no typename); its Kafka and Kinesis
egresses then fail the job ("expects only messages of type ..."). raystream binds an egress to
any sink, so the empty value used to reach the sink as ``TypedValue(typename='', ...)``, silently.
Now the reply is refused as a whole, naming the function, the address and the egress.
"""

from __future__ import annotations

import pytest

from raystream.statefun_api import ProtocolError
from raystream.statefun_api.address import Address
from raystream.statefun_api.reqreply import FromFunction, result_from_response
from raystream.statefun_api.types import StringType, TypedValue, to_typed_value

EGRESS = "example/greets"


def test_the_pure_codec_refuses_an_egress_message_without_an_argument():
    caller = Address("example", "person", "ann")
    response = FromFunction.InvocationResponse(outgoing_egresses=[FromFunction.EgressMessage("example", "greets")])
    with pytest.raises(ProtocolError) as info:
        result_from_response(caller, response)
    message = str(info.value)
    assert "example/person/ann" in message and "'example/greets'" in message and "without an argument" in message


def test_the_pure_codec_refuses_an_egress_value_without_a_typename():
    caller = Address("example", "person", "ann")
    egress = FromFunction.EgressMessage("example", "greets", TypedValue("", True, to_typed_value(StringType, "hi").value))
    response = FromFunction.InvocationResponse(outgoing_egresses=[egress])
    with pytest.raises(ProtocolError) as info:
        result_from_response(caller, response)
    assert "example/person/ann" in str(info.value) and "'example/greets'" in str(info.value) and "no typename" in str(info.value)


def test_the_pure_codec_keeps_an_egress_message_with_its_argument():
    caller = Address("example", "person", "ann")
    value = to_typed_value(StringType, "hi")
    response = FromFunction.InvocationResponse(outgoing_egresses=[FromFunction.EgressMessage("example", "greets", value)])
    (egress,) = result_from_response(caller, response).egress
    assert egress.typename == EGRESS and egress.typed_value == value


statefun = pytest.importorskip("statefun")
rr_pb2 = pytest.importorskip("statefun.request_reply_pb2")
pytest.importorskip("aiohttp")

from raystream.engine.errors import JobFailed  # noqa: E402
from raystream.statefun_api import StatefulFunctions, message_builder  # noqa: E402
from raystream.statefun_api.endpoints import remote_endpoint  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402
from raystream.statefun_api.testing import FunctionServer  # noqa: E402


def sdk_functions() -> statefun.StatefulFunctions:
    functions = statefun.StatefulFunctions()

    @functions.bind(typename="example/person", specs=[statefun.ValueSpec(name="visits", type=statefun.IntType)])
    async def person(context, message):
        visits = (context.storage.visits or 0) + 1
        context.storage.visits = visits
        context.send_egress(
            statefun.egress_message_builder(
                target_typename=EGRESS, value=f"Hello {context.address.id} #{visits}", value_type=statefun.StringType
            )
        )

    return functions


class Tamper:
    """The official SDK's handler; while ``rewrite`` is set, each invocation reply goes through it."""

    def __init__(self) -> None:
        self.handler = statefun.RequestReplyHandler(sdk_functions())
        self.rewrite = None

    async def __call__(self, body: bytes) -> bytes:
        reply = await self.handler.handle_async(body)
        parsed = rr_pb2.FromFunction()
        parsed.ParseFromString(reply)
        if self.rewrite is None or not parsed.HasField("invocation_result"):
            return reply
        self.rewrite(parsed.invocation_result)
        return parsed.SerializeToString()


@pytest.fixture
def tamper():
    t = Tamper()
    with FunctionServer(t) as server:
        t.url = server.url + "/statefun"
        yield t


def without_argument(result) -> None:
    (egress,) = result.outgoing_egresses
    egress.ClearField("argument")


def without_typename(result) -> None:
    (egress,) = result.outgoing_egresses
    egress.argument.typename = ""


@pytest.mark.parametrize("rewrite", [without_argument, without_typename])
def test_a_remote_egress_message_without_its_value_fails_naming_function_address_and_egress(tamper, rewrite):
    endpoint = remote_endpoint("example/*", tamper.url, call_timeout=10)
    with LocalDispatchers(StatefulFunctions(), egresses=[EGRESS], endpoints=[endpoint]) as run:
        run.send(message_builder("example/person", "ann", str_value="ann")).run_until_idle()
        assert run.egress(EGRESS) == ["Hello ann #1"]
        tamper.rewrite = rewrite
        with pytest.raises(JobFailed) as info:
            run.send(message_builder("example/person", "bob", str_value="bob")).run_until_idle()
        message = str(info.value)
        assert "remote function 'example/person'" in message and "address example/person/bob" in message
        assert "sent an invalid reply" in message and f"egress {EGRESS!r}" in message
        # nothing of the reply applied: no empty TypedValue at the egress, the visit not stored
        assert run.egress(EGRESS) == ["Hello ann #1"]
        assert run.state("example/person", "bob", "visits") is None
