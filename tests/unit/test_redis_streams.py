"""The Redis Streams connectors against a real ``redis-server``, in one process (no Ray):
the reader's splits, positions and restores, and the sink's idempotent commits."""

from __future__ import annotations

import pickle
import random
import threading

import cloudpickle
import pytest

from raystream.engine.connectors import END_OF_INPUT, NOTHING_AVAILABLE
from raystream.engine.errors import ConfigError, RaystreamError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.redis_streams import (
    RedisStreamCommittable,
    RedisStreamSink,
    RedisStreamSource,
    RedisStreamSplit,
    default_fields,
    entry_timestamp_ms,
)
from raystream.operators.time import WatermarkedSource, WatermarkStrategy


def ctx(subtask: int = 0, parallelism: int = 1, uid: str = "op") -> OperatorContext:
    return OperatorContext(uid, uid, f"{uid} ({subtask + 1}/{parallelism})", subtask, parallelism, 128,
                           KeyGroupRange(0, 127))


def fill(redis_client, key: str, n: int, start: int = 0) -> None:
    pipe = redis_client.pipeline()
    for i in range(start, start + n):
        pipe.xadd(key, {"i": i, "key": f"k{i % 5}"})
    pipe.execute()


def drain(reader, limit: int = 10_000) -> list:
    """Poll until END_OF_INPUT (or NOTHING_AVAILABLE for an unbounded reader)."""
    out = []
    for _ in range(limit):
        result = reader.poll_next()
        if result is END_OF_INPUT or result is NOTHING_AVAILABLE:
            return out
        out.extend(result.records())
    raise AssertionError("the reader never ended")


def reader_for(source, subtask: int = 0, parallelism: int = 1, splits=None):
    reader = source.create_reader(ctx(subtask, parallelism))
    reader.add_splits(source.create_splits(parallelism) if splits is None else splits)
    return reader


# ---------------------------------------------------------------- source
def test_bounded_source_reads_every_entry_in_order_then_ends(redis_url, redis_client):
    fill(redis_client, "s", 2500)
    reader = reader_for(RedisStreamSource("s", redis_url, batch_size=1000))
    sizes = []
    while (b := reader.poll_next()) is not END_OF_INPUT:
        assert isinstance(b, Batch)
        sizes.append(len(b))
        if len(sizes) == 1:
            assert b.records()[0] == {"i": "0", "key": "k0"}  # Redis stores strings
    assert sizes == [1000, 1000, 500]
    assert reader.poll_next() is END_OF_INPUT
    reader.close()


def test_bounded_source_ends_at_the_last_entry_of_job_start(redis_url, redis_client):
    fill(redis_client, "s", 10)
    source = RedisStreamSource("s", redis_url)
    splits = source.create_splits(1)  # the job starts: the end is fixed here
    fill(redis_client, "s", 5, start=10)
    got = drain(reader_for(source, splits=splits))
    assert [int(x["i"]) for x in got] == list(range(10))


def test_restore_resumes_just_after_the_checkpointed_position(redis_url, redis_client):
    """Seeded random snapshot points over three streams: what was emitted before a snapshot
    plus what a reader restored from it emits is every entry exactly once."""
    for k in ("a", "b", "c"):
        fill(redis_client, k, 300)
    source = RedisStreamSource(["a", "b", "c"], redis_url, batch_size=37, stream_field="stream")
    want = sorted((k, i) for k in "abc" for i in range(300))
    rng = random.Random(11)
    for _run in range(5):
        reader = reader_for(source)
        emitted: list = []
        snapshot, before = None, 0
        while (b := reader.poll_next()) is not END_OF_INPUT:
            emitted.extend(b.records())
            if snapshot is None and rng.random() < 0.15:
                snapshot = pickle.loads(pickle.dumps(reader.snapshot_state(1)))  # as checkpoints keep it
                before = len(emitted)
        reader.close()
        assert snapshot is not None
        restored = drain(reader_for(source, splits=snapshot))
        got = sorted((x["stream"], int(x["i"])) for x in emitted[:before] + restored)
        assert got == want


