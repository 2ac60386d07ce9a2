"""Observability: per-operator metric tables, Ray/Prometheus export, progress lines and
rich notebook displays of jobs and job graphs.

Everything here reads the metrics dict that :meth:`JobMaster.metrics` (and
:meth:`JobClient.metrics`) returns::

    {"operators": {name: {"records_in", "records_out", "batches_in", "busy_s", "subtasks",
                          optional "watermark_lag_ms" or "current_watermark" (epoch ms)}},
     "channels": [{"task", "sends", "rows", "bytes", "max_in_flight", "window", "blocked_s"}],
     "restarts": int,
     optional "checkpoints": {numeric stats, e.g. "completed", "last_duration_ms", ...}}

Keys that are missing are simply not shown or exported, so the module keeps working while
the engine grows new counters.

* :func:`operator_table` — one row per operator: records, rates, bytes, back-pressure.
* :class:`MetricsExporter` — the job master calls ``update(metrics)`` about once a second;
  the values become Ray metrics (``ray.util.metrics``), which Ray's metrics agent exposes
  to Prometheus as ``ray_raystream_*``.
* :class:`ProgressReporter` — a live one-line progress display (terminal or notebook).
* :func:`job_graph_svg` / :func:`job_graph_html` / :func:`job_client_html` — Jupyter displays.
"""

from __future__ import annotations

import html
import logging
import re
import sys
import time
from typing import IO, TYPE_CHECKING, Callable, Protocol, TypedDict

from .partitioners import BroadcastPartitioner

if TYPE_CHECKING:
    from IPython.display import DisplayHandle

    from .graph import JobGraph

__all__ = [
    "NullMetricsBackend",
    "OperatorRow",
    "operator_table",
    "format_progress_line",
    "source_totals",
    "MetricsExporter",
    "ProgressReporter",
    "job_graph_svg",
    "job_graph_html",
    "job_client_html",
    "in_notebook",
    "name_native_thread",
]

log = logging.getLogger(__name__)

_TASK_SUFFIX = re.compile(r" \(\d+/\d+\)$")

#: Linux's ``prctl`` option that names the calling thread (``PR_SET_NAME``)
_PR_SET_NAME = 15
_prctl: Callable[..., int] | None | bool = None  # libc's prctl once looked up; False: not available


def name_native_thread(name: str) -> bool:
    """Give the calling thread ``name`` at the operating-system level (Linux; at most 15
    bytes, longer names are cut), so ``top -H``, ``ps -L``, ``/proc/<pid>/task/*/comm`` and
    per-thread CPU accounting tell raystream's threads apart (Python's ``Thread.name`` is
    not visible there: a Ray worker's threads all read ``ray::TaskActor``). Returns whether
    the name was set; elsewhere nothing happens.

    Example:
        >>> import threading
        >>> out = []
        >>> t = threading.Thread(target=lambda: out.append(name_native_thread("rs-example")))
        >>> t.start(); t.join()
        >>> out[0] in (True, False)
        True
    """
    global _prctl
    if _prctl is None:
        _prctl = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                _prctl = ctypes.CDLL(None, use_errno=True).prctl
            except (OSError, AttributeError):
                pass
    if _prctl is False:
        return False
    assert callable(_prctl)
    try:
        return _prctl(_PR_SET_NAME, name.encode("utf-8", "replace")[:15], 0, 0, 0) == 0
    except Exception:  # noqa: BLE001 - a name is a diagnostic: never fail the thread over it
        return False


# ---------------------------------------------------------------------------- tables
def _vertex_of_task(task: str | None) -> str:
    """``"map -> filter (2/4)"`` -> ``"map -> filter"``."""
    return _TASK_SUFFIX.sub("", task or "")


def _watermark_lag_ms(counters: dict, now_ms: float) -> float | None:
    if "watermark_lag_ms" in counters:
        return float(counters["watermark_lag_ms"])
    wm = counters.get("current_watermark")
    if isinstance(wm, (int, float)) and wm > 0:
        return max(0.0, now_ms - float(wm))
    return None


class OperatorRow(TypedDict):
    """One row of :func:`operator_table`."""

    operator: str
    subtasks: int
    records_in: int
    records_out: int
    bytes_out: int
    backpressure_s: float
    busy_s: float | None
    in_per_s: float | None
    out_per_s: float | None
    watermark_lag_ms: float | None


