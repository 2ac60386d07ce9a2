"""StateFun's own material runs unchanged: the flink-statefun-playground Python greeter.

``PLAYGROUND_FUNCTIONS`` is the playground's ``python/greeter/functions.py`` (the version
whose greeter writes to a Kafka egress with ``kafka_egress_message``), license header
dropped. It runs twice, changed only where noted:

* **remote**: executed as it is, with the official SDK (``from statefun import *``); the
  aiohttp ``app`` it builds is served unchanged, and raystream's dispatcher reaches it
  through a ``module.yaml`` in StateFun's own format (``transport:
  io.statefun.transports.v1/async``, Kafka ingress and egress documents);
* **embedded**: the same text with ``from statefun import *`` replaced by
  ``from raystream.statefun_api import *``.

Both replace the simulated 1 s of work in ``compute_fancy_greeting`` by 10 ms. The Kafka
egress is bound to a raystream collector, which receives ``KafkaProducerRecord`` values.
"""

from __future__ import annotations

import json
import threading

import pytest

statefun = pytest.importorskip("statefun")
rr_pb2 = pytest.importorskip("statefun.request_reply_pb2")
pytest.importorskip("aiohttp")

import raystream as rs  # noqa: E402
from raystream import statefun_api  # noqa: E402
from raystream.engine.errors import GraphError, JobFailed  # noqa: E402
from raystream.statefun_api import (  # noqa: E402
    StatefulFunctions,
    StringType,
    egress_message_builder,
    kafka_egress_message,
    kinesis_egress_message,
    message_builder,
)
from raystream.statefun_api.egress_io import (  # noqa: E402
    KafkaProducerRecord,
    KafkaProducerRecordType,
    KinesisEgressRecord,
)
from raystream.statefun_api.endpoints import TRANSPORT_ASYNC, load_module_yaml, parse_module_yaml  # noqa: E402
from raystream.statefun_api.job import DiscardingSink, StatefulFunctionsJob  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402
from raystream.statefun_api.routing import decode_egress_value  # noqa: E402
from raystream.statefun_api.testing import FunctionServer  # noqa: E402

PLAYGROUND_FUNCTIONS = '''\
import json

from statefun import *
import asyncio
from aiohttp import web

functions = StatefulFunctions()

GREET_REQUEST_TYPE = make_json_type(typename="example/GreetRequest")

@functions.bind(typename="example/person", specs=[ValueSpec(name="visits", type=IntType)])
async def person(context: Context, message: Message):
    # update the visit count.
    visits = context.storage.visits or 0
    visits += 1
    context.storage.visits = visits

    # enrich the request with the number of vists.
    request = message.as_type(GREET_REQUEST_TYPE)
    request['visits'] = visits

    # next, we will forward a message to a special greeter function,
    # that will compute a super-doper-personalized greeting based on the
    # number of visits that this person has.
    context.send(
        message_builder(target_typename="example/greeter",
                        target_id=request['name'],
                        value=request,
                        value_type=GREET_REQUEST_TYPE))


@functions.bind(typename="example/greeter")
async def greeter(context, message):
    request = message.as_type(GREET_REQUEST_TYPE)
    person_name = request['name']
    visits = request['visits']

    greeting = await compute_fancy_greeting(person_name, visits)

    context.send_egress(kafka_egress_message(typename="example/greets",
                                             topic="greetings",
                                             key=person_name,
                                             value=greeting))


async def compute_fancy_greeting(name: str, seen: int):
    """
    Compute a personalized greeting, based on the number of times this @name had been seen before.
    """
    templates = ["", "Welcome %s", "Nice to see you again %s", "Third time is a charm %s"]
    if seen < len(templates):
        greeting = templates[seen] % name
    else:
        greeting = f"Nice to see you at the {seen}-nth time {name}!"

    await asyncio.sleep(1)
    return greeting


#
# Serve the endpoint
#


handler = RequestReplyHandler(functions)


async def handle(request):
    req = await request.read()
    res = await handler.handle_async(req)
    return web.Response(body=res, content_type="application/octet-stream")


app = web.Application()
app.add_routes([web.post('/statefun', handle)])

if __name__ == '__main__':
    web.run_app(app, port=8000)
'''

# the playground's module.yaml (StateFun 3.2+: endpoint with a transport, Kafka I/O), with
# the function host replaced by the test server's
MODULE_YAML = """\
kind: io.statefun.endpoints.v2/http
spec:
  functions: example/*
  urlPathTemplate: {url}/statefun
  transport:
    type: io.statefun.transports.v1/async
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: example/names
  address: kafka:9092
  consumerGroupId: my-group-id
  topics:
    - topic: names
      valueType: example/GreetRequest
      targets:
        - example/person
---
kind: io.statefun.kafka.v1/egress
spec:
  id: example/greets
  address: kafka:9092
  deliverySemantic:
    type: exactly-once
    transactionTimeout: 15min
"""