def test_splits_are_streams_shared_over_subtasks(redis_url, redis_client):
    for k in ("a", "b", "c"):
        fill(redis_client, k, 4)
    source = RedisStreamSource(["a", "b", "c"], redis_url, stream_field="stream")
    splits = source.create_splits(2)
    assert [s.split_id for s in splits] == ["a", "b", "c"]
    assert all(s.position == "0" and s.end == redis_client.xrevrange(s.key, count=1)[0][0] for s in splits)
    reader = reader_for(source, splits=splits)
    seen = []
    while (b := reader.poll_next()) is not END_OF_INPUT:
        streams = {x["stream"] for x in b.records()}
        assert streams == {reader.current_split_id()}  # one stream per batch
        seen.append(reader.current_split_id())
    assert sorted(seen) == ["a", "b", "c"]


def test_unbounded_source_polls_for_new_entries(redis_url, redis_client):
    fill(redis_client, "live", 3)
    source = RedisStreamSource("live", redis_url, bounded=False, start_id="$", id_field="_id")
    splits = source.create_splits(1)
    fill(redis_client, "live", 2, start=3)  # after the job started: read
    reader = reader_for(source, splits=splits)
    first = drain(reader)
    assert [x["i"] for x in first] == ["3", "4"]
    assert reader.poll_next() is NOTHING_AVAILABLE  # waits, never ends
    fill(redis_client, "live", 1, start=5)
    got = drain(reader)
    assert [x["i"] for x in got] == ["5"]
    assert got[0]["_id"] == redis_client.xrevrange("live", count=1)[0][0]
    reader.close()


def test_unbounded_source_waits_for_a_stream_that_does_not_exist_yet(redis_url, redis_client):
    source = RedisStreamSource(["later"], redis_url, bounded=False, start_id="$", block_ms=20)
    reader = reader_for(source)
    assert reader.poll_next() is NOTHING_AVAILABLE  # blocked up to 20 ms, then nothing
    fill(redis_client, "later", 2)
    assert [x["i"] for x in drain(reader)] == ["0", "1"]


def test_a_bounded_source_on_a_missing_stream_ends_at_once(redis_url, redis_client):
    assert drain(reader_for(RedisStreamSource(["nothing", "here"], redis_url))) == []


def test_bounded_split_ends_when_its_last_entries_were_deleted(redis_url, redis_client):
    fill(redis_client, "s", 6)
    source = RedisStreamSource("s", redis_url, batch_size=2)
    reader = reader_for(source)
    first = reader.poll_next()
    assert [x["i"] for x in first.records()] == ["0", "1"]
    ids = [e[0] for e in redis_client.xrange("s")]
    redis_client.xdel("s", *ids[2:])  # everything after the position, including the end entry
    assert drain(reader) == []


def test_record_options_bytes_ids_and_deserializer(redis_url, redis_client):
    redis_client.xadd("s", {"name": "ann", "ts": 17})
    raw = drain(reader_for(RedisStreamSource("s", redis_url, encoding=None)))
    assert raw == [{b"name": b"ann", b"ts": b"17"}]
    source = RedisStreamSource("s", redis_url, id_field="id", stream_field="stream",
                               deserializer=lambda d: (d["name"], int(d["ts"]), d["stream"], entry_timestamp_ms(d["id"])))
    (name, ts, stream, ms), = drain(reader_for(source))
    assert (name, ts, stream) == ("ann", 17, "s")
    assert ms == int(redis_client.xrevrange("s", count=1)[0][0].split("-")[0])


def test_watermarks_are_generated_per_stream(redis_url, redis_client):
    for ts in (5, 6, 7):
        redis_client.xadd("slow", {"ts": ts})
    for ts in (10, 20, 30):
        redis_client.xadd("fast", {"ts": ts})
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    inner = RedisStreamSource(["slow", "fast"], redis_url, batch_size=1, deserializer=lambda d: {"ts": int(d["ts"])})
    source = WatermarkedSource(inner, strategy)
    reader = source.create_reader(ctx())
    reader.add_splits(source.create_splits(1))
    marks = []
    while (b := reader.poll_next()) is not END_OF_INPUT:
        assert b.timestamps is not None
        wm = reader.poll_watermark()
        if wm is not None:
            marks.append(wm)
    # the slow stream holds the watermark back until its last entry (then the fast one's counts)
    assert marks == [4, 5, 19]


