"""The runtime's upb request-reply classes (statefun_api._reqreply_pb): the same schema and
bytes as the official SDK's, in a private descriptor pool that coexists with the SDK's."""

from __future__ import annotations

import pytest

from raystream.statefun_api import Address, message_builder
from raystream.statefun_api import reqreply as rr
from raystream.statefun_api._reqreply_pb import FILE_DESCRIPTOR, FromFunctionPb, ToFunctionPb
from raystream.statefun_api.invocation import Invocation
from raystream.statefun_api.types import IntType, TypedValue, to_typed_value

statefun = pytest.importorskip("statefun")


def test_schema_is_the_official_one_and_coexists() -> None:
    from statefun import request_reply_pb2

    assert FILE_DESCRIPTOR == request_reply_pb2.DESCRIPTOR.serialized_pb
    assert ToFunctionPb is not request_reply_pb2.ToFunction  # a private pool, not the SDK's classes


def test_bytes_equal_the_hand_written_codec() -> None:
    target, caller = Address.of("a/f", "1"), Address.of("a/g", "2")
    msgs = [Invocation(message_builder("a/f", "1", int_value=n), caller if n else None) for n in range(3)]
    state = {"seen": to_typed_value(IntType, 41), "empty": TypedValue(IntType.typename, False, b"")}
    hand = rr.encode_to_function(rr.build_request(target, state, msgs))
    pb = ToFunctionPb.FromString(hand)
    assert pb.SerializeToString() == hand
    assert [i.argument.value for i in pb.invocation.invocations] == [m.message.typed_value.value for m in msgs]
    reply = rr.FromFunction(rr.FromFunction.InvocationResponse(outgoing_messages=[]))
    assert FromFunctionPb.FromString(rr.encode_from_function(reply)).WhichOneof("response") == "invocation_result"
