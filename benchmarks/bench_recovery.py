"""Recovery time: a task executor killed -> the restarted job processing records again.

A keyed job at parallelism 4 (``generate -> key_by -> process`` with one ``ValueState`` per
key, checkpoints every 500 ms) is loaded with ``--keys`` keys (1k and 1M by default); once a
checkpoint holding every key has completed, the Ray actor hosting subtask 0 of the keyed
vertex (and, with slot sharing, subtask 0 of the source) is killed with ``ray.kill``. The
clock stops when the first record is processed by the *restarted* keyed operator
(``attempt_number() > 0``): each subtask writes ``time.time()`` to a file then, and the
earliest one counts (one machine, one clock). Restart strategy ``fixed_delay(3, 0)``: the
restart delay (500 ms by default) is the user's choice and not counted.

Two deployments of the restart in the same run, interleaved:

* ``warm`` (the default, ``reuse_workers=True``): the failed attempt's live executors cancel
  their tasks and serve the restart, and a warm spare from the driver's worker pool
  (``JobConfig.standby_executors``) takes the place of the killed one;
* ``cold`` (``reuse_workers=False``): every restart starts new executor processes (the
  behaviour before issue 15).

Run it::

    python -m benchmarks.bench_recovery --keys 1000,1000000 --repeat 3   # --no-write
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import ray

import raystream as rs
from benchmarks import harness
from raystream.checkpoint import ValueStateDescriptor

__all__ = ["recovery_time", "main"]

PARALLELISM = 4


class _Store(rs.KeyedProcessFunction):
    """Keeps the last value per key; marks the first record of a restarted attempt."""

    def __init__(self, marks: str) -> None:
        self.marks = marks

    def open(self, ctx: Any) -> None:
        self.v = ctx.get_state(ValueStateDescriptor("v"))
        self.attempt = ctx.attempt_number
        self.marked = self.attempt == 0

    def process_element(self, value: Any, ctx: Any) -> None:
        if not self.marked:
            self.marked = True
            now = time.time()
            path = os.path.join(self.marks, f"resumed-{self.attempt}-{os.getpid()}-{id(self)}")
            with open(path + ".tmp", "w") as f:
                f.write(repr(now))
            os.replace(path + ".tmp", path)  # the driver never reads a half-written mark
        self.v.update(value)
        return None


def recovery_time(keys: int, warm: bool, timeout_s: float = 300.0) -> dict:
    """Seconds from ``ray.kill`` of a task executor to the first record processed by the
    restarted job, and how long loading + checkpointing ``keys`` keys took before."""
    marks = tempfile.mkdtemp(prefix="raystream-recovery-")
    env = rs.StreamEnvironment(parallelism=PARALLELISM, flush_ms=10, reuse_workers=warm)
    env.enable_checkpointing(500, checkpoint_dir=tempfile.mkdtemp(prefix="raystream-recovery-chk-"),
                             timeout_ms=120_000)
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(3, 0))
    # unbounded: keeps updating the same `keys` keys
    (env.generate(lambda i: (i % keys, i), batch_size=min(65536, max(1024, keys // 4)), rate=400_000)
     .key_by(0).process(_Store(marks)).collect())
    client = env.execute_async(f"recovery-{keys}")
    t_load = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    loaded_at = None
    try:
        while time.monotonic() < deadline:  # a completed checkpoint taken after every key was seen
            n = client.metrics()["operators"].get("process", {}).get("records_in", 0)
            stats = client.info().get("checkpoints") or {}
            if loaded_at is None and n >= keys:
                loaded_at = stats.get("completed", 0)
            if loaded_at is not None and stats.get("completed", 0) >= loaded_at + 1:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{keys} keys were not loaded and checkpointed within {timeout_s}s")
        load_s = time.perf_counter() - t_load
        actor = client.task_actor(1, 0)
        t_kill = time.time()
        ray.kill(actor, no_restart=True)
        while time.monotonic() < deadline:
            found = [f for f in glob.glob(os.path.join(marks, "resumed-*")) if not f.endswith(".tmp")]
            if found:
                time.sleep(0.05)  # the other subtasks' marks, if they come at the same time
                marked = [f for f in glob.glob(os.path.join(marks, "resumed-*")) if not f.endswith(".tmp")]
                first = min(float(open(f).read()) for f in marked)
                return {"recovery_s": first - t_kill, "load_s": load_s, "restarts": client.info().get("restarts")}
            time.sleep(0.01)
        raise RuntimeError(f"the job did not process records again within {timeout_s}s of the kill")
    finally:
        client.cancel()
        try:
            client.wait()
        except rs.JobCancelled:
            pass


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_recovery", description=__doc__.splitlines()[0])
    ap.add_argument("--keys", default="1000,1000000", help="comma-separated state sizes (keys)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(k) for k in args.keys.split(",")]
    load0 = harness.load_average()
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    results: dict[tuple[int, str], list[float]] = {}
    loads: dict[int, list[float]] = {}
    try:
        recovery_time(1000, True)  # warm-up: the worker pool's master, executors and spare
        for keys in sizes:
            for _ in range(args.repeat):
                for mode in ("warm", "cold"):  # interleaved: the machine's load drifts
                    res = recovery_time(keys, mode == "warm")
                    results.setdefault((keys, mode), []).append(res["recovery_s"])
                    loads.setdefault(keys, []).append(res["load_s"])
                    print(f"  {keys:>9,} keys, {mode}: kill -> processing again {res['recovery_s']:.3f} s "
                          f"(restarts {res['restarts']}, loading + checkpoint {res['load_s']:.1f} s)", flush=True)
    finally:
        rs.shutdown_workers()
        ray.shutdown()
    lines = [
        f"## `{harness.command_line()}`: recovery, kill -> processing again (p={PARALLELISM})",
        "",
        f"Run {harness.now()}. {harness.machine_line()} Load average (1 min) before/after: {load0} / "
        f"{harness.load_average()}.",
        "Keyed job (generate -> key_by -> process, one ValueState per key) at p=4, checkpoints every 500 ms; the "
        "actor hosting subtask 0 of the keyed vertex (and of the source) is killed once a checkpoint holding every "
        "key completed; the clock stops at the first record processed by a restarted keyed subtask. Restart "
        "delay 0 (the default fixed delay of 500 ms would add to every figure). warm = failed attempt's executors "
        "recycled + a pooled spare for the dead one (default); cold = new executor processes for the restart "
        f"(`reuse_workers=False`, the behaviour before). {args.repeat} interleaved runs, median (all).",
        "",
        "| state | warm (default) | cold (new processes) | cold / warm | target < 1 s (warm) |",
        "|---|---:|---:|---:|---|",
    ]
    for keys in sizes:
        w, c = results[(keys, "warm")], results[(keys, "cold")]
        mw, mc = statistics.median(w), statistics.median(c)
        lines.append(
            f"| {keys:,} keys | **{mw:.2f} s** ({', '.join(f'{x:.2f}' for x in w)}) | {mc:.2f} s "
            f"({', '.join(f'{x:.2f}' for x in c)}) | {mc / mw:.1f}x | {'PASS' if mw < 1.0 else 'MISS'} |"
        )
    body = "\n".join(lines)
    print()
    print(body)
    if not args.no_write:
        harness.update_results(f"bench_recovery {' '.join(sys.argv[1:] if argv is None else argv)}", body)
        print(f"\nupdated {harness.RESULTS_PATH}")
    return {"results": results}


if __name__ == "__main__":
    main()
