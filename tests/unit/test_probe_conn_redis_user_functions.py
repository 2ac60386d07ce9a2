"""Errors of the user's functions in the Redis Streams connectors name what they failed on
(against a real ``redis-server``, no Ray).

Before, a ``deserializer`` that raised failed the job with the bare exception (``ValueError:
invalid literal for int() ...``) and no word of the stream or the entry, and a sink's
``serializer`` or stream function that raised was reported with the first record of the batch,
not the record it failed on. Now the source raises a :class:`UserCodeError` naming the stream,
the entry id and the decoded entry, and the sink one naming the record, which the task turns
into a ``JobFailed`` with ``err.record`` (``while processing entry '17...-0' of stream 'in':
{'n': 'x'}``).
"""

from __future__ import annotations

import pytest

from raystream.engine.errors import ConfigError, UserCodeError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.redis_streams import RedisStreamSink, RedisStreamSource


def _ctx() -> OperatorContext:
    return OperatorContext("op", "op", "op (1/1)", 0, 1, 128, KeyGroupRange(0, 127))


def test_a_failing_deserializer_names_the_stream_and_the_entry(redis_url, redis_client):
    redis_client.delete("in")
    ids = [redis_client.xadd("in", {"n": n}) for n in ("1", "2", "x", "4")]
    source = RedisStreamSource("in", redis_url, deserializer=lambda d: int(d["n"]))
    reader = source.create_reader(_ctx())
    reader.add_splits(source.create_splits(1))
    with pytest.raises(UserCodeError) as info:
        reader.poll_next()
    reader.close()
    assert info.value.what == f"entry {ids[2]!r} of stream 'in'"
    assert info.value.record == {"n": "x"}
    assert isinstance(info.value.original, ValueError)


@pytest.mark.parametrize("kind", ["serializer", "stream"])
def test_a_failing_sink_function_names_the_record_it_failed_on(redis_url, kind):
    def bad(r: dict) -> dict:
        return {"v": 1 // r["d"]}

    sink = (RedisStreamSink("out", redis_url, serializer=bad) if kind == "serializer"
            else RedisStreamSink(lambda r: f"out:{1 // r['d']}", redis_url))
    writer = sink.create_writer(_ctx())
    with pytest.raises(UserCodeError) as info:
        writer.write(Batch.of_records([{"d": 1}, {"d": 2}, {"d": 0}, {"d": 3}]))
    assert info.value.record == {"d": 0}
    assert isinstance(info.value.original, ZeroDivisionError)


def test_the_sinks_own_errors_still_name_the_record(redis_url):
    writer = RedisStreamSink(lambda r: None, redis_url).create_writer(_ctx())
    with pytest.raises(ConfigError, match=r"gave None for record \{'d': 1\}"):
        writer.write(Batch.of_records([{"d": 1}]))
