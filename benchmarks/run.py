"""Run the standard workloads against the baselines (and engine contenders, if registered).

Usage::

    python -m benchmarks.run --n 2000000 --workloads stateless,keyed_sum,window

Generates ``benchmarks/data/events_<n>.parquet`` if missing (untimed), imports
``benchmarks.bench_engine`` if it exists (it registers engine contenders with
:func:`benchmarks.harness.register`), measures every contender, prints the table and
updates the section for this command in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks import baselines, datagen, harness

__all__ = ["main"]

DATA_DIR = Path(__file__).with_name("data")


def _label(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def _io_floor(path: str, events: int, repeat: int) -> list[harness.Measurement]:
    """What reading the file costs alone: the ceiling for any contender that reads it."""

    def read_arrow() -> int:
        return sum(b.num_rows for b in baselines.read_batches(path))

    def read_rows() -> int:
        return sum(len(b.to_pylist()) for b in baselines.read_batches(path))

    return [
        harness.measure("read Parquet, 8192-row batches", read_arrow, events, repeat),
        harness.measure("read + RecordBatch.to_pylist()", read_rows, events, repeat),
    ]


def _load_engine(log) -> bool:
    try:
        importlib.import_module("benchmarks.bench_window")  # event-time window contenders
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks.bench_window":
            raise
    try:
        importlib.import_module("benchmarks.bench_engine")
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks.bench_engine":
            raise
        log("(no benchmarks/bench_engine.py: baselines only)")
        return False
    return True


#: (api, workload) -> (p=2 contender, p=1 contender) of the scale-out table (issue 15)
SCALE_OUT = {
    (api, w): (f"raystream-{api}", f"raystream-{api}-p1")
    for api in ("batch", "record")
    for w in ("stateless", "keyed_sum", "window")
}
SPEED_UP_TARGET = 1.7


def format_speed_up(results: dict[str, list[harness.Measurement]]) -> str:
    """The p=2 / p=1 table of the same run: ratio of median rates (best rates)."""
    lines = [
        "| p=2 vs p=1 (same run) | stateless | keyed sum | tumbling window |",
        "|---|---:|---:|---:|",
    ]
    for api, label in (("batch", "batch API (`map_batches`, `aggregate`)"),
                       ("record", "record API (`map`/`filter`, `sum`, window `aggregate`)")):
        cells = []
        for w in ("stateless", "keyed_sum", "window"):
            by = {m.name: m for m in results.get(w, [])}
            p2, p1 = (by.get(n) for n in SCALE_OUT[(api, w)])
            if p2 is None or p1 is None or not p2.times or not p1.times:
                cells.append("-")
                continue
            ratio = p2.median / p1.median
            mark = "" if ratio >= SPEED_UP_TARGET else " (<1.7)"
            cells.append(f"**{ratio:.2f}x** ({p2.best / p1.best:.2f}x){mark}")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _nexmark(events: int, repeat: int) -> str:
    """Nexmark queries at p=1 and p=2 on the running Ray (worker pool warm) against the python
    loop, interleaved in the same rounds (``bench_nexmark.run_scale_out``)."""
    from benchmarks import bench_nexmark
    from raystream.jobs import nexmark

    bench_nexmark._warm_up(nexmark.parse_args(["--events", str(events)]), 2)
    results = []
    for q in nexmark.QUERIES:
        args = nexmark.parse_args(["--query", str(q), "--events", str(events)])
        results.append(bench_nexmark.run_scale_out(q, args, (1, 2), repeat, log=print))
    return "\n".join([
        f"Nexmark, {events:,} events, raystream at p=1 and p=2 vs the python loop (end to end on Ray, "
        "generation included, job deployment on the warm worker pool included; same interleaved rounds; "
        "target >= 1.0x):", "",
        bench_nexmark.format_scale_out(results, events), "",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--n", type=int, default=2_000_000, help="events in the data set")
    ap.add_argument("--workloads", default=",".join(baselines.WORKLOADS), help="comma-separated")
    ap.add_argument(
        "--repeat", type=int, default=3, help="timed runs per contender (after a checked warm-up)"
    )
    ap.add_argument(
        "--data", default=None, help="Parquet file (default benchmarks/data/events_<n>.parquet)"
    )
    ap.add_argument(
        "--only", default=None, help="comma-separated engine contender names (baselines always run)"
    )
    ap.add_argument(
        "--no-engine", action="store_true", help="do not import benchmarks.bench_engine"
    )
    ap.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    ap.add_argument("--nexmark", type=int, default=1_000_000, metavar="EVENTS",
                    help="Nexmark events for the p=1 and p=2 query tables (0: skip)")
    args = ap.parse_args(argv)

    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in baselines.WORKLOADS]
    if unknown:
        ap.error(f"unknown workloads {unknown!r}; choose from {baselines.WORKLOADS!r}")
    path = Path(args.data) if args.data else DATA_DIR / f"events_{_label(args.n)}.parquet"
    t = time.perf_counter()
    datagen.ensure_parquet(path, args.n)
    events = pq.ParquetFile(path).metadata.num_rows
    print(f"data: {path} ({events:,} events, ready in {time.perf_counter() - t:.2f} s)")
    if not args.no_engine:
        _load_engine(print)
    only = args.only.split(",") if args.only else None

    results: dict[str, list[harness.Measurement]] = {}
    load0 = harness.load_average()
    harness.sessions_setup()
    try:
        io = _io_floor(str(path), events, args.repeat)
        for w in workloads:
            results[w] = harness.run_workload(w, str(path), events, args.repeat, only)
        nexmark_text = _nexmark(args.nexmark, args.repeat) if args.nexmark and not args.no_engine else ""
    finally:
        harness.sessions_teardown()

    table = harness.format_table(results)
    io_lines = "\n".join(
        f"- {m.name}: {m.median / 1e6:.1f} M ev/s median ({m.best / 1e6:.1f} best)" for m in io
    )
    wrong = [f"{w}/{m.name}" for w, ms in results.items() for m in ms if not m.ok]
    body = "\n".join(
        [
            f"## `{harness.command_line()}`",
            "",
            f"Run {harness.now()}. {harness.machine_line()} "
            f"Load average (1 min) before/after: {load0} / {harness.load_average()}.",
            f"Data: `{path.name}`, {events:,} events; {args.repeat} timed runs per contender after a "
            "digest-checked warm-up, interleaved; rates in millions of events/s; Parquet read inside "
            "the timed region for every contender.",
            "",
            table,
            "",
            "Scale-out, p=2 / p=1 of the same run (median rates; best in parentheses; target >= "
            f"{SPEED_UP_TARGET}x):",
            "",
            format_speed_up(results),
            "",
            "Reading alone (ceiling for every contender):",
            io_lines,
            "",
            nexmark_text,
        ]
        + ([f"\n**Wrong or failed:** {', '.join(wrong)}"] if wrong else [])
    )
    print()
    print(body)
    if not args.no_write:
        harness.update_results(f"run {' '.join(sys.argv[1:] if argv is None else argv)}", body)
        print(f"\nupdated {harness.RESULTS_PATH}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
