"""Remote endpoint declarations: remote_endpoint() in Python and StateFun's module.yaml."""

from __future__ import annotations

import builtins
import http.server
import threading
from datetime import timedelta

import pytest

import raystream as rs
from raystream.engine.errors import ConfigError, GraphError
from raystream.statefun_api import (
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.endpoints import (
    load_module_yaml,
    parse_duration,
    parse_module_yaml,
    remote_endpoint,
    resolve_endpoint,
)
from raystream.statefun_api.handler import RequestReplyHandler
from raystream.statefun_api.job import StatefulFunctionsJob
from raystream.statefun_api.local import LocalDispatchers

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
    from raystream.statefun_api.dispatcher import DispatcherConfig

    functions = StatefulFunctions()
    functions.register("shop/cart", lambda c, m: None)
    assert DispatcherConfig(functions, endpoints=[remote_endpoint("shop/*", "http://h/{function.name}")]).endpoints
    with pytest.raises(ValueError, match="'shop/cart' is registered as an embedded function"):
        DispatcherConfig(functions, endpoints=[remote_endpoint("shop/cart", "http://h/cart")])
    with pytest.raises(TypeError, match=r"DispatcherConfig\(endpoints=...\) takes RemoteEndpoint objects"):
        DispatcherConfig(functions, endpoints=["shop/*"])


def test_remote_functions_need_no_aiohttp(monkeypatch):
    """The client is raystream's own: with aiohttp not importable, a job calls a function
    served by the standard library's http.server (raystream's handler behind it)."""
    served = StatefulFunctions()

    @served.bind("remote/greeter", specs=[ValueSpec("seen", StringType)])
    def greeter(context, message):
        context.storage.seen = (context.storage.seen or "") + "!"
        context.send_egress(egress_message_builder("test/out", f"{context.address.id}{context.storage.seen}", StringType))

    handler = RequestReplyHandler(served)

    class Serve(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            reply = handler.handle_sync(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    real_import = builtins.__import__

    def no_aiohttp(name, *args, **kwargs):
        if name == "aiohttp" or name.startswith("aiohttp."):
            raise ImportError("No module named 'aiohttp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_aiohttp)
    ep = remote_endpoint("remote/*", f"http://127.0.0.1:{server.server_address[1]}/{{function.name}}")
    try:
        with LocalDispatchers(StatefulFunctions(), egresses=["test/out"], endpoints=[ep]) as run:
            run.send(*[message_builder("remote/greeter", who, str_value="hi") for who in ("ann", "bob", "ann")])
            run.run_until_idle()
            assert sorted(run.egress("test/out")) == ["ann!", "ann!!", "bob!"]
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- StateFun's transport section
TRANSPORTS = """\
kind: io.statefun.endpoints.v2/http
spec:
  functions: example/*
  urlPathTemplate: http://functions:8000/statefun
  transport:
    type: io.statefun.transports.v1/async
---
kind: io.statefun.endpoints.v2/http
spec:
  functions: tuned/*
  urlPathTemplate: http://tuned:8000/statefun
  maxNumBatchRequests: 10000
  transport:
    type: io.statefun.transports.v1/async
    call: 3m
    connect: 5s
    pool_ttl: 30s
    pool_size: 64
    payload_max_bytes: 1048576
---
kind: io.statefun.endpoints.v2/http
spec:
  functions: both/*
  urlPathTemplate: http://both:8000/statefun
  transport:
    call: 3m
    timeouts: {call: 90s}
---
kind: io.statefun.endpoints.v2/http
spec:
  functions: ok/*
  urlPathTemplate: http://ok:8000/statefun
  transport:
    type: io.statefun.transports.v1/okhttp
    timeouts: {call: 30s, read: 2s}
---
kind: io.statefun.endpoints.v2/http
spec:
  functions: plain/*
  urlPathTemplate: http://plain:8000/statefun
"""


def test_the_transport_section_of_statefun_endpoints_is_read(tmp_path):
    from raystream.statefun_api.endpoints import (
        DEFAULT_MAX_RESPONSE_BYTES,
        TRANSPORT_ASYNC,
        TRANSPORT_OKHTTP,
    )

    path = tmp_path / "module.yaml"
    path.write_text(TRANSPORTS)
    default, tuned, both, okhttp, plain = load_module_yaml(path)
    # the async transport's defaults are StateFun's: 2 min call, 20 s connect, no read timeout
    assert (default.transport, default.call_timeout_s, default.connect_timeout_s, default.read_timeout_s) == (TRANSPORT_ASYNC, 120.0, 20.0, None)
    assert (default.max_response_bytes, default.max_concurrent_requests) == (DEFAULT_MAX_RESPONSE_BYTES, None)
    assert (tuned.call_timeout_s, tuned.connect_timeout_s, tuned.pool_ttl_s) == (180.0, 5.0, 30.0)
    assert (tuned.max_concurrent_requests, tuned.max_response_bytes, tuned.max_num_batch_requests) == (64, 1048576, 10000)
    assert both.call_timeout_s == 90.0  # 'timeouts' wins over the transport's own 'call', as in StateFun
    assert (okhttp.transport, okhttp.call_timeout_s, okhttp.connect_timeout_s, okhttp.read_timeout_s) == (TRANSPORT_OKHTTP, 30.0, 10.0, 2.0)
    assert (plain.transport, plain.call_timeout_s) == (TRANSPORT_ASYNC, 120.0)  # v2 default transport


@pytest.mark.parametrize(
    ("transport", "message"),
    [
        ("{type: io.statefun.transports.v1/async, pool_sise: 3}", r"unknown field\(s\) \['pool_sise'\] in 'spec.transport' of type 'io.statefun.transports.v1/async'"),
        ("{type: io.statefun.transports.v1/okhttp, pool_size: 3}", r"unknown field\(s\) \['pool_size'\] in 'spec.transport' of type 'io.statefun.transports.v1/okhttp'"),
        ("{type: io.statefun.transports.v1/grpc}", r"unsupported 'spec.transport.type' 'io.statefun.transports.v1/grpc'"),
        ("{timeouts: {idle: 3s}}", r"unknown field 'spec.transport.timeouts.idle'"),
        ("{pool_size: 0}", r"'spec.transport.pool_size' must be a positive integer, got 0"),
        ("{payload_max_bytes: lots}", r"'spec.transport.payload_max_bytes' must be a positive integer, got 'lots'"),
        ("{call: forever}", r"'spec.transport.call': cannot parse duration 'forever'"),
        ("async", r"'spec.transport' must be a mapping, got 'async'"),
    ],
    ids=["typo", "okhttp-pool", "unknown-type", "unknown-timeout", "zero-pool", "bad-payload", "bad-call", "not-a-mapping"],
)
def test_a_bad_transport_names_the_file_and_the_field(tmp_path, transport, message):
    path = tmp_path / "module.yaml"
    path.write_text(f"kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/*\n  urlPathTemplate: http://h/f\n  transport: {transport}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_module_yaml(path)
    assert f"{path} (document 1)" in str(info.value)


def test_a_v1_endpoint_has_no_transport(tmp_path):
    path = tmp_path / "module.yaml"
    path.write_text("kind: io.statefun.endpoints.v1/http\nspec:\n  functions: a/*\n  urlPathTemplate: http://h/f\n  transport: {}\n")
    with pytest.raises(ConfigError, match=r"'spec.transport' needs kind 'io.statefun.endpoints.v2/http'"):
        load_module_yaml(path)


def test_limits_in_python():
    ep = remote_endpoint("a/*", "http://h", max_response_bytes=1024, max_concurrent_requests=8, read_timeout=None)
    assert (ep.max_response_bytes, ep.max_concurrent_requests, ep.read_timeout_s) == (1024, 8, None)
    with pytest.raises(ConfigError, match=r"max_response_bytes must be a positive int, got 0"):
        remote_endpoint("a/*", "http://h", max_response_bytes=0)
    with pytest.raises(ConfigError, match=r"max_concurrent_requests must be a positive int or None, got 0"):
        remote_endpoint("a/*", "http://h", max_concurrent_requests=0)
    from raystream.statefun_api.dispatcher import DispatcherConfig

    assert DispatcherConfig(StatefulFunctions()).max_concurrent_requests == 256
    with pytest.raises(ValueError, match=r"max_concurrent_requests must be a positive int, got 0"):
        DispatcherConfig(StatefulFunctions(), max_concurrent_requests=0)
