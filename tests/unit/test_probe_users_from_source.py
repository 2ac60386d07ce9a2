"""``env.from_source(source, watermark_strategy, source_name)`` as PyFlink writes it: the
strategy gives the records their event timestamps and watermarks, the name names the source.
Before, the strategy was taken for the name (the node was called ``WatermarkStrategy(bound_ms=0,
...)``) and dropped: the records had no timestamps, which only an event-time window noticed
(``needs timestamps``) and a process function did not (``ctx.timestamp`` None); with the name
third, ``TypeError: ... takes from 2 to 3 positional arguments but 4 were given``."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.sources import CollectionSource
from raystream.operators.time import WatermarkStrategy

EVENTS = [(1, "a"), (5, "a"), (12, "a"), (3, "b")]


class Stamped(rs.ProcessFunction):
    def process_element(self, value, ctx):
        yield value, ctx.timestamp


def _run(env: rs.StreamEnvironment) -> list:
    result = run_in_process(env.get_job_graph(), JobConfig(name="from-source"), timeout_s=120)
    return sorted(r for batches in result["results"].values() for r in collected_records(batches))


@pytest.mark.parametrize("call", ["positional", "keywords"])
def test_pyflinks_from_source_applies_the_strategy_and_names_the_source(call):
    env = rs.StreamEnvironment(parallelism=2)
    ws = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[0])
    source = CollectionSource(EVENTS)
    if call == "positional":
        stream = env.from_source(source, ws, "events")
    else:
        stream = env.from_source(source=source, watermark_strategy=ws, source_name="events")
    assert stream.node.name == "events"
    stream.process(Stamped()).collect()
    assert _run(env) == sorted((e, e[0]) for e in EVENTS)


def test_windows_over_a_from_source_stream_with_a_strategy_fire():
    env = rs.StreamEnvironment(parallelism=1)
    ws = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[0])
    (env.from_source(CollectionSource(EVENTS), ws, "events").key_by(1)
        .window(rs.TumblingEventTimeWindows.of(10)).reduce(lambda a, b: (a[0] + b[0], a[1])).collect())
    assert _run(env) == [(3, "b"), (6, "a"), (12, "a")]


def test_no_strategy_and_the_name_second_work_as_before():
    env = rs.StreamEnvironment()
    assert env.from_source(CollectionSource([1]), None, "plain").node.name == "plain"
    assert env.from_source(CollectionSource([1]), "named").node.name == "named"
    assert env.from_source(CollectionSource([1]), name="kw").node.name == "kw"
    env2 = rs.StreamEnvironment()
    env2.from_source(CollectionSource([7]), "x").process(Stamped()).collect()
    assert _run(env2) == [(7, None)]


@pytest.mark.parametrize("args, kwargs, words", [
    ((lambda r: r[0],), {}, "watermark_strategy must be a raystream WatermarkStrategy or None"),
    (("a", "b"), {}, "the second argument 'a' is a name, and a name is given as well"),
    ((None, "a"), {"name": "b"}, "source_name='a' and name='b': give one"),
    ((None, "a", object()), {}, "raystream takes no type information"),
])
def test_wrong_arguments_are_refused_naming_them(args, kwargs, words):
    with pytest.raises(rs.GraphError, match=words.replace("(", r"\(")):
        rs.StreamEnvironment().from_source(CollectionSource([1]), *args, **kwargs)
