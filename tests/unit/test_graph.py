import pytest

import raystream as rs
from raystream.engine.errors import GraphError
from raystream.engine.partitioners import (
    ForwardPartitioner,
    KeyGroupPartitioner,
    RebalancePartitioner,
)


def chains(env):
    jg = env.get_job_graph()
    return [[op["name"] for op in v.chain] for v in jg.vertices], jg


def test_forward_operators_chain_and_keyed_edges_break_chains():
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection([1, 2]).map(lambda x: x).filter(bool).key_by(lambda x: x).reduce(max).map(str).collect()
    names, jg = chains(env)
    assert names == [["from_collection", "map", "filter"], ["reduce", "map", "collect"]]
    assert isinstance(jg.vertices[0].outputs[0].partitioner, KeyGroupPartitioner)


def test_disable_chaining_and_parallelism_change():
    env = rs.StreamEnvironment(parallelism=2)
    s = env.from_collection([1]).map(lambda x: x).disable_chaining()
    s.map(lambda x: x).set_parallelism(3).collect().set_parallelism(3)
    names, jg = chains(env)
    assert names == [["from_collection"], ["map"], ["map", "collect"]]
    assert isinstance(jg.vertices[0].outputs[0].partitioner, ForwardPartitioner)
    assert isinstance(jg.vertices[1].outputs[0].partitioner, RebalancePartitioner)
    assert jg.vertices[2].parallelism == 3


def test_rebalance_breaks_chain():
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection([1]).rebalance().map(lambda x: x).collect()
    names, _ = chains(env)
    assert names == [["from_collection"], ["map", "collect"]]


def test_fan_out_does_not_chain():
    env = rs.StreamEnvironment(parallelism=1)
    s = env.from_collection([1])
    s.map(lambda x: x).collect()
    s.map(lambda x: -x).print()
    names, jg = chains(env)
    assert names[0] == ["from_collection"]
    assert len(jg.vertices[0].outputs) == 2


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda env: env.from_collection([1]).map(42), "map\\(\\) expects a function or an object with a map\\(\\) method .*, got int"),
        (lambda env: env.from_collection([1]).filter("x"), "filter\\(\\) expects a function"),
        (lambda env: env.from_collection([{"a": 1}]).key_by("b"), "key_by\\('b'\\): no such column"),
        (lambda env: env.from_collection([1]).key_by(3.5), "key_by expects"),
        (lambda env: env.from_collection([{"a": 1}]).key_by("a").aggregate(t=("zz", "sum")), "no column 'zz'"),
        (lambda env: env.from_collection([{"a": 1}]).key_by("a").aggregate(t=("a", "median")), "one of"),
        (lambda env: env.from_collection([1]).key_by(lambda x: x).process(lambda x: x), "KeyedProcessFunction"),
        (lambda env: env.from_collection([1]).map_batches(lambda b: b, batch_format="csv"), "batch_format"),
        (lambda env: env.generate(True), "generate\\(\\) expects a count or a function, got True"),
    ],
)
def test_bad_graphs_are_rejected_when_built(build, message):
    env = rs.StreamEnvironment(parallelism=1)
    with pytest.raises(GraphError, match=message):
        build(env)


def test_missing_sink_and_forward_mismatch():
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection([1]).map(lambda x: x)
    with pytest.raises(GraphError, match="no sink"):
        env.get_job_graph()
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection([1]).forward().map(lambda x: x).set_parallelism(3).collect()
    with pytest.raises(GraphError, match="equal parallelism"):
        env.get_job_graph()


def test_read_parquet_key_column_is_checked(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"k": ["a"], "v": [1]}), tmp_path / "x.parquet")
    env = rs.StreamEnvironment()
    with pytest.raises(GraphError, match="no such column"):
        env.read_parquet(str(tmp_path / "x.parquet")).key_by("missing")


def test_graph_objects_refuse_pickling():
    import pickle

    env = rs.StreamEnvironment()
    s = env.from_collection([1])
    for obj in (env, s, s.node):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(obj)


def test_auto_uids_are_stable_for_an_unchanged_graph():
    def build():
        env = rs.StreamEnvironment(parallelism=2)
        env.from_collection([1]).map(lambda x: x).key_by(lambda x: x).reduce(max).collect()
        return [op["uid"] for v in env.get_job_graph().vertices for op in v.chain]

    assert build() == build()
