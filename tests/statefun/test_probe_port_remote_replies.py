"""What a remote function's reply may change, checked as StateFun's runtime checks it.

The function is the playground's style of counter, written with the official ``statefun``
SDK and served on localhost; a :class:`Tamper` in front of the SDK's handler rewrites its
replies the way a buggy SDK, a proxy or another language's SDK could: the runtime must
refuse what StateFun refuses, apply nothing of such a reply, and say what was wrong.
"""

from __future__ import annotations

import pytest

statefun = pytest.importorskip("statefun")
rr_pb2 = pytest.importorskip("statefun.request_reply_pb2")
pytest.importorskip("aiohttp")

from raystream.engine.errors import JobFailed  # noqa: E402
from raystream.statefun_api import StatefulFunctions, message_builder  # noqa: E402
from raystream.statefun_api.endpoints import remote_endpoint  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402
from raystream.statefun_api.testing import FunctionServer  # noqa: E402

EGRESS = "example/greets"


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
    """The SDK's handler; while ``rewrite`` is set, each invocation reply (not a handshake)
    goes through it."""

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


def run_of(tamper: Tamper) -> LocalDispatchers:
    return LocalDispatchers(
        StatefulFunctions(), egresses=[EGRESS], endpoints=[remote_endpoint("example/*", tamper.url, call_timeout=10)]
    )


def visit(name: str):
    return message_builder("example/person", name, str_value=name)


def as_string(result) -> None:
    """The visits written as a string instead of the declared int."""
    (mutation,) = result.state_mutations
    mutation.state_value.typename = "io.statefun.types/string"
    mutation.state_value.value = b"\n\x05three"


def test_a_value_written_with_another_type_than_declared_fails_and_applies_nothing(tamper):
    with run_of(tamper) as run:
        run.send(visit("ann")).run_until_idle()
        assert run.egress(EGRESS) == ["Hello ann #1"] and run.state("example/person", "ann", "visits") == 1
        tamper.rewrite = as_string
        with pytest.raises(JobFailed) as info:
            run.send(visit("ann")).run_until_idle()
        message = str(info.value)
        assert "remote function 'example/person'" in message and "address example/person/ann" in message
        assert "wrote value 'visits' with type 'io.statefun.types/string'" in message
        assert "declared it as 'io.statefun.types/int'" in message
        # nothing of the reply: no egress, the stored value untouched (it used to be stored as
        # a string, and every later call of the address failed, blaming a changed ValueSpec)
        assert run.egress(EGRESS) == ["Hello ann #1"]
        assert run.state("example/person", "ann", "visits") == 1
        tamper.rewrite = None  # (in-process the failed call goes again, and now succeeds once)
        run.run_until_idle()
        assert run.egress(EGRESS) == ["Hello ann #1", "Hello ann #2"]
        assert run.state("example/person", "ann", "visits") == 2


def without_egress_type(result) -> None:
    """An egress message whose address lost its type (``egress_type`` empty)."""
    (egress,) = result.outgoing_egresses
    egress.egress_type = ""


def test_an_egress_without_a_type_is_an_invalid_reply_naming_the_function(tamper):
    with run_of(tamper) as run:
        tamper.rewrite = without_egress_type
        with pytest.raises(JobFailed) as info:
            run.send(visit("bob")).run_until_idle()
        message = str(info.value)
        # it used to fail with only "ValueError: typename 'example/' has an empty name"
        assert "remote function 'example/person'" in message and "address example/person/bob" in message
        assert "sent an invalid reply" in message
        assert "invalid egress (namespace 'example', type '')" in message
        assert run.egress(EGRESS) == [] and run.state("example/person", "bob", "visits") is None
