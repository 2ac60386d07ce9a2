"""Flink's sliding count windows, ``count_window(size, slide)``, and ``count_window_all``
(PyFlink's ``count_window(size, slide)`` / ``count_window_all(size)``). Before, the slide
was a TypeError (``count_window() takes 2 positional arguments but 3 were given``) and
``count_window_all`` did not exist; now every ``slide`` records of a key fire a window of
its last ``size`` records, as Flink's ``CountTrigger.of(slide)`` + ``CountEvictor.of(size)``.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import GraphError
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records


class Summary(rs.WindowFunction):
    def apply(self, key, window, inputs):
        values = [v for _, v in inputs]
        yield (key, tuple(values))


class AllSummary(rs.AllWindowFunction):
    def apply(self, window, inputs):
        yield tuple(v for _, v in inputs)


def run(env):
    result = run_in_process(env.get_job_graph(), JobConfig(name="count-windows"), timeout_s=120)
    [batches] = result["results"].values()
    return sorted(collected_records(batches))


def sliding(values, size, slide):
    return [tuple(values[max(0, i - size):i]) for i in range(slide, len(values) + 1, slide)]


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("size, slide", [(3, 2), (2, 2), (2, 3), (5, 1)])
def test_sliding_count_windows_match_a_reference(parallelism, size, slide):
    data = [(k, i) for i in range(11) for k in "ab" if k == "a" or i % 2]
    env = rs.StreamEnvironment(parallelism=parallelism)
    (env.from_collection(data).set_parallelism(1)  # (one source: each key's records in order, as Flink's)
        .key_by(lambda r: r[0]).count_window(size, slide).apply(Summary()).collect())
    expected = [(k, w) for k in "ab" for w in sliding([v for kk, v in data if kk == k], size, slide)]
    assert run(env) == sorted(expected)


@pytest.mark.parametrize("slide", [None, 2])
def test_count_window_all(slide):
    data = [("x", i) for i in range(9)]
    env = rs.StreamEnvironment(parallelism=2)
    windowed = env.from_collection(data).set_parallelism(1).count_window_all(3, slide)
    out = windowed.apply(AllSummary())
    out.collect()
    assert out.node.parallelism == 1
    values = [v for _, v in data]
    expected = [tuple(values[i:i + 3]) for i in range(0, 9, 3)] if slide is None else sliding(values, 3, 2)
    assert run(env) == sorted(expected)


def test_bad_slides_are_refused():
    keyed = rs.StreamEnvironment().from_collection([("a", 1)]).key_by(lambda r: r[0])
    with pytest.raises(GraphError, match=r"count_window\(3, 0\): slide is the number of records between windows"):
        keyed.count_window(3, 0)
