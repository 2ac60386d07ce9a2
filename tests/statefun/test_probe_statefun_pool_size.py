"""Several remote function types behind one endpoint with a small ``pool_size``
(``max_concurrent_requests`` of the endpoint), in one process.

The first request of a function type goes alone (the others of the type wait for the value
specs its reply declares). When that first request had to wait for a request slot of the
endpoint, it used to be taken for a request in flight: once a slot was free it waited
behind itself, and the type's messages were never sent (a job hung, never ending).
"""

from __future__ import annotations

import pytest

statefun = pytest.importorskip("statefun")
pytest.importorskip("aiohttp")

from raystream.statefun_api import StatefulFunctions, message_builder  # noqa: E402
from raystream.statefun_api.endpoints import parse_module_yaml, remote_endpoint  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402
from raystream.statefun_api.testing import FunctionServer  # noqa: E402

EGRESS = "test/out"
TYPES = ["remote/a", "remote/b", "remote/c"]


def sdk_functions() -> statefun.StatefulFunctions:
    fns = statefun.StatefulFunctions()

    async def count(context, message):
        context.storage.n = (context.storage.n or 0) + 1
        context.send_egress(
            statefun.egress_message_builder(
                target_typename=EGRESS, value=f"{context.address.typename}/{context.address.id}:{context.storage.n}",
                value_type=statefun.StringType,
            )
        )

    for typename in TYPES:
        fns.register(typename, count, specs=[statefun.ValueSpec(name="n", type=statefun.IntType)])
    return fns


@pytest.fixture(scope="module")
def server():
    with FunctionServer(statefun.RequestReplyHandler(sdk_functions())) as srv:
        yield srv


def messages() -> list:
    return [message_builder(TYPES[i % 3], f"id{i % 4}", str_value="x") for i in range(24)]


def reference() -> list[str]:
    counts: dict[str, int] = {}
    out = []
    for i in range(24):
        address = f"{TYPES[i % 3]}/id{i % 4}"
        counts[address] = counts.get(address, 0) + 1
        out.append(f"{address}:{counts[address]}")
    return sorted(out)


@pytest.mark.parametrize("pool_size", [1, 2])
@pytest.mark.parametrize("parallelism", [1, 2])
def test_every_function_type_is_called_through_a_small_pool(server, pool_size, parallelism):
    endpoint = remote_endpoint("remote/*", server.url + "/{function.name}", max_concurrent_requests=pool_size)
    with LocalDispatchers(StatefulFunctions(), parallelism=parallelism, egresses=[EGRESS], endpoints=[endpoint]) as run:
        run.send(*messages()).run_until_idle(max_ms=60_000)
        assert sorted(run.egress(EGRESS)) == reference()


def test_a_module_yaml_pool_size_of_one(server):
    (endpoint,) = parse_module_yaml(f"""
kind: io.statefun.endpoints.v2/http
spec:
  functions: remote/*
  urlPathTemplate: {server.url}/{{function.name}}
  transport:
    type: io.statefun.transports.v1/async
    pool_size: 1
""")
    with LocalDispatchers(StatefulFunctions(), egresses=[EGRESS], endpoints=[endpoint]) as run:
        run.send(message_builder("remote/a", "ann", str_value="x"), message_builder("remote/b", "bob", str_value="x"))
        run.run_until_idle(max_ms=60_000)
        assert sorted(run.egress(EGRESS)) == ["remote/a/ann:1", "remote/b/bob:1"]
