"""Where the time of each task goes at p=1 and p=2, for the six scale-out workloads.

Every task's mailbox thread runs under cProfile (``RAYSTREAM_PROFILE=DIR``, read by
``engine/executor.py`` in each task executor; function times are the thread's CPU time, not
the wall clock: a worker setup hook sets the timer) and reports its wall time and *thread CPU* time;
the driver's own CPU time is measured around the job (the collect). Per task it prints the
functions with the most own time, grouped by what they are: the exchange (Ray actor calls,
waiting for credits), hash partitioning (key groups), idle (waiting for mail), reading,
serialization, operator work.

    python -m benchmarks.profile_scaleout                         # all six workloads
    python -m benchmarks.profile_scaleout batch/window --top 12   # one, with top functions

Profiling slows the record API down (cProfile hooks every Python call): read the split of
time, not the rates.

``--cpu`` measures instead, without cProfile, the **CPU seconds of every process** of this
driver's Ray during each job (all threads: Arrow's and Ray's pools included; read from
``/proc`` with psutil before and after the job, the worker pool kept warm): each task actor,
the job master, the raylet, the GCS and the driver. On a machine loaded by other work this
is the figure to compare between p=1 and p=2 (wall clock is not), with the median of
``--repeat`` runs::

    python -m benchmarks.profile_scaleout batch/window --cpu --repeat 5

``--threads`` samples instead the CPU seconds of every OS thread (``/proc``, every 20 ms) of
the task actors, the job master and the driver during each job, by thread name: the mailbox
threads (born with the job, ``(new)``), Ray's threads (the actor's main thread, ``worker.io``,
the gRPC pollers) and the master's::

    python -m benchmarks.profile_scaleout batch/window --threads --repeat 3

``--split`` runs no job: it reads the data set and prints, per subtask of the ``key_by("key")``
edge at ``--parallelism`` (the engine's own key groups), the events, keys and (key, 1 s window)
pairs it receives, and the speed-up bound of a keyed stage whose work is proportional to each
(all work / the busiest subtask's): the benchmark's Zipf keys put ~66% of the raw events on one
subtask at p=2, so a keyed stage that gets every record (the record API's window, which does not
pre-aggregate) cannot run faster than ~1.5x there, while one fed by a combiner (one partial per
key and window) splits evenly::

    python -m benchmarks.profile_scaleout --split --parallelism 2

``nexmark/qN`` profiles a Nexmark query (``--events``) and prints its python loop's CPU
seconds first: ``python -m benchmarks.profile_scaleout nexmark/q7,nexmark/q8 --top 10``.
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
from functools import partial
from typing import Any, Callable

__all__ = ["key_split", "main"]

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


def _thread_cpu_profiles() -> None:
    """In every Ray worker: cProfile times with the thread's CPU clock, not the wall clock
    (on a loaded machine wall time is mostly waiting for a core)."""
    import cProfile

    base = cProfile.Profile

    class ThreadCpuProfile(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if not args and "timer" not in kwargs:
                kwargs["timer"] = time.thread_time
            super().__init__(*args, **kwargs)

    cProfile.Profile = ThreadCpuProfile  # type: ignore[misc]


def _our_processes() -> dict[int, str]:
    """pid -> role of every process of this driver's Ray node (task actors, job master,
    raylet, GCS, the driver itself); other sessions' Ray on the machine is left out."""
    import psutil
    import ray

    node = ray._private.worker._global_node
    out: dict[int, str] = {os.getpid(): "driver"}
    for role in ("raylet", "gcs_server"):
        for info in node.all_processes.get(role, []):
            out[info.process.pid] = role
    for pid in [p for p, r in out.items() if r == "raylet"]:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                title = " ".join(child.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if "TaskActor" in title or "TaskExecutor" in title:
                out[child.pid] = "task actor"
            elif "JobMaster" in title:
                out[child.pid] = "job master"
            elif "default_worker" in title or "ray::" in title:
                out[child.pid] = "ray worker (idle)"
    return out


def _cpu_times(pids: dict[int, str]) -> dict[int, float]:
    import psutil

    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[pid] = t.user + t.system
    return out


def cpu_of_job(fn: Callable[[], Any]) -> tuple[float, dict[str, list[float]]]:
    """Run ``fn`` once; return its wall time and, per role, the CPU seconds each process of
    that role spent meanwhile (largest first; processes that spent < 5 ms left out)."""
    pids = _our_processes()
    before = _cpu_times(pids)
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    pids.update(_our_processes())  # actors started by this job
    after = _cpu_times(pids)
    roles: dict[str, list[float]] = {}
    for pid, cpu in after.items():
        spent = cpu - before.get(pid, 0.0)
        if spent >= 0.005:
            roles.setdefault(pids[pid], []).append(spent)
    return wall, {r: sorted(v, reverse=True) for r, v in roles.items()}


def _cpu_report(name: str, fn: Callable[..., Any], data: str, repeat: int) -> None:
    import statistics

    for p in (1, 2):
        fn(data, parallelism=p)  # warm
    runs: dict[int, list[tuple[float, dict[str, list[float]]]]] = {1: [], 2: []}
    for _ in range(repeat):  # interleaved: load drift hits both parallelisms alike
        for p in (1, 2):
            runs[p].append(cpu_of_job(partial(fn, data, parallelism=p)))
    total = {}
    for p in (1, 2):
        totals = [sum(sum(v) for v in roles.values()) for _w, roles in runs[p]]
        actors = [sum(roles.get("task actor", [])) for _w, roles in runs[p]]
        i = totals.index(statistics.median_low(totals))
        wall, roles = runs[p][i]
        total[p] = statistics.median(totals)
        per = "; ".join(f"{r} " + "+".join(f"{x:.2f}" for x in v) for r, v in sorted(roles.items()))
        print(f"== {name} p={p}: CPU s all processes median {total[p]:.2f} (runs {[round(x, 2) for x in totals]}), "
              f"task actors median {statistics.median(actors):.2f}; median run: wall {wall:.2f} s, {per}")
    print(f"   p=2 / p=1 CPU seconds: {total[2] / total[1]:.2f}x")


def _thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (thread name, CPU seconds) of every thread of process ``pid`` (from /proc)."""
    out: dict[int, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def threads_of_job(fn: Callable[[], Any], every_s: float = 0.02) -> tuple[float, dict[str, dict[str, float]]]:
    """Run ``fn`` once while sampling every thread of this driver's Ray processes (task actors,
    job master, driver) every ``every_s``; return its wall time and, per process (``"<role>
    <pid>"``), the CPU seconds each thread name spent meanwhile. Threads born during the job
    (a task's mailbox thread is ``rs-task-<vertex>-<subtask>``,
    see :func:`~engine.observability.name_native_thread`) are reported as ``"<name> (new)"``; a
    thread's CPU after its last sample is lost (at most ``every_s`` of it)."""
    import threading

    roles = {pid: role for pid, role in _our_processes().items()
             if role in ("task actor", "job master", "driver")}
    before = {pid: _thread_cpu(pid) for pid in roles}
    last: dict[int, dict[int, tuple[str, float]]] = {pid: dict(v) for pid, v in before.items()}
    done = threading.Event()
    sampler_tid: list[int] = []

    def sample() -> None:
        sampler_tid.append(threading.get_native_id())
        while not done.wait(every_s):
            for pid in roles:
                last[pid].update(_thread_cpu(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    done.set()
    sampler.join()
    for pid in roles:
        last[pid].update(_thread_cpu(pid))
    report: dict[str, dict[str, float]] = {}
    for pid, role in roles.items():
        names: dict[str, float] = {}
        for tid, (name, cpu) in last[pid].items():
            if tid in sampler_tid:
                continue
            old = before[pid].get(tid)
            spent = cpu - (old[1] if old else 0.0)
            if spent >= 0.005:
                key = name if old else f"{name} (new)"
                names[key] = names.get(key, 0.0) + spent
        if names:
            report[f"{role} {pid}"] = dict(sorted(names.items(), key=lambda kv: -kv[1]))
    return wall, report


def _threads_report(name: str, fn: Callable[..., Any], data: str, repeat: int) -> None:
    for p in (1, 2):
        fn(data, parallelism=p)  # warm
    for r in range(repeat):  # interleaved: load drift hits both parallelisms alike
        for p in (1, 2):
            wall, report = threads_of_job(partial(fn, data, parallelism=p))
            total = sum(sum(v.values()) for v in report.values())
            actors = sum(sum(v.values()) for k, v in report.items() if k.startswith("task actor"))
            print(f"== {name} p={p} run {r + 1}: wall {wall:.2f} s, CPU {total:.2f} s in all, task actors {actors:.2f} s")
            for proc, names in report.items():
                print(f"   {proc}: " + ", ".join(f"{n} {c:.2f}" for n, c in names.items()))


def key_split(path: str, parallelism: int, window_ms: int = 1000, max_parallelism: int = 128) -> dict[str, list[int]]:
    """Per subtask of a ``key_by("key")`` edge at ``parallelism`` (the engine's routing: key
    groups of :func:`~engine.keygroups.key_groups_of_array`, Flink's range per subtask): how
    many of the file's events, distinct keys and distinct (key, ``window_ms`` tumbling window)
    pairs it receives.

    Example:
        >>> import pyarrow as pa, pyarrow.parquet as pq, tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "e.parquet")
        >>> pq.write_table(pa.table({"key": ["a", "a", "b"], "ts": [0, 1500, 10]}), f)
        >>> split = key_split(f, 1)
        >>> split["events"], split["keys"], split["key windows"]
        ([3], [2], [3])
    """
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from raystream.engine.keygroups import key_groups_of_array

    table = pq.read_table(path, columns=["key", "ts"])
    keys = pc.dictionary_encode(table.column("key")).combine_chunks()
    codes = keys.indices.to_numpy().astype(np.int64)
    subtask_of_key = key_groups_of_array(keys.dictionary, max_parallelism) * parallelism // max_parallelism
    subtask = subtask_of_key[codes]
    window = table.column("ts").to_numpy() // window_ms
    pairs = codes * (int(window.max() - window.min()) + 1) + (window - window.min())
    _, first = np.unique(pairs, return_index=True)
    return {
        "events": np.bincount(subtask, minlength=parallelism).tolist(),
        "keys": np.bincount(subtask_of_key[np.unique(codes)], minlength=parallelism).tolist(),
        "key windows": np.bincount(subtask[first], minlength=parallelism).tolist(),
    }


def _split_report(path: str, parallelism: int) -> None:
    for what, counts in key_split(path, parallelism).items():
        total = sum(counts)
        bound = total / max(counts) if total else float("nan")
        print(f"== key_by('key') at p={parallelism}, {what} per subtask: {counts} "
              f"(busiest {max(counts) / total:.1%}; a stage with work proportional to them: <= {bound:.2f}x p=1)")


def _nexmark_jobs(events: int) -> dict[str, Callable[..., Any]]:
    """``nexmark/qN``: the Nexmark query's dataflow at the given parallelism, as timed by
    ``benchmarks.bench_nexmark`` (generation in the source tasks, results collected)."""
    from benchmarks import bench_nexmark
    from raystream.jobs import nexmark

    def job(q: int) -> Callable[..., Any]:
        def run(_data: str, parallelism: int) -> Any:
            args = nexmark.parse_args(["--query", str(q), "--events", str(events)])
            return bench_nexmark.raystream_query(q, args, parallelism)

        return run

    return {f"nexmark/q{q}": job(q) for q in nexmark.QUERIES}


def _python_cpu(name: str, events: int) -> None:
    """The python baseline of a Nexmark query: its CPU seconds (one thread, generation included)."""
    from benchmarks import bench_nexmark
    from raystream.jobs import nexmark

    q = int(name.split("/q")[1])
    args = nexmark.parse_args(["--query", str(q), "--events", str(events)])
    cpu = []
    for _ in range(3):
        c = time.process_time()
        bench_nexmark.python_query(q, args)
        cpu.append(time.process_time() - c)
    print(f"== {name} python loop: CPU {sorted(cpu)[1]:.2f} s (median of 3; one thread, generation included)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_scaleout", description=__doc__.splitlines()[0])
    ap.add_argument("workloads", nargs="?", default="batch/stateless,batch/keyed_sum,batch/window,"
                    "record/stateless,record/keyed_sum,record/window")
    ap.add_argument("--data", default="benchmarks/data/events_2M.parquet")
    ap.add_argument("--top", type=int, default=0, help="also print the N functions with most own time per task")
    ap.add_argument("--cpu", action="store_true", help="CPU seconds per process instead of cProfile (see above)")
    ap.add_argument("--threads", action="store_true",
                    help="CPU seconds per OS thread of each task actor, sampled from /proc (no cProfile)")
    ap.add_argument("--repeat", type=int, default=3, help="--cpu/--threads: runs per parallelism (interleaved)")
    ap.add_argument("--events", type=int, default=200_000, help="events of the nexmark/qN workloads")
    ap.add_argument("--split", action="store_true",
                    help="no job: events, keys and (key, window) pairs per subtask of key_by('key') (see above)")
    ap.add_argument("--parallelism", type=int, default=2, help="--split: the keyed stage's parallelism")
    args = ap.parse_args(argv)
    if args.split:
        from benchmarks import datagen

        datagen.ensure_parquet(args.data, 2_000_000)
        _split_report(args.data, args.parallelism)
        return
    out_dir = tempfile.mkdtemp(prefix="raystream-profile-")
    plain = args.cpu or args.threads
    if not plain:
        os.environ["RAYSTREAM_PROFILE"] = out_dir  # inherited by the task executors of this driver's Ray
    import ray

    from benchmarks import bench_engine as be
    from benchmarks import datagen

    datagen.ensure_parquet(args.data, 2_000_000)
    from raystream.engine.ray_runtime import ensure_ray

    ensure_ray("local", num_cpus=2, logging_level=logging.WARNING,  # raystream's embedded Ray, as a job starts it
               runtime_env=None if plain else {"worker_process_setup_hook": _thread_cpu_profiles})
    be._setup()
    jobs = {"batch/stateless": be.stateless_batch, "batch/keyed_sum": be.keyed_sum_batch,
            "batch/window": be.window_batch, "record/stateless": be.stateless_record,
            "record/keyed_sum": be.keyed_sum_record, "record/window": be.window_record}
    jobs.update(_nexmark_jobs(args.events))
    try:
        for name in args.workloads.split(","):
            fn = jobs[name]
            if name.startswith("nexmark/"):
                _python_cpu(name, args.events)
            if args.cpu:
                _cpu_report(name, fn, args.data, args.repeat)
                continue
            if args.threads:
                _threads_report(name, fn, args.data, args.repeat)
                continue
            for p in (1, 2):
                fn(args.data, parallelism=p)  # warm
                for f in glob.glob(os.path.join(out_dir, "*")):
                    os.remove(f)
                t, c = time.perf_counter(), time.process_time()
                fn(args.data, parallelism=p)
                wall, driver_cpu = time.perf_counter() - t, time.process_time() - c
                time.sleep(0.3)  # the executors write their profiles as their threads end
                profs = sorted(glob.glob(os.path.join(out_dir, "*.prof")))
                cpus = [float(open(f[:-5] + ".wall").read().split("\t")[2].split()[2]) for f in profs]
                print(f"== {name} p={p}: job wall {wall:.2f} s, driver CPU {driver_cpu:.2f} s; task threads' CPU "
                      f"{sum(cpus):.2f} s in all, {max(cpus, default=0):.2f} s the busiest")
                for prof in profs:
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