def operator_table(metrics: dict, previous: dict | None = None, interval_s: float | None = None) -> list[OperatorRow]:
    """One row per operator: records in/out, rates, bytes out, back-pressure, watermark lag.

    Rates are computed from ``previous`` (an earlier metrics dict) over ``interval_s``; without
    them they are ``None``. Bytes and back-pressure come from the network channels of the
    task whose chain *ends* with the operator (records leave a chain from its last operator).

    Example:
        >>> m = {"operators": {"map": {"records_in": 10, "records_out": 10, "subtasks": 2}},
        ...      "channels": [{"task": "map (1/2)", "bytes": 80, "blocked_s": 0.5}]}
        >>> row = operator_table(m)[0]
        >>> row["operator"], row["records_out"], row["bytes_out"], row["backpressure_s"]
        ('map', 10, 80, 0.5)
    """
    ops = metrics.get("operators") or {}
    prev_ops = (previous or {}).get("operators") or {}
    by_last_op: dict[str, dict[str, float]] = {}
    for ch in metrics.get("channels") or []:
        last = _vertex_of_task(ch.get("task")).split(" -> ")[-1]
        agg = by_last_op.setdefault(last, {"bytes": 0, "blocked_s": 0.0, "rows": 0})
        agg["bytes"] += ch.get("bytes", 0) or 0
        agg["blocked_s"] += ch.get("blocked_s", 0.0) or 0.0
        agg["rows"] += ch.get("rows", 0) or 0
    now_ms = time.time() * 1000
    rows: list[OperatorRow] = []
    for name, c in ops.items():
        net = by_last_op.get(name, {})
        row: OperatorRow = {
            "operator": name,
            "subtasks": c.get("subtasks", 1),
            "records_in": c.get("records_in", 0),
            "records_out": c.get("records_out", 0),
            "bytes_out": int(net.get("bytes", 0)),
            "backpressure_s": round(float(net.get("blocked_s", 0.0)), 3),
            "busy_s": round(float(c.get("busy_s", 0.0)), 3) if "busy_s" in c else None,
            "in_per_s": None,
            "out_per_s": None,
            "watermark_lag_ms": _watermark_lag_ms(c, now_ms),
        }
        p = prev_ops.get(name)
        if p is not None and interval_s and interval_s > 0:
            row["in_per_s"] = max(0.0, (row["records_in"] - p.get("records_in", 0)) / interval_s)
            row["out_per_s"] = max(0.0, (row["records_out"] - p.get("records_out", 0)) / interval_s)
        rows.append(row)
    return rows


def _expected_records(src: object) -> int | None:
    """What a bounded source says it will emit, when it knows (else None)."""
    total: object = None
    try:
        expected = getattr(src, "expected_records", None)
        if callable(expected):
            total = expected()
        elif isinstance(count := getattr(src, "count", None), int):
            total = count
        elif isinstance(items := getattr(src, "items", None), list):
            total = len(items)
    except Exception:  # a source's estimate is a nicety, never an error
        total = None
    return total if isinstance(total, int) and total > 0 else None


def source_totals(graph: JobGraph) -> dict[str, int]:
    """Records each bounded source of a job graph will emit, when that is known up front,
    keyed by the operator that reads them (whose ``records_in`` counts what was read): the
    one chained after the source, or, when the source's records cross the network
    (``key_by``, ``rebalance``, a change of parallelism), the first operator of the task that
    receives them — and that one only when every input it has is such a source (a
    ``broadcast`` delivers each record to all its subtasks). A source alone in its task
    keys its total by its own name too.

    A source may say so itself with ``expected_records() -> int | None``; otherwise a
    ``count`` (generators) or ``items`` (collections) attribute is used.

    Example:
        >>> import raystream as rs
        >>> env = rs.StreamEnvironment(parallelism=2)
        >>> _ = env.from_collection(list(range(10))).key_by(lambda x: x % 3).map(str).collect()
        >>> source_totals(env.get_job_graph())["map"]
        10
    """
    out: dict[str, int] = {}
    for v in graph.vertices:
        if v.source is None or not v.chain:
            continue
        total = _expected_records(v.source)
        if total is None:
            continue
        name = v.chain[1]["name"] if len(v.chain) > 1 else v.chain[0]["name"]
        out[name] = out.get(name, 0) + total
    # sources whose records go over the network: counted by the receiving task's first operator
    for target in graph.vertices:
        edges = [e for e in target.inputs if not e.feedback]
        if not edges or not target.chain:
            continue
        received = 0
        for e in edges:
            src_vertex = graph.vertex(e.source_vertex)
            total = None
            if src_vertex.source is not None and len(src_vertex.chain) == 1:
                total = _expected_records(src_vertex.source)
            if total is None:  # an input whose size is unknown: so is the operator's
                break
            received += total * (target.parallelism if isinstance(e.partitioner, BroadcastPartitioner) else 1)
        else:
            name = target.chain[0]["name"]
            out[name] = out.get(name, 0) + received
    return out


