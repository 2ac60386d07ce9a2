"""Redis Streams sink errors on Ray: a failed final commit of a RedisStreamSink in a job
without checkpointing is a ``JobFailed`` naming the sink, as any other failed commit is (it
was a bare ``RaystreamError``)."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import JobFailed
from raystream.operators.redis_streams import RedisStreamSink
from tests.redis_server import redis_server_url


@pytest.fixture(scope="module")
def url():
    with redis_server_url() as u:
        yield u


@pytest.fixture
def r(url):
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    yield client
    client.close()


def test_a_failed_final_commit_without_checkpointing_is_job_failed_naming_the_sink(url, r):
    r.set("taken", "a string, not a stream")
    env = rs.StreamEnvironment()
    env.generate(3).sink_to(RedisStreamSink("taken", url))
    with pytest.raises(JobFailed) as info:
        env.execute("final-commit")
    text = str(info.value)
    assert "RedisStreamSink" in text and "'taken'" in text and "holds a string, not a stream" in text, text
    assert r.type("taken") == b"string"