EGRESS = "example/greets"
NAMES = ["ann", "bob", "ann", "ann", "cid", "ann", "bob"]


def playground_module(sdk: str = "statefun", text: str = PLAYGROUND_FUNCTIONS) -> dict:
    """Execute the playground's functions.py (``text``) with ``from <sdk> import *``; its namespace."""
    source = text.replace("await asyncio.sleep(1)", "await asyncio.sleep(0.01)")
    if sdk != "statefun":
        source = source.replace("from statefun import *", f"from {sdk} import *")
    namespace: dict = {"__name__": "playground_greeter"}
    exec(compile(source, f"<playground greeter, {sdk}>", "exec"), namespace)
    return namespace


def expected_greetings(names: list[str]) -> list[KafkaProducerRecord]:
    templates = ["", "Welcome %s", "Nice to see you again %s", "Third time is a charm %s"]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        n = seen[name] = seen.get(name, 0) + 1
        text = templates[n] % name if n < len(templates) else f"Nice to see you at the {n}-nth time {name}!"
        out.append(KafkaProducerRecord(topic="greetings", key=name, value=text.encode()))
    return out


def ingress(namespace: dict):
    """The Kafka ingress of module.yaml: a JSON GreetRequest keyed by name -> example/person."""
    message_builder, greet_type = namespace["message_builder"], namespace["GREET_REQUEST_TYPE"]
    return [message_builder(target_typename="example/person", target_id=n, value={"name": n}, value_type=greet_type) for n in NAMES]


def per_key(records: list[KafkaProducerRecord]) -> dict[str, list[KafkaProducerRecord]]:
    out: dict[str, list[KafkaProducerRecord]] = {}
    for r in records:
        out.setdefault(r.key, []).append(r)
    return out


def run_to_end(run: LocalDispatchers, messages) -> list:
    for m in messages:  # one at a time, as from one Kafka partition
        run.send(m)
    return run.run_until_idle().egress(EGRESS)


def test_the_playground_greeter_embedded_with_only_the_import_changed():
    ns = playground_module("statefun_api")
    assert isinstance(ns["functions"], StatefulFunctions)  # raystream's, not the SDK's
    with LocalDispatchers(ns["functions"], parallelism=2, egresses=[EGRESS], seed=3) as run:
        out = run_to_end(run, ingress(ns))
        assert run.state("example/person", "ann", "visits") == 4
    assert per_key(out) == per_key(expected_greetings(NAMES))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_the_playground_greeter_served_by_the_official_sdk_through_its_module_yaml(tmp_path, parallelism):
    sdk_ns = playground_module("statefun")
    assert isinstance(sdk_ns["functions"], statefun.StatefulFunctions)
    with FunctionServer(sdk_ns["app"]) as server:  # the playground's own aiohttp app
        path = tmp_path / "module.yaml"
        path.write_text(MODULE_YAML.format(url=server.url))
        endpoints = load_module_yaml(path)
        assert [(e.functions, e.transport, e.call_timeout_s) for e in endpoints] == [("example/*", TRANSPORT_ASYNC, 120.0)]
        ours = playground_module("statefun_api")  # only for the ingress messages
        with LocalDispatchers(StatefulFunctions(), parallelism=parallelism, egresses=[EGRESS], endpoints=endpoints) as run:
            out = run_to_end(run, ingress(ours))
            assert run.state("example/person", "ann", "visits") == 4  # the remote function's state lives in raystream
            assert run.counters()["remote_handshakes"] >= 1
    assert per_key(out) == per_key(expected_greetings(NAMES))
    assert all(isinstance(r, KafkaProducerRecord) for r in out)


