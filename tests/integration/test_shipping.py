"""A job's operators are pickled per vertex, apart from its sources (``engine.graph.ship``):
a class defined in a notebook (``__main__``, which task processes cannot import) still is
one class in every task process, whichever blob or channel brought it there."""

from __future__ import annotations

import sys

import pytest

import raystream as rs

pytestmark = pytest.mark.ray


def _notebook_class() -> type:
    """A class as a notebook cell defines it: in ``__main__``, so it travels by value."""

    def init(self, x: int) -> None:
        self.x = x

    point = type("Point", (), {"__init__": init})
    point.__module__ = "__main__"
    point.__qualname__ = "Point"
    return point


def test_a_notebook_class_is_one_class_across_sources_vertices_and_channels(ray_session):
    point = _notebook_class()
    main = sys.modules["__main__"]
    main.Point = point  # type: ignore[attr-defined]  # (as in a notebook, while the job is built and shipped)
    try:
        env = rs.StreamEnvironment(parallelism=2)
        (env.from_collection([point(i) for i in range(40)])  # the class in the source's chunks
         .map(lambda p: p if isinstance(p, point) else None)  # ... in the first vertex's operators
         .key_by(lambda p: p.x % 4)  # the records cross between task processes
         .map(lambda p: (p.x, isinstance(p, point), type(p).__qualname__))  # ... in the second vertex's
         .collect())
        out = sorted(env.execute_and_collect("notebook-class"))
    finally:
        del main.Point  # type: ignore[attr-defined]
    assert out == [(i, True, "Point") for i in range(40)]


def test_large_operators_and_sources_shared_through_the_object_store_survive_a_restart(ray_session, tmp_path):
    """A vertex's operators and its pickled chain and source, from 1 MiB on, reach the
    subtasks' setups as objects in Ray's object store (``RayExecutorRuntime.share``), owned
    by the job master for the whole job: the restarted attempt's setups fetch them again."""
    from raystream.engine.ray_runtime import SHARED_MIN_BYTES

    table = bytes(range(256)) * (2 * SHARED_MIN_BYTES // 256)  # captured: the operators pass the threshold
    marker = tmp_path / "failed-once"

    def enrich(pair: tuple[int, int]) -> tuple[int, int]:
        i, _ = pair
        if i == 7 and not marker.exists():
            marker.write_text("x")
            raise RuntimeError("the first attempt fails")
        return i, table[i]

    env = rs.StreamEnvironment(parallelism=2)
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(2, 0))
    # the source's function captures the table too: the master's pickled (chain, source) passes it
    env.generate(lambda i: (i, table[i]), count=40).map(enrich).collect()
    client = env.execute_async("shared-operators")
    result = client.wait()
    assert result.metrics["restarts"] == 1
    assert sorted(r for batches in result.sink_results.values() for r in _records(batches)) == [(i, i % 256) for i in range(40)]


def _records(batches: list) -> list:
    from raystream.operators.sinks import collected_records

    return [tuple(r) for r in collected_records(batches)]