def _si(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"


def format_progress_line(
    name: str,
    status: str,
    elapsed_s: float,
    metrics: dict,
    previous: dict | None = None,
    interval_s: float | None = None,
    totals: dict[str, int] | None = None,
) -> str:
    """The one-line progress summary of a running job: records read (and per second),
    bounded-source progress, records reaching the last operator, back-pressure, restarts.

    ``totals`` comes from :func:`source_totals`: records to read per reading operator.

    Example:
        >>> m = {"operators": {"map": {"records_in": 500, "records_out": 500},
        ...                    "collect": {"records_in": 500, "records_out": 0}}}
        >>> format_progress_line("job", "RUNNING", 2.0, m, totals={"map": 1000})
        'job RUNNING 2.0s | read 500 | map 50% (500/1.0k) | sink 500'
    """
    ops = metrics.get("operators") or {}
    rows = {r["operator"]: r for r in operator_table(metrics, previous, interval_s)}
    totals = totals or {}
    readers = [k for k in totals if k in ops] or list(ops)[:1]
    parts = [f"{name} {status} {elapsed_s:.1f}s"]
    read = sum(rows[k]["records_in"] for k in readers)
    rates = [rate for k in readers if (rate := rows[k]["in_per_s"]) is not None]
    parts.append(f"read {_si(read)}" + (f" ({_si(sum(rates))} rec/s)" if rates else ""))
    for k in readers:
        total = totals.get(k)
        if total:
            done = rows[k]["records_in"]
            parts.append(f"{k} {min(100, int(100 * done / total))}% ({_si(done)}/{_si(total)})")
    if ops:
        last = rows[list(ops)[-1]]
        if last["records_out"] == 0 and last["records_in"] > 0:  # a sink
            parts.append(f"sink {_si(last['records_in'])}")
        else:
            parts.append(f"out {_si(last['records_out'])}")
    blocked = sum(r["backpressure_s"] for r in rows.values())
    if blocked >= 0.05:
        parts.append(f"backpressure {blocked:.1f}s")
    restarts = metrics.get("restarts")
    if restarts:
        parts.append(f"restarts {restarts}")
    return " | ".join(parts)


# ---------------------------------------------------------------------------- Ray metrics
class _Gauge(Protocol):
    def set(self, value: float, tags: dict[str, str]) -> None: ...


class _Counter(Protocol):
    def inc(self, value: float, tags: dict[str, str]) -> None: ...


class _MetricBackend(Protocol):
    def gauge(self, name: str, description: str, tag_keys: tuple[str, ...]) -> _Gauge: ...

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...]) -> _Counter: ...


class NullMetricsBackend:
    """A metrics backend that records nothing (in-process runs and tests have no Ray metrics
    agent). Pass it as ``MetricsExporter(..., backend=NullMetricsBackend())``."""

    def gauge(self, name: str, description: str, tag_keys: tuple[str, ...]) -> _NullMetric:
        return _NullMetric()

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...]) -> _NullMetric:
        return _NullMetric()


class _NullMetric:
    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        pass


class _RayBackend:
    def gauge(self, name: str, description: str, tag_keys: tuple[str, ...]) -> _Gauge:
        from ray.util.metrics import Gauge

        return Gauge(name, description=description, tag_keys=tag_keys)

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...]) -> _Counter:
        from ray.util.metrics import Counter

        return Counter(name, description=description, tag_keys=tag_keys)


