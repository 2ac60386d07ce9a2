"""StateFun's legacy single-document ``module.yaml`` (``version: "3.0"``, one ``module`` with
``meta.type: remote`` and lists of ``endpoints``, ``ingresses`` and ``egresses``), which
StateFun 3.x still loads (``JsonServiceLoader`` -> ``LegacyRemoteModuleV30``): read as the
``kind``/``spec`` documents it stands for; what raystream cannot take fails naming the field
and its place in the file."""

from __future__ import annotations

import dataclasses

import pytest

from raystream.engine.errors import ConfigError
from raystream.statefun_api.endpoints import (
    IngressTopic,
    load_module_yaml,
    parse_module_ingresses,
    parse_module_yaml,
)

# what LegacyRemoteModuleV30 makes of it: kind 'http' is io.statefun.endpoints.v1/http
CURRENT = """\
kind: io.statefun.endpoints.v1/http
spec:
  functions: com.foo.bar/*
  urlPathTemplate: http://bar.foo.com:8080/functions/{function.name}
  timeouts:
    call: 1minutes
    connect: 10seconds
    read: 10second
    write: 10seconds
  maxNumBatchRequests: 10000
---
kind: io.statefun.kafka.v1/egress
spec:
  id: com.mycomp.foo/bar
  address: kafka-broker:9092
"""
KAFKA_INGRESS = """\
    ingresses:
      - ingress:
          meta:
            type: io.statefun.kafka/ingress
            id: com.example/users
          spec:
            address: kafka-broker:9092
            consumerGroupId: my-group-id
            topics:
              - topic: names
                valueType: com.example/User
                targets:
                  - com.example.fn/greeter
"""
PROTOBUF_INGRESS = """\
    ingresses:
      - ingress:
          meta:
            type: statefun.kafka.io/protobuf-ingress
            id: com.mycomp.igal/names
          spec:
            address: kafka-broker:9092
            topics:
              - names
"""


def legacy_module(
    *,
    version: str = '"3.0"',
    module_meta: str | None = "type: remote",
    module_extra: str = "",
    spec_extra: str = "",
    endpoint_key: str = "endpoint",
    endpoint_kind: str = "http",
    endpoint_meta_extra: str = "",
    batch_field: str = "maxNumBatchRequests: 10000",
    ingresses: str = "",
    egress_id: str = "com.mycomp.foo/bar",
    egress_extra: str = "",
) -> str:
    """StateFun's own test resource (statefun-flink-core/src/test/resources/module-v3_0/module.yaml),
    its endpoint and its egress, with the changes named; ``ingresses`` is the text of a
    ``module.spec.ingresses`` list (:data:`KAFKA_INGRESS`, :data:`PROTOBUF_INGRESS`)."""
    meta = "" if module_meta is None else f"  meta:\n    {module_meta}\n"
    return f"""\
version: {version}

module:
{meta}{module_extra}  spec:
{spec_extra}    endpoints:
      - {endpoint_key}:
          meta:
            kind: {endpoint_kind}
{endpoint_meta_extra}          spec:
            functions: com.foo.bar/*
            urlPathTemplate: http://bar.foo.com:8080/functions/{{function.name}}
            timeouts:
              call: 1minutes
              connect: 10seconds
              read: 10second
              write: 10seconds
            {batch_field}
{ingresses}    egresses:
      - egress:
          meta:
            type: io.statefun.kafka/egress
            id: {egress_id}
{egress_extra}          spec:
            address: kafka-broker:9092
            deliverySemantic:
              type: exactly-once
              transactionTimeoutMillis: 100000
            properties:
              - foo.config: bar
"""


LEGACY = legacy_module()


def _sourceless(endpoints):
    return [dataclasses.replace(ep, source="") for ep in endpoints]


def test_a_legacy_module_declares_the_endpoints_of_the_documents_it_stands_for(tmp_path):
    legacy = parse_module_yaml(LEGACY, source="module.yaml")
    assert _sourceless(legacy) == _sourceless(parse_module_yaml(CURRENT))
    (ep,) = legacy
    assert ep.functions == "com.foo.bar/*" and ep.max_num_batch_requests == 10000
    assert (ep.call_timeout_s, ep.connect_timeout_s, ep.read_timeout_s, ep.write_timeout_s) == (60.0, 10.0, 10.0, 10.0)
    assert ep.source == "module.yaml (module.spec.endpoints[0])"
    path = tmp_path / "module.yaml"
    path.write_text(LEGACY)
    assert _sourceless(load_module_yaml(path)) == _sourceless(legacy)


