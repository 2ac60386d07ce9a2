"""StateFun's own material runs unchanged: functions written in the style of the
flink-statefun-playground Python showcase (``python/showcase``), embedded and remote.

``SHOWCASE`` is a function module in the showcase's shape, one function per part of its
tutorial: the type system (``showcase/types``), messaging primitives
(``showcase/messaging``: every built-in type, a JSON type, a message to itself, a delayed
message and a cancelled one), egresses (``showcase/egress``: Kafka, Kinesis and a custom
egress), function state (``showcase/storage``: read, write, an expiring value, delete),
asynchronous operations (``showcase/async``: awaits "services", keeps a protobuf
``UserProfile`` in state and replies to its caller) and serving (``showcase/serving``
behind the module's own aiohttp app). Where the showcase prints, these functions send
what they saw to a ``showcase/seen`` egress, so that runs can be compared.

The same text runs

* **embedded**, with ``from statefun import *`` replaced by ``from raystream.statefun_api import *``;
* **remote**, executed as it is with the official SDK (``statefun`` 3.3.0, a test-only
  dependency), its aiohttp ``app`` served unchanged and reached through a ``module.yaml``
  in StateFun's own format (the showcase's, with the Kafka/Kinesis egress documents of
  the egresses the functions use);
* **remote, served by raystream**: the embedded text's own ``app`` (raystream's
  ``RequestReplyHandler`` behind the module's aiohttp code) through the same module.yaml;

and every run must give the same egress and the same state.
"""

from __future__ import annotations

from typing import Any

import pytest

statefun = pytest.importorskip("statefun")
pytest.importorskip("aiohttp")

from raystream import statefun_api  # noqa: E402
from raystream.statefun_api import (  # noqa: E402
    IntType,
    Message,
    StatefulFunctionError,
    StatefulFunctions,
    StringType,
    Type,
    TypedValue,
    make_json_type,
    message_builder,
)
from raystream.statefun_api.egress_io import KafkaProducerRecord, KinesisEgressRecord  # noqa: E402
from raystream.statefun_api.endpoints import TRANSPORT_ASYNC, load_module_yaml  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402
from raystream.statefun_api.testing import FunctionServer, RequestBuilder, run_function  # noqa: E402
from tests.statefun.showcase_custom_types_pb2 import UserProfile  # noqa: E402

