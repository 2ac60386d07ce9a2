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
