"""Remote endpoint declarations: remote_endpoint() in Python and StateFun's module.yaml."""

from __future__ import annotations

import builtins
from datetime import timedelta

import pytest

import raystream as rs
from engine.errors import ConfigError, GraphError
from statefun_api import StatefulFunctions
from statefun_api.endpoints import (
    load_module_yaml,
    parse_duration,
    parse_module_yaml,
    remote_endpoint,
    resolve_endpoint,
)
from statefun_api.job import StatefulFunctionsJob

GOOD = """\
kind: io.statefun.endpoints.v2/http
spec:
  functions: com.example/*
  urlPathTemplate: http://functions:8000/{function.name}
  maxNumBatchRequests: 500
  timeouts:
    call: 2 min
    connect: 5s
    read: 1500ms
    write: 10s
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: com.example/names
  address: kafka:9092
---
kind: io.statefun.endpoints.v1/http
spec:
  functions: com.example/special
  urlPathTemplate: https://special.example.com/statefun
"""


def test_a_statefun_module_yaml_is_read(tmp_path):
    path = tmp_path / "module.yaml"
    path.write_text(GOOD)
    pattern, special = load_module_yaml(path)
    assert pattern.functions == "com.example/*"
    assert pattern.url_for("com.example/greeter") == "http://functions:8000/greeter"
    assert pattern.max_num_batch_requests == 500
    assert (pattern.call_timeout_s, pattern.connect_timeout_s, pattern.read_timeout_s) == (120.0, 5.0, 1.5)
    assert pattern.source.startswith(str(path))
    assert special.max_num_batch_requests == 1000 and special.call_timeout_s == 60.0
    # an exact binding wins over the namespace pattern
    assert resolve_endpoint([pattern, special], "com.example/special") is special
    assert resolve_endpoint([pattern, special], "com.example/other") is pattern
    assert resolve_endpoint([pattern, special], "org.other/f") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/*\n", r"'spec.urlPathTemplate' is missing"),
        (
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/*\n  urlPathTemplate: http://h/f\n  maxNumBatchRequests: 0\n",
            r"'spec.maxNumBatchRequests' must be a positive integer, got 0",
        ),
        (
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/*\n  urlPathTemplate: http://h/f\n  timeouts: {call: soon}\n",
            r"'spec.timeouts.call': cannot parse duration 'soon'",
        ),
        (
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/*\n  urlPathTemplate: http://h/f\n  timeouts: {idle: 1s}\n",
            r"unknown field 'spec.timeouts.idle'",
        ),
        (
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/*\n  urlPathTemplate: http://h/f\n  maxBatch: 3\n",
            r"unknown field\(s\) \['maxBatch'\] in 'spec'",
        ),
        ("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/*\n  urlPathTemplate: ftp://h/f\n", r"'spec.urlPathTemplate' must be an http\(s\) URL"),
        ("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a*/b\n  urlPathTemplate: http://h/f\n", r"only a whole name may be a wildcard"),
        ("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: nonamespace\n  urlPathTemplate: http://h/f\n", r"'functions' 'nonamespace' is not 'namespace/name'"),
        ("kind: io.statefun.endpoints.v3/grpc\nspec: {}\n", r"unsupported 'kind' 'io.statefun.endpoints.v3/grpc'"),
        ("kind: [unclosed\n", r"not valid YAML"),
        ("- just\n- a list\n", r"expected a mapping with 'kind' and 'spec'"),
        (
            "kind: io.statefun.endpoints.v2/http\nspec: {functions: a/*, urlPathTemplate: 'http://h/1'}\n---\n"
            "kind: io.statefun.endpoints.v2/http\nspec: {functions: a/*, urlPathTemplate: 'http://h/2'}\n",
            r"function types 'a/\*' are bound to two endpoints",
        ),
    ],
    ids=[
        "missing-url",
        "zero-batch",
        "bad-duration",
        "unknown-timeout",
        "unknown-field",
        "not-http",
        "bad-wildcard",
        "bad-typename",
        "unknown-kind",
        "invalid-yaml",
        "not-a-mapping",
        "duplicate",
    ],
)
def test_a_bad_module_yaml_names_the_file_and_the_field(tmp_path, text, message):
    path = tmp_path / "bad-module.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_module_yaml(path)
    assert str(path) in str(info.value)


