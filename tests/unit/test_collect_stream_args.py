"""``execute_and_collect(limit=, stream=)`` refuses arguments that make no sense before
anything runs (no Ray, no sink node added to the graph)."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.collect import CollectEndpoint, collect_host
from raystream.engine.errors import ConfigError


@pytest.mark.parametrize("limit", [0, -3, True, 2.5, "10"])
def test_a_limit_that_is_not_a_positive_number_of_records_is_refused(limit):
    env = rs.StreamEnvironment()
    stream = env.from_collection([1, 2, 3])
    nodes = len(env.graph.nodes)
    with pytest.raises(ValueError, match=r"limit=\.\.\.\) takes a number of records > 0, got"):
        stream.execute_and_collect(limit=limit)
    with pytest.raises(ConfigError, match="takes a number of records"):
        env.execute_and_collect(limit=limit)
    assert len(env.graph.nodes) == nodes  # (no collect sink was added)


def test_limit_and_stream_together_and_a_streamed_table_are_refused():
    stream = rs.StreamEnvironment().from_collection([1])
    with pytest.raises(ConfigError, match="not both"):
        stream.execute_and_collect(limit=3, stream=True)
    with pytest.raises(ConfigError, match="as_table=True goes with"):
        stream.execute_and_collect(stream=True, as_table=True)


def test_the_endpoint_of_a_local_job_is_loopback_and_its_key_is_not_shown(monkeypatch):
    monkeypatch.delenv("RAYSTREAM_COLLECT_HOST", raising=False)
    assert collect_host("local") == ("127.0.0.1", "127.0.0.1")
    monkeypatch.setenv("RAYSTREAM_COLLECT_HOST", "10.1.2.3")
    assert collect_host("ray://head:10001") == ("0.0.0.0", "10.1.2.3")
    endpoint = CollectEndpoint(("127.0.0.1", 4242), b"secret-key")
    assert "secret" not in repr(endpoint) and "4242" in repr(endpoint)