# ---------------------------------------------------------------- a function without effects
class Replies:
    """In front of the SDK's handler: keeps every reply body, and counts the messages of
    the requests it answered with an invocation result (empty or not)."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.bodies: list[bytes] = []
        self.invoked: dict[str, int] = {}  # function typename -> messages invoked
        self.lock = threading.Lock()

    async def __call__(self, body: bytes) -> bytes:
        reply = await self.handler.handle_async(body)
        request, answer = rr_pb2.ToFunction(), rr_pb2.FromFunction()
        request.ParseFromString(body)
        answer.ParseFromString(reply)
        with self.lock:
            self.bodies.append(reply)
            if not answer.HasField("incomplete_invocation_context"):
                target = request.invocation.target
                typename = f"{target.namespace}/{target.type}"
                self.invoked[typename] = self.invoked.get(typename, 0) + len(request.invocation.invocations)
        return reply


def quiet_sdk_functions():
    fns = statefun.StatefulFunctions()

    @fns.bind(typename="example/logger")
    async def logger(context, message):  # no state, no messages, no egress
        pass

    @fns.bind(typename="example/reader", specs=[statefun.ValueSpec(name="seen", type=statefun.IntType)])
    def reader(context, message):  # reads its state, changes nothing
        assert context.storage.seen is None

    return fns


def test_a_remote_function_without_effects_is_an_empty_invocation_response():
    replies = Replies(statefun.RequestReplyHandler(quiet_sdk_functions()))
    with FunctionServer(replies) as server:
        text = f"kind: io.statefun.endpoints.v2/http\nspec:\n  functions: example/*\n  urlPathTemplate: {server.url}/statefun\n"
        with LocalDispatchers(StatefulFunctions(), parallelism=2, endpoints=parse_module_yaml(text)) as run:
            messages = [message_builder(t, i, str_value="hello") for t in ("example/logger", "example/reader") for i in "aba"]
            run.send(*messages).run_until_idle()
            counters = run.counters()
    # the official SDK answers a function without effects with an EMPTY body
    assert b"" in replies.bodies
    assert replies.invoked == {"example/logger": 3, "example/reader": 3}
    assert counters["messages"] == 6 and counters["egress_messages"] == 0


# ---------------------------------------------------------------- Kafka / Kinesis egress builders
def test_kafka_and_kinesis_egress_messages_are_the_sdks_bytes():
    cases = [
        dict(typename="a/out", topic="t", value="hi", key="k"),
        dict(typename="a/out", topic="t", value=b"\x00\x01"),
        dict(typename="a/out", topic="t", value=7),
        dict(typename="a/out", topic="t", value=-1.5, key=""),
    ]
    for case in cases:
        ours, sdk = kafka_egress_message(**case), statefun.kafka_egress_message(**case)
        assert (ours.typename, ours.value_typename(), ours.raw_value()) == (
            sdk.typename,
            sdk.typed_value.typename,
            sdk.typed_value.value,
        ), case
    typed = kafka_egress_message("a/out", "t", 5, value_type=statefun_api.IntType)
    assert typed.raw_value() == statefun.kafka_egress_message("a/out", "t", 5, value_type=statefun.IntType).typed_value.value
    for case in [dict(typename="a/k", stream="s", value="v", partition_key="p"), dict(typename="a/k", stream="s", value=b"x", partition_key="", explicit_hash_key="h")]:
        ours, sdk = kinesis_egress_message(**case), statefun.kinesis_egress_message(**case)
        assert (ours.value_typename(), ours.raw_value()) == (sdk.typed_value.typename, sdk.typed_value.value)
    # egress sinks receive the records, decoded by typename
    assert decode_egress_value(kafka_egress_message("a/out", "t", "v", key="k"), None) == KafkaProducerRecord("t", "k", b"v")
    assert decode_egress_value(kinesis_egress_message("a/k", "s", "v", "p"), None) == KinesisEgressRecord("s", "p", b"v", "")


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda m: m.kafka_egress_message("a/out", "", "x"), ValueError, "A destination Kafka topic is missing"),
        (lambda m: m.kafka_egress_message("a/out", "t", None), ValueError, "Missing value"),
        (lambda m: m.kafka_egress_message("a/out", "t", [1]), TypeError, "Unable to convert value to bytes."),
        (lambda m: m.kinesis_egress_message("a/out", "", "x", "p"), ValueError, "Missing destination Kinesis stream"),
        (lambda m: m.kinesis_egress_message("a/out", "s", 3, "p"), TypeError, "Unable to convert value to bytes."),
        (lambda m: m.kinesis_egress_message("a/out", "s", "x", None), ValueError, "Missing partition key"),
    ],
)
def test_egress_builders_fail_like_the_sdk(build, error, message):
    for module in (statefun, statefun_api):
        with pytest.raises(error, match=message):
            build(module)


def test_a_kafka_egress_is_bound_to_any_sink_with_a_declared_type():
    """``with_egress(..., value_type=KafkaProducerRecordType)`` checks what arrives."""
    fns = StatefulFunctions()

    @fns.bind("a/f")
    def f(context, message):
        context.send_egress(kafka_egress_message("a/out", "topic", message.as_string(), key=context.address.id))
        context.send_egress(egress_message_builder("a/plain", message.as_string(), StringType))

    with LocalDispatchers(fns, egresses={"a/out": KafkaProducerRecordType, "a/plain": None}) as run:
        run.send(message_builder("a/f", "k1", str_value="hello")).run_until_idle()
        assert run.egress("a/out") == [KafkaProducerRecord("topic", "k1", b"hello")]
        assert run.egress("a/plain") == ["hello"]


# ---------------------------------------------------------------- the module.yaml's ingress
def _greeter_job(tmp_path, records, yaml_kwargs):
    """The embedded playground greeter on Ray at p=2, fed through module.yaml's Kafka ingress."""
    ns = playground_module("statefun_api")
    path = tmp_path / "module.yaml"
    path.write_text(MODULE_YAML.format(url="http://functions:8000"))  # (its endpoint serves no embedded function)
    env = rs.StreamEnvironment(parallelism=2)
    sf = StatefulFunctionsJob(env, ns["functions"])
    sf.with_module_yaml(str(path), ingresses={"names": env.from_collection(records)}, **yaml_kwargs(ns))
    return sf


