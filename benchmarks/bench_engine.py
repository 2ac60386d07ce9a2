"""raystream contenders for the standard workloads (imported by ``python -m benchmarks.run``).

Registered contenders (parallelism 2 unless the name says otherwise), every one reading the
same Parquet file as the baselines (``env.read_parquet``, 65,536-row batches), with its
result digest-checked by the harness before it is timed:

* ``stateless``: ``raystream-record`` = ``filter(r["value"] % 2 == 0) -> map(r["value"] * 3)
  -> collect`` (count and sum taken over the collected values in the driver);
  ``raystream-batch`` = ``map_batches`` (filter + multiply, numpy) -> ``map_batches``
  (per-batch count/sum) -> collect (partials summed in the driver).
* ``keyed_sum``: ``raystream-record`` = ``key_by("key").sum("value", emit="final")``, the
  record API's final-values option (a combiner before the shuffle, vectorized for a numeric
  column; each key's first record with the sum at end of input); ``raystream-record-reduce``
  = ``key_by("key").reduce(fn, emit="final", combinable=True)``, one Python ``fn(acc, r)``
  call per record (combined per batch before the shuffle); ``raystream-batch`` =
  ``key_by("key").aggregate(sum=("value", "sum"), emit="final")``; ``raystream-batch-p1`` /
  ``raystream-record-p1``: the same at parallelism 1 (the p2/p1 speed-up target).
* ``window``: ``raystream-record`` = ``assign_timestamps_and_watermarks(monotonous, "ts")
  -> key_by("key") -> window(TumblingEventTimeWindows.of(1 s)).aggregate(Count(),
  WithWindow())`` (a user ``add`` per record, record-API pane mode); ``raystream-batch`` =
  the same window with the named-spec ``aggregate(count=("value", "count"))`` (vectorized).
  Both pre-aggregate per (key, window) before the shuffle at p=2 (the window combiner, auto:
  on at parallelism > 1); ``combine=True|False`` of ``window_record`` / ``window_batch`` forces it.

Other measurements (job start, latency, memory) run with ``python -m benchmarks.bench_engine
--extras``; see :func:`main`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import raystream as rs
from benchmarks.harness import register, register_session

__all__ = [
    "stateless_record",
    "stateless_batch",
    "keyed_sum_record",
    "keyed_sum_record_reduce",
    "keyed_sum_batch",
    "window_record",
    "window_batch",
    "job_start_time",
    "latency_probe",
    "memory_probe",
    "main",
]

PARALLELISM = 2
BATCH = 65536


def _setup() -> None:
    import logging

    import ray

    if not ray.is_initialized():  # the embedded Ray a user's job starts (raystream's system config)
        from raystream.engine.ray_runtime import ensure_ray

        ensure_ray(num_cpus=2, logging_level=logging.WARNING)
    # warm the worker pool: the first job of a session pays for worker processes
    env = rs.StreamEnvironment(parallelism=PARALLELISM)
    env.from_collection(list(range(10))).map(lambda x: x).key_by(lambda x: x).reduce(lambda a, b: a).collect()
    env.execute("warm-up")


def _teardown() -> None:
    import ray

    ray.shutdown()


def _env(parallelism: int = PARALLELISM) -> rs.StreamEnvironment:
    return rs.StreamEnvironment(parallelism=parallelism, batch_size=BATCH)


def _collected(env: rs.StreamEnvironment, name: str) -> pa.Table:
    return env.execute_and_collect(name, as_table=True)


# ----------------------------------------------------------------------------- stateless
def stateless_record(path: str, parallelism: int = PARALLELISM) -> tuple[int, int]:
    env = _env(parallelism)
    (
        env.read_parquet(path, batch_size=BATCH)
        .filter(lambda r: r["value"] % 2 == 0)
        .map(lambda r: r["value"] * 3)
        .collect()
    )
    t = _collected(env, "stateless-record")
    col = t.column(0) if t.num_columns else pa.chunked_array([], pa.int64())
    return len(col), int(pc.sum(col).as_py() or 0)


def _filter_map(rb: dict) -> dict:
    v = rb["value"]
    v = v[v % 2 == 0]
    return {"value": v * 3}


def _count_sum(rb: dict) -> dict:
    v = rb["value"]
    return {"count": np.array([len(v)], np.int64), "sum": np.array([int(v.sum())], np.int64)}


def stateless_batch(path: str, parallelism: int = PARALLELISM) -> tuple[int, int]:
    env = _env(parallelism)
    (
        env.read_parquet(path, batch_size=BATCH, columns=None)
        .map_batches(_filter_map, batch_format="numpy")
        .map_batches(_count_sum, batch_format="numpy")
        .collect()
    )
    t = _collected(env, "stateless-batch")
    return int(pc.sum(t.column("count")).as_py() or 0), int(pc.sum(t.column("sum")).as_py() or 0)


# ----------------------------------------------------------------------------- keyed_sum
def _add(acc: Any, r: Any) -> Any:
    # a reduce returns a record of its input's type (Flink's ReduceFunction: T x T -> T): the
    # combiner's partials are then uniform dict rows and cross the shuffle as typed Arrow
    return {"key": acc["key"], "value": acc["value"] + r["value"], "ts": acc["ts"]}


def keyed_sum_record(path: str, parallelism: int = PARALLELISM) -> list[tuple]:
    env = _env(parallelism)
    env.read_parquet(path, batch_size=BATCH).key_by("key").sum("value", emit="final").collect()
    t = _collected(env, "keyed-sum-record")
    return list(zip(t.column("key").to_pylist(), t.column("value").to_pylist()))


def keyed_sum_record_reduce(path: str, parallelism: int = PARALLELISM) -> list[tuple]:
    env = _env(parallelism)
    env.read_parquet(path, batch_size=BATCH).key_by("key").reduce(_add, emit="final", combinable=True).collect()
    t = _collected(env, "keyed-sum-record-reduce")
    return list(zip(t.column("key").to_pylist(), t.column("value").to_pylist()))


def keyed_sum_batch(path: str, parallelism: int = PARALLELISM) -> pa.Table:
    env = _env(parallelism)
    (
        env.read_parquet(path, batch_size=BATCH)
        .key_by("key")
        .aggregate(sum=("value", "sum"), emit="final")
        .collect()
    )
    return _collected(env, "keyed-sum-batch")


def _p1(fn):
    def run(path: str):
        return fn(path, parallelism=1)

    run.__name__ = f"{fn.__name__}_p1"
    return run


# ----------------------------------------------------------------------------- window
def _windowed(path: str, parallelism: int) -> tuple[rs.StreamEnvironment, Any]:
    from benchmarks.baselines import WINDOW_MS
    from raystream.operators.time import WatermarkStrategy
    from raystream.operators.windows import TumblingEventTimeWindows

    env = _env(parallelism)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    stream = env.read_parquet(path, batch_size=BATCH).assign_timestamps_and_watermarks(strategy)
    return env, stream.key_by("key").window(TumblingEventTimeWindows.of(WINDOW_MS))


def window_record(path: str, parallelism: int = PARALLELISM, combine: bool | None = None) -> list[tuple]:
    from benchmarks.bench_window import Count, WithWindow

    env, windowed = _windowed(path, parallelism)
    windowed.aggregate(Count(), WithWindow(), combine=combine).collect()
    return [tuple(r) for r in env.execute_and_collect("window-record")]


def window_batch(path: str, parallelism: int = PARALLELISM, combine: bool | None = None) -> pa.Table:
    env, windowed = _windowed(path, parallelism)
    windowed.aggregate(count=("value", "count"), combine=combine).collect()
    t = _collected(env, "window-batch")
    return t.select(["key", "window_start", "count"])


register_session(_setup, _teardown)
register("stateless", "raystream-record", stateless_record, api="record")
register("stateless", "raystream-record-p1", _p1(stateless_record), api="record")
register("stateless", "raystream-batch", stateless_batch, api="batch")
register("stateless", "raystream-batch-p1", _p1(stateless_batch), api="batch")
register("keyed_sum", "raystream-record", keyed_sum_record, api="record")
register("keyed_sum", "raystream-record-p1", _p1(keyed_sum_record), api="record")
register("keyed_sum", "raystream-record-reduce", keyed_sum_record_reduce, api="record")
register("keyed_sum", "raystream-batch", keyed_sum_batch, api="batch")
register("keyed_sum", "raystream-batch-p1", _p1(keyed_sum_batch), api="batch")
register("window", "raystream-record", window_record, api="record")
register("window", "raystream-record-p1", _p1(window_record), api="record")
register("window", "raystream-batch", window_batch, api="batch")
register("window", "raystream-batch-p1", _p1(window_batch), api="batch")


# ----------------------------------------------------------------------------- extras
def job_start_time(repeat: int = 5, slot_sharing: bool = True, reuse_workers: bool = False) -> list[float]:
    """Wall time of a 10-record job on a 6-task graph (source p2 -> map p2 -> keyed reduce +
    collect p2), Ray already initialised: an upper bound of the job start time (it includes
    the job master, the task actors (2 with slot sharing, else 6), setup, the run and the
    teardown). ``reuse_workers=False``: cold, every job starts its own actors; True: the
    job deploys onto the worker pool's warm actors (a session cluster)."""
    times = []
    for _ in range(repeat):
        env = rs.StreamEnvironment(parallelism=2, batch_size=BATCH, slot_sharing=slot_sharing,
                                   reuse_workers=reuse_workers)
        (
            env.from_collection(list(range(10)))
            .map(lambda x: x + 1)
            .disable_chaining()
            .key_by(lambda x: x % 3)
            .reduce(lambda a, b: a + b)
            .collect()
        )
        tasks = sum(v.parallelism for v in env.get_job_graph().vertices)
        assert tasks == 6, f"expected a 6-task graph, got {tasks}"
        t = time.perf_counter()
        env.execute_and_collect("start-probe")
        times.append(time.perf_counter() - t)
    return times