def test_a_legacy_module_with_a_current_endpoint_kind():
    (ep,) = parse_module_yaml(legacy_module(endpoint_kind="io.statefun.endpoints.v2/http"))
    assert ep.transport == "io.statefun.transports.v1/async"


def test_the_routable_ingresses_of_a_legacy_module():
    text = legacy_module(ingresses=KAFKA_INGRESS)
    assert len(parse_module_yaml(text)) == 1  # (ingresses and egresses are bound in Python)
    assert parse_module_ingresses(text) == [
        IngressTopic("com.example/users", "names", "com.example/User", ("com.example.fn/greeter",))
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (legacy_module(version='"2.0"'), r"module.yaml: format version '2.0' .*end of life.* 'version: \"3.0\"'"),
        (legacy_module(version='"3.1"'), r"module.yaml: format version '3.1' .*only '3.0'"),
        (legacy_module(version="3.0"), r"module.yaml: 'version' must be a string .*quoted.*got 3.0"),
        (legacy_module(module_meta="type: embedded"), r"module.yaml: unsupported module type 'embedded' at 'module.meta.type'"),
        (legacy_module(module_meta=None), r"module.yaml: 'module.meta.type' is missing"),
        (legacy_module(module_extra="  functions: []\n"),
         r"module.yaml: unknown field\(s\) \['functions'\] in 'module' \(known: meta, spec\)"),
        (legacy_module(module_meta="type: remote\n    id: x"),
         r"module.yaml: unknown field\(s\) \['id'\] in 'module.meta' \(known: type\)"),
        (legacy_module(spec_extra="    functions: []\n"),
         r"module.yaml: unknown field\(s\) \['functions'\] in 'module.spec' \(known: egresses, endpoints, ingresses\)"),
        (legacy_module(endpoint_key="function"), r"module.yaml \(module.spec.endpoints\[0\]\): expected a mapping with 'endpoint'"),
        (legacy_module(endpoint_kind="grpc"), r"module.yaml \(module.spec.endpoints\[0\]\): unsupported endpoint kind 'grpc'"),
        (legacy_module(endpoint_meta_extra="            id: com.foo/bar\n"),
         r"module.yaml \(module.spec.endpoints\[0\]\): unknown field\(s\) \['id'\] in 'endpoint.meta' \(known: kind\)"),
        (legacy_module(egress_extra="          routing: x\n"),
         r"module.yaml \(module.spec.egresses\[0\]\): unknown field\(s\) \['routing'\] in 'egress' \(known: meta, spec\)"),
        (legacy_module(egress_extra="            name: x\n"),
         r"module.yaml \(module.spec.egresses\[0\]\): unknown field\(s\) \['name'\] in 'egress.meta' \(known: id, type\)"),
        (legacy_module(batch_field="maxBatch: 3"),
         r"module.yaml \(module.spec.endpoints\[0\]\): unknown field\(s\) \['maxBatch'\] in 'spec'"),
        (legacy_module(ingresses=PROTOBUF_INGRESS),
         r"module.yaml \(module.spec.ingresses\[0\]\): unsupported ingress type 'statefun.kafka.io/protobuf-ingress'"),
        (legacy_module(egress_id="bar"), r"module.yaml \(module.spec.egresses\[0\]\): 'egress.meta.id'"),
        (LEGACY + "---\n" + CURRENT, r"module.yaml \(document 1\): a legacy module \(version: \"3.0\"\) must be the only document"),
    ],
    ids=["eol-version", "version-3.1", "unquoted-version", "not-remote", "no-type", "unknown-module-field",
         "unknown-module-meta-field", "unknown-spec-field", "no-endpoint-key", "unknown-endpoint-kind",
         "unknown-endpoint-meta-field", "unknown-egress-field", "unknown-egress-meta-field", "unknown-endpoint-field",
         "protobuf-ingress", "bad-egress-id", "not-alone"],
)
def test_what_a_legacy_module_cannot_declare_is_named(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_module_yaml(text, source="module.yaml")


def test_statefuns_own_legacy_test_resource_fails_on_its_protobuf_ingress_only():
    """The whole resource: its 2.x ingress kind has no binder in StateFun 3.x either."""
    text = legacy_module(ingresses=PROTOBUF_INGRESS)
    with pytest.raises(ConfigError, match=r"ingresses\[0\].*protobuf-ingress.*io.statefun.kafka/ingress"):
        parse_module_yaml(text, source="module.yaml")
    with pytest.raises(ConfigError, match=r"ingresses\[0\].*protobuf-ingress"):
        parse_module_ingresses(text, source="module.yaml")
