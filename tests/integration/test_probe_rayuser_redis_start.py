"""``RedisStreamSource(start_id="$")`` reads the entries appended after ``execute_async()``
returned, and a bounded source reads none of them.

Before, ``execute_async()`` returned as soon as the job's run was sent to its job master, and
the master resolved ``"$"`` (and a bounded stream's end) when it took the job, up to a process
start later (~1 s for a new master): the entries a program appended right after
``execute_async()`` returned were silently never read by a ``"$"`` source (and read by a
bounded one, whose end came after them). Now ``execute_async()`` returns once the job's
sources are planned."""

from __future__ import annotations

import pytest
import ray

import raystream as rs
from raystream.operators.redis_streams import RedisStreamSink, RedisStreamSource
from raystream.operators.sinks import collected_records
from tests.waiting import wait_for


@pytest.mark.parametrize("reuse_workers", [False, True], ids=["new-master", "pooled-master"])
@pytest.mark.parametrize("parallelism", [1, 2])
def test_dollar_reads_what_is_appended_once_execute_async_returned(redis_url, redis_client, tmp_path, parallelism,
                                                                   reuse_workers):
    keys = [f"ev{parallelism}{reuse_workers}:0", f"ev{parallelism}{reuse_workers}:1"]
    out = f"out{parallelism}{reuse_workers}"
    for i in range(6):
        redis_client.xadd(keys[i % 2], {"n": f"before-{i}"})
    env = rs.StreamEnvironment(parallelism=parallelism, reuse_workers=reuse_workers)
    env.enable_checkpointing(100, checkpoint_dir=str(tmp_path / "chk"))
    (env.from_source(RedisStreamSource(keys, redis_url, bounded=False, start_id="$"))
        .map(lambda r: {"n": r["n"]})
        .sink_to(RedisStreamSink(out, redis_url)))
    client = env.execute_async("dollar")
    try:
        after = [f"after-{i}" for i in range(10)]
        for i, n in enumerate(after):  # at once: the job's tasks may not be deployed yet
            redis_client.xadd(keys[i % 2], {"n": n})
        wait_for(lambda: client.status() == "RUNNING", "the job to run")
        # asked once the run has started (as when the run's call reaches the master first): answers
        # at once, not after the master's wait for a job that arrived already (120 s)
        ray.get(client.job_master().job_started.remote(client.job_id), timeout=60)
        last = [f"last-{k}" for k in range(len(keys))]
        for key, n in zip(keys, last):
            redis_client.xadd(key, {"n": n})
        # (a stream's entries are copied in order: once its last one is out, all of it is)
        wait_for(lambda: set(last) <= {e["n"] for _id, e in redis_client.xrange(out)}, "the last entries copied")
        got = sorted(e["n"] for _id, e in redis_client.xrange(out))
    finally:
        client.cancel()
    with pytest.raises(rs.JobCancelled):
        client.wait()
    assert got == sorted([*after, *last]), got


def test_a_bounded_source_ends_before_what_is_appended_once_execute_async_returned(redis_url, redis_client):
    for i in range(5):
        redis_client.xadd("bounded-in", {"n": f"before-{i}"})
    env = rs.StreamEnvironment(parallelism=1, reuse_workers=False)
    env.from_source(RedisStreamSource("bounded-in", redis_url)).map(lambda r: r["n"]).collect()
    client = env.execute_async("bounded")
    for i in range(5):
        redis_client.xadd("bounded-in", {"n": f"after-{i}"})
    result = client.wait()
    (records,) = [collected_records(batches) for batches in result.sink_results.values()]
    assert sorted(records) == [f"before-{i}" for i in range(5)]