def test_a_missing_module_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read module file .*nope.yaml"):
        load_module_yaml(tmp_path / "nope.yaml")


def test_the_document_number_is_named():
    text = GOOD + "---\nkind: io.statefun.endpoints.v2/http\nspec: {functions: b/*}\n"
    with pytest.raises(ConfigError, match=r"<m> \(document 4\): 'spec.urlPathTemplate' is missing"):
        parse_module_yaml(text, source="<m>")


def test_remote_endpoint_in_python():
    ep = remote_endpoint(
        "shop/cart", "http://cart:8000/{function.namespace}/{function.name}", call_timeout="30s", connect_timeout=timedelta(seconds=2), max_retries=0
    )
    assert ep.url_for("shop/cart") == "http://cart:8000/shop/cart"
    assert (ep.call_timeout_s, ep.connect_timeout_s, ep.max_retries) == (30.0, 2.0, 0)
    assert ep.matches("shop/cart") and not ep.matches("shop/carts")
    with pytest.raises(ConfigError, match=r"remote_endpoint\('a/\*'\): call_timeout: a duration must be positive"):
        remote_endpoint("a/*", "http://h", call_timeout=0)
    with pytest.raises(ConfigError, match=r"max_num_batch_requests must be a positive int, got -1"):
        remote_endpoint("a/*", "http://h", max_num_batch_requests=-1)
    with pytest.raises(ConfigError, match=r"max_retries must be an int >= 0 or None, got -2"):
        remote_endpoint("a/*", "http://h", max_retries=-2)


def test_durations():
    assert parse_duration("1min") == 60.0
    assert parse_duration("1500") == 1.5  # a bare number in a string is milliseconds (Flink)
    assert parse_duration(2) == 2.0
    with pytest.raises(ConfigError, match="cannot parse duration '5 fortnights'"):
        parse_duration("5 fortnights")


def test_job_endpoints_and_conflicts(tmp_path):
    functions = StatefulFunctions()
    functions.register("shop/cart", lambda c, m: None)
    sf = StatefulFunctionsJob(rs.StreamEnvironment(), functions)
    sf.with_endpoint(remote_endpoint("shop/*", "http://h/{function.name}"))
    assert [e.functions for e in sf.endpoints] == ["shop/*"]
    with pytest.raises(GraphError, match="'shop/cart' is registered as an embedded function"):
        sf.with_endpoint(remote_endpoint("shop/cart", "http://h/cart"))
    with pytest.raises(GraphError, match="takes RemoteEndpoint objects"):
        sf.with_endpoint("shop/*")
    path = tmp_path / "module.yaml"
    path.write_text(GOOD)
    sf.with_module_yaml(str(path))
    assert [e.functions for e in sf.endpoints] == ["shop/*", "com.example/*", "com.example/special"]


def test_dispatcher_config_checks_its_endpoints():
    from statefun_api.dispatcher import DispatcherConfig

    functions = StatefulFunctions()
    functions.register("shop/cart", lambda c, m: None)
    assert DispatcherConfig(functions, endpoints=[remote_endpoint("shop/*", "http://h/{function.name}")]).endpoints
    with pytest.raises(ValueError, match="'shop/cart' is registered as an embedded function"):
        DispatcherConfig(functions, endpoints=[remote_endpoint("shop/cart", "http://h/cart")])
    with pytest.raises(TypeError, match=r"DispatcherConfig\(endpoints=...\) takes RemoteEndpoint objects"):
        DispatcherConfig(functions, endpoints=["shop/*"])


def test_missing_aiohttp_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_aiohttp(name, *args, **kwargs):
        if name == "aiohttp" or name.startswith("aiohttp."):
            raise ImportError("No module named 'aiohttp'")
        return real_import(name, *args, **kwargs)

    sf = StatefulFunctionsJob(rs.StreamEnvironment(), StatefulFunctions())
    monkeypatch.setattr(builtins, "__import__", no_aiohttp)
    with pytest.raises(ImportError, match=r"raystream\[remote\]"):
        sf.with_endpoint(remote_endpoint("shop/*", "http://h/{function.name}"))
