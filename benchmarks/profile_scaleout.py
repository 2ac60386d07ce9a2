"""Where the time of each task goes at p=1 and p=2, for the six scale-out workloads.

Every task's mailbox thread runs under cProfile (``RAYSTREAM_PROFILE=DIR``, read by
``engine/executor.py`` in each task executor) and reports its wall time and *thread CPU* time;
the driver's own CPU time is measured around the job (the collect). Per task it prints the
functions with the most own time, grouped by what they are: the exchange (Ray actor calls,
waiting for credits), hash partitioning (key groups), idle (waiting for mail), reading,
serialization, operator work.

    python -m benchmarks.profile_scaleout                         # all six workloads
    python -m benchmarks.profile_scaleout batch/window --top 12   # one, with top functions

Profiling slows the record API down (cProfile hooks every Python call): read the split of
time, not the rates.
"""

from __future__ import annotations

import argparse
import glob
import io
import logging
import os
import pstats
import shutil
import tempfile
import time

__all__ = ["main"]

CATEGORIES = (
    ("exchange", ("ray/actor.py", "_private/worker.py", "channels.py:", "_wait_for_credit")),
    ("hash partitioning", ("keygroups.py", "partitioners.py")),
    ("idle (waiting for mail)", ("SimpleQueue", "'acquire'")),
    ("Parquet read", ("parquet/core.py",)),
    ("Arrow <-> records", ("records.py", "<listcomp>")),
)


def _category(func: tuple) -> str:
    text = f"{func[0]}:{func[1]}({func[2]})"
    for name, needles in CATEGORIES:
        if any(n in text for n in needles):
            return name
    return "operators and the rest"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_scaleout", description=__doc__.splitlines()[0])
    ap.add_argument("workloads", nargs="?", default="batch/stateless,batch/keyed_sum,batch/window,"
                    "record/stateless,record/keyed_sum,record/window")
    ap.add_argument("--data", default="benchmarks/data/events_2M.parquet")
    ap.add_argument("--top", type=int, default=0, help="also print the N functions with most own time per task")
    args = ap.parse_args(argv)
    out_dir = tempfile.mkdtemp(prefix="raystream-profile-")
    os.environ["RAYSTREAM_PROFILE"] = out_dir  # inherited by the task executors of this driver's Ray
    import ray

    from benchmarks import bench_engine as be
    from benchmarks import datagen

    datagen.ensure_parquet(args.data, 2_000_000)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    be._setup()
    jobs = {"batch/stateless": be.stateless_batch, "batch/keyed_sum": be.keyed_sum_batch,
            "batch/window": be.window_batch, "record/stateless": be.stateless_record,
            "record/keyed_sum": be.keyed_sum_record, "record/window": be.window_record}
    try:
        for name in args.workloads.split(","):
            fn = jobs[name]
            for p in (1, 2):
                fn(args.data, parallelism=p)  # warm
                for f in glob.glob(os.path.join(out_dir, "*")):
                    os.remove(f)
                t, c = time.perf_counter(), time.process_time()
                fn(args.data, parallelism=p)
                wall, driver_cpu = time.perf_counter() - t, time.process_time() - c
                time.sleep(0.3)  # the executors write their profiles as their threads end
                print(f"== {name} p={p}: job wall {wall:.2f} s, driver CPU {driver_cpu:.2f} s")
                for prof in sorted(glob.glob(os.path.join(out_dir, "*.prof"))):
                    task, twall, tcpu = open(prof[:-5] + ".wall").read().strip().split("\t")
                    stats = pstats.Stats(prof, stream=io.StringIO())
                    split: dict[str, float] = {}
                    for func, (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
                        split[_category(func)] = split.get(_category(func), 0.0) + tt
                    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(split.items(), key=lambda kv: -kv[1]) if v >= 0.01)
                    print(f"   {task[:40]:40s} {twall}, {tcpu} | {parts}")
                    if args.top:
                        buf = io.StringIO()
                        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.top)
                        print("\n".join("      " + ln for ln in buf.getvalue().splitlines() if "(" in ln))
    finally:
        ray.shutdown()
        shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
