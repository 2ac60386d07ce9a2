"""A/B of the heap path of the keyed operators that keep their state in the keyed backend
on RocksDB (issue 16: windows, sessions, window joins, interval joins, field aggregates):
the code of commit ``--new`` (default HEAD) against the same tree with the files ``--only``
taken from commit ``--commit`` (or, without ``--only``, all of commit ``--commit``), each
extracted with ``git archive`` into a temporary directory (the working tree, which other
work may be changing, is never measured), both on the heap backend, where the operators
must run as fast as before.

Each round runs every workload ``--reps`` times per tree (the least CPU time counts: the
machine is shared), in a fresh subprocess per tree (alternating which tree goes first);
the figure is the median over rounds of new/old per workload. Outputs of both trees are
compared (sha256 of the sorted output) and must be equal. ``--rocksdb`` also runs the new
code on the RocksDB backend (state in the keyed backend, read cache ``--cache`` entries)
and reports RocksDB/heap time; its output must be the same records.

``--memory KEYS`` instead measures memory: KEYS keys with an open window of 5 records each
(record-API tumbling window, list contents), RSS growth of a fresh process on each backend.

    python -m benchmarks.ab_offheap --memory 300000
    python -m benchmarks.ab_offheap --commit d95a678 --n 200000 --rounds 5 \
        --only operators/window_operator.py operators/join_operators.py operators/keyed_final.py \
               operators/timers.py operators/two_input.py operators/keyed.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- workloads
# (run inside the subprocess, with the tree under test first on sys.path)


def _records(n: int) -> list[tuple[str, int, int]]:
    """``(key, ts, value)``: 200 keys, 2 records per ms, slightly out of order, a 500 ms pause
    every 10,000 records (sessions end there); ~5 records per key and 1 s window."""
    return [(f"k{(i * 7919) % 200:03d}", i // 2 + 500 * (i // 10_000) + (i * 31) % 7, i % 101) for i in range(n)]


def _drive(op: Any, rows: list, inputs: int = 1, chunk: int = 2000) -> list:
    from raystream.operators.testing import OperatorHarness

    h = OperatorHarness(op, state_backend=_BACKEND[0]() if _BACKEND else None)
    for s in range(0, len(rows), chunk):
        part = rows[s:s + chunk]
        for side in range(inputs):
            h.process(part, side)
        for side in range(inputs):
            h.advance_watermark(part[-1][1] - 20, side)
    h.end_input()
    return h.records()


def _workloads() -> dict[str, Callable[[list], list]]:
    from raystream.engine.partitioners import KeySelector
    from raystream.operators.joins import CoGroupWindowOperator, IntervalJoinOperator, _CoGroup
    from raystream.operators.keyed_final import FieldAggregateOperator
    from raystream.operators.time import TimestampAssigner
    from raystream.operators.window_operator import REDUCE, WindowOperator
    from raystream.operators.windows import (
        EventTimeSessionWindows,
        SlidingEventTimeWindows,
        TumblingEventTimeWindows,
    )

    key, ts = KeySelector(0), TimestampAssigner(column=1)

    def add(a: tuple, b: tuple) -> tuple:
        return (a[0], a[1], a[2] + b[2])

    return {
        "tumbling (panes)": lambda rows: _drive(
            WindowOperator(key.key_of, TumblingEventTimeWindows.of(1000), REDUCE, add, timestamp_assigner=ts), rows),
        "tumbling + lateness": lambda rows: _drive(
            WindowOperator(key.key_of, TumblingEventTimeWindows.of(1000), REDUCE, add, allowed_lateness=10,
                           timestamp_assigner=ts), rows),
        "sliding": lambda rows: _drive(
            WindowOperator(key.key_of, SlidingEventTimeWindows.of(2000, 1000), REDUCE, add, timestamp_assigner=ts),
            rows),
        "sessions": lambda rows: _drive(
            WindowOperator(key.key_of, EventTimeSessionWindows.with_gap(300), REDUCE, add, timestamp_assigner=ts), rows),
        "window join": lambda rows: _drive(
            CoGroupWindowOperator((key, key), (ts, ts), TumblingEventTimeWindows.of(1000),
                                  _CoGroup(lambda k, ls, rs: [(k, len(ls), len(rs))], None)), rows, inputs=2),
        "interval join": lambda rows: _drive(
            IntervalJoinOperator((key, key), (ts, ts), -1, 1, lambda a, b: (a[1], b[1])), rows, inputs=2),
        "field sum (final)": lambda rows: _drive(FieldAggregateOperator(key, 2, "sum"), rows),
    }


#: in the child: a factory of the state backend to run on (empty: the harness's heap default)
_BACKEND: list[Callable[[], Any]] = []


def _child(n: int, reps: int = 1, cache: int = 0) -> None:
    if cache:
        from raystream.checkpoint.backends import RocksDBStateBackend

        _BACKEND.append(lambda: RocksDBStateBackend(cache_size=cache))
    rows = _records(n)
    result = {}
    for name, fn in _workloads().items():
        cpu = float("inf")
        for _ in range(reps):
            t0 = time.process_time()
            out = fn(rows)
            cpu = min(cpu, time.process_time() - t0)
        digest = hashlib.sha256("\n".join(sorted(map(repr, out))).encode()).hexdigest()[:16]
        result[name] = {"cpu_s": cpu, "digest": digest, "records": len(out)}
    print(json.dumps(result))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_child(keys: int, backend: str) -> None:
    """RSS growth of ``keys`` open windows (5 records each) on ``backend``."""
    from raystream.engine.partitioners import KeySelector
    from raystream.operators.testing import OperatorHarness
    from raystream.operators.time import TimestampAssigner
    from raystream.operators.window_operator import LIST, WindowOperator
    from raystream.operators.windows import TumblingEventTimeWindows

    state_backend = None
    if backend == "rocksdb":
        from raystream.checkpoint.backends import RocksDBStateBackend

        state_backend = RocksDBStateBackend()
    op = WindowOperator(KeySelector(0).key_of, TumblingEventTimeWindows.of(10**9), LIST, None,
                        timestamp_assigner=TimestampAssigner(column=1))
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("warm-up", 1, 0)])
    before = _rss_mb()
    chunk = 10_000
    for s in range(0, keys, chunk):
        for rep in range(5):
            h.process([(f"key-{k:09d}", 1000 + rep, k * 5 + rep) for k in range(s, min(keys, s + chunk))])
    after = _rss_mb()
    print(json.dumps({"backend": backend, "open_windows": op.num_open_windows(), "rss_growth_mb": after - before,
                      "rss_mb": after}))


# ---------------------------------------------------------------------------- driver


def _memory(keys: int) -> None:
    for backend in ("heap", "rocksdb"):
        code = f"from benchmarks.ab_offheap import _memory_child; _memory_child({keys}, {backend!r})"
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"memory run on {backend} failed: {out.stderr[-2000:]}")
        got = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{backend:8s} {got['open_windows']:,} open windows (5 records each): RSS +{got['rss_growth_mb']:.0f} MB "
              f"(process {got['rss_mb']:.0f} MB)", flush=True)


def _extract(commit: str) -> str:
    path = tempfile.mkdtemp(prefix="raystream-ab-")
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
    return path


def _checkout_files(tree: str, commit: str, paths: list[str]) -> None:
    """Replace ``paths`` in ``tree`` by their version at ``commit`` (deleted if absent there)."""
    for p in paths:
        shown = subprocess.run(["git", "show", f"{commit}:{p}"], cwd=ROOT, capture_output=True)
        target = Path(tree) / p
        if shown.returncode != 0:
            target.unlink(missing_ok=True)
        else:
            target.write_bytes(shown.stdout)


def _run_tree(tree: str, n: int, reps: int, cache: int = 0) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=tree)
    code = (f"import sys; sys.path.insert(0, {tree!r}); from benchmarks.ab_offheap import _child; "
            f"_child({n}, {reps}, {cache})")
    # (the child imports this module from the tree under test when it has one, else from ROOT)
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the workloads failed in {tree}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory", type=int, default=0, metavar="KEYS", help="measure memory instead (see above)")
    ap.add_argument("--commit", help="the baseline commit (old code)")
    ap.add_argument("--new", default="HEAD", help="the commit of the new code")
    ap.add_argument("--only", nargs="*", default=None,
                    help="old = the new tree with only these files from --commit")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="runs per workload per round (least CPU time counts)")
    ap.add_argument("--rocksdb", action="store_true", help="also the new code on the RocksDB backend")
    ap.add_argument("--cache", type=int, default=65_536, help="RocksDB read cache entries (--rocksdb)")
    args = ap.parse_args(argv)
    if args.memory:
        _memory(args.memory)
        return
    if not args.commit:
        ap.error("--commit is required for the A/B")
    new = _extract(args.new)
    if args.only:
        old = _extract(args.new)
        _checkout_files(old, args.commit, args.only)
    else:
        old = _extract(args.commit)
    for tree in (old, new):  # both trees run this file's workloads
        (Path(tree) / "benchmarks" / "ab_offheap.py").write_text(Path(__file__).read_text())
    trees = {"old": old, "new": new}
    ratios: dict[str, list[float]] = {}
    rocks: dict[str, list[float]] = {}
    digests: dict[str, dict[str, str]] = {}
    for r in range(args.rounds):
        times: dict[str, dict[str, Any]] = {}
        for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
            times[which] = _run_tree(trees[which], args.n, args.reps)
        if args.rocksdb:
            on_rocksdb = _run_tree(new, args.n, args.reps, args.cache)
            for name, got in on_rocksdb.items():
                assert got["records"] == times["new"][name]["records"], f"{name}: RocksDB emitted other records"
                rocks.setdefault(name, []).append(got["cpu_s"] / times["new"][name]["cpu_s"])
        for name in times["new"]:
            ratios.setdefault(name, []).append(times["new"][name]["cpu_s"] / times["old"][name]["cpu_s"])
            for which in ("old", "new"):
                d = digests.setdefault(name, {}).setdefault(which, times[which][name]["digest"])
                assert d == times[which][name]["digest"], f"{name}: {which} output differs between rounds"
        print(f"round {r + 1}: " + ", ".join(f"{k} {times['new'][k]['cpu_s']:.2f}/{times['old'][k]['cpu_s']:.2f}s"
                                             for k in times["new"]), flush=True)
    print(f"\nnew/old CPU time (heap backend), median of {args.rounds} rounds of the least of {args.reps} "
          f"runs (n={args.n}, load {os.getloadavg()[0]:.1f}):")
    for name, rs in ratios.items():
        same = digests[name]["old"] == digests[name]["new"]
        line = f"  {name:22s} {statistics.median(rs):.3f}  (rounds {min(rs):.2f}-{max(rs):.2f}; same output: {same})"
        if name in rocks:
            line += f"; RocksDB/heap time {statistics.median(rocks[name]):.2f}x"
        print(line)
        assert same, f"{name}: old and new outputs differ"


if __name__ == "__main__":
    main()