@pytest.mark.parametrize("decoded", [False, True], ids=["payload bytes", "decoded with value_types"])
def test_the_module_yaml_kafka_ingress_routes_by_key_to_its_targets(ray_session, tmp_path, decoded):
    """``topics: [{topic: names, valueType: example/GreetRequest, targets: [example/person]}]``:
    a record's key is the function id, its value a GreetRequest message (the topic's bytes,
    or decoded values serialized with the Type given for the valueType)."""
    if decoded:
        records = [(n, {"name": n}) for n in NAMES]
        kwargs = lambda ns: {"value_types": {"example/GreetRequest": ns["GREET_REQUEST_TYPE"]}}  # noqa: E731
    else:
        records = [(n, json.dumps({"name": n}).encode()) for n in NAMES]
        kwargs = lambda ns: {}  # noqa: E731
    sf = _greeter_job(tmp_path, records, kwargs)
    out = sf.egress_stream(EGRESS).execute_and_collect()
    assert per_key(out) == per_key(expected_greetings(NAMES))


def test_a_module_yaml_ingress_name_that_is_not_in_the_file_fails_listing_what_is(ray_session, tmp_path):
    path = tmp_path / "module.yaml"
    path.write_text(MODULE_YAML.format(url="http://functions:8000"))
    env = rs.StreamEnvironment()
    sf = StatefulFunctionsJob(env, playground_module("statefun_api")["functions"])
    with pytest.raises(GraphError, match=r"no routable ingress topic or stream 'logins'; the file has: 'names' \(ingress example/names\)"):
        sf.with_module_yaml(str(path), ingresses={"logins": env.from_collection([("a", b"{}")])})
    # the ingress id works as the name of its only topic
    sf.with_module_yaml(str(path), ingresses={"example/names": env.from_collection([("a", b"{}")])})


def test_a_decoded_value_without_its_type_fails_naming_the_record(ray_session, tmp_path):
    sf = _greeter_job(tmp_path, [("ann", {"name": "ann"})], lambda ns: {})
    with pytest.raises(JobFailed) as info:
        sf.egress_stream(EGRESS).execute_and_collect()
    text = str(info.value)
    assert "must be its serialized payload (bytes), got dict" in text and "value_types=" in text
    assert "('ann', {'name': 'ann'})" in text


# ---------------------------------------------------------------- a job without egress
def test_a_job_without_egress_has_a_sink():
    """As a StateFun module needs no egress, a StatefulFunctionsJob needs none: the
    dispatcher's (empty) main output ends in a DiscardingSink."""
    env = rs.StreamEnvironment(parallelism=2)
    ns = playground_module("statefun_api")
    only_person = StatefulFunctions()
    only_person.register("example/person", ns["functions"].for_typename("example/person").fun)
    only_person.register("example/greeter", lambda context, message: None)  # keeps no egress
    sf = StatefulFunctionsJob(env, only_person).with_ingress(env.from_collection(NAMES), lambda n: None)
    assert sf.egresses == []
    graph = env.get_job_graph()  # no GraphError: 'the job has no sink'
    sinks = [op for v in graph.vertices for op in v.chain if op.get("kind") == "sink"]
    assert [op["uid"] for op in sinks] == ["statefun-discard"]
    assert isinstance(sinks[0]["sink"], DiscardingSink)


def test_a_plain_job_without_a_sink_still_fails():
    env = rs.StreamEnvironment()
    env.from_collection([1]).map(str)
    with pytest.raises(GraphError, match="the job has no sink"):
        env.get_job_graph()


def test_the_playground_text_is_what_runs():
    """Guard against the two substitutions silently missing their targets."""
    assert PLAYGROUND_FUNCTIONS.count("from statefun import *") == 1
    assert PLAYGROUND_FUNCTIONS.count("await asyncio.sleep(1)") == 1
