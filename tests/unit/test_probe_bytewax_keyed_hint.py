"""A keyed stream's method called on a stream without a key (a Bytewax port writes
``stream.map_with_state(fn)`` where ``op.stateful_map`` took a keyed stream; a Flink port
``stream.reduce(fn)``) said only ``'DataStream' object has no attribute 'map_with_state'``;
now it names the operator whose stream has no key and says to ``key_by`` first. And a job of
two ``collect()`` sinks says how to read each.
"""

from __future__ import annotations

import pytest

import raystream as rs


@pytest.mark.parametrize("method", ["map_with_state", "flat_map_with_state", "reduce", "sum", "window", "aggregate"])
def test_a_keyed_method_on_a_stream_without_a_key_says_to_key_it(method):
    stream = rs.StreamEnvironment().from_collection([("a", 1)]).map(lambda r: r)
    with pytest.raises(AttributeError, match=rf"{method}\(\) is a keyed stream's, and the stream of 'map' has no key: "
                                             rf"key it first, stream\.key_by\(k\)\.{method}\(\.\.\.\)"):
        getattr(stream, method)
    assert callable(getattr(stream.key_by(0), method))  # (the keyed stream has it)


def test_other_missing_names_keep_python_s_error():
    stream = rs.StreamEnvironment().from_collection([1])
    with pytest.raises(AttributeError, match=r"^'DataStream' object has no attribute 'no_such_method'$"):
        stream.no_such_method  # noqa: B018
    assert not hasattr(stream, "reduce")


def test_two_collect_sinks_say_how_to_read_each():
    """Bytewax's windowing operators give three streams (down, late, meta): a port collects two
    or more, and ``execute_and_collect`` pointed at ``JobResult.sink_results`` without saying
    that its values are Arrow batches (``to_pylist`` turns tuple records into dicts); it now
    names the sinks' uids and ``collected_records``."""
    env = rs.StreamEnvironment()
    stream = env.from_collection([("a", 1)])
    stream.collect().uid("main")
    stream.map(lambda r: r[1]).collect().uid("values")
    with pytest.raises(rs.GraphError, match=r"needs exactly one collect\(\) sink, this job has 2 \(uids \['main', "
                                            r"'values'\]\); .*collected_records\(result\.sink_results\[uid\]\)"):
        env.execute_and_collect()
