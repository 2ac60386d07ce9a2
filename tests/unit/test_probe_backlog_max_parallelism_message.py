"""An operator above the job's max_parallelism is refused when the job is built, keyed or not,
by one error naming every such operator (the keyed ones marked), why the limit binds each kind
and the remedy. Before, the error named the first one only, with no reason: for a map it read
as if the rule did not apply to it.

Why a non-keyed operator is bound too: every subtask is given a key-group range (its
OperatorContext's, ``KeyGroupRange.for_subtask``, which refuses an index beyond
max_parallelism) and the restore of operator state holding per-key parts is cut by it; a
subtask above max_parallelism would own no key group. As in Flink, where a vertex's
parallelism is at most its max parallelism."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import ConfigError, GraphError
from raystream.engine.keygroups import KeyGroupRange


def _job(map_p: int, reduce_p: int) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=2, max_parallelism=4)
    (env.from_collection([1, 2, 3]).map(lambda x: x).name("parse").set_parallelism(map_p)
     .key_by(lambda x: x % 2).reduce(lambda a, b: a + b).name("total").set_parallelism(reduce_p)
     .collect())
    return env


def test_a_non_keyed_operator_above_is_named_with_the_reason_and_remedy():
    with pytest.raises(GraphError) as info:
        _job(6, 4).get_job_graph()
    message = str(info.value)
    assert message.startswith("operator 'parse' (parallelism 6) is above max_parallelism 4: ")
    assert "also a subtask without keyed state" in message
    assert "StreamEnvironment(max_parallelism=6)" in message and "lower the parallelism of 'parse'" in message
    assert "'total'" not in message  # (at the limit: not named)


def test_every_operator_above_is_named_and_the_keyed_ones_marked():
    with pytest.raises(GraphError) as info:
        _job(6, 5).get_job_graph()
    message = str(info.value)
    assert message.startswith("operators 'parse' (parallelism 6), 'total' (parallelism 5, keyed) are above max_parallelism 4: ")
    assert "a keyed operator's state is split into max_parallelism key groups" in message


def test_a_subtask_beyond_max_parallelism_has_no_key_group_range():
    """(What binds a non-keyed operator: the runtime's range of every subtask.)"""
    assert KeyGroupRange.for_subtask(3, 4, 4) == KeyGroupRange(3, 3)
    with pytest.raises(ConfigError, match="must be between 1 and max_parallelism 4"):
        KeyGroupRange.for_subtask(5, 6, 4)