def small_job(parallelism: int) -> float:
    """Wall time of a 10-record job (collection -> map -> collect) on the warm worker pool:
    what a notebook user waits for a small job, all fixed costs and nothing else."""
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.from_collection(list(range(10))).map(lambda x: x + 1).collect()
    t = time.perf_counter()
    out = env.execute_and_collect("small")
    dt = time.perf_counter() - t
    assert sorted(out) == list(range(1, 11)), out
    return dt


def collection_rows(n: int) -> list[tuple]:
    """``n`` rows ``(id, user, amount)`` for the ``from_collection`` workload."""
    return [(i, f"user-{i % 1000}", i * 0.5) for i in range(n)]


def collection_job(rows: list[tuple], parallelism: int) -> tuple[float, int]:
    """A notebook's job: ``from_collection(rows)`` -> filter -> collect (1 row in 1,000).
    Returns (wall s from building the job to the collected rows, rows collected)."""
    t = time.perf_counter()
    env = rs.StreamEnvironment(parallelism=parallelism, batch_size=BATCH)
    env.from_collection(rows).filter(lambda r: r[0] % 1000 == 0).collect()
    out = env.execute_and_collect("collection")
    return time.perf_counter() - t, len(out)


def collection_loop(rows: list[tuple]) -> tuple[float, int]:
    """The baseline: the same filter as a Python loop over the list, plus one pickling
    of the list (what any process boundary costs at least)."""
    t = time.perf_counter()
    pickle.loads(pickle.dumps(rows, protocol=5))
    out = [r for r in rows if r[0] % 1000 == 0]
    return time.perf_counter() - t, len(out)


