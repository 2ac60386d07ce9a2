"""A/B of the operator test harness: the one that drives a real Task step by step (now)
against the stand-alone harness it replaced (its source from git, commit 6955a22^), on the
window workloads of ``bench_window`` (which run through the harness). Rounds alternate;
the ratio is new/old CPU-time per round, median reported.

    python -m benchmarks.ab_harness --n 400000 --rounds 7
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import bench_window
from benchmarks.datagen import ensure_parquet
from raystream.operators import testing as new_testing

ROOT = Path(__file__).resolve().parents[1]


def _old_harness(commit: str) -> type:
    source = subprocess.run(["git", "show", f"{commit}:operators/testing.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    source = source.replace("from .functions import OutputTag", "from raystream.operators.functions import OutputTag")
    path = Path(tempfile.mkdtemp()) / "old_testing.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_testing", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OperatorHarness


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=400_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--commit", default="6955a22^")
    args = ap.parse_args(argv)
    path = str(ensure_parquet(f"benchmarks/data/events_{args.n}.parquet", args.n))
    harnesses = {"old": _old_harness(args.commit), "new": new_testing.OperatorHarness}
    for name in ("window_vectorized", "window_record", "window_record_reduce"):
        fn = getattr(bench_window, name)
        ratios, results = [], {}
        for r in range(args.rounds):
            times = {}
            for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
                bench_window.OperatorHarness = harnesses[which]  # type: ignore[attr-defined]
                t0 = time.process_time()
                out = fn(path)
                times[which] = time.process_time() - t0
                results.setdefault(which, sorted(map(repr, out)))
            ratios.append(times["new"] / times["old"])
        assert results["old"] == results["new"], f"{name}: the two harnesses disagree"
        print(f"{name:22s} new/old CPU time: median {statistics.median(ratios):.3f}  "
              f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})", flush=True)
    bench_window.OperatorHarness = new_testing.OperatorHarness  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
