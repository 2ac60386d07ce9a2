"""``{function.name}`` in an endpoint's URL template is percent-encoded.

A function type's name may hold characters that mean something in a URL. Put into the
template as it was, ``#`` cut the path at a fragment, ``?`` started a query and ``%41``
was read as ``A``: a request for ``ns/h#1`` went to ``/fn/h`` (another function's path
behind a gateway that routes by path), silently. The server below routes by the path as a
gateway would and answers only for the function the path names.
"""

from __future__ import annotations

import pytest

statefun = pytest.importorskip("statefun")
web = pytest.importorskip("aiohttp.web")

from raystream.engine.errors import ConfigError  # noqa: E402
from raystream.statefun_api import StatefulFunctions, message_builder  # noqa: E402
from raystream.statefun_api.endpoints import parse_module_yaml, remote_endpoint  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402

NAMES = ["plain", "with space", "q?x", "h#1", "pct%41", "ünï", "a+b&c=d", "semi;c:@", "h"]
EGRESS = "demo/out"


def routed_app() -> tuple[web.Application, list[str]]:
    """One official-SDK handler per function name, chosen by the request's path (404 for a
    path that names no function, as a gateway answers)."""
    handlers = {}
    for name in NAMES:
        sdk = statefun.StatefulFunctions()

        def bind(name: str, sdk: statefun.StatefulFunctions = sdk) -> None:
            @sdk.bind(typename=f"ns/{name}")
            async def fn(context, message):
                context.send_egress(statefun.egress_message_builder(
                    target_typename=EGRESS, value=f"{name}|{context.address.id}", value_type=statefun.StringType))

        bind(name)
        handlers[name] = statefun.RequestReplyHandler(sdk)
    paths: list[str] = []

    async def endpoint(request):
        name = request.match_info["name"]
        paths.append(name)
        handler = handlers.get(name)
        if handler is None or request.query_string:
            return web.Response(status=404, text=f"no function at {request.path_qs!r}")
        return web.Response(body=await handler.handle_async(await request.read()), content_type="application/octet-stream")

    app = web.Application()
    app.router.add_post("/fn/{name}", endpoint)
    app.router.add_post("/{namespace}/fn/{name}", endpoint)
    return app, paths


def test_url_for_encodes_the_name_and_the_namespace():
    ep = remote_endpoint("a.b/*", "http://h:1/{function.namespace}/fn/{function.name}?n={function.name}")
    assert ep.url_for("a.b/h#1") == "http://h:1/a.b/fn/h%231?n=h%231"
    assert ep.url_for("a.b/q?x") == "http://h:1/a.b/fn/q%3Fx?n=q%3Fx"
    assert ep.url_for("a.b/50%") == "http://h:1/a.b/fn/50%25?n=50%25"
    assert ep.url_for("a.b/ünï x") == "http://h:1/a.b/fn/%C3%BCn%C3%AF%20x?n=%C3%BCn%C3%AF%20x"
    assert ep.url_for("a.b/greeter-1_v2.~") == "http://h:1/a.b/fn/greeter-1_v2.~?n=greeter-1_v2.~"  # unreserved: as they are
    assert remote_endpoint("x/y/*", "http://h/{function.namespace}/{function.name}").url_for("x/y/f") == "http://h/x/y/f"


@pytest.mark.parametrize("parallelism", [1, 2])
def test_each_function_is_called_at_its_own_path(parallelism, serve):
    app, paths = routed_app()
    server = serve(app)
    with LocalDispatchers(
        StatefulFunctions(), parallelism=parallelism, egresses=[EGRESS],
        endpoints=[remote_endpoint("ns/*", server.url + "/fn/{function.name}", max_retries=0)],
    ) as run:
        run.send(*[message_builder(f"ns/{name}", f"id-{i}", str_value="x") for i, name in enumerate(NAMES)])
        run.run_until_idle()
        assert sorted(run.egress(EGRESS)) == sorted(f"{name}|id-{i}" for i, name in enumerate(NAMES))
    assert sorted(set(paths)) == sorted(NAMES)


def test_namespace_in_the_path(serve):
    app, paths = routed_app()
    server = serve(app)
    with LocalDispatchers(
        StatefulFunctions(), egresses=[EGRESS],
        endpoints=[remote_endpoint("ns/*", server.url + "/{function.namespace}/fn/{function.name}", max_retries=0)],
    ) as run:
        run.send(message_builder("ns/h#1", "a", str_value="x")).run_until_idle()
        assert run.egress(EGRESS) == ["h#1|a"]
    assert paths == ["h#1"]


# ---------------------------------------------------------------- refused as declared
@pytest.mark.parametrize(("url", "error"), [
    ("http://127.0.0.1:99999/{function.name}", "has an invalid port: Port out of range"),
    ("http://functions:80OO/statefun", "has an invalid port"),
    ("http:///statefun", "names no host"),
    ("http://bücher.example/statefun", "is not ASCII .*write it as 'xn--bcher-kva.example'"),
])
def test_a_url_no_request_could_use_is_refused_where_it_is_declared(url, error):
    """(It used to be taken, and every call of the running job failed with "bad URL", restart
    after restart.)"""
    with pytest.raises(ConfigError, match=rf"remote endpoint 'ns/\*' \(python\): url_path_template .*{error}"):
        remote_endpoint("ns/*", url)
    text = f"kind: io.statefun.endpoints.v2/http\nspec:\n  functions: ns/*\n  urlPathTemplate: {url}\n"
    with pytest.raises(ConfigError, match=rf"'ns/\*' \(<module.yaml> \(document 1\)\): url_path_template .*{error}"):
        parse_module_yaml(text)


def test_templates_in_the_host_ipv6_and_credentials_are_taken():
    assert remote_endpoint("ns/*", "http://{function.name}.fns.svc:8000/statefun").url_for("ns/cart") == "http://cart.fns.svc:8000/statefun"
    assert remote_endpoint("ns/*", "http://[::1]:8000/{function.name}").url_for("ns/cart") == "http://[::1]:8000/cart"
    assert remote_endpoint("ns/*", "https://fn:s3cret@h/{function.name}").url_for("ns/cart") == "https://fn:s3cret@h/cart"
