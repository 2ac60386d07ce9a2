"""``RedisStreamSource(start_id="$")`` (and a bounded source's end) is resolved once per
submission, by the driver as it ships the job (``engine.graph.ship``), so every plan of the job
uses it: the first job master's and that of a master that takes the job over before its first
checkpoint completed (it plans from scratch with the graph blob the driver shipped).

Before, each master read the streams' last ids when it planned: the entries appended between
the submission and a takeover's plan were never read (and a bounded source read past its
end). The takeover is modelled by planning twice from one shipped blob, as the first master
and the master that takes over do; a real redis-server, no Ray."""

from __future__ import annotations

import logging

import cloudpickle

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.connectors import END_OF_INPUT, NOTHING_AVAILABLE
from raystream.engine.graph import ship
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.operators.redis_streams import RedisStreamSource
from raystream.operators.time import WatermarkedSource
from tests.ports import free_port


def shipped(source, watermarks: bool = False) -> bytes:
    env = rs.StreamEnvironment(parallelism=1)
    stream = env.from_source(source)
    if watermarks:
        stream = stream.assign_timestamps_and_watermarks(rs.WatermarkStrategy.for_monotonous_timestamps()
                                                         .with_timestamp_assigner(lambda r: int(r["i"])))
    stream.map(lambda r: r["i"]).collect()
    return ship(env.get_job_graph(), JobConfig(name="dollar"))


def plan(blob: bytes):
    """The splits a job master plans from the shipped graph (each master unpickles it anew)."""
    graph = cloudpickle.loads(blob)
    [vertex] = [v for v in graph.vertices if v.source is not None]
    return vertex.source, vertex.source.create_splits(vertex.parallelism)


def read_all(source, splits) -> list[str]:
    ctx = OperatorContext("src", "src", "src (1/1)", 0, 1, 128, KeyGroupRange(0, 127))
    reader = source.create_reader(ctx)
    reader.add_splits(splits)
    out: list[str] = []
    try:
        while (batch := reader.poll_next()) is not NOTHING_AVAILABLE:
            if hasattr(batch, "records"):
                out.extend(r["i"] if isinstance(r, dict) else r for r in batch.records())
    finally:
        reader.close()
    return out


def add(redis_client, key: str, values) -> None:
    for v in values:
        redis_client.xadd(key, {"i": str(v)})


def test_a_takeover_before_the_first_checkpoint_reads_what_came_after_the_submission(redis_url, redis_client):
    add(redis_client, "live", range(3))  # before the job: not read
    blob = shipped(RedisStreamSource("live", redis_url, bounded=False, start_id="$"))
    add(redis_client, "live", range(3, 6))  # after the submission, before the first plan
    first_source, first = plan(blob)
    add(redis_client, "live", range(6, 8))  # after the first master planned, before the takeover
    source, again = plan(blob)  # the master taking over: no checkpoint, it plans from scratch
    assert [s.position for s in again] == [s.position for s in first]
    assert read_all(source, again) == [str(i) for i in range(3, 8)]


def test_a_bounded_source_ends_where_the_streams_were_at_the_submission(redis_url, redis_client):
    add(redis_client, "b", range(4))
    blob = shipped(RedisStreamSource("b", redis_url))
    add(redis_client, "b", range(4, 6))  # after the submission: a bounded job does not read them
    _source, first = plan(blob)
    source, again = plan(blob)
    assert [s.end for s in again] == [s.end for s in first]
    reader_out = []
    ctx = OperatorContext("src", "src", "src (1/1)", 0, 1, 128, KeyGroupRange(0, 127))
    reader = source.create_reader(ctx)
    reader.add_splits(again)
    while (batch := reader.poll_next()) is not END_OF_INPUT:
        reader_out.extend(r["i"] for r in batch.records())
    reader.close()
    assert reader_out == ["0", "1", "2", "3"]


def test_a_source_with_watermarks_is_resolved_inside_its_wrapper(redis_url, redis_client):
    add(redis_client, "w", range(2))
    user_source = RedisStreamSource("w", redis_url, bounded=False, start_id="$")
    blob = shipped(user_source, watermarks=True)
    add(redis_client, "w", range(2, 4))
    source, _ = plan(blob)
    assert isinstance(source, WatermarkedSource)
    add(redis_client, "w", range(4, 5))
    _, again = plan(blob)
    inner = source.source
    assert [s.position for s in again] == [s.position for s in inner.create_splits(1)]
    assert read_all(inner, [s.split if hasattr(s, "split") else s for s in again]) == ["2", "3", "4"]
    assert user_source.resolved_ids is None  # the user's object is never changed


def test_a_driver_that_cannot_reach_the_server_ships_the_job_and_warns(caplog):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    source = RedisStreamSource("x", url, bounded=False, start_id="$",
                               connection_kwargs={"socket_connect_timeout": 2})
    with caplog.at_level(logging.WARNING, logger="raystream.operators.redis_streams"):
        blob = shipped(source)
    assert "the driver cannot read the streams' last ids" in caplog.text and "'x'" in caplog.text
    shipped_source = [v.source for v in cloudpickle.loads(blob).vertices if v.source is not None][0]
    assert shipped_source.resolved_ids is None  # the job master resolves it when it plans, as before