_OP_TAGS = ("job_id", "job_name", "operator")
_JOB_TAGS = ("job_id", "job_name")
_SANITIZE = re.compile(r"[^a-zA-Z0-9_]")


class MetricsExporter:
    """Exports a job's metrics as Ray metrics, visible to Prometheus through Ray's metrics agent.

    The job master creates one per job and calls :meth:`update` with the dict of
    :meth:`JobMaster.metrics` about once a second, and :meth:`close` when the job ends.
    ``update`` never raises: a metrics problem must not fail a job.

    Exported (Prometheus adds Ray's ``ray_`` prefix; counters may get a ``_total`` suffix),
    tagged ``job_id``, ``job_name`` and, per operator, ``operator``:

    * counters ``raystream_records_in``, ``raystream_records_out``, ``raystream_bytes_out``,
      ``raystream_backpressure_seconds`` (time producers were blocked on credits),
      ``raystream_restarts``;
    * gauges ``raystream_records_in_per_second``, ``raystream_records_out_per_second``,
      ``raystream_subtasks``, ``raystream_watermark_lag_ms`` (when reported);
    * one gauge ``raystream_checkpoint_<stat>`` per numeric entry of ``metrics["checkpoints"]``.

    Args:
        job_id: the job's id (``JobMaster.job_id``).
        job_name: the job's name (``JobConfig.name``).
        backend: where metrics are created; the default is ``ray.util.metrics``. Tests pass an
            object with ``gauge(name, description, tag_keys)`` and ``counter(...)``.
        clock: seconds, monotonic (injected in tests).

    Example:
        >>> exporter = MetricsExporter("wc-1a2b", "wordcount")          # doctest: +SKIP
        >>> exporter.update(await self.metrics())   # in the master loop  # doctest: +SKIP
        >>> exporter.close()                                             # doctest: +SKIP
    """

    def __init__(self, job_id: str, job_name: str, *, backend: _MetricBackend | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.job_id = job_id
        self.job_name = job_name
        self._backend = backend or _RayBackend()
        self._clock = clock
        self._counters: dict[str, _Counter] = {}
        self._gauges: dict[str, _Gauge] = {}
        self._last: dict[tuple[str, str], float] = {}  # (metric, operator) -> last cumulative value
        self._restarts: float | None = None  # the restarts of the last snapshot
        self._last_metrics: dict | None = None
        self._last_time: float | None = None
        self._rate_ops: set[str] = set()

    # -- metric objects are created lazily, once per name
    def _counter_metric(self, name: str, description: str, tags: tuple[str, ...]) -> _Counter:
        metric = self._counters.get(name)
        if metric is None:
            metric = self._counters[name] = self._backend.counter(name, description, tags)
        return metric

    def _gauge_metric(self, name: str, description: str, tags: tuple[str, ...]) -> _Gauge:
        metric = self._gauges.get(name)
        if metric is None:
            metric = self._gauges[name] = self._backend.gauge(name, description, tags)
        return metric

    def _tags(self, operator: str | None = None) -> dict[str, str]:
        tags = {"job_id": self.job_id, "job_name": self.job_name}
        if operator is not None:
            tags["operator"] = operator
        return tags

    def _count(self, name: str, description: str, value: float, operator: str | None) -> None:
        """Turn a cumulative value into Counter increments (a reset after a restart restarts the base)."""
        key = (name, operator or "")
        last = self._last.get(key, 0.0)
        delta = value - last if value >= last else value
        self._last[key] = value
        if delta > 0:
            tags = _OP_TAGS if operator is not None else _JOB_TAGS
            self._counter_metric(name, description, tags).inc(delta, tags=self._tags(operator))

    def _gauge(self, name: str, description: str, value: float, operator: str | None) -> None:
        tags = _OP_TAGS if operator is not None else _JOB_TAGS
        self._gauge_metric(name, description, tags).set(float(value), tags=self._tags(operator))

    def update(self, metrics: dict) -> None:
        """Export one metrics snapshot (cumulative counters; rates from the previous call)."""
        try:
            self._update(metrics)
        except Exception:  # noqa: BLE001 - observability must never fail the job
            log.warning("exporting metrics of job %r failed", self.job_id, exc_info=True)

    def _update(self, metrics: dict) -> None:
        now = self._clock()
        interval = now - self._last_time if self._last_time is not None else None
        restarts = metrics.get("restarts")
        if isinstance(restarts, (int, float)) and self._restarts is not None and restarts != self._restarts:
            # the job restarted: the snapshot counts the new attempt from 0, all of it new (a
            # counter that had passed its old value by the next sample lost the old attempt's
            # counts, e.g. 1,403 then 2,000 added 597)
            self._last = {key: value for key, value in self._last.items() if key[1] == ""}
            self._last_metrics = None  # (no rate across the restart)
            interval = None
        for row in operator_table(metrics, self._last_metrics, interval):
            op = row["operator"]
            self._count("raystream_records_in", "Records received by an operator (all subtasks)", row["records_in"], op)
            self._count("raystream_records_out", "Records emitted by an operator (all subtasks)", row["records_out"], op)
            self._count("raystream_bytes_out", "Bytes sent over the network after an operator", row["bytes_out"], op)
            self._count("raystream_backpressure_seconds", "Seconds producers after an operator were blocked on credits",
                        row["backpressure_s"], op)
            self._gauge("raystream_subtasks", "Parallel subtasks of an operator", row["subtasks"], op)
            in_rate, out_rate = row["in_per_s"], row["out_per_s"]
            if in_rate is not None and out_rate is not None:  # both or neither (one interval)
                self._gauge("raystream_records_in_per_second", "Records received per second", in_rate, op)
                self._gauge("raystream_records_out_per_second", "Records emitted per second", out_rate, op)
                self._rate_ops.add(op)
            if row["watermark_lag_ms"] is not None:
                self._gauge("raystream_watermark_lag_ms", "Wall clock minus the operator's watermark (ms)",
                            row["watermark_lag_ms"], op)
        if isinstance(restarts, (int, float)):
            self._count("raystream_restarts", "Restarts of the job from a checkpoint", restarts, None)
            self._restarts = restarts
        checkpoints = metrics.get("checkpoints")
        if isinstance(checkpoints, dict):
            for key, value in checkpoints.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    name = "raystream_checkpoint_" + _SANITIZE.sub("_", str(key))
                    self._gauge(name, f"Checkpoint statistic {key!r}", value, None)
        self._last_metrics = metrics
        self._last_time = now

    def close(self) -> None:
        """The job ended: set its rate gauges to 0 (counters keep their totals)."""
        for op in self._rate_ops:
            for name in ("raystream_records_in_per_second", "raystream_records_out_per_second"):
                gauge = self._gauges.get(name)
                if gauge is not None:
                    try:
                        gauge.set(0.0, tags=self._tags(op))
                    except Exception:  # noqa: BLE001
                        log.debug("resetting %s failed", name, exc_info=True)


# ---------------------------------------------------------------------------- progress
def in_notebook() -> bool:
    """True inside a Jupyter kernel (where rich displays replace ``\\r`` progress lines)."""
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    try:
        shell = getattr(ipython, "get_ipython")()  # noqa: B009 - a module found at run time
    except Exception:  # noqa: BLE001
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class ProgressReporter:
    """A live progress line: ``\\r``-rewritten on a terminal, an updating display in Jupyter.

    Args:
        name: the job's name.
        totals: records per bounded source (see :func:`source_totals`), for percentages.
        stream: where the terminal line goes (default ``sys.stderr``).
        notebook: force (or forbid) the notebook display; default: detect it.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> p = ProgressReporter("job", stream=out, notebook=False)
        >>> p.update("RUNNING", {"operators": {"gen": {"records_out": 3}}})
        >>> p.close("FINISHED", {"operators": {"gen": {"records_out": 5}}})
        >>> out.getvalue().splitlines()[-1].startswith("job FINISHED")
        True
    """

    def __init__(self, name: str, totals: dict[str, int] | None = None, stream: IO[str] | None = None,
                 notebook: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.totals = totals or {}
        self.stream = stream if stream is not None else sys.stderr
        self.notebook = in_notebook() if notebook is None else notebook
        self._clock = clock
        self._start = clock()
        self._prev: dict | None = None
        self._prev_t: float | None = None
        self._handle: DisplayHandle | None = None
        self._width = 0

    def _line(self, status: str, metrics: dict) -> str:
        now = self._clock()
        interval = now - self._prev_t if self._prev_t is not None else None
        line = format_progress_line(self.name, status, now - self._start, metrics, self._prev, interval, self.totals)
        self._prev, self._prev_t = metrics, now
        return line

    def _show(self, line: str, final: bool) -> None:
        if self.notebook:
            from IPython.display import HTML, display

            body = HTML(f"<pre style='margin:0'>{html.escape(line)}</pre>")
            if self._handle is None:
                self._handle = display(body, display_id=True)
            else:
                self._handle.update(body)
            return
        pad = " " * max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write("\r" + line + pad + ("\n" if final else ""))
        self.stream.flush()

    def update(self, status: str, metrics: dict) -> None:
        """Show the latest metrics (call about once a second)."""
        self._show(self._line(status, metrics), final=False)

    def close(self, status: str, metrics: dict | None = None) -> None:
        """Show the final line and end it."""
        self._show(self._line(status, metrics or self._prev or {}), final=True)


# ---------------------------------------------------------------------------- notebook displays
_TABLE_STYLE = "border-collapse:collapse;font-family:monospace;font-size:12px"
_CELL = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:right"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def metrics_html(metrics: dict) -> str:
    """An HTML table of :func:`operator_table` rows."""
    rows = operator_table(metrics)
    cols = [("operator", "operator"), ("subtasks", "subtasks"), ("records_in", "records in"),
            ("records_out", "records out"), ("bytes_out", "bytes out"), ("backpressure_s", "back-pressure s")]
    if any(r["watermark_lag_ms"] is not None for r in rows):
        cols.append(("watermark_lag_ms", "watermark lag ms"))
    head = "".join(f"<th style='{_CELL}'>{html.escape(t)}</th>" for _, t in cols)
    body = "".join(
        "<tr>" + "".join(
            f"<td style='{_CELL};text-align:left'>{_cell(r.get(k))}</td>" if k == "operator" else f"<td style='{_CELL}'>{_cell(r.get(k))}</td>"
            for k, _ in cols
        ) + "</tr>"
        for r in rows
    )
    return f"<table style='{_TABLE_STYLE}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STATUS_COLOR = {"RUNNING": "#1a73e8", "FINISHED": "#188038", "FAILED": "#d93025", "CANCELLED": "#80868b"}


def job_client_html(name: str, job_id: str | None, status: str, metrics: dict | None, error: str | None = None) -> str:
    """The rich display of a :class:`JobClient`: name, id, status badge and the metrics table."""
    color = _STATUS_COLOR.get(status, "#80868b")
    parts = [
        "<div style='font-family:sans-serif'>",
        f"<b>{html.escape(name)}</b> <code>{html.escape(job_id or '')}</code> ",
        f"<span style='background:{color};color:white;padding:1px 6px;border-radius:3px'>{html.escape(status)}</span>",
    ]
    if metrics:
        restarts = metrics.get("restarts")
        if restarts:
            parts.append(f" restarts: {int(restarts)}")
        parts.append(metrics_html(metrics))
    if error:
        parts.append(f"<pre style='color:#d93025'>{html.escape(error)}</pre>")
    parts.append("</div>")
    return "".join(parts)


def _layout(graph: JobGraph) -> dict[int, tuple[int, int]]:
    """Column = longest path from a source (feedback edges ignored); row = order in column."""
    depth: dict[int, int] = {}
    for v in graph.vertices:  # vertices are topologically ordered (inputs first)
        ins = [e for e in v.inputs if not e.feedback and e.source_vertex != v.id]
        depth[v.id] = max((depth.get(e.source_vertex, 0) + 1 for e in ins), default=0)
    rows: dict[int, int] = {}
    pos = {}
    for v in graph.vertices:
        col = depth[v.id]
        pos[v.id] = (col, rows.get(col, 0))
        rows[col] = rows.get(col, 0) + 1
    return pos


def job_graph_svg(graph: JobGraph) -> str:
    """An SVG drawing of a job graph: one box per task (its chained operators and
    parallelism), one arrow per network edge labelled with its partitioner.

    Example:
        >>> svg = env.get_job_graph()._repr_html_()   # doctest: +SKIP
    """
    box_w, line_h, gap_x, gap_y, pad = 190, 16, 90, 30, 10
    pos = _layout(graph)
    heights = {v.id: pad * 2 + line_h * (len(v.chain) + 1) for v in graph.vertices}
    n_cols = max((c for c, _ in pos.values()), default=0) + 1
    col_y: dict[tuple[int, int], int] = {}
    col_h: dict[int, int] = {}
    for v in graph.vertices:
        c, r = pos[v.id]
        col_y[(c, r)] = col_h.get(c, gap_y)
        col_h[c] = col_y[(c, r)] + heights[v.id] + gap_y
    width = n_cols * (box_w + gap_x) - gap_x + 2 * pad + 20
    height = max(col_h.values(), default=100) + 10
    xy = {v.id: (pad + pos[v.id][0] * (box_w + gap_x), col_y[pos[v.id]]) for v in graph.vertices}
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        "font-family='monospace' font-size='11'>",
        "<defs><marker id='rs-arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' markerHeight='7' "
        "orient='auto-start-reverse'><path d='M 0 0 L 10 5 L 0 10 z' fill='#555'/></marker></defs>",
    ]
    for v in graph.vertices:
        x, y = xy[v.id]
        h = heights[v.id]
        fill = "#e8f0fe" if v.source is not None else "#f1f3f4"
        out.append(f"<g class='rs-vertex'><rect x='{x}' y='{y}' width='{box_w}' height='{h}' rx='6' "
                   f"fill='{fill}' stroke='#5f6368'/>")
        out.append(f"<text x='{x + pad}' y='{y + pad + 11}' font-weight='bold'>"
                   f"[{v.id}] parallelism {v.parallelism}</text>")
        for i, op in enumerate(v.chain):
            label = op["name"] + (" (keyed)" if op.get("keyed") else "")
            if len(label) > 26:
                label = label[:25] + "…"
            out.append(f"<text x='{x + pad}' y='{y + pad + 11 + line_h * (i + 1)}'>"
                       f"{'↳ ' if i else ''}{html.escape(label)}</text>")
        out.append("</g>")
    for v in graph.vertices:
        for e in v.outputs:
            sx, sy = xy[e.source_vertex]
            tx, ty = xy[e.target_vertex]
            label = html.escape(repr(e.partitioner) + (f" [{e.side_tag}]" if e.side_tag else ""))
            if e.feedback or e.target_vertex == e.source_vertex or tx <= sx:
                # a feedback edge: an arc over the top of the boxes
                x1, x2 = sx + box_w * 0.7, tx + box_w * 0.3
                top = min(sy, ty) - gap_y + 4
                out.append(f"<path d='M {x1} {sy} C {x1} {top}, {x2} {top}, {x2} {ty}' fill='none' stroke='#d93025' "
                           "stroke-dasharray='4 3' marker-end='url(#rs-arrow)'/>")
                out.append(f"<text x='{(x1 + x2) / 2 - 30}' y='{top + 8}' fill='#d93025'>feedback {label}</text>")
                continue
            y1 = sy + heights[e.source_vertex] / 2
            y2 = ty + heights[e.target_vertex] / 2
            x1, x2 = sx + box_w, tx
            out.append(f"<line x1='{x1}' y1='{y1}' x2='{x2}' y2='{y2}' stroke='#555' marker-end='url(#rs-arrow)'/>")
            out.append(f"<text x='{(x1 + x2) / 2}' y='{(y1 + y2) / 2 - 4}' text-anchor='middle' fill='#1a73e8'>"
                       f"{label}</text>")
    out.append("</svg>")
    return "".join(out)


def job_graph_html(graph: JobGraph) -> str:
    """The rich display of a :class:`~engine.graph.JobGraph` (SVG plus a text fallback title)."""
    n_tasks = sum(v.parallelism for v in graph.vertices)
    title = (f"<div style='font-family:sans-serif;font-size:12px'>job graph: {len(graph.vertices)} chained "
             f"task(s), {n_tasks} task instance(s), max parallelism {graph.max_parallelism}</div>")
    return title + job_graph_svg(graph)
