"""A batch that the function server refuses for its size (HTTP 413) is split, not fatal.

Before, the same messages succeeded when they came one by one and failed the job when they
came in a burst: messages queued behind a request in flight go out as one request (up to
``max_num_batch_requests``), and an aiohttp app built as StateFun's examples build it (the
playground's ``functions.py``: ``web.Application()``) refuses request bodies above 1 MiB
with 413, which failed the call at once ("send smaller batches"). On Ray the restarted job
batched them again and failed again. Now the batch is split in halves (in order) and the
endpoint's later requests are kept below the smallest size refused (small messages still
batch); a single message above the server's limit still fails at once, naming the 413.
"""

from __future__ import annotations

import pytest

statefun = pytest.importorskip("statefun")
web = pytest.importorskip("aiohttp.web")

from raystream.engine.errors import JobFailed  # noqa: E402
from raystream.statefun_api import StatefulFunctions, message_builder  # noqa: E402
from raystream.statefun_api.endpoints import remote_endpoint  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402

EGRESS = "demo/out"
VALUE = 200_000  # characters a message: 6 of them pass aiohttp's 1 MiB limit


def playground_app() -> tuple[web.Application, list[int]]:
    """The official SDK behind an aiohttp app with aiohttp's default request limit (1 MiB),
    as the playground's functions.py serves it; and the sizes of the requests it served."""
    sdk = statefun.StatefulFunctions()

    @sdk.bind(typename="remote/log", specs=[statefun.ValueSpec(name="n", type=statefun.IntType)])
    async def log(context, message):
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        text = message.as_string()
        context.send_egress(statefun.egress_message_builder(
            target_typename=EGRESS, value=f"{context.address.id}:{n}:{text[:4]}:{len(text)}", value_type=statefun.StringType))

    handler = statefun.RequestReplyHandler(sdk)
    served: list[int] = []

    async def handle(request):
        body = await request.read()
        served.append(len(body))
        return web.Response(body=await handler.handle_async(body), content_type="application/octet-stream")

    app = web.Application()
    app.add_routes([web.post("/statefun", handle)])
    return app, served


def message(key: str, i: int):
    return message_builder("remote/log", key, str_value=f"{i:04d}" + "x" * (VALUE - 4))


def reference(keys: list[str], n: int) -> list[str]:
    return sorted(f"{k}:{i + 1}:{i:04d}:{VALUE}" for k in keys for i in range(n))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_burst_larger_than_the_servers_limit_is_split_in_order(parallelism, serve):
    app, served = playground_app()
    keys = ["ann", "bob", "cid"]
    server = serve(app)
    with LocalDispatchers(
        StatefulFunctions(), parallelism=parallelism, egresses=[EGRESS],
        endpoints=[remote_endpoint("remote/*", server.url + "/statefun")],
    ) as run:
        run.send(*[message(k, i) for i in range(12) for k in keys])  # one burst: 12 messages queued per address
        run.run_until_idle()
        assert sorted(run.egress(EGRESS)) == reference(keys, 12)
        for k in keys:  # in order per address: the count matches the message's number
            assert [e.split(":")[1:3] for e in run.egress(EGRESS) if e.startswith(k)] == [
                [str(i + 1), f"{i:04d}"] for i in range(12)
            ]
        assert run.counters()["remote_splits"] >= 1
        # later bursts are cut below the size refused: no more refusals
        splits = run.counters()["remote_splits"]
        run.send(*[message(k, i) for i in range(12, 24) for k in keys]).run_until_idle()
        assert sorted(run.egress(EGRESS)) == reference(keys, 24)
        assert run.counters()["remote_splits"] == splits
        assert max(served) < 1 << 20
        # and small messages still go in one request each burst (the cap is in bytes, not messages)
        served.clear()
        run.send(*[message_builder("remote/log", "small", str_value=f"{i:04d}") for i in range(100)]).run_until_idle()
        assert [e for e in run.egress(EGRESS) if e.startswith("small")] == [f"small:{i + 1}:{i:04d}:4" for i in range(100)]
        assert len(served) <= 3  # (one request, or a few as the messages reach the dispatcher: not one per 3 messages)


def test_one_message_above_the_servers_limit_still_fails_at_once_naming_the_413(serve):
    server = serve(playground_app()[0])
    with LocalDispatchers(
        StatefulFunctions(), egresses=[EGRESS], endpoints=[remote_endpoint("remote/*", server.url + "/statefun")],
    ) as run:
        with pytest.raises(JobFailed, match=r"HTTP 413 \(not retried\).*send smaller batches"):
            run.send(message_builder("remote/log", "big", str_value="x" * (2 << 20))).run_until_idle()


def test_fitting_is_the_longest_prefix_whose_request_stays_below_the_limit():
    from raystream.statefun_api.request_encoder import RequestEncoder

    enc = RequestEncoder()
    target = ("remote", "log", "ann")
    state = [("n", "io.statefun.types/int", True, b"\x08\x07"), ("s", "io.statefun.types/string", False, b"")]
    records = [
        ("remote/log", "ann", "remote/other" if i % 3 else "", f"id{i}" if i % 3 else "", "io.statefun.types/string",
         b"\n" + bytes([min(i * 37, 127)]) + b"x" * min(i * 37, 127), True)
        for i in range(40)
    ]
    sizes = [len(enc.request(target, state, records[:n])) for n in range(len(records) + 1)]
    for limit in range(sizes[1] - 3, sizes[-1] + 3, 7):
        n = enc.fitting(target, state, records, limit)
        best = max([k for k in range(1, len(records) + 1) if sizes[k] < limit], default=1)
        assert n == best, (limit, n, best)
