"""Remote stateful functions: messages/s with request batching vs without, in the same run.

A counter written with the official StateFun Python SDK (``apache-flink-statefun``) is
served by aiohttp in a separate local process (so the server does not share this
process's GIL). The FunctionDispatcher runs in-process (``LocalDispatchers``, p=1) and
calls it over HTTP on localhost with StateFun's request-reply protocol.

The workload: N ingress messages to ``bench/remote-counter/<key>`` over K keys, delivered
in ingress batches of B messages; the counter increments its count (state kept by
raystream, sent with every request) and every 100th message emits ``"<key>:<count>"``
on the egress, checked against a plain-Python reference before timing.

Contenders (median of ``--repeat`` interleaved rounds, wall time around send + wait):

* ``batched``: the endpoint's default ``max_num_batch_requests=1000``: messages arriving
  while an address's request is in flight go out together in its next request;
* ``unbatched``: ``max_num_batch_requests=1``: one message per request (at most one
  request in flight per address, the address back-pressures beyond that).

Run::

    python -m benchmarks.bench_remote --n 20000          # --keys 100 --batch 2000 --repeat 3 --no-write
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import harness

__all__ = ["reference", "run_remote", "main"]

TYPENAME = "bench/remote-counter"
EGRESS = "bench/remote-counts"


def _serve(port: int) -> None:
    """The function server (run in a child process): the official SDK behind aiohttp."""
    import statefun
    from aiohttp import web

    functions = statefun.StatefulFunctions()

    @functions.bind(typename=TYPENAME, specs=[statefun.ValueSpec(name="n", type=statefun.IntType)])
    async def counter(context, message):
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        if n % 100 == 0:
            context.send_egress(
                statefun.egress_message_builder(
                    target_typename=EGRESS, value=f"{context.address.id}:{n}", value_type=statefun.StringType
                )
            )

    handler = statefun.RequestReplyHandler(functions)

    async def endpoint(request: Any) -> Any:
        return web.Response(body=await handler.handle_async(await request.read()), content_type="application/octet-stream")

    app = web.Application()
    app.router.add_post("/{tail:.*}", endpoint)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _start_server() -> tuple[subprocess.Popen, int]:
    from raystream.statefun_api.testing import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_remote", "--serve", str(port)])
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the function server exited with {proc.returncode}") from None
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the function server did not start within 30 s")


def keys_of(n: int, k: int) -> list[str]:
    """The target key of every ingress message (deterministic, all keys about equally hot)."""
    return [f"k{(i * 7919) % k:04d}" for i in range(n)]


def reference(keys: list[str]) -> list[str]:
    """The egress, computed in plain Python."""
    counts: dict[str, int] = {}
    out = []
    for key in keys:
        n = counts[key] = counts.get(key, 0) + 1
        if n % 100 == 0:
            out.append(f"{key}:{n}")
    return sorted(out)


def run_remote(keys: list[str], url: str, max_num_batch_requests: int, batch: int) -> tuple[list[str], dict[str, int]]:
    """Send every message through an in-process dispatcher to the remote counter; returns
    (sorted egress, dispatcher counters)."""
    from raystream.statefun_api import StatefulFunctions, message_builder
    from raystream.statefun_api.endpoints import remote_endpoint
    from raystream.statefun_api.local import LocalDispatchers

    ep = remote_endpoint("bench/*", url, max_num_batch_requests=max_num_batch_requests)
    msgs = [message_builder(TYPENAME, k, int_value=1) for k in keys]
    with LocalDispatchers(StatefulFunctions(), egresses=[EGRESS], endpoints=[ep]) as run:
        for i in range(0, len(msgs), batch):
            run.send(*msgs[i : i + batch])
        run.run_until_idle()
        return sorted(run.egress(EGRESS)), run.counters()


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="bench_remote", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000, help="ingress messages")
    p.add_argument("--keys", type=int, default=100, help="distinct addresses")
    p.add_argument("--batch", type=int, default=2_000, help="messages per ingress batch")
    p.add_argument("--repeat", type=int, default=3, help="timed rounds")
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: be the function server
    args = p.parse_args(argv)
    if args.serve:
        _serve(args.serve)
        return ""
    load_before = harness.load_average()
    keys = keys_of(args.n, args.keys)
    expected = reference(keys)
    proc, port = _start_server()
    try:
        url = f"http://127.0.0.1:{port}/{{function.name}}"
        contenders = [("batched (max_num_batch_requests=1000)", 1000), ("unbatched (max_num_batch_requests=1)", 1)]
        notes: dict[str, str] = {}
        for name, mbr in contenders:  # check first, untimed (also warms up the server)
            out, counters = run_remote(keys, url, mbr, args.batch)
            if out != expected:
                raise SystemExit(f"{name}: WRONG egress ({len(out)} records, expected {len(expected)})")
            notes[name] = f"{counters['remote_requests']:,} requests, {args.n / counters['remote_requests']:.1f} msg/request"
        times: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for _ in range(args.repeat):
            for name, mbr in contenders:
                t0 = time.perf_counter()
                run_remote(keys, url, mbr, args.batch)
                times[name].append(time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    rates = {name: args.n / statistics.median(t) for name, t in times.items()}
    batched, unbatched = (name for name, _ in contenders)
    lines = ["| contender | median msg/s | best msg/s | notes |", "|---|---:|---:|---|"]
    for name, _ in contenders:
        lines.append(f"| {name} | {rates[name]:,.0f} | {args.n / min(times[name]):,.0f} | {notes[name]} |")
    body = (
        f"## `{harness.command_line()}`: remote functions, messages/s\n\n"
        f"Run {harness.now()}. {harness.machine_line()} Load average (1 min) before/after: "
        f"{load_before} / {harness.load_average()}.\n"
        f"{args.n:,} messages to {args.keys} addresses of a counter written with the official StateFun "
        f"SDK, served by aiohttp in a separate local process; in-process dispatcher (p=1), ingress "
        f"batches of {args.batch:,}; egress checked against a Python reference; median of "
        f"{args.repeat} interleaved rounds.\n\n" + "\n".join(lines) + "\n\n"
        f"**Batching speed-up: {rates[batched] / rates[unbatched]:.1f}x** (batched / unbatched, median).\n"
    )
    print(body)
    if not args.no_write:
        harness.update_results(f"bench_remote --n {args.n}", body)
    return body


if __name__ == "__main__":
    main()
