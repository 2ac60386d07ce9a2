"""Observability without Ray: metric tables, the Ray-metrics exporter (fake backend),
progress lines and the notebook renderings of job graphs and jobs."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest

import raystream as rs
from raystream.engine.observability import (
    MetricsExporter,
    ProgressReporter,
    format_progress_line,
    job_client_html,
    job_graph_svg,
    operator_table,
    source_totals,
)


def metrics(n_src: int, n_out: int, blocked: float = 0.0, restarts: int = 0, **extra) -> dict:
    m = {
        "operators": {
            "map": {"records_in": n_src, "records_out": n_src, "batches_in": 3, "subtasks": 2},
            "reduce": {"records_in": n_src, "records_out": n_out, "batches_in": 3, "subtasks": 2},
        },
        "channels": [
            {"task": "generate -> map (1/2)", "sends": 1, "rows": n_src // 2, "bytes": 100, "blocked_s": blocked},
            {"task": "generate -> map (2/2)", "sends": 1, "rows": n_src // 2, "bytes": 150, "blocked_s": 0.0},
        ],
        "restarts": restarts,
    }
    m.update(extra)
    return m


def test_operator_table_rates_bytes_and_backpressure():
    rows = {r["operator"]: r for r in operator_table(metrics(1000, 900, blocked=0.25), metrics(400, 300), 2.0)}
    assert rows["map"]["bytes_out"] == 250 and rows["map"]["backpressure_s"] == 0.25
    assert rows["reduce"]["bytes_out"] == 0  # records leave the chain from its last operator
    assert rows["map"]["in_per_s"] == 300.0 and rows["reduce"]["out_per_s"] == 300.0
    assert rows["reduce"]["subtasks"] == 2 and rows["reduce"]["watermark_lag_ms"] is None


def test_watermark_lag_from_lag_or_watermark():
    m = metrics(1, 1)
    m["operators"]["map"]["watermark_lag_ms"] = 1500
    m["operators"]["reduce"]["current_watermark"] = 1
    rows = {r["operator"]: r for r in operator_table(m)}
    assert rows["map"]["watermark_lag_ms"] == 1500.0 and rows["reduce"]["watermark_lag_ms"] > 1e12


class FakeMetric:
    def __init__(self, kind, name, tag_keys):
        self.kind, self.name, self.tag_keys = kind, name, tag_keys
        self.values: dict[tuple, float] = {}

    def _key(self, tags):
        assert set(tags) == set(self.tag_keys)
        return tuple(sorted(tags.items()))

    def inc(self, value, tags):
        assert value > 0, "Ray counters reject non-positive increments"
        self.values[self._key(tags)] = self.values.get(self._key(tags), 0) + value

    def set(self, value, tags):
        self.values[self._key(tags)] = value


class FakeBackend:
    def __init__(self):
        self.metrics: dict[str, FakeMetric] = {}

    def _make(self, kind, name, description, tag_keys):
        assert name not in self.metrics, "a metric must be created once"
        assert description
        self.metrics[name] = FakeMetric(kind, name, tag_keys)
        return self.metrics[name]

    def gauge(self, name, description, tag_keys):
        return self._make("gauge", name, description, tag_keys)

    def counter(self, name, description, tag_keys):
        return self._make("counter", name, description, tag_keys)

    def value(self, name, **tags):
        tags = {"job_id": "j-1", "job_name": "job", **tags}
        metric = self.metrics.get(name)
        return None if metric is None else metric.values.get(tuple(sorted(tags.items())))


def test_exporter_counters_gauges_rates_restarts_and_checkpoints():
    backend = FakeBackend()
    now = [100.0]
    exp = MetricsExporter("j-1", "job", backend=backend, clock=lambda: now[0])
    exp.update(metrics(100, 50))
    assert backend.value("raystream_records_out", operator="reduce") == 50
    assert backend.value("raystream_records_out_per_second", operator="reduce") is None  # no rate yet
    now[0] += 2.0
    exp.update(metrics(500, 450, blocked=1.5,
                       checkpoints={"completed": 3, "last_duration_ms": 120.5, "last_path": "/x", "ok": True}))
    assert backend.value("raystream_records_out", operator="reduce") == 450  # counters hold totals
    assert backend.value("raystream_records_in", operator="map") == 500
    assert backend.value("raystream_bytes_out", operator="map") == 250
    assert backend.value("raystream_backpressure_seconds", operator="map") == 1.5
    assert backend.value("raystream_records_out_per_second", operator="reduce") == 200.0
    assert backend.value("raystream_subtasks", operator="map") == 2
    assert backend.value("raystream_checkpoint_completed") == 3
    assert backend.value("raystream_checkpoint_last_duration_ms") == 120.5
    assert "raystream_checkpoint_last_path" not in backend.metrics and "raystream_checkpoint_ok" not in backend.metrics
    # counters restart from 0 after a job restart: the new values are added, never subtracted
    now[0] += 1.0
    exp.update(metrics(20, 10, restarts=1))
    assert backend.value("raystream_records_out", operator="reduce") == 460
    assert backend.value("raystream_restarts") == 1
    # a restart whose new attempt has passed the old attempt's count by the next snapshot: all
    # of it is new (it added only 600 - 10 = 590: the old attempt's counts were lost)
    now[0] += 1.0
    exp.update(metrics(2000, 600, restarts=2))
    assert backend.value("raystream_records_out", operator="reduce") == 1060
    assert backend.value("raystream_records_in", operator="map") == 500 + 20 + 2000
    assert backend.value("raystream_restarts") == 2
    exp.close()
    assert backend.value("raystream_records_out_per_second", operator="reduce") == 0.0


def test_exporter_never_raises():
    class Broken(FakeBackend):
        def counter(self, *a):
            raise RuntimeError("metrics agent down")

    MetricsExporter("j-1", "job", backend=Broken()).update(metrics(1, 1))  # logged, not raised
    MetricsExporter("j-1", "job", backend=FakeBackend()).update({})  # an empty snapshot is fine


def test_progress_line_and_reporter():
    line = format_progress_line("wc", "RUNNING", 3.0, metrics(5000, 4000), metrics(1000, 800), 2.0,
                                {"map": 20000})
    assert line == "wc RUNNING 3.0s | read 5.0k (2.0k rec/s) | map 25% (5.0k/20.0k) | out 4.0k"
    out = io.StringIO()
    t = [0.0]
    rep = ProgressReporter("wc", {"map": 1000}, stream=out, notebook=False, clock=lambda: t[0])
    t[0] = 1.0
    rep.update("RUNNING", metrics(500, 10, blocked=0.5))
    t[0] = 2.0
    rep.close("FINISHED", metrics(1000, 20, restarts=2))
    text = out.getvalue()
    assert text.startswith("\rwc RUNNING 1.0s") and "backpressure 0.5s" in text
    assert text.endswith("\n") and "wc FINISHED 2.0s | read 1.0k (500 rec/s) | map 100%" in text
    assert "restarts 2" in text


def test_source_totals_from_bounded_sources():
    env = rs.StreamEnvironment(parallelism=2)
    a = env.generate(lambda i: i, count=300)
    b = env.from_collection(list(range(7))).map(str).name("to_str")
    env.generate(lambda i: i).union(a, b).collect()  # unbounded generator: no total
    # keyed by the operator reading the source (its records_in), or the unchained source itself
    assert source_totals(env.get_job_graph()) == {"generate": 300, "to_str": 7}


def keyed_graph():
    env = rs.StreamEnvironment(parallelism=2)
    words = env.from_collection(["a b", "b c"]).flat_map(str.split).set_parallelism(3)
    words.map(lambda w: (w, 1)).key_by(0).reduce(lambda a, b: (a[0], a[1] + b[1])).collect()
    return env.get_job_graph()


def test_job_graph_svg_shows_operators_parallelism_and_partitioners():
    graph = keyed_graph()
    svg = job_graph_svg(graph)
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag.endswith("svg")
    texts = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    for v in graph.vertices:
        assert f"parallelism {v.parallelism}" in texts
        for op in v.chain:
            assert op["name"] in texts
        for e in v.outputs:
            assert repr(e.partitioner) in texts
    assert "hash(" in texts and "rebalance" in texts
    assert len(list(x for x in root.iter() if x.tag.endswith("rect"))) == len(graph.vertices)
    html = graph._repr_html_()
    assert html.startswith("<div") and "<svg" in html and f"{len(graph.vertices)} chained task(s)" in html


def test_feedback_and_escaping_in_svg():
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection([1]).map(lambda x: x).name("<b>&'odd'").collect()
    svg = job_graph_svg(env.get_job_graph())
    ET.fromstring(svg)
    assert "&lt;b&gt;&amp;" in svg


def test_job_client_html():
    html = job_client_html("wc", "wc-1", "RUNNING", metrics(10, 5, restarts=1))
    assert "wc-1" in html and "RUNNING" in html and "restarts: 1" in html
    assert "<table" in html and ">reduce<" in html and ">5<" in html
    failed = job_client_html("wc", None, "FAILED", None, "boom <x>")
    assert "boom &lt;x&gt;" in failed and "<table" not in failed


@pytest.mark.parametrize("module", ["engine.observability", "raystream.jobs.cli"])
def test_doctests(module):
    import doctest
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
