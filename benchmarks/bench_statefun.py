"""The statefun_counter workload (BENCHMARKS.md #4) in messages/s.

An ingress of N messages to ``bench/counter/<key>`` (keys of ``events(N)``: 10,000 keys,
Zipf s = 1.1); each counter increments its stored count and, every 100th message it
receives, sends a message to another counter (``forward(key)``) and an egress record
``"<key>:<count>"``. Forwarded messages count too, so the workload runs to a fixed point;
messages/s counts ingress + forwarded messages.

Contenders, all checked against the reference (sorted egress records) before timing:

* ``python``: a plain-Python dict dispatch loop (a deque of pending messages, a dict of
  counts) - the baseline, in the same run;
* ``dispatcher p=1``: the FunctionDispatcher in-process (LocalDispatchers), every message
  local - the cost of the StateFun SDK path (typed messages, storage, invoke) per message;
* ``dispatcher p=2``: the same with 2 in-process subtasks: forwarded messages to the other
  subtask go through the feedback side output (cross-task messaging minus transport);
* ``ray p=1`` / ``ray p=2``: the StatefulFunctionsJob on Ray (embedded local Ray), where
  p=2 sends cross-task messages over the feedback edge between actors. The time is taken
  around ``env.execute()``, so it includes deployment (actor start); the notes show the
  job duration the engine reports.

Each in-process row also notes its CPU-time rate (messages / this process's CPU seconds),
which is far less sensitive than wall time to other processes competing for the cores.

Run::

    python -m benchmarks.bench_statefun --n 200000          # --repeat 3 --no-ray --no-write
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from benchmarks import harness
from benchmarks.datagen import events

__all__ = ["forward", "python_counter", "make_functions", "dispatcher_counter", "ray_counter", "main"]

TYPENAME = "bench/counter"
EGRESS = "bench/counts"


def forward(key: str) -> str:
    """The counter a counter forwards to every 100th message.

    Example:
        >>> forward("k00001")
        'k00008'
    """
    return f"k{(int(key[1:]) * 7 + 1) % 10000:05d}"


def python_counter(keys: list[str]) -> tuple[list[str], int]:
    """The baseline: a plain dict dispatch loop. Returns (sorted egress, messages handled)."""
    counts: dict[str, int] = {}
    egress: list[str] = []
    pending: deque[str] = deque(keys)
    handled = 0
    while pending:
        key = pending.popleft()
        handled += 1
        n = counts.get(key, 0) + 1
        counts[key] = n
        if n % 100 == 0:
            pending.append(forward(key))
            egress.append(f"{key}:{n}")
    return sorted(egress), handled


def make_functions() -> Any:
    """The counter as a stateful function."""
    from raystream.statefun_api import (
        IntType,
        StatefulFunctions,
        StringType,
        ValueSpec,
        egress_message_builder,
        message_builder,
    )

    functions = StatefulFunctions()

    @functions.bind(TYPENAME, specs=[ValueSpec("n", IntType)])
    def counter(context, message):
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        if n % 100 == 0:
            key = context.address.id
            context.send(message_builder(TYPENAME, forward(key), int_value=1))
            context.send_egress(egress_message_builder(EGRESS, f"{key}:{n}", StringType))

    return functions


def _message(key: str) -> Any:
    return _builder()(TYPENAME, key, int_value=1)


def _builder() -> Any:
    global _MESSAGE_BUILDER
    if _MESSAGE_BUILDER is None:
        from raystream.statefun_api import message_builder

        _MESSAGE_BUILDER = message_builder
    return _MESSAGE_BUILDER


_MESSAGE_BUILDER: Any = None


def dispatcher_counter(keys: list[str], parallelism: int) -> tuple[list[str], dict[str, int]]:
    """The FunctionDispatcher in-process; returns (sorted egress, counters)."""
    from raystream.statefun_api.local import LocalDispatchers

    run = LocalDispatchers(make_functions(), parallelism=parallelism, egresses=[EGRESS])
    msgs = [_message(k) for k in keys]
    for i in range(0, len(msgs), 8192):  # ingress batches as a source would deliver them
        run.send(*msgs[i : i + 8192])
    return sorted(run.egress(EGRESS)), run.counters()


def ray_counter(keys: list[str], parallelism: int) -> tuple[list[str], float]:
    """The StatefulFunctionsJob on Ray; returns (sorted egress, job duration in s)."""
    import raystream as rs
    from raystream.operators.sinks import CollectSink, collected_records
    from raystream.statefun_api.job import StatefulFunctionsJob

    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=5)
    sf = StatefulFunctionsJob(env, make_functions(), name="counter")
    sf.with_ingress(env.from_collection(keys), _message)
    sink = sf.egress_stream(EGRESS).sink_to(CollectSink(), name="collect").set_parallelism(1)
    result = env.execute("bench-statefun")
    out = collected_records(result.sink_results.get(sink.node.stable_uid(env.graph), []))
    return sorted(out), result.duration_s


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="bench_statefun", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="ingress messages")
    p.add_argument("--repeat", type=int, default=3, help="timed rounds (in-process contenders)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray contenders")
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = p.parse_args(argv)
    load_before = harness.load_average()
    keys = events(args.n).column("key").to_pylist()
    reference, total = python_counter(keys)

    rows: list[tuple[str, list[float], str]] = []
    contenders: list[tuple[str, Callable[[], Any], int]] = [
        ("python dict loop (baseline)", lambda: python_counter(keys), args.repeat),
        ("dispatcher in-process, p=1 (all local)", lambda: dispatcher_counter(keys, 1), args.repeat),
        ("dispatcher in-process, p=2 (cross-subtask via feedback output)", lambda: dispatcher_counter(keys, 2), args.repeat),
    ]
    if not args.no_ray:
        contenders += [
            ("raystream on Ray, p=1 (all local)", lambda: ray_counter(keys, 1), 1),
            ("raystream on Ray, p=2 (feedback edge between actors)", lambda: ray_counter(keys, 2), 1),
        ]
    notes: dict[str, str] = {}
    # check every contender first (untimed), then interleave the timed rounds
    for name, fn, _ in contenders:
        _, out = _timed(fn)
        if out[0] != reference:
            raise SystemExit(f"{name}: WRONG egress ({len(out[0])} records, expected {len(reference)})")
        if isinstance(out[1], dict):
            c = out[1]
            notes[name] = f"{c['local_messages']:,} local / {c['remote_messages']:,} cross-subtask forwards"
    times: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    for r in range(max(n for _, _, n in contenders)):
        for name, fn, n in contenders:
            if r < n:
                c0 = time.process_time()
                dt, out = _timed(fn)
                cpu[name].append(time.process_time() - c0)
                times[name].append(dt)
                if isinstance(out[1], float):
                    notes[name] = f"job duration {out[1]:.2f} s (incl. deployment)"
    base = statistics.median(times[contenders[0][0]])
    lines = [
        "| contender | median msg/s | best msg/s | vs python (median) | notes |",
        "|---|---:|---:|---:|---|",
    ]
    for name, _, _ in contenders:
        med, best = statistics.median(times[name]), min(times[name])
        if not name.startswith("raystream"):  # this process's CPU time: less sensitive to machine load
            note = f"CPU-time rate {total / statistics.median(cpu[name]):,.0f} msg/s"
            notes[name] = f"{notes[name]}; {note}" if name in notes else note
        lines.append(
            f"| {name} | {total / med:,.0f} | {total / best:,.0f} | {base / med:.3f}x | {notes.get(name, '')} |"
        )
        rows.append((name, times[name], notes.get(name, "")))
    table = "\n".join(lines)
    body = (
        f"## `{harness.command_line()}`: statefun_counter, messages/s\n\n"
        f"Run {harness.now()}. {harness.machine_line()} Load average (1 min) before/after: "
        f"{load_before} / {harness.load_average()}.\n"
        f"{args.n:,} ingress messages + {total - args.n:,} forwarded = {total:,} messages, "
        f"{len(reference):,} egress records, checked against the dict reference; in-process contenders "
        f"median of {args.repeat} interleaved rounds, Ray contenders one timed run (wall time around "
        f"`env.execute()`, including actor deployment).\n\n{table}\n"
    )
    print(body)
    if not args.no_write:
        harness.update_results(f"bench_statefun --n {args.n}", body)
    return body


if __name__ == "__main__":
    main()
