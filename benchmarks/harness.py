"""A small benchmark runner: contenders, digest checks, ratios, and ``RESULTS.md``.

A *contender* is a plain function ``fn(parquet_path) -> result`` for one workload
(``result`` in any form :func:`benchmarks.baselines.canonical_rows` accepts: an Arrow
table/batches with the output column names, dict rows, or tuples). The ``python`` and
``arrow`` baselines are registered here; the engine's contenders are registered from
``benchmarks/bench_engine.py`` (imported by ``python -m benchmarks.run`` if it exists)::

    from benchmarks.harness import register, register_session

    register_session(setup=lambda: ray.init(num_cpus=2, include_dashboard=False),
                     teardown=ray.shutdown)
    register("keyed_sum", "raystream-batch", my_keyed_sum_batch, api="batch")
    register("keyed_sum", "raystream-record", my_keyed_sum_record, api="record")

How a workload is measured (:func:`run_workload`): every contender runs once untimed and
its result digest is compared with the reference (the ``python`` baseline); a contender
whose digest differs is reported as ``WRONG`` and never timed. Then ``repeat`` timed rounds
run the contenders *interleaved* (round-robin), so drift on a noisy machine hits all of
them alike. Rates are events/s; ratios are contender / baseline of the same run, on
medians (bests shown too). ``api="record"`` contenders are held to >= 0.7x ``python``,
``api="batch"`` ones to >= 0.5x ``arrow`` (BENCHMARKS.md targets).
"""

from __future__ import annotations

import datetime as _dt
import gc
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import baselines

__all__ = [
    "Contender",
    "Measurement",
    "register",
    "register_session",
    "unregister",
    "contenders",
    "measure",
    "run_workload",
    "format_table",
    "machine_info",
    "load_average",
    "update_results",
    "RESULTS_PATH",
    "TARGETS",
]

RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
REFERENCE = "python"
#: api -> (baseline it is compared with, minimum ratio)
TARGETS: dict[str, tuple[str, float]] = {"record": ("python", 0.7), "batch": ("arrow", 0.5)}


@dataclass(frozen=True)
class Contender:
    """One implementation of one workload: ``fn(parquet_path) -> result``."""

    workload: str
    name: str
    fn: Callable[[str], Any]
    api: str | None = None  # "record", "batch", or None for baselines


@dataclass
class Measurement:
    """Timings of one contender (seconds per run) and its digest check."""

    name: str
    events: int
    times: list[float] = field(default_factory=list)
    digest: str | None = None
    ok: bool | None = None  # None: not checked (no reference)
    rows: int | None = None
    error: str | None = None
    api: str | None = None

    @property
    def best(self) -> float:
        """Best (highest) rate in events/s, 0.0 if never timed."""
        return self.events / min(self.times) if self.times else 0.0

    @property
    def median(self) -> float:
        """Median rate in events/s, 0.0 if never timed."""
        return self.events / statistics.median(self.times) if self.times else 0.0


_REGISTRY: dict[str, dict[str, Contender]] = {w: {} for w in baselines.WORKLOADS}
_SESSIONS: list[tuple[Callable[[], Any], Callable[[], Any]]] = []


def register(
    workload: str, name: str, fn: Callable[[str], Any], *, api: str | None = None
) -> Contender:
    """Register ``fn(parquet_path) -> result`` as contender ``name`` for ``workload``.

    ``api`` is ``"record"`` or ``"batch"`` for engine contenders (it picks the target
    shown in the table) and ``None`` for baselines. Re-registering a name replaces it.
    """
    if workload not in _REGISTRY:
        raise ValueError(f"unknown workload {workload!r}; expected one of {tuple(_REGISTRY)!r}")
    if api is not None and api not in TARGETS:
        raise ValueError(f"api must be one of {tuple(TARGETS)!r} or None, got {api!r}")
    if not callable(fn):
        raise TypeError(f"contender {name!r} for {workload!r} must be callable, got {fn!r}")
    c = Contender(workload, name, fn, api)
    _REGISTRY[workload][name] = c
    return c


def unregister(workload: str, name: str) -> None:
    """Remove contender ``name`` of ``workload`` (no error if it is not registered)."""
    _REGISTRY[workload].pop(name, None)


def register_session(setup: Callable[[], Any], teardown: Callable[[], Any]) -> None:
    """Run ``setup()`` once before the first measurement and ``teardown()`` after the last.

    For engine contenders that need e.g. a local Ray; neither call is timed.
    """
    _SESSIONS.append((setup, teardown))


def contenders(workload: str) -> list[Contender]:
    """Return the registered contenders of ``workload``, baselines first."""
    return list(_REGISTRY[workload].values())


for _w, _fns in baselines.BASELINES.items():
    for _name, _fn in _fns.items():
        register(_w, _name, _fn)


# --------------------------------------------------------------------------- measuring


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def measure(
    name: str,
    fn: Callable[[], Any],
    events: int,
    repeat: int = 3,
    *,
    workload: str | None = None,
    reference: str | None = None,
    warmup: bool = True,
) -> Measurement:
    """Time ``fn()`` ``repeat`` times and return best/median events/s.

    With ``workload`` set, the result of the first (untimed warm-up) run is digested and
    compared with ``reference``; on a mismatch the contender is not timed (``ok=False``).
    Without warm-up every run is timed and the first run's result is the one checked.
    """
    m = Measurement(name, events)
    try:
        first_time, result = _timed(fn)
    except Exception as exc:  # report, don't abort the whole run
        m.error = f"{type(exc).__name__}: {exc}"
        m.ok = False
        return m
    if workload is not None:
        m.rows = len(baselines.canonical_rows(workload, result))
        m.digest = baselines.digest(workload, result)
        if reference is not None:
            m.ok = m.digest == reference
            if not m.ok:
                return m
    del result
    if not warmup:
        m.times.append(first_time)
    while len(m.times) < repeat:
        m.times.append(_timed(fn)[0])
    return m


