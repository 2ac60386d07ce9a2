"""The drill's remote-functions workload (``python -m benchmarks.drill --workload statefun-remote``).

The ``statefun`` workload's counter and fan functions (:func:`benchmarks.drill._counter`,
:func:`benchmarks.drill._fan`) are served over StateFun's HTTP request-reply protocol by a
function server in another process (:func:`serve`: :func:`statefun_api.server.make_app`'s
handler on aiohttp), their state kept by the runtime as StateFun does (sent with each
request, changed by each reply); the late function stays an embedded ``async def`` one.
The egress is the ``statefun`` workload's, so :func:`benchmarks.drill.statefun_reference`
is its failure-free output.

The function server injects the seed's faults (:data:`SERVER_FAULTS`), each on the requests
it numbers ``at`` to ``at + times - 1`` (counted by the first server process; a restarted
server injects none of them again), and logs each injection to a JSON-lines file:

=================  =====================================================================
``http-5xx``       answers 503 (retried by the runtime with backoff)
``slow-read``      answers after ``delay`` s, beyond the endpoint's read timeout but
                   within its call timeout: the attempt times out and is retried
``slow-call``      answers request ``at`` and every request to its address for the next
                   ``delay`` s after ``delay`` s, beyond the call timeout: each attempt times
                   out and so does the call; the job fails over to its last checkpoint, and
                   the late replies of the previous attempt arrive after the restore (nobody
                   may apply them)
``reset``          sends the reply's head and half its body, then resets the connection
                   (RST)
``cut``            sends the reply's head (its full Content-Length) and half its body,
                   then closes the connection (FIN): a reply cut off
``refuse-address`` answers 400 for every request to one counter address from request
                   ``at`` on (every server process): the job must FAIL with an error
                   naming the address and the reply, not hang or drop anything
=================  =====================================================================

and, besides, the driver kills the server (``kill-server``, SIGKILL) with the source held at
an input record, and starts it again on the same port after ``downtime`` s: shorter than the
call timeout, the calls' retries bridge it; longer, calls fail and the job fails over.

Example:
    >>> plan = remote_plan(3)
    >>> plan == remote_plan(3) and all(f.kind in SERVER_FAULTS + ("kill-server",) for f in plan)
    True
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "SERVER_FAULTS",
    "RemoteFault",
    "remote_plan",
    "remote_functions",
    "sdk_functions",
    "server_kind",
    "endpoints",
    "FunctionServerProcess",
    "serve",
    "main",
    "CALL_TIMEOUT_S",
    "READ_TIMEOUT_S",
    "MAX_CONCURRENT_REQUESTS",
]

#: faults the function server injects (see the module docstring)
SERVER_FAULTS = ("http-5xx", "slow-read", "slow-call", "reset", "cut", "refuse-address")
#: the endpoints' call timeout (retries and backoff included)
CALL_TIMEOUT_S = 1.5
#: the endpoints' read timeout: an attempt whose reply is silent this long is retried
READ_TIMEOUT_S = 0.4
#: the endpoints' backoff
BACKOFF_INITIAL_S = 0.02
BACKOFF_MAX_S = 0.2
#: requests in flight at once to each endpoint, per dispatcher subtask
MAX_CONCURRENT_REQUESTS = 4
#: messages per request
MAX_BATCH = 16
#: the status a refused address gets
REFUSED_STATUS = 400


@dataclass(frozen=True)
class RemoteFault:
    """One fault of the function server: ``kind`` (a name of :data:`SERVER_FAULTS`, or
    ``kill-server``), on the requests numbered ``at`` to ``at + times - 1`` (``kill-server``: at
    the input record ``at``), ``delay`` s for slow replies, ``downtime`` s for a kill, the
    counter ``address`` a refusal hits."""

    kind: str
    at: int
    times: int = 1
    delay: float = 0.0
    downtime: float = 0.0
    address: str = ""

    def __str__(self) -> str:
        if self.kind == "kill-server":
            return f"kill-server(at record {self.at}, down {self.downtime:.2f} s)"
        if self.kind == "refuse-address":
            return f"refuse-address(drill/counter {self.address} from request {self.at})"
        what = f"requests {self.at}-{self.at + self.times - 1}" if self.times > 1 else f"request {self.at}"
        return f"{self.kind}({what}{f', {self.delay:.2f} s' if self.delay else ''})"

    def to_json(self) -> dict:
        return {"kind": self.kind, "at": self.at, "times": self.times, "delay": self.delay, "address": self.address}


def remote_plan(seed: int, n: int = 2000, refuse: bool | None = None) -> tuple[RemoteFault, ...]:
    """The function-server faults of ``seed`` (deterministic, from a random stream of their
    own: the seed's other faults stay those of :func:`benchmarks.drill.plan_seed`): one to three
    of ``http-5xx``, ``slow-read``, ``slow-call``, ``reset``, ``cut``, often a ``kill-server``
    (at 10-80 % of the ``n`` input records), and in about one seed of eight (``refuse``: always
    or never) ``refuse-address``, after which the job must fail."""
    rng = random.Random(f"{seed}/remote")
    faults: list[RemoteFault] = []
    for kind in rng.sample(("http-5xx", "slow-read", "slow-call", "reset", "cut"), rng.randint(1, 3)):
        at = rng.randint(5, 120)
        if kind == "http-5xx":
            faults.append(RemoteFault(kind, at, times=rng.randint(1, 6)))
        elif kind == "slow-read":
            faults.append(RemoteFault(kind, at, times=rng.randint(1, 2), delay=rng.uniform(READ_TIMEOUT_S * 1.5, 1.0)))
        elif kind == "slow-call":
            faults.append(RemoteFault(kind, at, delay=rng.uniform(CALL_TIMEOUT_S * 1.3, CALL_TIMEOUT_S * 2)))
        else:
            faults.append(RemoteFault(kind, at, times=rng.randint(1, 3)))
    kill_draw, kill_at, down = rng.random(), rng.uniform(0.1, 0.8), rng.uniform(0.1, CALL_TIMEOUT_S * 1.6)
    if kill_draw < 0.6:
        faults.append(RemoteFault("kill-server", max(1, int(kill_at * n)), downtime=down))
    refuse_draw, refuse_at, refuse_key = rng.random(), rng.randint(20, 200), rng.randrange(23)
    if refuse if refuse is not None else refuse_draw < 0.125:
        faults.append(RemoteFault("refuse-address", refuse_at, address=f"k{refuse_key:02d}"))
    return tuple(faults)


def remote_functions() -> Any:
    """The functions the server answers: the drill's counter and fan (raystream's SDK)."""
    from benchmarks.drill import COUNTER, FAN, _counter, _fan
    from raystream.statefun_api import IntType, StatefulFunctions, ValueSpec

    functions = StatefulFunctions()
    functions.bind(COUNTER, specs=[ValueSpec("n", IntType), ValueSpec("total", IntType)])(_counter)
    functions.bind(FAN, specs=[ValueSpec("m", IntType)])(_fan)
    return functions


def sdk_functions() -> Any:
    """The same counter and fan written against the official SDK (``statefun``), which the
    server of half the seeds answers with (:func:`server_kind`)."""

    import statefun

    from benchmarks.drill import (
        COUNTER,
        DELAY_EVERY,
        DELAY_MS,
        EGRESS,
        FAN,
        LATE,
        LATE_IDS,
        fan_hops,
        fan_targets,
        hop_target,
        record,
    )

    json_type = statefun.make_json_type("drill/record")
    functions = statefun.StatefulFunctions()

    @functions.bind(COUNTER, specs=[statefun.ValueSpec("n", statefun.IntType), statefun.ValueSpec("total", statefun.IntType)])
    def counter(context: Any, message: Any) -> None:
        i = message.as_int()
        key = context.address.id
        n = (context.storage.n or 0) + 1
        total = (context.storage.total or 0) + record(i)["value"]
        context.storage.n, context.storage.total = n, total
        context.send_egress(statefun.egress_message_builder(EGRESS, ["count", key, n, total, i], json_type))
        for target in fan_targets(key, n):
            context.send(statefun.message_builder(FAN, target, value=[key, n, fan_hops(key, n)], value_type=json_type))
        if i % DELAY_EVERY == 3:
            context.send_after(timedelta(milliseconds=DELAY_MS),
                               statefun.message_builder(LATE, f"l{i % LATE_IDS}", int_value=i))

    @functions.bind(FAN, specs=[statefun.ValueSpec("m", statefun.IntType)])
    def fan(context: Any, message: Any) -> None:
        origin, n, hops = message.as_type(json_type)
        at = context.address.id
        m = (context.storage.m or 0) + 1
        context.storage.m = m
        context.send_egress(statefun.egress_message_builder(EGRESS, ["fan", at, m], json_type))
        context.send_egress(statefun.egress_message_builder(EGRESS, ["fan-from", at, origin, n, hops], json_type))
        if hops > 0:
            context.send(statefun.message_builder(FAN, hop_target(at, origin, n, hops), value=[origin, n, hops - 1],
                                                  value_type=json_type))

    return functions


def server_kind(seed: int) -> str:
    """Which handler the function server of ``seed`` runs: ``"raystream"``
    (:func:`statefun_api.server.make_app`'s) or ``"sdk"`` (the official SDK's
    ``RequestReplyHandler``, when it is installed), half the seeds each."""
    try:
        import statefun  # noqa: F401
    except ImportError:
        return "raystream"
    return "sdk" if random.Random(f"{seed}/server").random() < 0.5 else "raystream"


def endpoints(url: str, call_timeout_s: float = CALL_TIMEOUT_S, read_timeout_s: float = READ_TIMEOUT_S) -> list[Any]:
    """The runtime's endpoints of the counter and fan functions served at ``url`` (a test under
    load passes a call timeout long enough that no call fails for a slow machine)."""
    from benchmarks.drill import COUNTER, FAN
    from raystream.statefun_api.endpoints import remote_endpoint

    return [
        remote_endpoint(typename, url, max_num_batch_requests=MAX_BATCH, call_timeout=call_timeout_s,
                        connect_timeout=min(0.3, call_timeout_s), read_timeout=read_timeout_s,
                        backoff_initial=timedelta(seconds=BACKOFF_INITIAL_S),
                        backoff_max=timedelta(seconds=BACKOFF_MAX_S), max_concurrent_requests=MAX_CONCURRENT_REQUESTS)
        for typename in (COUNTER, FAN)
    ]


# -- the server process ----------------------------------------------------------------------


def _log(path: str, entry: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def serve(port: int, plan: list[dict], log_path: str, generation: int, kind: str = "raystream") -> None:
    """Serve :func:`remote_functions` (``kind="sdk"``: :func:`sdk_functions` with the official
    SDK's handler) on ``127.0.0.1:port`` (any POST path), injecting the
    faults of ``plan`` (:meth:`RemoteFault.to_json`; only ``refuse-address`` in a server of
    ``generation`` > 0) and logging each to ``log_path``. Runs until killed."""
    from aiohttp import web

    from benchmarks.drill import COUNTER
    from raystream.statefun_api.handler import RequestReplyHandler
    from raystream.statefun_api.reqreply import decode_to_function

    if kind == "sdk":
        import statefun

        handler: Any = statefun.RequestReplyHandler(sdk_functions())
    else:
        handler = RequestReplyHandler(remote_functions())
    counted = [0]
    slow_until: dict[tuple[str, str], float] = {}  # slow-call: address -> until when its requests are slow

    def log(kind: str, n: int, **more: Any) -> None:
        _log(log_path, {"kind": kind, "request": n, "generation": generation, **more})

    async def endpoint(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        counted[0] += 1
        n = counted[0]
        invocation = decode_to_function(body).invocation
        target = invocation.target if invocation is not None else None
        if target is None:
            return web.Response(status=400, text="drill: not an invocation batch with a target")
        address = (target.typename, target.id)
        faults = plan
        until = slow_until.get(address)
        if until is not None and time.monotonic() < until:
            log("slow-call", n, address=target.id)
            await asyncio.sleep(until - time.monotonic() + 0.1)
            faults = []  # (then answered as it should be: the client gave up on it long ago)
        for f in faults:
            if f["kind"] == "refuse-address":
                if n >= f["at"] and target.typename == COUNTER and target.id == f["address"]:
                    log("refuse-address", n, address=target.id)
                    return web.Response(status=REFUSED_STATUS, text=f"drill: address {target.id} refused")
                continue
            if generation or not f["at"] <= n < f["at"] + f["times"]:
                continue
            kind = f["kind"]
            log(kind, n)
            if kind == "http-5xx":
                return web.Response(status=503, text="drill: unavailable")
            if kind == "slow-call":
                slow_until[address] = time.monotonic() + f["delay"]
            if kind in ("slow-read", "slow-call"):
                await asyncio.sleep(f["delay"])
                break
            reply = await handler.handle_async(body)
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.content_length = len(reply)
            await response.prepare(request)
            await response.write(reply[: len(reply) // 2])
            transport = request.transport
            assert transport is not None
            if kind == "reset":
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            else:
                transport.close()
            return response
        reply = await handler.handle_async(body)
        return web.Response(body=reply, content_type="application/octet-stream")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/{tail:.*}", endpoint)
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True, access_log=None)


class FunctionServerProcess:
    """The function server of one seed, in a process of its own (``python -m
    benchmarks.drill_remote``), started again on the same port after a kill."""

    def __init__(self, workdir: Path, faults: tuple[RemoteFault, ...], spare: bool = True, kind: str = "raystream"
                 ) -> None:
        from raystream.statefun_api.testing import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/statefun"
        self.log_path = str(workdir / "server-faults.jsonl")
        self.plan_path = str(workdir / "server-plan.json")
        Path(self.plan_path).write_text(json.dumps([f.to_json() for f in faults if f.kind != "kill-server"]))
        self.generation = -1
        self.proc: subprocess.Popen | None = None
        # the next server, started and waiting (its imports done) for a line on its stdin to
        # listen: a restart then takes the downtime planned, not Python's start-up
        self._spare: subprocess.Popen | None = None
        self._spares = spare  # keep a successor waiting (False: a restart starts Python anew)
        self.kind = kind  # the handler: "raystream" or "sdk" (see server_kind)
        self.kills = 0

    def _spawn(self, generation: int) -> subprocess.Popen:
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(self.log_path + ".stderr", "a") as stderr:
            return subprocess.Popen(
                [sys.executable, "-m", "benchmarks.drill_remote", "--port", str(self.port), "--plan", self.plan_path,
                 "--log", self.log_path, "--generation", str(generation), "--handler", self.kind, "--wait-for-stdin"],
                cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
            )

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server (the next generation) and wait until it accepts connections; the
        generation after it starts meanwhile and waits."""
        self.generation += 1
        proc = self._spare if self._spare is not None else self._spawn(self.generation)
        self.proc, self._spare = proc, None
        assert proc.stdin is not None
        proc.stdin.write(b"listen\n")
        proc.stdin.close()
        if self._spares:
            self._spare = self._spawn(self.generation + 1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the drill's function server exited with {self.proc.returncode} "
                                   f"(see {self.log_path}.stderr)")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"the drill's function server did not listen on port {self.port} within {timeout_s:g} s")

    def kill(self) -> None:
        """SIGKILL the server (requests in flight are lost with it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.kills += 1

    def stop(self) -> None:
        """Stop the server and its waiting successor."""
        for proc in (self.proc, self._spare):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        self.proc = self._spare = None

    def injected(self) -> dict[str, int]:
        """How many requests each fault hit (from the server's log), and the kills."""
        counts: dict[str, int] = {}
        try:
            with open(self.log_path) as f:
                for line in f:
                    kind = json.loads(line)["kind"]
                    counts[kind] = counts.get(kind, 0) + 1
        except OSError:
            pass
        if self.kills:
            counts["kill-server"] = self.kills
        return counts


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.drill_remote --port P --plan FILE --log FILE``: the function server."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.drill_remote", description=main.__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--plan", required=True, help="the faults (JSON list of RemoteFault.to_json())")
    p.add_argument("--log", required=True, help="a JSON-lines file each injection is appended to")
    p.add_argument("--generation", type=int, default=0, help="0 for the first server, then 1, 2... after kills")
    p.add_argument("--handler", choices=["raystream", "sdk"], default="raystream",
                   help="raystream's RequestReplyHandler, or the official SDK's")
    p.add_argument("--wait-for-stdin", action="store_true", help="listen once a line arrives on stdin "
                   "(nothing: exit); the driver starts the next server before it kills this one")
    args = p.parse_args(argv)
    import aiohttp.web  # noqa: F401  (imported before the wait: a restart takes no import time)

    import raystream.statefun_api.handler  # noqa: F401
    remote_functions() if args.handler == "raystream" else sdk_functions()
    if args.wait_for_stdin and not sys.stdin.readline():
        return 0
    with open(args.plan) as f:
        plan = json.load(f)
    serve(args.port, plan, args.log, args.generation, args.handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
