"""Every way a remote function's reply can be refused names the call alike.

The errors used to be built one by one, and some lacked what others had: a handshake that
reported a value without a name said neither which address nor which message; an invalid
target, a value the function never declared or a handshake round that made no progress
carried no message type. Now each is a ``RemoteFunctionError`` naming the function type, URL,
address and batch size, with ``.address`` and ``.message_typename`` set, and nothing of the
reply applied.
"""

from __future__ import annotations

import pytest

rr_pb2 = pytest.importorskip("statefun.request_reply_pb2")
pytest.importorskip("aiohttp")

from raystream.engine.errors import JobFailed  # noqa: E402
from raystream.statefun_api import Address, StatefulFunctions, message_builder  # noqa: E402
from raystream.statefun_api.endpoints import remote_endpoint  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402
from raystream.statefun_api.remote import RemoteFunctionError  # noqa: E402


def nameless_missing_value(reply, request):
    reply.incomplete_invocation_context.missing_values.add().type_typename = "io.statefun.types/int"


def no_progress_handshake(reply, request):  # asks again for a value the request carried
    if request.invocation.state:
        reply.incomplete_invocation_context.missing_values.add().state_name = request.invocation.state[0].state_name
    else:
        m = reply.incomplete_invocation_context.missing_values.add()
        m.state_name, m.type_typename = "n", "io.statefun.types/int"


def undeclared_value(reply, request):
    m = reply.invocation_result.state_mutations.add()
    m.mutation_type, m.state_name = rr_pb2.FromFunction.PersistedValueMutation.MODIFY, "ghost"
    m.state_value.typename, m.state_value.has_value, m.state_value.value = "io.statefun.types/int", True, b"\x08\x01"


def target_without_id(reply, request):
    out = reply.invocation_result.outgoing_messages.add()
    out.target.namespace, out.target.type = "remote", "f"


def not_a_reply(reply, request):
    return b"\xff\xff\xff\xff not protobuf"


CASES = {
    "nameless_missing_value": (nameless_missing_value, "reported a missing value without a name"),
    "no_progress_handshake": (no_progress_handshake, "already sent with the request"),
    "undeclared_value": (undeclared_value, "changed value 'ghost', which it never declared"),
    "target_without_id": (target_without_id, "sent an invalid reply"),
    "not_a_reply": (not_a_reply, "not a StateFun FromFunction"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_refused_reply_names_function_url_address_and_message(case, serve):
    fill, expected = CASES[case]

    async def handle(body: bytes):
        request = rr_pb2.ToFunction()
        request.ParseFromString(body)
        reply = rr_pb2.FromFunction()
        raw = fill(reply, request)
        return raw if raw is not None else reply.SerializeToString()

    server = serve(handle)
    with LocalDispatchers(
        StatefulFunctions(), endpoints=[remote_endpoint("remote/*", server.url + "/{function.name}", max_retries=0)]
    ) as run:
        with pytest.raises(JobFailed) as info:
            run.send(message_builder("remote/f", "ann", int_value=7), message_builder("remote/f", "ann", int_value=8))
            run.run_until_idle()
    error = info.value.__cause__
    assert isinstance(error, RemoteFunctionError), repr(error)
    assert expected in str(error)
    assert f"remote function 'remote/f' at '{server.url}/f' (address remote/f/ann, 2 message(s))" in str(error)
    assert error.address == Address("remote", "f", "ann")
    assert error.message_typename == "io.statefun.types/int"
    assert run.state("remote/f", "ann", "n") is None  # nothing applied
