"""Apache Flink Stateful Functions for Python, without a JVM.

The API mirrors the official StateFun Python SDK (``statefun`` 3.3), so functions port by
changing the import from ``statefun`` to ``statefun_api``:

    >>> from raystream.statefun_api import *
    >>> functions = StatefulFunctions()
    >>> @functions.bind(typename="com.example/greeter", specs=[ValueSpec(name="seen", type=IntType)])
    ... def greet(context: Context, message: Message):
    ...     seen = (context.storage.seen or 0) + 1
    ...     context.storage.seen = seen
    ...     context.send_egress(egress_message_builder(
    ...         "com.example/greets", f"hello {context.address.id} #{seen}", StringType))
    >>> handler = RequestReplyHandler(functions)

Everything here is sans-I/O: :func:`invoke` runs a batch of messages through one address
and returns its effects; :class:`RequestReplyHandler` speaks StateFun's request-reply
protocol bytes-in/bytes-out; :mod:`statefun_api.server` optionally serves it over HTTP.
"""

from raystream.statefun_api.address import Address, SdkAddress, make_typename, parse_typename
from raystream.statefun_api.context import Context
from raystream.statefun_api.effects import (
    DelayedCancellation,
    DelayedMessage,
    InvocationResult,
    OutgoingMessage,
)
from raystream.statefun_api.egress_io import kafka_egress_message, kinesis_egress_message
from raystream.statefun_api.endpoints import RemoteEndpoint, load_module_yaml, remote_endpoint
from raystream.statefun_api.errors import FunctionNotFound, ProtocolError, StatefulFunctionError
from raystream.statefun_api.functions import StatefulFunction, StatefulFunctions
from raystream.statefun_api.handler import RequestReplyHandler
from raystream.statefun_api.invocation import Invocation, invoke, invoke_async
from raystream.statefun_api.messages import (
    EgressMessage,
    Message,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.spec import ValueSpec
from raystream.statefun_api.storage import AddressScopedStorage
from raystream.statefun_api.types import (
    BoolType,
    DoubleType,
    FloatType,
    IntType,
    LongType,
    StringType,
    Type,
    TypedValue,
    TypeSerializer,
    make_json_type,
    make_protobuf_type,
    simple_type,
)

__all__ = [
    # addresses and types
    "Address",
    "SdkAddress",
    "parse_typename",
    "make_typename",
    "Type",
    "TypeSerializer",
    "TypedValue",
    "simple_type",
    "make_json_type",
    "make_protobuf_type",
    "BoolType",
    "IntType",
    "LongType",
    "FloatType",
    "DoubleType",
    "StringType",
    "ValueSpec",
    # messages
    "Message",
    "EgressMessage",
    "message_builder",
    "egress_message_builder",
    "kafka_egress_message",
    "kinesis_egress_message",
    # functions
    "Context",
    "AddressScopedStorage",
    "StatefulFunctions",
    "StatefulFunction",
    # invocation core
    "Invocation",
    "InvocationResult",
    "OutgoingMessage",
    "DelayedMessage",
    "DelayedCancellation",
    "invoke",
    "invoke_async",
    # protocol
    "RequestReplyHandler",
    # remote functions
    "RemoteEndpoint",
    "remote_endpoint",
    "load_module_yaml",
    # errors
    "StatefulFunctionError",
    "FunctionNotFound",
    "ProtocolError",
]
