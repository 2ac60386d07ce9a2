"""Checkpointing costs: throughput with 1 s checkpoints vs none (same run), recovery time
after a killed task, and checkpoint duration/size for 1M keys.

    python -m benchmarks.bench_checkpoint [--n 2000000] [--repeat 3] [--keys 1000000]

Targets (BENCHMARKS.md): checkpointing every 1 s costs <= 10% throughput; recovery after
a killed task < 5 s. Prints a table and writes it to benchmarks/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import ray

import raystream as rs

from .datagen import ensure_parquet


def keyed_job(path: str, interval_ms: int | None, chk_dir: str) -> float:
    env = rs.StreamEnvironment(parallelism=2)
    if interval_ms:
        env.enable_checkpointing(interval_ms, checkpoint_dir=chk_dir)
    (
        env.read_parquet(path, batch_size=65536)
        .map(lambda r: (r["key"], r["value"]))
        .key_by(0)
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .filter(lambda r: False)
        .collect()
    )
    t = time.perf_counter()
    result = env.execute("chk-bench")
    elapsed = time.perf_counter() - t
    if interval_ms:
        keyed_job.completed = result.checkpoints["completed"]  # type: ignore[attr-defined]
    return elapsed


def recovery_time(chk_dir: str) -> float:
    """Seconds from ray.kill of a task to the restarted job processing records again."""
    env = rs.StreamEnvironment(parallelism=2, flush_ms=10)
    env.enable_checkpointing(500, checkpoint_dir=chk_dir)
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(3, 0))
    (
        env.generate(lambda i: (i % 1000, 1), count=400_000, rate=40_000)
        .key_by(0)
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .filter(lambda r: False)
        .collect()
    )
    client = env.execute_async("recovery-bench")
    time.sleep(2.0)
    info = client.info()
    actor = client.task_actor(1, 0)
    before = client.metrics()["operators"].get("reduce", {}).get("records_in", 0)
    t0 = time.perf_counter()
    ray.kill(actor, no_restart=True)
    resumed = None
    while time.perf_counter() - t0 < 60:
        info = client.info()
        if info["attempt"] > 0 and info["status"] == "RUNNING":
            m = client.metrics()["operators"].get("reduce", {})
            # metrics of the new attempt: records flowing again through the restarted reducer
            if m.get("records_in", 0) > 0 and m.get("records_in", 0) != before:
                resumed = time.perf_counter() - t0
                break
        time.sleep(0.02)
    client.cancel()
    try:
        client.wait()
    except rs.JobCancelled:
        pass
    return resumed if resumed is not None else float("nan")


def big_state_checkpoint(keys: int, chk_dir: str) -> dict:
    """Duration and size of one checkpoint of ``keys`` ValueStates (heap backend)."""
    from raystream.checkpoint import ValueStateDescriptor

    class Store(rs.KeyedProcessFunction):
        def open(self, ctx):
            self.v = ctx.get_state(ValueStateDescriptor("v"))

        def process_element(self, value, ctx):
            self.v.update(value)
            return None

    env = rs.StreamEnvironment(parallelism=2)
    env.enable_checkpointing(1000, checkpoint_dir=chk_dir, timeout_ms=120_000)
    # unbounded: keeps updating the same `keys` keys, so checkpoints go on after all are loaded
    env.generate(lambda i: i % keys, batch_size=65536).key_by(lambda x: x).process(Store()).collect()
    client = env.execute_async("state-bench")
    deadline = time.time() + 120
    best = None
    while time.time() < deadline:
        stats = client.info().get("checkpoints") or {}
        last = stats.get("last")
        if last and last.get("status") == "COMPLETED" and (client.metrics()["operators"].get("process", {}).get("records_in", 0) >= keys):
            best = last
            if best["id"] >= 2:
                break
        time.sleep(0.2)
    client.cancel()
    try:
        client.wait()
    except rs.JobCancelled:
        pass
    return best or {}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    path = str(ensure_parquet(f"benchmarks/data/events_{args.n}.parquet", args.n))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    chk = tempfile.mkdtemp(prefix="raystream-bench-chk-")
    try:
        keyed_job(path, None, chk)  # warm-up: worker processes, page cache
        without, with_chk, completed = [], [], []
        for _ in range(args.repeat):  # interleaved, so drift hits both alike
            without.append(keyed_job(path, None, chk))
            with_chk.append(keyed_job(path, 1000, chk))
            completed.append(keyed_job.completed)  # type: ignore[attr-defined]
        recoveries = [recovery_time(chk) for _ in range(args.repeat)]
        state = big_state_checkpoint(args.keys, chk)
    finally:
        ray.shutdown()
    rate_without = args.n / statistics.median(without)
    rate_with = args.n / statistics.median(with_chk)
    ratio = rate_with / rate_without
    rec = statistics.median(recoveries)
    lines = [
        f"## Checkpointing (`python -m benchmarks.bench_checkpoint --n {args.n} --repeat {args.repeat} --keys {args.keys}`)",
        "",
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {platform.python_version()}, ray {ray.__version__}; "
        "record-API keyed running sum over events(N) at parallelism 2, median of interleaved runs.",
        "",
        "| measure | value | target |",
        "|---|---:|---|",
        f"| throughput without checkpoints | {rate_without / 1e6:.2f} M ev/s | |",
        f"| throughput with 1 s checkpoints ({statistics.median(completed):.0f} completed per run) | {rate_with / 1e6:.2f} M ev/s | |",
        f"| ratio with / without | **{ratio:.2f}x** | >= 0.9x {'PASS' if ratio >= 0.9 else 'MISS'} |",
        f"| recovery: kill -> processing again (median of {len(recoveries)}: {', '.join(f'{r:.2f}' for r in recoveries)} s) | **{rec:.2f} s** | < 5 s {'PASS' if rec < 5 else 'MISS'} |",
        f"| checkpoint of {args.keys:,} keys (ValueState, heap): duration | {state.get('duration_s', float('nan')):.2f} s | |",
        f"| checkpoint of {args.keys:,} keys: size | {state.get('bytes', 0) / 1e6:.1f} MB | |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        from .harness import update_results

        update_results("checkpointing", text)


if __name__ == "__main__":
    main()
