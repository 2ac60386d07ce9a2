"""Per-hop cost between two Ray actors: Ray actor calls vs Arrow IPC over a local socket.

Two actors on a local Ray (``num_cpus=2``): a ``Sender`` holding seeded ``events`` batches
(8192 and 65,536 rows) and a ``Receiver`` that touches each batch (``num_rows`` and the sum
of ``value``). All timing happens inside the sender, so driver overhead is excluded.

Transports and modes (each measured ``--repeat`` times in interleaved rounds, so background
load hits all of them alike; the median is reported):

* ``ray call, sync``: ``ray.get(receiver.consume.remote(batch))`` per batch (a round trip).
* ``ray call, pipelined``: up to ``--window`` calls in flight (``ray.wait``), the best a
  fire-and-forget operator chain gets from Ray calls.
* ``tcp`` / ``unix`` ``stream``: one Arrow IPC stream (``pyarrow.ipc.new_stream``) over a
  localhost TCP (``TCP_NODELAY``) or Unix-domain socket; the receiver acks once at the end of
  the stream, so the time is first byte to last batch read.
* ``tcp`` / ``unix`` ``ack``: the same stream, but the receiver acks each batch (1 byte)
  before the next is sent: comparable with ``ray call, sync``.
* ``tiny``: a no-argument Ray call (sync, pipelined, and fire-and-forget: all calls submitted
  before waiting, like BENCHMARKS.md's ~240 us figure), and a 1-row batch over the sockets.

``x vs Ray`` is the per-batch time of the Ray call in the comparable mode (sync <-> ack,
pipelined <-> stream) divided by this transport's: > 1 means the socket is faster.

Usage::

    python -m benchmarks.ray_hop            # updates the "ray_hop" section of RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from benchmarks import datagen, harness

__all__ = ["main", "Result"]

SIZES = (8192, 65536)
SEED_ROWS = 65536


def _batch(rows: int) -> pa.RecordBatch:
    """A contiguous (non-sliced) seeded events batch of ``rows`` rows."""
    return datagen.events(rows).combine_chunks().to_batches()[0]


def _touch(batch: pa.RecordBatch) -> int:
    pc.sum(batch.column(1))
    return batch.num_rows


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"socket closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


class Receiver:
    """Consumes batches from Ray calls or from one Arrow IPC stream per ``listen`` call."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._tmpdir = tempfile.mkdtemp(prefix="ray_hop_")

    def ready(self) -> bool:
        return True

    def tiny(self) -> None:
        return None

    def consume(self, batch: pa.RecordBatch) -> int:
        return _touch(batch)

    def listen(self, kind: str, ack_each: bool) -> str | tuple[str, int]:
        """Open a server socket, serve one IPC stream in a thread; return its address."""
        if kind == "tcp":
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv.bind(("127.0.0.1", 0))
            address: str | tuple[str, int] = srv.getsockname()
        elif kind == "unix":
            address = os.path.join(self._tmpdir, f"s{time.monotonic_ns()}")
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(address)
        else:
            raise ValueError(f"kind must be 'tcp' or 'unix', got {kind!r}")
        srv.listen(1)
        self._error = None
        self._thread = threading.Thread(target=self._serve, args=(srv, kind, ack_each), daemon=True)
        self._thread.start()
        return address

    def _serve(self, srv: socket.socket, kind: str, ack_each: bool) -> None:
        try:
            conn, _ = srv.accept()
            if kind == "unix":
                os.unlink(srv.getsockname())
            srv.close()
            with conn:
                if kind == "tcp":
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                rfile = conn.makefile("rb", buffering=1 << 20)
                reader = pa.ipc.open_stream(pa.PythonFile(rfile, mode="r"))
                rows = 0
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        break
                    rows += _touch(batch)
                    if ack_each:
                        conn.sendall(b"\x01")
                conn.sendall(struct.pack("<q", rows))
        except BaseException as exc:  # surfaced by join()
            self._error = exc

    def close(self) -> None:
        """Remove the directory of the Unix sockets."""
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"receiver failed: {self._error!r}") from self._error


