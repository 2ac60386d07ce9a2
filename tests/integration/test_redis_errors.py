"""Redis Streams errors on Ray: an entry that is not valid in the source's encoding fails the
job naming the stream, the entry id, the field and the remedy (``encoding=None``; it was a bare
``UnicodeDecodeError`` naming neither); a failed final commit of a RedisStreamSink in a job
without checkpointing is a ``JobFailed`` naming the sink, as any other failed commit is (it was
a bare ``RaystreamError``)."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import JobFailed
from raystream.operators.redis_streams import RedisStreamSink, RedisStreamSource


@pytest.fixture
def raw(redis_url):
    """A client that gives bytes (the entries these tests write are not UTF-8)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


def test_an_entry_that_is_not_utf8_names_the_stream_the_entry_and_the_remedy(redis_url, raw):
    raw.xadd("bin", {"ok": "fine"})
    bad_id = raw.xadd("bin", {b"k\xff": b"v"}).decode()
    with pytest.raises(JobFailed) as info:
        rs.StreamEnvironment().from_source(RedisStreamSource("bin", redis_url)).execute_and_collect("decode")
    text = str(info.value) + str(info.value.cause or "")
    assert "stream 'bin'" in text and repr(bad_id) in text and "b'k\\xff'" in text, text
    assert "utf-8" in text and "encoding=None" in text, text
    # the remedy works: bytes, as stored
    got = rs.StreamEnvironment().from_source(RedisStreamSource("bin", redis_url, encoding=None)).execute_and_collect("raw")
    assert got == [{b"ok": b"fine"}, {b"k\xff": b"v"}]


def test_a_bad_value_names_its_field(redis_url, raw):
    bad_id = raw.xadd("vals", {"name": b"\xfe\xfe"}).decode()
    with pytest.raises(JobFailed) as info:
        rs.StreamEnvironment().from_source(RedisStreamSource("vals", redis_url)).execute_and_collect("decode")
    text = str(info.value) + str(info.value.cause or "")
    assert "stream 'vals'" in text and repr(bad_id) in text and "field 'name'" in text, text


def test_a_failed_final_commit_without_checkpointing_is_job_failed_naming_the_sink(redis_url, raw):
    raw.set("taken", "a string, not a stream")
    env = rs.StreamEnvironment()
    env.generate(3).sink_to(RedisStreamSink("taken", redis_url))
    with pytest.raises(JobFailed) as info:
        env.execute("final-commit")
    text = str(info.value)
    assert "RedisStreamSink" in text and "'taken'" in text and "holds a string, not a stream" in text, text
    assert raw.type("taken") == b"string"
