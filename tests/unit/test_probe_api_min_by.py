"""Graph-time checks of ``KeyedStream.min_by`` / ``max_by``: a field that cannot name a
column or position, or a column the stream does not have, is refused when the graph is
built, naming the method and the field."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import GraphError


def test_unknown_column_is_refused_at_graph_build_time():
    env = rs.StreamEnvironment(parallelism=1)
    keyed = env.from_collection([{"k": "a", "v": 1}]).key_by("k")
    with pytest.raises(GraphError, match=r"max_by\('w'\): no column 'w' after 'from_collection'; columns are \['k', 'v'\]"):
        keyed.max_by("w")


@pytest.mark.parametrize("field", [True, 1.5, None, ("v",)])
def test_a_field_is_a_name_or_a_position(field):
    env = rs.StreamEnvironment(parallelism=1)
    keyed = env.from_collection([("a", 1)]).key_by(0)
    with pytest.raises(GraphError, match=r"min_by\(.*\): the field is a column name \(dict records\) or a position"):
        keyed.min_by(field)


def test_min_by_is_one_keyed_operator():
    env = rs.StreamEnvironment(parallelism=2)
    source = env.from_collection([("a", 1)])
    out = source.key_by(0).min_by(1)
    assert out.node.name == "min_by" and out.node.keyed
    assert out.node.inputs[0].source is source.node