class Sender:
    """Holds seeded batches and times sending them to a ``Receiver``."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        self.batches = {rows: _batch(rows) for rows in (*sizes, 1)}

    def nbytes(self, rows: int) -> int:
        return self.batches[rows].nbytes

    def ray_calls(self, receiver, rows: int, n: int, window: int) -> float:
        """Seconds for ``n`` calls; ``rows == 0`` means the tiny call; ``window == 1`` is sync."""
        batch = self.batches.get(rows)

        def call():
            return receiver.tiny.remote() if rows == 0 else receiver.consume.remote(batch)

        t = time.perf_counter()
        if window <= 1:
            for _ in range(n):
                ray.get(call())
        else:
            inflight: list = []
            for _ in range(n):
                if len(inflight) >= window:
                    done, inflight = ray.wait(inflight, num_returns=1)
                    ray.get(done)
                inflight.append(call())
            ray.get(inflight)
        return time.perf_counter() - t

    def socket_stream(self, address, rows: int, n: int, ack_each: bool) -> float:
        """Seconds to stream ``n`` batches over one Arrow IPC stream and get the final ack."""
        batch = self.batches[rows]
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(address)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(tuple(address))
        with sock:
            wfile = sock.makefile("wb", buffering=1 << 20)
            t = time.perf_counter()
            with pa.ipc.new_stream(pa.PythonFile(wfile, mode="w"), batch.schema) as writer:
                for _ in range(n):
                    writer.write_batch(batch)
                    if ack_each:
                        wfile.flush()
                        _read_exact(sock, 1)
            wfile.flush()
            got = struct.unpack("<q", _read_exact(sock, 8))[0]
            dt = time.perf_counter() - t
        if got != n * batch.num_rows:
            raise RuntimeError(f"receiver saw {got} rows, expected {n * batch.num_rows}")
        return dt


@dataclass
class Result:
    """Median per-batch time of one transport/mode/size."""

    transport: str
    mode: str
    rows: int
    nbytes: int
    seconds: list[float]  # per batch, one per repeat

    @property
    def per_batch(self) -> float:
        return statistics.median(self.seconds)

    @property
    def batches_per_s(self) -> float:
        return 1.0 / self.per_batch

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.per_batch / 1e6


def run(
    repeat: int, window: int, budget_s: float, log=print
) -> tuple[list[Result], dict[str, float]]:
    """Start Ray, measure every transport/mode/size, shut Ray down; return results and setup costs."""
    setup: dict[str, float] = {}
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    setup["ray.init"] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        receiver: Any = ray.remote(Receiver).remote()
        sender: Any = ray.remote(Sender).remote(SIZES)
        ray.get([receiver.ready.remote(), sender.nbytes.remote(1)])
        setup["2 actors ready"] = time.perf_counter() - t
        nbytes: dict[int, int] = {rows: ray.get(sender.nbytes.remote(rows)) for rows in (*SIZES, 1)}
        nbytes[0] = 0

        def ray_fn(rows: int, w: int) -> Callable[[int], float]:
            def f(n: int) -> float:
                return float(ray.get(sender.ray_calls.remote(receiver, rows, n, w)))

            return f

        def sock_fn(kind: str, rows: int, ack: bool) -> Callable[[int], float]:
            def f(n: int) -> float:
                address = ray.get(receiver.listen.remote(kind, ack))
                dt = ray.get(sender.socket_stream.remote(address, rows, n, ack))
                ray.get(receiver.join.remote())
                return float(dt)

            return f

        configs: list[tuple[str, str, int, Callable[[int], float]]] = []
        for rows in (0, *SIZES):
            configs.append(("ray call", "sync", rows, ray_fn(rows, 1)))
            configs.append(("ray call", "pipelined", rows, ray_fn(rows, window)))
        configs.append(("ray call", "fire-and-forget", 0, ray_fn(0, 1 << 30)))
        for kind in ("tcp", "unix"):
            for rows in (1, *SIZES):
                configs.append((kind, "ack", rows, sock_fn(kind, rows, True)))
                configs.append((kind, "stream", rows, sock_fn(kind, rows, False)))
        # Warm up each configuration and size its measurement to about budget_s, then run
        # the timed rounds interleaved so background load hits every configuration alike.
        counts: list[int] = []
        for *_, fn in configs:
            per0 = fn(20) / 20
            counts.append(int(min(20_000, max(50, budget_s / per0))))
        per: list[list[float]] = [[] for _ in configs]
        for i in range(repeat):
            for j, (_, _, _, fn) in enumerate(configs):
                per[j].append(fn(counts[j]) / counts[j])
            log(f"  round {i + 1}/{repeat} done")
        results = [
            Result(transport, mode, rows, nbytes[rows], per[j])
            for j, (transport, mode, rows, _) in enumerate(configs)
        ]
        for r in results:
            log(
                f"  {r.transport:<9} {r.mode:<15} {r.rows:>6} rows: {r.per_batch * 1e6:8.1f} us/batch, "
                f"{r.batches_per_s:8.0f} batches/s, {r.mb_per_s:7.1f} MB/s"
            )
        ray.get(receiver.close.remote())
        return results, setup
    finally:
        ray.shutdown()


def format_results(results: list[Result], setup: dict[str, float], window: int) -> str:
    """Markdown table with ratios against the Ray call of the comparable mode."""
    ray_time = {(r.mode, r.rows): r.per_batch for r in results if r.transport == "ray call"}
    comparable = {"ack": "sync", "stream": "pipelined"}
    lines = [
        "| transport | mode | batch rows | batch KB | us per batch | batches/s | MB/s | x vs Ray call (same size, comparable mode) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ref_rows = 0 if r.rows == 1 else r.rows  # a 1-row socket message vs the tiny Ray call
        ref = ray_time.get((comparable.get(r.mode, r.mode), ref_rows))
        ratio = f"{ref / r.per_batch:.2f}x" if ref and r.transport != "ray call" else "-"
        label = "tiny (no arg)" if r.rows == 0 else f"{r.rows:,}"
        mode = f"pipelined (window {window})" if r.mode == "pipelined" else r.mode
        lines.append(
            f"| {r.transport} | {mode} | {label} | {r.nbytes / 1e3:.1f} | {r.per_batch * 1e6:.0f} | "
            f"{r.batches_per_s:,.0f} | {r.mb_per_s:,.0f} | {ratio} |"
        )
    lines.append("")
    lines.append("Setup: " + ", ".join(f"{k} {v:.2f} s" for k, v in setup.items()) + ".")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.ray_hop", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--repeat", type=int, default=3, help="measurements per configuration (median)")
    ap.add_argument("--window", type=int, default=4, help="calls in flight in the pipelined mode")
    ap.add_argument("--budget", type=float, default=0.4, help="approx. seconds per measurement")
    ap.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    load0 = harness.load_average()
    results, setup = run(args.repeat, args.window, args.budget)
    load = f"Load average (1 min) before/after: {load0} / {harness.load_average()}."
    body = "\n".join(
        [
            f"## `{harness.command_line()}`: Ray per-hop cost vs Arrow IPC over a socket",
            "",
            f"Run {harness.now()}. {harness.machine_line()} {load}",
            "Actor-to-actor (sender actor -> receiver actor, timed in the sender), seeded `events` "
            f"batches; median of {args.repeat} measurements. `sync`/`ack`: one round trip per batch; "
            "`pipelined`/`stream`: throughput with several batches in flight.",
            "",
            format_results(results, setup, args.window),
        ]
    )
    print()
    print(body)
    if not args.no_write:
        harness.update_results("ray_hop", body)
        print(f"\nupdated {harness.RESULTS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
