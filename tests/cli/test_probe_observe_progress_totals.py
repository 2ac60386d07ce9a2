"""The progress line's percentage of a bounded source whose records cross the network
(``key_by``, ``rebalance``, ``broadcast``, another parallelism): the total belongs to the
operator that receives them. Before, it was keyed by the source, which reports no metrics
of its own, so ``wait(progress=True)`` never showed a percentage for such jobs (no Ray)."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.observability import format_progress_line, source_totals


def totals(build, parallelism: int) -> dict[str, int]:
    """source_totals of the job, without the keys of the sources' own names (a source alone in
    its task keys its total by its name too, as it did before)."""
    env = rs.StreamEnvironment(parallelism=parallelism)
    build(env)
    graph = env.get_job_graph()
    own = {v.chain[0]["name"] for v in graph.vertices if v.source is not None and len(v.chain) == 1}
    return {k: n for k, n in source_totals(graph).items() if k not in own}


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_keyed_bounded_source_is_counted_by_the_operator_that_receives_it(parallelism):
    assert totals(lambda env: env.from_collection(list(range(10))).key_by(lambda x: x % 3).map(str).collect(),
                  parallelism) == {"map": 10}
    assert totals(lambda env: env.generate(lambda i: i, count=7).key_by(lambda x: x).map(str).collect(),
                  parallelism) == {"map": 7}
    # chained after the source (no network edge): as before
    assert totals(lambda env: env.from_collection(list(range(10))).map(str).collect(), parallelism) == {"map": 10}


def test_network_readers_add_their_inputs_or_have_no_total():
    union = totals(lambda env: env.from_collection(list(range(10))).union(env.generate(lambda i: i, count=5))
                   .key_by(lambda x: x).map(str).collect(), 2)
    assert union == {"union": 15}
    # one input of unknown size (an unbounded generator): no percentage rather than a wrong one
    assert totals(lambda env: env.from_collection(list(range(10))).union(env.generate(lambda i: i))
                  .key_by(lambda x: x).map(str).collect(), 2) == {}
    # a broadcast delivers each record to every subtask of the receiver
    assert totals(lambda env: env.from_collection(list(range(10))).broadcast().map(str).collect(), 2) == {"map": 20}
    # the operator after a second shuffle reads from another operator, not from the source
    assert totals(lambda env: env.from_collection(list(range(10))).key_by(lambda x: x).map(str)
                  .key_by(lambda x: x).filter(bool).collect(), 2) == {"map": 10}


def test_progress_line_of_a_keyed_job_shows_the_percentage():
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection(list(range(1000))).key_by(lambda x: x % 3).map(str).collect()
    # (sources report no operator metrics: the first operator is the one after the shuffle)
    m = {"operators": {"map": {"records_in": 250, "records_out": 250, "subtasks": 2},
                       "collect": {"records_in": 250, "records_out": 0, "subtasks": 2}}}
    line = format_progress_line("job", "RUNNING", 1.0, m, totals=source_totals(env.get_job_graph()))
    assert line == "job RUNNING 1.0s | read 250 | map 25% (250/1.0k) | sink 250"