def lookup_job(table: dict[int, str], parallelism: int, n: int = 100_000) -> tuple[float, int]:
    """A stream enriched from a static table that the map function captures (an
    enrichment join against a dimension table): ``generate(n)`` -> map -> filter -> collect.
    Returns (wall s, rows collected)."""
    t = time.perf_counter()
    env = rs.StreamEnvironment(parallelism=parallelism, batch_size=BATCH)
    size = len(table)
    (env.generate(n).map(lambda i: (i, table[i % size])).filter(lambda r: r[0] % 1000 == 0).collect())
    out = env.execute_and_collect("lookup")
    return time.perf_counter() - t, len(out)


def uneven_files(directory: str, files: int = 12, rows_per_file: int = 98_304) -> str:
    """Write ``files`` Parquet files of 1.5 row groups each (65,536 + 32,768 rows of the
    events' columns) into ``directory``: the layout that round-robin split assignment deals
    every large row group of to one reader at p=2."""
    from benchmarks.datagen import events

    os.makedirs(directory, exist_ok=True)
    table = events(files * rows_per_file)
    for f in range(files):
        pq.write_table(table.slice(f * rows_per_file, rows_per_file), os.path.join(directory, f"part-{f:03d}.parquet"),
                       row_group_size=65_536)
    return directory


