"""``sink_to`` given something that is not a Sink (a PyFlink user's function, a path) names the
stream, what it got and how to write a sink. Before: ``sink_to() expects an
engine.connectors.Sink, got function`` (an internal module path, no stream, no remedy)."""

from __future__ import annotations

import pytest

import raystream as rs


def write_line(record):
    print(record)


@pytest.mark.parametrize("sink, words", [
    (write_line, ["got <function write_line", "a function is not a sink", "subclass raystream.Sink",
                  "raystream.SinkWriter with write(batch)", "write_jsonl(dir)"]),
    ("out/", ["got 'out/'", "subclass raystream.Sink"]),
])
def test_sink_to_names_the_stream_what_it_got_and_the_remedy(sink, words):
    stream = rs.StreamEnvironment().from_collection([1, 2]).map(str).name("format")
    with pytest.raises(rs.GraphError) as err:
        stream.sink_to(sink)
    assert "sink_to() of stream 'format' takes a raystream.Sink" in str(err.value)
    for w in words:
        assert w in str(err.value)