def run_workload(
    workload: str,
    path: str,
    events: int,
    repeat: int = 3,
    only: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> list[Measurement]:
    """Check every contender of ``workload`` on ``path`` against the reference, then time them.

    Timed rounds are interleaved across contenders; the reference is the ``python``
    baseline's digest.
    """
    cs = [c for c in contenders(workload) if only is None or c.name in only or c.api is None]
    cs.sort(key=lambda c: c.name != REFERENCE)  # the reference is checked first
    ms: dict[str, Measurement] = {}
    reference: str | None = None
    for c in cs:
        log(f"  {workload}/{c.name}: checking ...")
        m = measure(
            c.name, partial(c.fn, path), events, repeat=0, workload=workload, reference=reference
        )
        m.api = c.api
        if c.name == REFERENCE:
            reference, m.ok = m.digest, True
        ms[c.name] = m
        status = "ERROR " + str(m.error) if m.error else ("ok" if m.ok else "WRONG digest")
        log(f"  {workload}/{c.name}: {m.rows} rows, digest {str(m.digest)[:12]} {status}")
    live = [c for c in cs if ms[c.name].ok]
    for r in range(repeat):
        for c in live:
            dt, _ = _timed(partial(c.fn, path))
            ms[c.name].times.append(dt)
        log(
            f"  {workload}: round {r + 1}/{repeat}: "
            + ", ".join(f"{c.name} {events / ms[c.name].times[-1] / 1e6:.2f} M/s" for c in live)
        )
    return list(ms.values())


def sessions_setup() -> None:
    """Run the registered session setups (in registration order)."""
    for setup, _ in _SESSIONS:
        setup()


def sessions_teardown() -> None:
    """Run the registered session teardowns (in reverse order)."""
    for _, teardown in reversed(_SESSIONS):
        teardown()


# --------------------------------------------------------------------------- reporting


def _ratio(a: Measurement, b: Measurement | None) -> str:
    if b is None or not a.times or not b.times:
        return "-"
    return f"{a.median / b.median:.2f}x ({a.best / b.best:.2f}x)"


def format_table(results: dict[str, list[Measurement]]) -> str:
    """Render a Markdown table of rates and same-run ratios for each workload."""
    lines = [
        "| workload | contender | api | rows | median M ev/s | best M ev/s | vs python, median (best) | vs arrow, median (best) | target |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for workload, ms in results.items():
        by = {m.name: m for m in ms}
        for m in ms:
            target = "-"
            if m.api in TARGETS:
                base, need = TARGETS[m.api]
                b = by.get(base)
                if m.times and b is not None and b.times:
                    got = m.median / b.median
                    target = f">= {need}x {base}: {'PASS' if got >= need else 'MISS'}"
            if m.error or not m.ok:
                rate = "ERROR" if m.error else "WRONG digest"
                lines.append(
                    f"| {workload} | {m.name} | {m.api or 'baseline'} | {m.rows} | {rate} | | | | {target} |"
                )
                continue
            lines.append(
                f"| {workload} | {m.name} | {m.api or 'baseline'} | {m.rows:,} | {m.median / 1e6:.2f} | "
                f"{m.best / 1e6:.2f} | {_ratio(m, by.get('python'))} | {_ratio(m, by.get('arrow'))} | {target} |"
            )
    return "\n".join(lines)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    """Return what RESULTS.md records about the machine and software."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            if m:
                cpu = m.group(1).strip()
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "pyarrow": _version("pyarrow"),
        "ray": _version("ray"),
        "commit": commit,
    }


def machine_line() -> str:
    """One Markdown line describing the machine (for RESULTS.md sections)."""
    i = machine_info()
    return (
        f"Machine: nproc {i['nproc']} ({i['cpu']}), {i['os']}; Python {i['python']}, numpy {i['numpy']}, "
        f"pyarrow {i['pyarrow']}, ray {i['ray']}; git {i['commit']}."
    )


def load_average() -> str:
    """The 1-minute load average, to show how busy the (shared) machine was."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


_HEADER = """# raystream benchmark results

Generated by the commands in each section (see `benchmarks/README.md`). Absolute rates drift
±5-30% between runs on these machines; compare the **ratios measured in the same run**.
A section is replaced when the same command is run again.
"""


def update_results(section: str, body: str, path: Path = RESULTS_PATH) -> None:
    """Replace the section named ``section`` in ``path`` with ``body`` (append if absent)."""
    begin = f"<!-- BEGIN {section} -->"
    end = f"<!-- END {section} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else _HEADER
    if begin in text and end in text:
        i = text.index(begin)
        j = text.index(end) + len(end)
        text = text[:i] + block.rstrip("\n") + text[j:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def now() -> str:
    """Local date and time for RESULTS.md, to the minute."""
    return _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def command_line() -> str:
    """The command that is running, as a user would type it."""
    argv = sys.argv[:]
    if argv and argv[0].endswith(".py"):
        mod = Path(argv[0]).resolve()
        try:
            rel = mod.relative_to(Path(__file__).resolve().parent.parent).with_suffix("")
            argv[0] = "-m " + ".".join(rel.parts)
        except ValueError:
            pass
    return "python " + " ".join(argv)
