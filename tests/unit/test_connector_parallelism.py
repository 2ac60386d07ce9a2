"""A source or sink that cannot run in parallel (one server socket: Flink's non-parallel
source or sink) says so with ``max_parallelism``: its node gets the environment's
parallelism capped to it, and asking for more fails when the job is built, naming it."""

from __future__ import annotations

import doctest

import pytest

import raystream as rs
import raystream.engine.graph
from raystream.engine.connectors import END_OF_INPUT, Sink, SinkWriter, Source, SourceReader
from raystream.engine.errors import GraphError
from raystream.statefun_api import StatefulFunctions
from raystream.statefun_api.job import StatefulFunctionsJob
from raystream.statefun_api.playground import PlaygroundEgress, PlaygroundIngress


class _Writer(SinkWriter):
    def write(self, batch):
        pass


class OneServerSink(Sink):
    max_parallelism = 1

    def create_writer(self, ctx):
        return _Writer()


class _Reader(SourceReader):
    def add_splits(self, splits):
        pass

    def poll_next(self):
        return END_OF_INPUT

    def snapshot_state(self, checkpoint_id):
        return []


class TwoPartitionSource(Source):
    max_parallelism = 2

    def create_splits(self, parallelism):
        return []

    def create_reader(self, ctx):
        return _Reader()


def vertex_parallelism(env: rs.StreamEnvironment) -> dict[str, int]:
    return {v.name: v.parallelism for v in env.get_job_graph().vertices}


def test_the_default_parallelism_is_capped_and_more_is_refused_naming_the_node():
    env = rs.StreamEnvironment(parallelism=3)
    stream = env.from_source(TwoPartitionSource(), "partitions").map(lambda x: x).set_parallelism(3)
    sink = stream.sink_to(OneServerSink(), "server")
    assert vertex_parallelism(env) == {"partitions": 2, "map": 3, "server": 1}
    with pytest.raises(GraphError, match=r"'server': a OneServerSink runs at most 1 parallel subtask, not 2"):
        sink.set_parallelism(2)
    with pytest.raises(GraphError, match=r"'partitions': a TwoPartitionSource runs at most 2 parallel subtasks, not 3"):
        env.from_source(TwoPartitionSource(), "partitions").set_parallelism(3)
    sink.node.parallelism = 4  # (past the API: refused when the job is built)
    with pytest.raises(GraphError, match=r"'server': .* not 4"):
        env.get_job_graph()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1"])
def test_a_max_parallelism_that_is_not_a_positive_int_is_refused_naming_the_class(bad):
    class Odd(OneServerSink):
        max_parallelism = bad

    env = rs.StreamEnvironment(parallelism=2)
    with pytest.raises(GraphError, match=r"'odd': Odd.max_parallelism must be an int >= 1 or None, got "):
        env.from_collection([1]).sink_to(Odd(), "odd")


def test_the_playground_ingress_and_egress_run_one_subtask_at_any_parallelism():
    env = rs.StreamEnvironment(parallelism=2)
    sf = StatefulFunctionsJob(env, StatefulFunctions())
    sf.with_playground_ingress(PlaygroundIngress(port=1)).with_playground_egress(PlaygroundEgress(port=2, topics=["t"]))
    got = vertex_parallelism(env)
    assert got["playground-ingress:1"] == 1 and got["egress io.statefun.playground/egress"] == 1, got
    assert got["statefun"] == 2, got


def test_doctests_of_the_check():
    assert doctest.testmod(raystream.engine.graph, optionflags=doctest.ELLIPSIS).failed == 0