SHOWCASE = '''\
import asyncio
from datetime import timedelta

from aiohttp import web
from statefun import *

from tests.statefun.showcase_custom_types_pb2 import UserProfile

functions = StatefulFunctions()

# showcase_custom_types.py: a JSON type and a Protobuf type
GREET_JSON_TYPE = make_json_type(typename="showcase/GreetRequest")
USER_PROFILE_PROTOBUF_TYPE = make_protobuf_type(UserProfile)

# the functions report what they see here (the showcase prints it)
SEEN_EGRESS = "showcase/seen"


def tell(context: Context, what: str):
    me = context.address
    context.send_egress(egress_message_builder(target_typename=SEEN_EGRESS,
                                               value=f"{me.typename}/{me.id}: {what}",
                                               value_type=StringType))


# Part 1: the type system
@functions.bind("showcase/types")
def types(context, message: Message):
    if message.is_bool():
        val = message.as_bool()
    elif message.is_int():
        val = message.as_int()
    elif message.is_long():
        val = message.as_long()
    elif message.is_float():
        val = message.as_float()
    elif message.is_string():
        val = message.as_string()
    elif message.is_double():
        val = message.as_double()
    elif message.is_type(GREET_JSON_TYPE):
        val = message.as_type(GREET_JSON_TYPE)
    elif message.is_type(USER_PROFILE_PROTOBUF_TYPE):
        profile = message.as_type(USER_PROFILE_PROTOBUF_TYPE)
        val = (profile.name, profile.favorite_ice_cream, profile.favorite_tv_show)
    else:
        val = None

    tell(context, f"a {message.value_typename()} message with {val!r} as payload")


# Part 2: messaging primitives
@functions.bind("showcase/messaging")
def messaging(context: Context, message: Message):
    if message.is_type(USER_PROFILE_PROTOBUF_TYPE):
        # the reply of showcase/async: pass it on
        context.send(message_builder(target_typename="showcase/types", target_id="8",
                                     value=message.as_type(USER_PROFILE_PROTOBUF_TYPE),
                                     value_type=USER_PROFILE_PROTOBUF_TYPE))
        return
    if context.caller == context.address:
        tell(context, f"{message.as_string()} from myself")
        return

    target = "showcase/types"
    context.send(message_builder(target_typename=target, target_id="0", bool_value=True))
    context.send(message_builder(target_typename=target, target_id="1", int_value=123))
    context.send(message_builder(target_typename=target, target_id="2", float_value=3.14159e+11))
    context.send(message_builder(target_typename=target, target_id="3", str_value="Hello world"))
    context.send(message_builder(target_typename=target, target_id="4", double_value=1.23))
    context.send(message_builder(target_typename=target, target_id="5", long_value=123456789))
    context.send(
        message_builder(target_typename=target, target_id="6", value={"name": "Joe"}, value_type=GREET_JSON_TYPE))

    tell(context, f"the payload's type is {message.value_typename()} and the raw bytes are {message.raw_value()!r}")

    me = context.address
    context.send(message_builder(target_typename=me.typename, target_id=me.id, str_value="hello!"))
    context.send(message_builder(target_typename="showcase/async", target_id="Joe", str_value="who is Joe?"))

    context.send_after(timedelta(seconds=1),
                       message_builder(target_typename=target, target_id="7", str_value="Hello from the future"))
    context.send_after(timedelta(seconds=1),
                       message_builder(target_typename=target, target_id="9", str_value="never delivered"),
                       cancellation_token=f"late-{me.id}")
    context.cancel_delayed_message(f"late-{me.id}")


# Part 3: sending messages to egresses
@functions.bind("showcase/egress")
def egress(context: Context, message: Message):
    context.send_egress(
        kafka_egress_message(typename="showcase/kafka-egress", topic="my-kafka-topic", key="my-key",
                             value="my-utf8-value"))
    context.send_egress(
        kinesis_egress_message(typename="showcase/kinesis-egress",
                               stream="a-stream",
                               partition_key="key",
                               explicit_hash_key="hash-key",
                               value="a value"))
    context.send_egress(egress_message_builder(target_typename="showcase/my-custom-egress",
                                               value={"name": "Bob"},
                                               value_type=GREET_JSON_TYPE))


# Part 4: function state storage
@functions.bind("showcase/storage", specs=[
    ValueSpec(name="an_int", type=IntType),
    ValueSpec(name="an_expiring_str", type=StringType, expire_after_write=timedelta(days=7)),
    ValueSpec(name="greet_json", type=GREET_JSON_TYPE)
])
def storage(context, message):
    storage = context.storage

    tell(context, f"an_int is {storage.an_int!r}")
    storage.an_int = 42

    if storage.an_expiring_str:
        tell(context, f"an_expiring_str is {storage.an_expiring_str!r}")
    else:
        tell(context, "the str has expired (or wasn't set before)")
    storage.an_expiring_str = message.as_string()

    storage.greet_json = {"name": "Anton"}
    del storage.greet_json
    tell(context, f"greet_json is {storage.greet_json!r}")


# Part 5: asynchronous operations
@functions.bind("showcase/async", specs=[ValueSpec(name="user_profile", type=USER_PROFILE_PROTOBUF_TYPE)])
async def async_ops(context, message):
    profile = context.storage.user_profile
    if not profile:
        user_name = context.address.id

        profile = UserProfile()
        profile.name = user_name
        profile.favorite_ice_cream = await call_favorite_ice_cream_service(user_name)
        profile.favorite_tv_show = await call_favorite_show_service(user_name)

        context.storage.user_profile = profile

    # reply to our caller with the computed user profile
    caller: SdkAddress = context.caller
    context.send(message_builder(target_typename=caller.typename,
                                 target_id=caller.id,
                                 value=profile,
                                 value_type=USER_PROFILE_PROTOBUF_TYPE))


async def call_favorite_ice_cream_service(user_name: str) -> str:
    await asyncio.sleep(0.01)
    return "mint chocolate chip"


async def call_favorite_show_service(user_name: str) -> str:
    await asyncio.sleep(0.01)
    return "The Office"


# Serving
@functions.bind("showcase/serving", specs=[ValueSpec(name="seen", type=IntType)])
async def serving(context, message: Message):
    seen = context.storage.seen or 0
    seen += 1
    context.storage.seen = seen

    greet_request = message.as_type(GREET_JSON_TYPE)
    name = greet_request["name"]

    context.send_egress(kafka_egress_message(typename="showcase/greets", topic="greetings", key=name,
                                             value=f"hello {name}! I've seen you {seen} times!"))


statefun_handler = RequestReplyHandler(functions)


async def handle(request):
    req = await request.read()
    res = await statefun_handler.handle_async(req)
    return web.Response(body=res, content_type="application/octet-stream")


app = web.Application()
app.add_routes([web.post('/statefun', handle)])

if __name__ == '__main__':
    web.run_app(app, port=8000)
'''

