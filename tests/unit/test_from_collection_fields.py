"""``from_collection`` of dict records tells the graph their fields only when every record has
the same keys. Taken from the first record alone, a field that only later records have (a
column name of ``key_by``, an aggregate, a timestamp) was refused when the graph was built:
``no column 'v'; columns are ['k', 'w']``. No Ray."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import GraphError


def test_a_field_only_later_records_have_is_not_refused_when_the_graph_is_built():
    env = rs.StreamEnvironment(parallelism=2)
    stream = env.from_collection([{"k": "a", "w": 2}, {"k": "b", "v": 1}]).key_by("k").aggregate(n=("v", "count"))
    assert stream.node.name == "aggregate"


def test_a_field_no_record_has_is_refused_when_every_record_has_the_same_keys():
    env = rs.StreamEnvironment(parallelism=2)
    with pytest.raises(GraphError, match="'v'"):
        env.from_collection([{"k": "a", "w": 2}, {"w": 1, "k": "b"}]).key_by("k").aggregate(n=("v", "count"))