def uneven_job(directory: str, parallelism: int) -> tuple[float, tuple[int, int]]:
    """Wall time and result of the stateless batch job over :func:`uneven_files`."""
    t0 = time.perf_counter()
    out = stateless_batch(directory, parallelism)
    return time.perf_counter() - t0, out


def latency_probe(rate: int = 10_000, seconds: float = 10.0, flush_ms: int = 5) -> dict:
    """End-to-end latency: ``generate(fn, rate)`` stamps each record with ``time.time()``;
    3 keyed stages; the last stage computes ``now - ts`` per record (ms) and the driver
    reads the percentiles from the collected latencies (warm-up second dropped)."""
    count = int(rate * seconds)
    env = rs.StreamEnvironment(parallelism=2, batch_size=BATCH, flush_ms=flush_ms)

    def gen(i: int) -> tuple:
        return (i % 1000, i, time.time())

    def measure(r: tuple) -> tuple:
        return (r[1], (time.time() - r[2]) * 1000.0)

    (
        env.generate(gen, count=count, rate=rate, batch_size=1024)
        .key_by(0)
        .map(lambda r: r)
        .disable_chaining()
        .key_by(0)
        .map(lambda r: r)
        .disable_chaining()
        .key_by(0)
        .map(measure)
        .collect()
    )
    rows = env.execute_and_collect("latency")
    lat = np.array([ms for i, ms in rows if i >= rate])  # drop the first second (warm-up)
    return {
        "records": len(rows),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
    }


def memory_probe(n: int = 20_000_000, sink_sleep_s: float = 0.002) -> dict:
    """A 20M-event generated job into a deliberately slow sink (sleeps per batch); samples
    the summed RSS of every Ray worker process of the job with psutil while it runs."""
    import threading

    import psutil
    import ray

    env = rs.StreamEnvironment(parallelism=2, batch_size=BATCH)

    def slow(rb: pa.RecordBatch) -> None:
        time.sleep(sink_sleep_s)
        return None

    (
        env.generate(None, count=n, batch_size=BATCH)
        .map_batches(lambda rb: {"value": rb.column(0).to_numpy() * 2}, batch_format="pyarrow")
        .rebalance()
        .map_batches(lambda rb: rb)
        .rebalance()
        .map_batches(slow)
        .collect()
    )
    raylet = [pi.process.pid for pi in ray._private.worker._global_node.all_processes.get("raylet", [])]
    peak = {"rss": 0, "pss": 0, "procs": 0}
    stop = threading.Event()

    def ours() -> list:
        # this session's task actors and job master: children of our own raylet only (the
        # machine is shared with other sessions running their own Ray)
        out = []
        for pid in raylet:
            for p in psutil.Process(pid).children(recursive=True):
                try:
                    if "TaskActor" in p.name() or "JobMaster" in p.name() or any(
                        "TaskActor" in c or "JobMaster" in c for c in p.cmdline()
                    ):
                        out.append(p)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        return out

    def sample() -> None:
        while not stop.is_set():
            rss = pss = procs = 0
            for p in ours():
                try:
                    mi = p.memory_full_info()
                    rss += mi.rss
                    pss += getattr(mi, "pss", mi.rss)
                    procs += 1
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            if rss > peak["rss"]:
                peak.update(rss=rss, pss=pss, procs=procs)
            stop.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    res = env.execute("memory")
    wall = time.perf_counter() - t
    stop.set()
    th.join()
    ch = res.metrics.get("channels", [])
    return {
        "events": n,
        "wall_s": wall,
        "peak_rss_gib": peak["rss"] / 2**30,
        "pss_at_peak_gib": peak["pss"] / 2**30,
        "procs": peak["procs"],
        "max_in_flight": max((c["max_in_flight"] for c in ch), default=0),
        "blocked_s": sum(c["blocked_s"] for c in ch),
    }