# the showcase's module.yaml, with the function host replaced by the test server's and the
# egresses its functions use declared as StateFun would need them
MODULE_YAML = """\
kind: io.statefun.endpoints.v2/http
spec:
  functions: showcase/*
  urlPathTemplate: {url}/statefun
  transport:
    type: io.statefun.transports.v1/async
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: showcase/names
  address: kafka:9092
  consumerGroupId: my-group-id
  topics:
    - topic: names
      valueType: showcase/GreetRequest
      targets:
        - showcase/serving
---
kind: io.statefun.kafka.v1/egress
spec:
  id: showcase/greets
  address: kafka:9092
  deliverySemantic:
    type: exactly-once
    transactionTimeout: 15min
---
kind: io.statefun.kafka.v1/egress
spec:
  id: showcase/kafka-egress
  address: kafka:9092
  deliverySemantic:
    type: at-least-once
---
kind: io.statefun.kinesis.v1/egress
spec:
  id: showcase/kinesis-egress
  awsRegion:
    type: specific
    id: us-west-1
  awsCredentials:
    type: default
  maxOutstandingRecords: 9999
"""

EGRESSES = ["showcase/seen", "showcase/greets", "showcase/kafka-egress", "showcase/kinesis-egress", "showcase/my-custom-egress"]
NAMES = ["Bob", "Joe", "Bob"]  # input-example.json, Bob again


def showcase_module(sdk: str = "statefun") -> dict:
    """Execute ``SHOWCASE`` with ``from <sdk> import *``; its namespace."""
    source = SHOWCASE
    if sdk != "statefun":
        source = source.replace("from statefun import *", f"from {sdk} import *")
    namespace: dict = {"__name__": f"showcase_{sdk.replace('.', '_')}"}
    exec(compile(source, f"<showcase, {sdk}>", "exec"), namespace)
    return namespace


GREET_REQUEST = make_json_type("showcase/GreetRequest")  # the module.yaml ingress's valueType
# what the tutorial feeds in, as (function type, id, text): the module.yaml's Kafka ingress
# (GreetRequests to showcase/serving, keyed by name) and triggers of the other parts
INGRESS = [
    *[("showcase/serving", n, n) for n in NAMES],
    *[("showcase/messaging", m, "go") for m in ("m1", "m2")],
    ("showcase/egress", "e1", "go"),
    *[("showcase/storage", "s1", s) for s in ("first", "second")],
]


def route(record: tuple[str, str, str]) -> Message:
    """The ingress router: a GreetRequest for showcase/serving, a string for the others."""
    typename, id_, text = record
    if typename == "showcase/serving":
        return message_builder(typename, id_, value={"name": text}, value_type=GREET_REQUEST)
    return message_builder(typename, id_, str_value=text)


def decoded(value: Any, tpe: Type) -> Any:
    """A state value as a Python value: remote functions' non-built-in values are TypedValues."""
    if isinstance(value, TypedValue):
        assert value.typename == tpe.typename, (value, tpe)
        return tpe.serializer().deserialize(value.value) if value.has_value else None
    return value


def outcome(run: LocalDispatchers, ns: dict) -> dict:
    """Everything a run produced: each egress (sorted: addresses run concurrently) and the
    state of the stateful addresses."""
    greet, profile = ns["GREET_JSON_TYPE"], ns["USER_PROFILE_PROTOBUF_TYPE"]
    out: dict = {e: sorted(run.egress(e), key=repr) for e in EGRESSES}
    out["state"] = {
        "storage": [decoded(run.state("showcase/storage", "s1", n), t) for n, t in
                    (("an_int", IntType), ("an_expiring_str", StringType), ("greet_json", greet))],
        "serving": {n: run.state("showcase/serving", n, "seen") for n in set(NAMES)},
        "async": decoded(run.state("showcase/async", "Joe", "user_profile"), profile),
    }
    return out


def run_embedded(parallelism: int = 2, seed: int | None = 5) -> dict:
    ns = showcase_module("raystream.statefun_api")
    assert isinstance(ns["functions"], StatefulFunctions)  # raystream's, not the SDK's
    with LocalDispatchers(ns["functions"], parallelism=parallelism, egresses=EGRESSES, seed=seed) as run:
        run.send(*map(route, INGRESS)).run_until_idle()
        return outcome(run, ns)


def run_remote(app, tmp_path, parallelism: int) -> dict:
    ours = showcase_module("raystream.statefun_api")  # the types, to decode state
    with FunctionServer(app) as server:
        path = tmp_path / "module.yaml"
        path.write_text(MODULE_YAML.format(url=server.url))
        endpoints = load_module_yaml(path)
        assert [(e.functions, e.transport) for e in endpoints] == [("showcase/*", TRANSPORT_ASYNC)]
        with LocalDispatchers(StatefulFunctions(), parallelism=parallelism, egresses=EGRESSES, endpoints=endpoints) as run:
            run.send(*map(route, INGRESS)).run_until_idle()
            assert run.counters()["remote_handshakes"] >= 1
            return outcome(run, ours)


def seen(*lines: str) -> list[str]:
    return sorted(lines, key=repr)


