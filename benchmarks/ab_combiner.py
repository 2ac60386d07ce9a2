"""A/B of the window combiner (pre-aggregation before the key_by shuffle) on Ray: each
window workload of ``bench_engine`` with ``combine=True`` and ``combine=False``, at p=1 and
p=2, alternating within each round after a warm-up; medians of the per-round
combined/uncombined wall-time ratios (> 1: the combiner is faster), outputs asserted equal.

    RAY_ADDRESS=local python -m benchmarks.ab_combiner --n 2000000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from benchmarks import bench_engine
from benchmarks.datagen import ensure_parquet


def _timed(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - a thin timer
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    path = str(ensure_parquet(f"benchmarks/data/events_{args.n}.parquet", args.n))
    bench_engine._setup()
    try:
        print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
        for name, fn in (("vectorized window", bench_engine.window_batch), ("record window", bench_engine.window_record)):
            for p in (1, 2):
                fn(path, p, combine=True)  # warm-up
                ratios = []
                for r in range(args.rounds):
                    times, outs = {}, {}
                    for combine in ((True, False) if r % 2 == 0 else (False, True)):
                        times[combine], out = _timed(fn, path, p, combine=combine)
                        outs[combine] = sorted(map(repr, out.to_pylist() if hasattr(out, "to_pylist") else out))
                    assert outs[True] == outs[False], f"{name} p={p}: combined and uncombined outputs differ"
                    ratios.append(times[False] / times[True])
                print(f"{name:18s} p={p}: combined speed / uncombined: median {statistics.median(ratios):.2f}x "
                      f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}); load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        bench_engine._teardown()


if __name__ == "__main__":
    main(sys.argv[1:])
