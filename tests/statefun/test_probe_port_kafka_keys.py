"""The showcase's Kafka ingress fed with Kafka records: their key is bytes, as a consumer gives it.

flink-statefun-playground's ``python/showcase/module.yaml`` routes topic ``names`` to
``showcase/serving``. StateFun's routable Kafka ingress (``RoutableKafkaIngressDeserializer``)
takes a ``ConsumerRecord<byte[], byte[]>`` and uses ``new String(key, UTF_8)`` as the function
id; a ``(key, value)`` record read from Kafka with a Python client has bytes for both, so
``with_module_yaml(..., ingresses={"names": stream})`` must take them as they come.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

import raystream as rs
from raystream.engine.errors import JobFailed, UserCodeError
from raystream.engine.records import Batch
from raystream.statefun_api import (
    Context,
    IntType,
    Message,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    make_json_type,
)
from raystream.statefun_api.ingress import RoutedIngress
from raystream.statefun_api.job import StatefulFunctionsJob

SHOWCASE_MODULE = """\
kind: io.statefun.endpoints.v2/http
spec:
  functions: showcase/*
  urlPathTemplate: http://host-machine:8000/statefun
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
"""

GREET_JSON_TYPE = make_json_type(typename="showcase/GreetRequest")


def showcase_functions() -> StatefulFunctions:
    """The showcase's serving function (``python/showcase/showcase/__main__.py``), egress added."""
    functions = StatefulFunctions()

    @functions.bind("showcase/serving", specs=[ValueSpec(name="seen", type=IntType)])
    async def serving(context: Context, message: Message):
        seen = context.storage.seen or 0
        seen += 1
        context.storage.seen = seen
        greet_request = message.as_type(GREET_JSON_TYPE)
        name = greet_request["name"]
        context.send_egress(
            egress_message_builder(
                target_typename="showcase/greets",
                value=f"hello {name} ({context.address.id})! seen {seen}",
                value_type=StringType,
            )
        )

    return functions


NAMES = ["Gordon", "Zoë", "渡辺", "Gordon", "Zoë", "Gordon"] * 5


def kafka_records() -> list[tuple[bytes, bytes]]:
    """What a Kafka consumer reads from topic ``names``: UTF-8 key and JSON value, both bytes."""
    return [(name.encode(), json.dumps({"name": name}).encode()) for name in NAMES]


def reference() -> Counter:
    seen: Counter = Counter()
    out: Counter = Counter()
    for name in NAMES:
        seen[name] += 1
        out[f"hello {name} ({name})! seen {seen[name]}"] += 1
    return out


@pytest.mark.parametrize("parallelism", [1, 2])
def test_kafka_records_with_bytes_keys_are_routed_by_their_utf8_key(ray_session, tmp_path, parallelism):
    path = tmp_path / "module.yaml"
    path.write_text(SHOWCASE_MODULE)
    env = rs.StreamEnvironment(parallelism=parallelism)
    sf = StatefulFunctionsJob(env, showcase_functions())
    sf.with_module_yaml(str(path), ingresses={"names": env.from_collection(kafka_records())})
    # it used to fail: "the routed ingress's id (index 0) must be a non-empty string, got b'Gordon'"
    assert Counter(sf.egress_stream("showcase/greets").execute_and_collect()) == reference()


def test_a_key_that_is_not_utf8_fails_naming_the_record():
    ingress = RoutedIngress(["showcase/serving"], GREET_JSON_TYPE)
    records = [(b"Gordon", {"name": "Gordon"}), (b"\xff\xfe", {"name": "?"})]
    with pytest.raises(UserCodeError) as info:
        ingress.route(Batch.of_records(records))
    assert info.value.record == (b"\xff\xfe", {"name": "?"})
    assert "is bytes that are not UTF-8" in str(info.value.original)
    # str keys and UTF-8 bytes give the same messages
    as_str = ingress.route(Batch.of_records([("Zoë", {"name": "Zoë"})]))
    assert ingress.route(Batch.of_records([("Zoë".encode(), {"name": "Zoë"})])) == as_str


def test_a_missing_key_fails_as_on_statefun(ray_session, tmp_path):
    path = tmp_path / "module.yaml"
    path.write_text(SHOWCASE_MODULE)
    env = rs.StreamEnvironment()
    sf = StatefulFunctionsJob(env, showcase_functions())
    sf.with_module_yaml(str(path), ingresses={"names": env.from_collection([(None, b'{"name": "x"}')])})
    with pytest.raises(JobFailed, match=r"must be a non-empty string, got None \(bytes holding UTF-8 are taken too, as a Kafka record's key\)"):
        sf.egress_stream("showcase/greets").execute_and_collect()