def test_source_errors_are_clear(redis_url):
    with pytest.raises(ConfigError, match="stream keys"):
        RedisStreamSource([], redis_url)
    with pytest.raises(ConfigError, match="repeat"):
        RedisStreamSource(["a", "a"], redis_url)
    with pytest.raises(ConfigError, match="start_id"):
        RedisStreamSource("a", redis_url, start_id="latest")
    with pytest.raises(ConfigError, match="would read nothing"):
        RedisStreamSource("a", redis_url, start_id="$")
    with pytest.raises(ConfigError, match="only an unbounded source blocks"):
        RedisStreamSource("a", redis_url, block_ms=100)
    with pytest.raises(ConfigError, match="forever"):
        RedisStreamSource("a", redis_url, bounded=False, block_ms=0)
    dead = "redis://:s3cret@127.0.0.1:1/0"
    with pytest.raises(ConfigError, match="cannot read streams") as info:
        RedisStreamSource("a", dead, connection_kwargs={"socket_connect_timeout": 1}).create_splits(1)
    assert "s3cret" not in str(info.value) and "127.0.0.1:1" in str(info.value)


def test_a_key_that_is_not_a_stream_fails_at_job_start(redis_url, redis_client):
    redis_client.set("plain", "x")
    with pytest.raises(ConfigError, match="are the keys streams"):
        RedisStreamSource("plain", redis_url).create_splits(1)


def test_sources_and_splits_pickle(redis_url):
    source = RedisStreamSource(["a"], redis_url, deserializer=lambda d: d)
    clone = cloudpickle.loads(cloudpickle.dumps(source))
    assert clone.keys == ["a"] and clone.url == redis_url
    split = RedisStreamSplit("a", "a", "5-0", "9-0")
    assert pickle.loads(pickle.dumps(split)) == split and not split.finished()


# ---------------------------------------------------------------- sink
def write_and_prepare(sink, records, checkpoint_id, subtask=0):
    writer = sink.create_writer(ctx(subtask, uid="redis-sink"))
    writer.write(Batch.of_records(records))
    return writer.prepare_commit(checkpoint_id)


def test_default_fields():
    assert default_fields({"a": 1, "b": None, "c": True, 3: [1]}) == {"a": 1, "b": "null", "c": "true", "3": "[1]"}
    assert default_fields("hello") == {"value": "hello"}
    assert default_fields(2.5) == {"value": 2.5}


def test_writer_buffers_until_prepare_commit_with_unique_ids(redis_url):
    sink = RedisStreamSink("out", redis_url, max_entries_per_commit=4)
    writer = sink.create_writer(ctx(1, 2, uid="redis-sink"))
    assert writer.prepare_commit(1) == []
    writer.write(Batch.of_records([{"n": i} for i in range(10)]))
    cs = writer.prepare_commit(2)
    assert [len(c) for c in cs] == [4, 4, 2]
    assert all(c.commit_id.startswith("redis-sink/1/") and "/chk-2/" in c.commit_id for c in cs)
    writer.write(Batch.of_records([{"n": 10}]))
    final = writer.prepare_commit(None)
    assert "/final/" in final[0].commit_id
    ids = [c.commit_id for c in cs + final]
    other = sink.create_writer(ctx(1, 2, uid="redis-sink"))  # the same subtask after a restart
    other.write(Batch.of_records([{"n": 0}]))
    ids += [c.commit_id for c in other.prepare_commit(2)]
    assert len(set(ids)) == len(ids)


def test_commit_appends_in_order_and_sets_an_expiring_marker(redis_url, redis_client):
    sink = RedisStreamSink("out", redis_url, marker_ttl_s=60)
    cs = write_and_prepare(sink, [{"n": i, "tag": "x"} for i in range(7)], 1)
    committer = sink.create_committer()
    committer.commit(cs)
    assert [e[1] for e in redis_client.xrange("out")] == [{"n": str(i), "tag": "x"} for i in range(7)]
    marker = sink.marker_key(cs[0].commit_id)
    assert redis_client.get(marker) == "7"
    assert 0 < redis_client.pttl(marker) <= 60_000
    assert committer.result() == {"commits": 1, "entries": 7, "skipped": 0}


