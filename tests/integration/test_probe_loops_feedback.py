"""close_feedback: only a side output may come back to the loop head (the main output fed
back to its own operator circulated every record forever: the job never ended)."""

import pytest

import raystream as rs
from raystream.engine.errors import GraphError
from raystream.engine.graph import StreamEdge
from raystream.engine.partitioners import KeyGroupPartitioner, KeySelector
from tests.integration.test_core import Countdown


@pytest.mark.parametrize("tag", [None, "", 3])
def test_close_feedback_without_a_side_output_tag_is_a_build_error(tag):
    env = rs.StreamEnvironment(parallelism=1)
    looped = env.from_collection([(1, 2)]).map(lambda r: r)
    with pytest.raises(GraphError, match=r"close_feedback\(\) on 'map'.*side output"):
        looped.close_feedback(tag, 0)


def test_a_feedback_edge_of_the_main_output_is_rejected_when_the_graph_is_built():
    env = rs.StreamEnvironment(parallelism=1)
    looped = env.from_collection([(1, 2)]).map(lambda r: r)
    looped.node.inputs.append(StreamEdge(looped.node, KeyGroupPartitioner(KeySelector(0)), 0, feedback=True))
    looped.collect()
    with pytest.raises(GraphError, match="feedback edge of 'map' carries its main output"):
        env.get_job_graph()


@pytest.mark.parametrize("parallelism", [1, 2])
def test_close_feedback_takes_an_output_tag(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=5)
    items = [(f"k{i}", i % 5) for i in range(40)]
    looped = env.from_collection(items, batch_size=3).key_by(0).transform("countdown", Countdown, keyed=True)
    looped.close_feedback(rs.OutputTag("loop"), key=0)
    out = looped.execute_and_collect()
    assert sorted(out) == sorted((k, m) for k, n in items for m in range(n, -1, -1))


def test_closing_the_same_loop_twice_is_a_build_error():
    # a second feedback edge of the same side output brought every record back twice per round
    env = rs.StreamEnvironment(parallelism=1)
    looped = env.from_collection([("a", 3)]).key_by(0).transform("countdown", Countdown, keyed=True)
    looped.close_feedback("loop", key=0)
    with pytest.raises(GraphError, match=r"close_feedback\('loop'\) on 'countdown': that loop is already closed"):
        looped.close_feedback(rs.OutputTag("loop"), key=0)
    assert sorted(looped.execute_and_collect()) == [("a", 0), ("a", 1), ("a", 2), ("a", 3)]


class CountAndLoop(rs.KeyedProcessFunction):
    """Counts its key's records in keyed state and feeds (k, n - 1) back until 0."""

    def open(self, ctx):
        from raystream.checkpoint import ValueStateDescriptor

        self.seen = ctx.get_state(ValueStateDescriptor("seen", default=0))

    def process_element(self, value, ctx):
        k, n = value
        self.seen.update(self.seen.value() + 1)
        yield (k, n, self.seen.value())
        if n > 0:
            ctx.output(rs.OutputTag("loop"), (k, n - 1))


def test_a_keyed_loop_fed_back_by_another_column_is_a_build_error():
    # at parallelism 2 the job failed with a StateError (key ... outside this backend's range),
    # at parallelism 1 it ran: now the graph is refused whatever the parallelism
    env = rs.StreamEnvironment(parallelism=1)
    looped = env.from_collection([("k0", 3)]).key_by(0).process(CountAndLoop())
    with pytest.raises(GraphError, match=r"close_feedback\('loop', key=1\) on keyed 'process', whose input is keyed by 0"):
        looped.close_feedback("loop", key=1)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_keyed_loop_fed_back_by_its_own_key_keeps_its_state(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    items = [(f"k{i}", 3) for i in range(6)]
    looped = env.from_collection(items).key_by(0).process(CountAndLoop())
    looped.close_feedback("loop", key=0)
    assert sorted(looped.execute_and_collect()) == sorted((k, n, 4 - n) for k, _ in items for n in range(3, -1, -1))