def key_groups_cost(keys: list[Any], rounds: int = 3, batch: int = 8192) -> list[float]:
    """CPU ns per record of a hash exchange's key groups for records ``(key, 1)`` keyed by a
    function (``key_by(lambda r: r[0])``), in batches of ``batch`` records as a task sends
    them; one figure per round, the first meeting every key for the first time (fresh
    key objects each round, as a source makes them)."""
    from raystream.engine.partitioners import KeySelector
    from raystream.engine.records import Batch

    selector = KeySelector(_first)
    max_parallelism = 4099 + len(keys) % 7  # (a key-group cache of its own in this process)
    figures = []
    for _ in range(rounds):
        batches = [Batch.of_records([(k, 1) for k in pa.array(keys[i : i + batch]).to_pylist()]) for i in range(0, len(keys), batch)]
        t = time.process_time()
        for b in batches:
            selector.key_groups(b, max_parallelism)
        figures.append((time.process_time() - t) / len(keys) * 1e9)
    return figures


def _first(record: tuple) -> Any:
    return record[0]


def key_groups_section(n: int) -> str:
    """The table of :func:`key_groups_cost` for str and int keys, Zipf (10,000 keys) and seen once."""
    from benchmarks.datagen import events

    zipf = events(n).column("key").to_pylist()
    cases = [
        ("str, 10,000 Zipf keys", zipf),
        ("str, ids seen once", [f"order-{i:09d}" for i in range(n)]),
        ("int, 10,000 Zipf keys", [int(k[1:]) for k in zipf]),
        ("int, ids seen once", list(range(10**12, 10**12 + n))),
    ]
    lines = [f"Key groups of a hash exchange, {n:,} records keyed by a function, CPU ns per record (rounds 1 / 2 / 3; "
             "round 1 meets every key for the first time)", "", "| keys | ns per record |", "|---|---:|"]
    for label, keys in cases:
        lines.append(f"| {label} | {' / '.join(f'{x:,.0f}' for x in key_groups_cost(keys))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_engine")
    ap.add_argument("--start", action="store_true")
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--small", type=int, default=0, metavar="JOBS",
                    help="median wall time of JOBS warm 10-record jobs at p=1 and p=2 (alternating)")
    ap.add_argument("--gap-ms", type=float, default=0.0, metavar="MS",
                    help="with --small: pause MS between the jobs (a notebook user's time between cells; "
                         "0: back to back, the next job then also waits for what the last one left to do)")
    ap.add_argument("--lookup", type=int, default=0, metavar="ENTRIES",
                    help="time a 100k-record job whose map captures an ENTRIES-entry dict at p=1, 2, 4 (5 rounds)")
    ap.add_argument("--collection", type=int, default=0, metavar="ROWS",
                    help="time from_collection(ROWS tuples) -> filter -> collect at p=1, 2, 4 (interleaved, 5 rounds)")
    ap.add_argument("--uneven", type=int, default=0, metavar="ROUNDS",
                    help="the stateless batch job over 12 Parquet files of 1.5 row groups each (1.18M events) at "
                         "p=1 and p=2, ROUNDS alternating rounds: p=2 / p=1 and the rows each p=2 subtask read")
    ap.add_argument("--key-groups", type=int, default=0, metavar="RECORDS",
                    help="only the CPU cost of a hash exchange's key groups per record, in this process (no Ray)")
    ap.add_argument("--n", type=int, default=20_000_000)
    args = ap.parse_args(argv)
    if args.key_groups:
        print(key_groups_section(args.key_groups))
        return 0
    _setup()
    try:
        if args.start:
            shared: list[float] = []
            single: list[float] = []
            warm: list[float] = []
            for _ in range(5):  # interleaved: the machine's load drifts
                shared += job_start_time(1, slot_sharing=True)
                single += job_start_time(1, slot_sharing=False)
                warm += job_start_time(1, slot_sharing=True, reuse_workers=True)
            for label, ts in (("cold, slot sharing, 2 actors", shared), ("cold, one actor per task, 6 actors", single),
                              ("warm worker pool, slot sharing", warm)):
                print(f"job start (6 tasks, {label}): median {statistics.median(ts):.3f} s, best {min(ts):.3f} s, "
                      f"all {[round(x, 3) for x in ts]}")
            print(f"slot sharing / one actor per task (cold, median): {statistics.median(shared) / statistics.median(single):.2f}x")
            print(f"warm pool / cold (slot sharing, median): {statistics.median(warm) / statistics.median(shared):.3f}x")
        if args.collection:
            rows = collection_rows(args.collection)
            times: dict[str, list[float]] = {"loop": [], "p=1": [], "p=2": [], "p=4": []}
            for p in (1, 2, 4):
                collection_job(rows[:1000], p)  # warm executors for each parallelism
            for _ in range(5):  # interleaved: the machine's load drifts
                dt, expected = collection_loop(rows)
                times["loop"].append(dt)
                for p in (1, 2, 4):
                    dt, got = collection_job(rows, p)
                    assert got == expected, f"p={p}: {got} rows collected, expected {expected}"
                    times[f"p={p}"].append(dt)
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"from_collection({args.collection:,} tuples) -> filter -> collect, median of 5 (s): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
            print("vs the loop (pickle once + filter): " + ", ".join(
                f"{k} {med['loop'] / med[k]:.2f}x" for k in ("p=1", "p=2", "p=4")))
            print(f"p=2 / p=1: {med['p=1'] / med['p=2']:.2f}x, p=4 / p=1: {med['p=1'] / med['p=4']:.2f}x")
        if args.uneven:
            with tempfile.TemporaryDirectory() as tmp:
                directory = uneven_files(os.path.join(tmp, "uneven"))
                from raystream.engine.connectors import assign_splits, split_weight
                from raystream.operators.sources import ParquetSource

                dealt = [sum(split_weight(s) for s in r) for r in assign_splits(ParquetSource(directory).create_splits(2), 2)]
                uneven: dict[int, list[float]] = {1: [], 2: []}
                results = set()
                for p in (1, 2):
                    uneven_job(directory, p)  # warm executors for each parallelism
                for _ in range(args.uneven):
                    for p in (1, 2):
                        dt, out = uneven_job(directory, p)
                        uneven[p].append(dt)
                        results.add(out)
                assert len(results) == 1, f"p=1 and p=2 disagree: {results}"
                med = {p: statistics.median(v) for p, v in uneven.items()}
                print(f"stateless batch job over 12 files of 1.5 row groups, median of {args.uneven}: p=1 "
                      f"{med[1] * 1000:.1f} ms, p=2 {med[2] * 1000:.1f} ms, p=2 / p=1 {med[1] / med[2]:.2f}x; rows per "
                      f"p=2 subtask {[int(w) for w in dealt]}")
        if args.small:
            small: dict[int, list[float]] = {1: [], 2: []}
            for p in (1, 2):
                small_job(p)  # warm executors for each parallelism
            for _ in range(args.small):
                for p in (1, 2):
                    time.sleep(args.gap_ms / 1000)
                    small[p].append(small_job(p))
            print(f"10-record job on the warm pool, {args.gap_ms:g} ms between jobs, median of "
                  f"{args.small}: p=1 {statistics.median(small[1]) * 1000:.2f} ms, p=2 {statistics.median(small[2]) * 1000:.2f} ms")
        if args.lookup:
            table = {i: f"name-{i}" for i in range(args.lookup)}
            lt: dict[str, list[float]] = {"p=1": [], "p=2": [], "p=4": []}
            for p in (1, 2, 4):
                lookup_job({0: "x"}, p, 1000)  # warm executors for each parallelism
            for _ in range(5):  # interleaved
                for p in (1, 2, 4):
                    dt, got = lookup_job(table, p)
                    assert got == 100, f"p={p}: {got} rows collected, expected 100"
                    lt[f"p={p}"].append(dt)
            med = {k: statistics.median(v) for k, v in lt.items()}
            print(f"generate(100,000) -> map capturing a {args.lookup:,}-entry dict -> filter -> collect, median of 5 (s): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
            print(f"p=2 / p=1: {med['p=1'] / med['p=2']:.2f}x, p=4 / p=1: {med['p=1'] / med['p=4']:.2f}x")
        if args.latency:
            print("latency:", latency_probe())
        if args.memory:
            print("memory:", memory_probe(args.n))
    finally:
        _teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
