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

# StateFun's own test resource (statefun-flink-core/src/test/resources/module-v3_0/module.yaml),
# its endpoint and its egress; its ingress is below (a 2.x protobuf ingress kind)
LEGACY = """\
version: "3.0"

module:
  meta:
    type: remote
  spec:
    endpoints:
      - endpoint:
          meta:
            kind: http
          spec:
            functions: com.foo.bar/*
            urlPathTemplate: http://bar.foo.com:8080/functions/{function.name}
            timeouts:
              call: 1minutes
              connect: 10seconds
              read: 10second
              write: 10seconds
            maxNumBatchRequests: 10000
    egresses:
      - egress:
          meta:
            type: io.statefun.kafka/egress
            id: com.mycomp.foo/bar
          spec:
            address: kafka-broker:9092
            deliverySemantic:
              type: exactly-once
              transactionTimeoutMillis: 100000
            properties:
              - foo.config: bar
"""
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
    text = LEGACY.replace("kind: http", "kind: io.statefun.endpoints.v2/http")
    (ep,) = parse_module_yaml(text)
    assert ep.transport == "io.statefun.transports.v1/async"


def test_the_routable_ingresses_of_a_legacy_module():
    text = LEGACY.replace("    egresses:\n", KAFKA_INGRESS + "    egresses:\n")
    assert len(parse_module_yaml(text)) == 1  # (ingresses and egresses are bound in Python)
    assert parse_module_ingresses(text) == [
        IngressTopic("com.example/users", "names", "com.example/User", ("com.example.fn/greeter",))
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('version: "3.0"', 'version: "2.0"'), r"module.yaml: format version '2.0' .*end of life.* 'version: \"3.0\"'"),
        (('version: "3.0"', 'version: "3.1"'), r"module.yaml: format version '3.1' .*only '3.0'"),
        (('version: "3.0"', "version: 3.0"), r"module.yaml: 'version' must be a string .*quoted.*got 3.0"),
        (("type: remote", "type: embedded"), r"module.yaml: unsupported module type 'embedded' at 'module.meta.type'"),
        (("  meta:\n    type: remote\n", ""), r"module.yaml: 'module.meta.type' is missing"),
        (("    endpoints:", "    functions: []\n    endpoints:"), r"module.yaml: unknown field\(s\) \['functions'\] in 'module.spec'"),
        (("    endpoints:\n      - endpoint:", "    endpoints:\n      - function:"),
         r"module.yaml \(module.spec.endpoints\[0\]\): expected a mapping with 'endpoint'"),
        (("kind: http", "kind: grpc"), r"module.yaml \(module.spec.endpoints\[0\]\): unsupported endpoint kind 'grpc'"),
        (("maxNumBatchRequests: 10000", "maxBatch: 3"),
         r"module.yaml \(module.spec.endpoints\[0\]\): unknown field\(s\) \['maxBatch'\] in 'spec'"),
        (("    egresses:\n", PROTOBUF_INGRESS + "    egresses:\n"),
         r"module.yaml \(module.spec.ingresses\[0\]\): unsupported ingress type 'statefun.kafka.io/protobuf-ingress'"),
        (("id: com.mycomp.foo/bar", "id: bar"), r"module.yaml \(module.spec.egresses\[0\]\): 'egress.meta.id'"),
        (("    endpoints:\n", "    endpoints: {}\n    unused:\n"), r"module.yaml: unknown field\(s\) \['unused'\]"),
        ((LEGACY, LEGACY + "---\n" + CURRENT), r"module.yaml \(document 1\): a legacy module \(version: \"3.0\"\) must be the only document"),
    ],
    ids=["eol-version", "version-3.1", "unquoted-version", "not-remote", "no-type", "unknown-spec-field", "no-endpoint-key",
         "unknown-endpoint-kind", "unknown-endpoint-field", "protobuf-ingress", "bad-egress-id", "unknown-field-2",
         "not-alone"],
)
def test_what_a_legacy_module_cannot_declare_is_named(change, message):
    old, new = change
    assert old in LEGACY
    with pytest.raises(ConfigError, match=message):
        parse_module_yaml(LEGACY.replace(old, new), source="module.yaml")


def test_statefuns_own_legacy_test_resource_fails_on_its_protobuf_ingress_only():
    """The whole resource: its 2.x ingress kind has no binder in StateFun 3.x either."""
    text = LEGACY.replace("    egresses:\n", PROTOBUF_INGRESS + "    egresses:\n")
    with pytest.raises(ConfigError, match=r"ingresses\[0\].*protobuf-ingress.*io.statefun.kafka/ingress"):
        parse_module_yaml(text, source="module.yaml")
    with pytest.raises(ConfigError, match=r"ingresses\[0\].*protobuf-ingress"):
        parse_module_ingresses(text, source="module.yaml")