def test_the_showcase_embedded_does_what_the_tutorial_says():
    out = run_embedded()
    types = "showcase/types"
    assert out["showcase/seen"] == seen(
        *[f"{types}/{i}: a io.statefun.types/{t} message with {v} as payload" for i, t, v in [
            ("0", "bool", "True"), ("1", "int", "123"), ("2", "float", "314159005696.0"),
            ("3", "string", "'Hello world'"), ("4", "double", "1.23"), ("5", "long", "123456789"),
            ("7", "string", "'Hello from the future'"),
        ] for _ in range(2)],  # from m1 and m2; the cancelled message to types/9 never arrives
        *[f"{types}/6: a showcase/GreetRequest message with {{'name': 'Joe'}} as payload"] * 2,
        *[f"{types}/8: a type.googleapis.com/org.apache.flink.statefun.playground.showcase.UserProfile "
          f"message with ('Joe', 'mint chocolate chip', 'The Office') as payload"] * 2,
        *[f"showcase/messaging/{m}: the payload's type is io.statefun.types/string and the raw bytes are "
          f"b'\\n\\x02go'" for m in ("m1", "m2")],
        *[f"showcase/messaging/{m}: hello! from myself" for m in ("m1", "m2")],
        "showcase/storage/s1: an_int is None",
        "showcase/storage/s1: the str has expired (or wasn't set before)",
        "showcase/storage/s1: greet_json is None",
        "showcase/storage/s1: an_int is 42",
        "showcase/storage/s1: an_expiring_str is 'first'",
        "showcase/storage/s1: greet_json is None",
    )
    assert out["showcase/greets"] == sorted(
        [KafkaProducerRecord("greetings", n, f"hello {n}! I've seen you {k} times!".encode()) for n, k in
         [("Bob", 1), ("Joe", 1), ("Bob", 2)]], key=repr)
    assert out["showcase/kafka-egress"] == [KafkaProducerRecord("my-kafka-topic", "my-key", b"my-utf8-value")]
    assert out["showcase/kinesis-egress"] == [KinesisEgressRecord("a-stream", "key", b"a value", "hash-key")]
    assert out["showcase/my-custom-egress"] == [TypedValue("showcase/GreetRequest", True, b'{"name": "Bob"}')]
    assert out["state"]["storage"] == [42, "second", None]
    assert out["state"]["serving"] == {"Bob": 2, "Joe": 1}
    assert out["state"]["async"] == UserProfile(name="Joe", favorite_ice_cream="mint chocolate chip", favorite_tv_show="The Office")


def test_the_showcase_embedded_gives_the_same_at_any_parallelism_and_order():
    assert run_embedded(parallelism=1, seed=None) == run_embedded(parallelism=3, seed=11)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_the_showcase_served_by_the_official_sdk_gives_what_embedded_gives(tmp_path, parallelism):
    sdk_ns = showcase_module("statefun")
    assert isinstance(sdk_ns["functions"], statefun.StatefulFunctions)
    assert run_remote(sdk_ns["app"], tmp_path, parallelism) == run_embedded()


def test_the_showcase_served_by_raystream_gives_what_embedded_gives(tmp_path):
    """raystream's RequestReplyHandler behind the module's own aiohttp code, as a StateFun
    cluster would call it."""
    ours = showcase_module("raystream.statefun_api")
    assert run_remote(ours["app"], tmp_path, 2) == run_embedded()


def test_the_text_is_what_runs():
    """Guard against the substitution silently missing its target."""
    assert SHOWCASE.count("from statefun import *") == 1
    assert "statefun_api" not in SHOWCASE


# ---------------------------------------------------------------- the showcase's own slip
def test_an_egress_message_passed_to_send_fails_in_both_sdks():
    """The playground's showcase passes ``kinesis_egress_message(...)`` to ``context.send``.
    The official SDK fails while encoding its reply (AttributeError); raystream fails at the
    call, naming ``send_egress``. Either way the invocation fails: porting does not turn the
    slip into a silent success or a different outcome."""

    def register(module):
        fns = module.StatefulFunctions()

        @fns.bind("showcase/egress")
        def egress(context, message):
            context.send(module.kinesis_egress_message(typename="showcase/kinesis-egress", stream="a-stream",
                                                       partition_key="key", value="a value"))

        return fns

    request = RequestBuilder("showcase/egress", "e1").with_invocation("go", StringType).to_bytes()
    with pytest.raises(AttributeError, match="target_typename"):
        statefun.RequestReplyHandler(register(statefun)).handle_sync(request)

    with pytest.raises(StatefulFunctionError, match="showcase/egress") as failure:
        run_function(register(statefun_api), "showcase/egress", "e1",
                     [message_builder("showcase/egress", "e1", str_value="go")])
    assert isinstance(failure.value.__cause__, TypeError)
    assert "use send_egress for EgressMessage" in str(failure.value.__cause__)
