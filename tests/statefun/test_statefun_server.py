"""The optional aiohttp endpoint (skipped without aiohttp)."""

from __future__ import annotations

import asyncio
import builtins
import importlib

import pytest

from raystream.statefun_api import IntType, StatefulFunctions, ValueSpec
from raystream.statefun_api.testing import RequestBuilder, parse_response

aiohttp = pytest.importorskip("aiohttp")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from raystream.statefun_api.server import make_app  # noqa: E402


def functions() -> StatefulFunctions:
    functions = StatefulFunctions()

    @functions.bind("ns/counter", specs=[ValueSpec("n", IntType)])
    async def counter(context, message):
        context.storage.n = (context.storage.n or 0) + message.as_int()

    functions.register("ns/bad", lambda c, m: 1 / 0)
    return functions


async def post_all(requests: list[bytes], path: str = "/statefun") -> list[tuple[int, bytes]]:
    async with TestClient(TestServer(make_app(functions()))) as client:
        replies = []
        for body in requests:
            response = await client.post(path, data=body)
            replies.append((response.status, await response.read()))
        return replies


def test_serves_the_protocol_over_http() -> None:
    ok = (
        RequestBuilder("ns/counter", "1")
        .with_state("n", 2, IntType)
        .with_invocation(3, IntType)
        .to_bytes()
    )
    missing = RequestBuilder("ns/counter", "1").with_invocation(3, IntType).to_bytes()
    bad = RequestBuilder("ns/bad", "1").with_invocation(3, IntType).to_bytes()
    (s1, r1), (s2, r2), (s3, r3) = asyncio.run(post_all([ok, missing, bad]))
    assert s1 == 200
    value = parse_response(r1).invocation_result.state_mutations[0].state_value.value
    assert IntType.serializer().deserialize(value) == 5
    assert s2 == 200 and parse_response(r2).incomplete_invocation_context is not None
    assert s3 == 500 and b"ZeroDivisionError" in r3


def test_missing_aiohttp_gives_a_clear_error(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_aiohttp(name, *args, **kwargs):
        if name == "aiohttp" or name.startswith("aiohttp."):
            raise ImportError("No module named 'aiohttp'")
        return real_import(name, *args, **kwargs)

    server = importlib.import_module("statefun_api.server")
    monkeypatch.setattr(builtins, "__import__", no_aiohttp)
    with pytest.raises(ImportError, match="pip install aiohttp"):
        server.make_app(StatefulFunctions())


def test_malformed_requests_answer_400_and_unknown_functions_404() -> None:
    """What can never succeed is a 4xx (raystream's runtime then fails at once, and a
    StateFun runtime sees a client error), unlike a failing function's 500."""
    no_batch = b""  # a ToFunction without an invocation batch
    garbage = b"\xff\xff\xff"  # not protobuf at all
    no_target = RequestBuilder("ns/counter", "1").with_invocation(3, IntType).to_bytes()[:2]
    unknown = RequestBuilder("ns/nobody", "1").with_invocation(3, IntType).to_bytes()
    replies = asyncio.run(post_all([no_batch, garbage, no_target, unknown]))
    statuses = [status for status, _ in replies]
    assert statuses[:3] == [400, 400, 400], replies
    assert all(b"malformed request-reply request" in body for _, body in replies[:3])
    assert statuses[3] == 404 and b"ns/nobody" in replies[3][1]


def test_a_request_above_the_size_limit_answers_413() -> None:
    async def post(body: bytes) -> int:
        async with TestClient(TestServer(make_app(functions(), max_request_bytes=1024))) as client:
            response = await client.post("/statefun", data=body)
            return response.status

    big = RequestBuilder("ns/counter", "1").with_state("n", 2, IntType)
    for _ in range(200):
        big = big.with_invocation(3, IntType)
    assert len(big.to_bytes()) > 1024
    assert asyncio.run(post(big.to_bytes())) == 413


def test_requests_above_aiohttps_1_mib_default_are_accepted() -> None:
    from raystream.statefun_api import StringType

    big = RequestBuilder("ns/bad", "1").with_invocation("x" * (2 * 1024 * 1024), StringType).to_bytes()
    ((status, body),) = asyncio.run(post_all([big]))
    assert status == 500 and b"ZeroDivisionError" in body  # reached the function, not refused with 413