def test_a_recommit_never_duplicates(redis_url, redis_client):
    """The same committables again (after a restore) from the same master and from a new
    master (a fresh committer, as after a failover): written once."""
    sink = RedisStreamSink("out", redis_url)
    cs = write_and_prepare(sink, list(range(5)), 3) + write_and_prepare(sink, list(range(5, 8)), 3, subtask=1)
    first = sink.create_committer()
    first.commit(cs[:1])
    first.commit(cs)  # the first again, with the second
    takeover = cloudpickle.loads(cloudpickle.dumps(sink)).create_committer()
    takeover.commit(cs)
    assert sorted(int(e[1]["value"]) for e in redis_client.xrange("out")) == list(range(8))
    assert first.result() == {"commits": 2, "entries": 8, "skipped": 1}
    assert takeover.result() == {"commits": 0, "entries": 0, "skipped": 2}


def test_concurrent_committers_write_each_committable_once(redis_url, redis_client):
    """Two job masters committing the same committables at once (an old master not quite
    gone): the marker check and the append are one atomic step."""
    sink = RedisStreamSink("out", redis_url, max_entries_per_commit=10)
    cs = write_and_prepare(sink, list(range(500)), 1)
    committers = [sink.create_committer() for _ in range(4)]
    threads = [threading.Thread(target=c.commit, args=(list(reversed(cs)) if i % 2 else cs,))
               for i, c in enumerate(committers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(int(e[1]["value"]) for e in redis_client.xrange("out")) == list(range(500))
    assert sum(c.result()["commits"] for c in committers) == len(cs)


def test_records_routed_to_several_streams_commit_together(redis_url, redis_client):
    sink = RedisStreamSink(lambda x: f"out:{x['k']}", redis_url, maxlen=3, approximate=False)
    cs = write_and_prepare(sink, [{"k": i % 2, "n": i} for i in range(10)], 1)
    sink.create_committer().commit(cs)
    assert [e[1]["n"] for e in redis_client.xrange("out:0")] == ["4", "6", "8"]  # capped at 3 (MAXLEN = 3)
    assert [e[1]["n"] for e in redis_client.xrange("out:1")] == ["5", "7", "9"]


def test_a_failed_commit_writes_nothing_and_can_be_retried(redis_url, redis_client):
    """Failure injection: the output key holds a string. The commit fails loudly with the
    key named, appends nothing and sets no marker; once fixed, the retry writes once."""
    redis_client.set("out", "not a stream")
    sink = RedisStreamSink(lambda x: "ok" if x < 3 else "out", redis_url)
    cs = write_and_prepare(sink, list(range(6)), 1)
    committer = sink.create_committer()
    with pytest.raises(RaystreamError, match="holds a string, not a stream"):
        committer.commit(cs)
    assert redis_client.xlen("ok") == 0 and not redis_client.exists(sink.marker_key(cs[0].commit_id))
    redis_client.delete("out")
    committer.commit(cs)
    committer.commit(cs)
    assert redis_client.xlen("ok") == 3 and redis_client.xlen("out") == 3


def test_commit_to_an_unreachable_server_fails_without_the_password(redis_client):
    sink = RedisStreamSink("out", "redis://:s3cret@127.0.0.1:1/0", connection_kwargs={"socket_connect_timeout": 1})
    with pytest.raises(RaystreamError, match="failed") as info:
        sink.create_committer().commit([RedisStreamCommittable("x", {"out": [{"a": 1}]})])
    assert "s3cret" not in str(info.value)


def test_sink_errors_are_clear(redis_url):
    with pytest.raises(ConfigError, match="stream key"):
        RedisStreamSink("", redis_url)
    with pytest.raises(ConfigError, match="marker_ttl_s"):
        RedisStreamSink("out", redis_url, marker_ttl_s=0)
    with pytest.raises(ConfigError, match="maxlen"):
        RedisStreamSink("out", redis_url, maxlen=0)
    sink = RedisStreamSink(lambda x: None, redis_url)
    with pytest.raises(ConfigError, match="not a key"):
        sink.entry({"a": 1})
    with pytest.raises(ConfigError, match="no field"):
        RedisStreamSink("out", redis_url).entry({})


def test_a_used_committer_pickles_without_its_connection(redis_url, redis_client):
    sink = RedisStreamSink("out", redis_url)
    committer = sink.create_committer()
    committer.commit(write_and_prepare(sink, [1], 1))
    clone = cloudpickle.loads(cloudpickle.dumps(committer))
    assert clone.result() == committer.result()
