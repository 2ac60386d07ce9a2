"""The RocksDB state backend (issue 16): state beyond memory, incremental checkpoints, and
the keyed record workload on RocksDB vs heap, every ratio within one run.

    python -m benchmarks.bench_rocksdb [--keys 10000000] [--budget-mb 1024] [--n 1000000] [--repeat 3]

1. **Large state**: ``--keys`` keys (one ValueState entry each: a 24-byte string key, a
   ~40-byte value) written into one RocksDB keyed backend, with the process's RSS sampled
   as it grows. The heap backend's memory per key is measured on ``--heap-keys`` keys in a
   fresh child process and projected to ``--keys``, against ``--budget-mb``.
2. **Incremental checkpoints**: a checkpoint of that state (time on the task thread, in
   all, bytes), then ``--rounds`` rounds of changing 1% of the keys (spread over the key
   space) followed by a checkpoint (a delta, or a materialization when the chain is due),
   then one more 1% round and a *full* (self-contained: every file uploaded) checkpoint: each
   round's time and bytes as a share of that full one (target <= 5%), and their mean. The
   rounds start, and the full reference is taken, once RocksDB runs no compaction or flush
   and the page cache is written back (:func:`settle`): steady state. Then
   the restore time into a fresh backend from the last checkpoint before the full one (its
   base plus its chain of deltas) and from the full one, 1,000 keys checked against the state.
   "In all" runs the upload on the calling thread; in a job it runs on the snapshot writer
   thread while the task goes on, and only "on the task thread" delays the task.
3. **Throughput**: the keyed record workload (``events(N)``: 10,000 Zipf keys, a running sum
   per key in ValueState through a KeyedProcessFunction) run in process on each backend,
   alternating, best of ``--repeat``; RocksDB with its read cache warm (cache >= keys):
   target >= 0.5x heap.

4. **Operators' own state** (``--operators``: only this part): the record-API ``reduce``
   (a ReducingState on RocksDB, a dict on heap) and a KeyedProcessFunction with an
   event-time timer per record (RocksDB timer queues vs the heap queue), each operator in
   a real task (OperatorHarness, p=1) on ``--op-n`` events as Python records: RocksDB vs
   heap (CPU time, alternating, median ratio of ``--op-rounds`` rounds), and the heap path
   of the current code A/B against ``--ab-commit`` (the code before operators kept state
   in off-heap backends; loaded from git), equal outputs asserted.

Prints the figures; ``--write`` appends them to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import raystream as rs
from raystream.checkpoint import (
    CheckpointStorage,
    RocksDBKeyedStateBackend,
    RocksDBStateBackend,
    ValueStateDescriptor,
)
from raystream.checkpoint.coordinator import METADATA_FORMAT
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.local_runtime import run_in_process

from .datagen import ensure_parquet

MAXP = 128
FULL = KeyGroupRange(0, MAXP - 1)


def rss_mb() -> float:
    """Resident set size of this process now (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def disk_bytes(directory: str) -> int:
    """Bytes of the files under ``directory``, each hard-linked file once (a local snapshot
    is hard links of the database's SST files)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for d, _, files in os.walk(directory):
        for f in files:
            st = os.stat(os.path.join(d, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def key(i: int) -> str:
    return f"user-{i:019d}"  # 24 bytes


def value(i: int, version: int = 0) -> str:
    return f"v{version}-{i:012d}-{'x' * 24}"  # ~40 bytes


class CountingStorage(CheckpointStorage):
    """Counts the bytes every checkpoint writes (shared files and state files)."""

    written = 0

    def write_shared(self, job_id: str, checkpoint_id: int, name: str, data: bytes) -> Any:
        CountingStorage.written += len(data)
        return super().write_shared(job_id, checkpoint_id, name, data)

    def write_state(self, job_id: str, checkpoint_id: int, name: str, data: bytes) -> Any:
        CountingStorage.written += len(data)
        return super().write_state(job_id, checkpoint_id, name, data)


def heap_bytes_per_key(n: int) -> float:
    """RSS growth per key of the heap backend holding ``n`` keys (in a fresh child process,
    so this process's allocator state does not blur it)."""
    code = (
        "from benchmarks.bench_rocksdb import rss_mb, key, value, FULL, MAXP\n"
        "from raystream.checkpoint import HeapKeyedStateBackend, ValueStateDescriptor\n"
        "b = HeapKeyedStateBackend(FULL, MAXP); s = b.get_state(ValueStateDescriptor('v'))\n"
        "before = rss_mb()\n"
        f"for i in range({n}):\n"
        "    b.set_current_key(key(i)); s.update(value(i))\n"
        "print((rss_mb() - before) * 1024 * 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip()) / n


def settle(backend: RocksDBKeyedStateBackend, timeout_s: float = 120.0) -> float:
    """Wait until RocksDB runs no compaction or flush and the page cache's dirty pages are
    on disk (``os.sync``); returns the seconds waited. (A compaction RocksDB marks as pending
    is only scheduled by the next write: waiting for none pending would wait forever.)"""
    db = backend._db.raw
    t0 = time.perf_counter()
    props = ("rocksdb.num-running-compactions", "rocksdb.num-running-flushes")
    while any(db.property_int_value(p) for p in props) and time.perf_counter() - t0 < timeout_s:
        time.sleep(0.1)
    os.sync()
    return time.perf_counter() - t0


def large_state(keys: int, workdir: str, cache: int, rounds: int) -> dict:
    b = RocksDBKeyedStateBackend(FULL, MAXP, local_dir=os.path.join(workdir, "local"), cache_size=cache)
    s = b.get_state(ValueStateDescriptor("v"))
    base_rss = rss_mb()
    peak = base_rss
    t = time.perf_counter()
    for i in range(keys):
        b.set_current_key(key(i))
        s.update(value(i))
        if i % 200_000 == 0:
            peak = max(peak, rss_mb())
    load_s = time.perf_counter() - t
    peak = max(peak, rss_mb())
    storage = CountingStorage(os.path.join(workdir, "chk"))
    sb = RocksDBStateBackend(cache_size=cache)
    written: dict[int, dict] = {}

    def checkpoint(cid: int, full: bool = False) -> tuple[float, float, int, str]:
        """(seconds on the task thread, seconds in all, bytes written, snapshot kind)."""
        before = CountingStorage.written
        t0 = time.perf_counter()
        snap = take(cid, full)
        sync_s = time.perf_counter() - t0
        h = sb.write_snapshot(storage, "bench", cid, "op/0-keyed", snap)
        kind = "delta" if type(snap).__name__ == "DeltaSnapshot" else "materialized"
        done_s = time.perf_counter() - t0
        written[cid] = {"format": METADATA_FORMAT, "job_id": "bench", "checkpoint_id": cid, "max_parallelism": MAXP,
                        "operators": {"op": {"parallelism": 1, "subtasks": {0: {"keyed": h, "committables": []}}}},
                        "carried_committables": {}}
        storage.write_metadata("bench", cid, written[cid])
        storage.retain("bench", 2)
        return sync_s, done_s, CountingStorage.written - before, kind

    def take(cid: int, full: bool) -> Any:
        if not full:
            return b.snapshot(cid)
        try:
            return b.snapshot(cid, full=True)  # a self-contained checkpoint: every file uploaded
        except TypeError:  # (code before snapshot(full=): forget the uploads instead)
            b.uploads.reset({})
            return b.snapshot(cid)

    full = checkpoint(1)
    peak = max(peak, rss_mb())
    # The rounds measure steady state: after the bulk load and its full checkpoint RocksDB
    # may still compact and the kernel writes the uploaded 200+ MB back to disk, which slows
    # whatever runs next (the first delta: 3-10x); the same settling precedes the full
    # reference checkpoint, so neither side of the ratio carries the other's tail.
    settle_s = [settle(b)]
    incremental = []
    step = 100  # 1% of the keys, spread over the whole key space
    for r in range(rounds):
        t0 = time.perf_counter()
        for i in range(r % step, keys, step):
            b.set_current_key(key(i))
            s.update(value(i, r + 1))
        update_s = time.perf_counter() - t0
        incremental.append((*checkpoint(r + 2), update_s))
        peak = max(peak, rss_mb())
    # the reference: the same work (1% of the keys changed since the last checkpoint), then a
    # full self-contained checkpoint instead of an incremental one
    for i in range(rounds % step, keys, step):
        b.set_current_key(key(i))
        s.update(value(i, rounds + 1))
    settle_s.append(settle(b))
    full_end = checkpoint(rounds + 2, full=True)
    disk = disk_bytes(b.local_directory)
    probe = [key(i) for i in range(0, keys, max(1, keys // 1000))]
    expect = []
    for k in probe:
        b.set_current_key(k)
        expect.append(s.value())
    b.close()
    # restore time: the last checkpoint before the full one (a base and its chain of deltas)
    # and the full one (self-contained, no deltas), each into a fresh backend
    restores = {}
    for what, cid in (("chain", rounds + 1), ("full", rounds + 2)):
        t0 = time.perf_counter()
        plan, _ = sb.restore_plan(written[cid], storage.read_state,
                                  [{"id": 0, "parallelism": 1, "uids": ["op"], "source_uid": None}], MAXP)
        r = RocksDBKeyedStateBackend(FULL, MAXP, local_dir=os.path.join(workdir, f"restore-{what}"), cache_size=cache)
        r.restore([sb.deserialize_snapshot(x, FULL) for x in plan[(0, 0)]["op"]["keyed"]])
        restores[what] = time.perf_counter() - t0
        rs_ = r.get_state(ValueStateDescriptor("v"))
        got = []
        for k in probe:
            r.set_current_key(k)
            got.append(rs_.value())
        r.close()
        if got != expect:
            raise AssertionError(f"the restore from checkpoint {cid} ({what}) differs from the state it saved")
    last_base = max([i for i, x in enumerate(incremental) if x[3] != "delta"], default=-1)
    chain_len = rounds - 1 - last_base if incremental and incremental[-1][3] == "delta" else 0
    return {"load_s": load_s, "base_rss": base_rss, "peak_rss": peak, "full": full, "full_end": full_end, "settle_s": settle_s,
            "incremental": incremental, "disk_mb": disk / 2**20, "restores": restores, "chain_len": chain_len}


class RunningSum(rs.KeyedProcessFunction):
    """The keyed record workload's running sum in keyed state."""

    def open(self, ctx: Any) -> None:
        self.total = ctx.get_state(ValueStateDescriptor("total", default=0))

    def process_element(self, value: dict, ctx: Any) -> Any:
        total = self.total.value() + value["value"]
        self.total.update(total)
        return ()


def keyed_job(path: str, backend: str | RocksDBStateBackend) -> float:
    env = rs.StreamEnvironment(parallelism=1).set_state_backend(backend)
    env.read_parquet(path, batch_size=65536).key_by("key").process(RunningSum()).collect()
    graph, config = env.get_job_graph(), env._job_config("bench-rocksdb")
    t = time.perf_counter()
    run_in_process(graph, config)
    return time.perf_counter() - t


# -- 4. operators' own state -------------------------------------------------------------


def _old_keyed(commit: str) -> Any:
    """``operators/keyed.py`` and ``operators/timers.py`` as they were at ``commit``."""
    import importlib.util

    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=os.path.dirname(os.path.dirname(__file__)),
                              capture_output=True, text=True, check=True).stdout

    def load(name: str, source: str) -> Any:
        path = os.path.join(tempfile.mkdtemp(prefix="raystream-ab-"), f"{name}.py")
        with open(path, "w") as f:
            f.write(source)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    load("_ab_old_timers", show("operators/timers.py"))
    keyed = show("operators/keyed.py")
    keyed = (keyed.replace("from .functions import", "from raystream.operators.functions import")
             .replace("from .time import", "from raystream.operators.time import")
             .replace("from .timers import", "from _ab_old_timers import"))
    return load("_ab_old_keyed", keyed)


def _sum(a: dict, b: dict) -> dict:
    return {"key": a["key"], "value": a["value"] + b["value"], "ts": b["ts"]}


class TimerTotals(rs.KeyedProcessFunction):
    """A running sum per key in ValueState and an event-time timer at the end of the record's
    second (one per key and second, deduplicated), which emits the key's sum."""

    def open(self, ctx: Any) -> None:
        self.total = ctx.get_state(ValueStateDescriptor("total", default=0))

    def process_element(self, value: dict, ctx: Any) -> Any:
        self.total.update(self.total.value() + value["value"])
        ctx.timer_service().register_event_time_timer(value["ts"] - value["ts"] % 1000 + 999)
        return ()

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        yield (ctx.get_current_key(), timestamp, self.total.value())


def _run_operator(module: Any, workload: str, backend: Any, batches: list[list[dict]]) -> tuple[float, list]:
    """CPU seconds of one operator over ``batches`` in an OperatorHarness; its output."""
    from raystream.engine.partitioners import KeySelector
    from raystream.operators.testing import OperatorHarness
    from raystream.operators.time import TimestampAssigner

    if workload == "reduce":
        op = module.ReduceOperator(KeySelector("key"), _sum)
    else:
        op = module.KeyedProcessOperator(KeySelector("key"), TimerTotals(), TimestampAssigner(column="ts"))
    h = OperatorHarness(op, state_backend=backend)
    out: list = []
    t = time.process_time()
    for b in batches:
        h.process(b)
        if workload == "timers":
            h.advance_watermark(b[-1]["ts"])
        out.extend(h.take())
    if workload == "timers":
        h.advance_watermark(2**62)
        out.extend(h.take())
    cpu = time.process_time() - t
    close = getattr(h.ctx.keyed_backend, "close", None)
    if close is not None:
        close()
    return cpu, out


def operator_state(n: int, rounds: int, commit: str, cache: int) -> list[str]:
    import statistics

    from raystream.checkpoint import HeapStateBackend
    from raystream.operators import keyed as new_keyed

    from .datagen import iter_batches

    batches = [rb.to_pylist() for rb in iter_batches(n, 8192)]
    old = _old_keyed(commit)
    lines = []
    for workload in ("reduce", "timers"):
        ab: list[float] = []
        rh: list[float] = []
        cpu: dict[str, list[float]] = {"old": [], "new": [], "rocksdb": []}
        outs: dict[str, list] = {}
        _run_operator(new_keyed, workload, HeapStateBackend(), batches[:2])  # warm-up
        for r in range(rounds):
            order = ("old", "new", "rocksdb") if r % 2 == 0 else ("rocksdb", "new", "old")
            got = {}
            for which in order:
                module = old if which == "old" else new_keyed
                backend = RocksDBStateBackend(cache_size=cache) if which == "rocksdb" else HeapStateBackend()
                got[which], out = _run_operator(module, workload, backend, batches)
                cpu[which].append(got[which])
                outs.setdefault(which, sorted(map(repr, out)))
            ab.append(got["new"] / got["old"])
            rh.append(got["rocksdb"] / got["new"])
        assert outs["old"] == outs["new"] == outs["rocksdb"], f"{workload}: outputs differ"
        what = "reduce (record API)" if workload == "reduce" else "KeyedProcessFunction + event-time timer per record"
        med = {k: statistics.median(v) for k, v in cpu.items()}
        lines.append(
            f"{what}, {n:,} events, p=1 OperatorHarness, {rounds} alternating rounds (CPU s median): "
            f"heap old {med['old']:.2f} / heap new {med['new']:.2f} / rocksdb {med['rocksdb']:.2f}; "
            f"heap new/old per round {' '.join(f'{x:.3f}' for x in ab)} (median {statistics.median(ab):.3f}); "
            f"rocksdb/heap {statistics.median(rh):.2f}x time = {1 / statistics.median(rh):.2f}x heap throughput"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_rocksdb", description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=10_000_000, help="keys of the large state")
    p.add_argument("--heap-keys", type=int, default=1_000_000, help="keys to measure the heap backend's memory on")
    p.add_argument("--budget-mb", type=int, default=1024, help="the task's memory budget")
    p.add_argument("--cache", type=int, default=65_536, help="read cache entries")
    p.add_argument("--rounds", type=int, default=3, help="rounds of 1%% changes + checkpoint")
    p.add_argument("--n", type=int, default=1_000_000, help="events of the keyed record workload")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-large", action="store_true", help="only the throughput part")
    p.add_argument("--skip-throughput", action="store_true", help="only the large-state part")
    p.add_argument("--operators", action="store_true", help="only part 4: operators' own state (reduce, timers)")
    p.add_argument("--op-n", type=int, default=200_000, help="events of part 4")
    p.add_argument("--op-rounds", type=int, default=5, help="alternating rounds of part 4")
    p.add_argument("--ab-commit", default="b4fb7d2", help="the code part 4 compares the heap path against")
    p.add_argument("--write", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    lines = [f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"]
    if args.operators:
        lines += operator_state(args.op_n, args.op_rounds, args.ab_commit, max(args.cache, 16_384))
        text = "\n".join(lines)
        print(text)
        if args.write:
            cmd = "python -m benchmarks.bench_rocksdb " + " ".join(argv if argv is not None else sys.argv[1:])
            with open(os.path.join(os.path.dirname(__file__), "RESULTS.md"), "a") as f:
                f.write(f"\n### RocksDB: operators' own state (reduce, timers)\n\n`{cmd}`\n\n```\n{text}\n```\n")
        return 0
    workdir = tempfile.mkdtemp(prefix="raystream-bench-rocksdb-")
    shown = 0
    try:
        if not args.skip_large:
            per_key = heap_bytes_per_key(args.heap_keys)
            r = large_state(args.keys, workdir, args.cache, args.rounds)
            sync_s, total_s, full_bytes, _ = r["full"]
            end_sync, end_s, end_bytes, _ = r["full_end"]
            lines += [
                f"large state: {args.keys:,} keys loaded into RocksDB in {r['load_s']:.1f} s "
                f"({args.keys / r['load_s'] / 1e3:.0f} k keys/s); RSS {r['base_rss']:.0f} MB before, "
                f"peak {r['peak_rss']:.0f} MB (budget {args.budget_mb} MB); local disk {r['disk_mb']:.0f} MB",
                f"heap backend: {per_key:.0f} B/key measured on {args.heap_keys:,} keys -> "
                f"{per_key * args.keys / 2**20:.0f} MB projected for {args.keys:,} keys "
                f"({per_key * args.keys / 2**20 / args.budget_mb:.1f}x the budget)",
                f"full checkpoint after loading: {total_s:.2f} s ({sync_s:.2f} s on the task thread), "
                f"{full_bytes / 2**20:.1f} MB; then {r['settle_s'][0]:.1f} s until RocksDB's compactions and the "
                f"page cache's writeback were done (and {r['settle_s'][1]:.1f} s before the full reference below)",
                f"full (self-contained) checkpoint after one more 1% round: {end_s:.2f} s ({end_sync:.3f} s "
                f"on the task thread), {end_bytes / 2**20:.1f} MB  <- the reference of the ratios below",
            ]
            for n, (inc_sync, inc_total, inc_bytes, kind, update_s) in enumerate(r["incremental"], 1):
                lines.append(
                    f"1% changed, round {n} ({kind}): checkpoint {inc_total:.3f} s ({inc_sync:.3f} s on the task "
                    f"thread) = {inc_total / end_s:.1%} of full ({inc_sync / end_sync:.1%} on the task thread); "
                    f"{inc_bytes / 2**20:.2f} MB = {inc_bytes / end_bytes:.1%} of full "
                    f"(updating the keys took {update_s:.2f} s)"
                )
            inc = r["incremental"]
            rest = r["restores"]
            lines.append(
                f"restore into a fresh backend (1,000 keys checked): from the last delta checkpoint (its base and "
                f"{r['chain_len']} deltas) {rest['chain']:.2f} s, from the full checkpoint {rest['full']:.2f} s "
                f"= {rest['chain'] / rest['full']:.2f}x"
            )
            lines.append(
                f"mean of {len(inc)} rounds: checkpoint {sum(x[1] for x in inc) / len(inc) / end_s:.1%} of full "
                f"({sum(x[0] for x in inc) / len(inc) / end_sync:.1%} on the task thread); bytes "
                f"{sum(x[2] for x in inc) / len(inc) / end_bytes:.1%} of full; rounds within 5%: time "
                f"{sum(x[1] <= 0.05 * end_s for x in inc)}/{len(inc)}, bytes {sum(x[2] <= 0.05 * end_bytes for x in inc)}"
                f"/{len(inc)}"
            )
            print("\n".join(lines), flush=True)  # (the large-state part, as soon as it is done)
            shown = len(lines)
        if args.skip_throughput:
            return 0
        path = str(ensure_parquet(os.path.join(tempfile.gettempdir(), "raystream-bench"), args.n))
        warm = RocksDBStateBackend(cache_size=max(args.cache, 16_384))
        times: dict[str, list[float]] = {"heap": [], "rocksdb": []}
        keyed_job(path, "heap")  # warm-up (imports, parquet cache)
        for _ in range(args.repeat):  # alternating: the machine's load drifts
            times["heap"].append(keyed_job(path, "heap"))
            times["rocksdb"].append(keyed_job(path, warm))
        heap, rocks = min(times["heap"]), min(times["rocksdb"])
        lines.append(
            f"keyed record workload (events({args.n:,}), running sum in ValueState, p=1 in process, best of "
            f"{args.repeat}): heap {args.n / heap / 1e3:.0f} k ev/s, rocksdb (warm cache) {args.n / rocks / 1e3:.0f} "
            f"k ev/s = {heap / rocks:.2f}x heap"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = "\n".join(lines)
    print("\n".join(lines[shown:]))
    if args.write:
        cmd = "python -m benchmarks.bench_rocksdb " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(os.path.join(os.path.dirname(__file__), "RESULTS.md"), "a") as f:
            f.write(f"\n## RocksDB state backend (issue 16)\n\n`{cmd}`\n\n```\n{text}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
