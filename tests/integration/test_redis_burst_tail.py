"""The last entries of a burst on a blocking ``RedisStreamSource(block_ms=...)`` reach the
sink without waiting for the next entry. Before, the reader went straight back into a
blocking ``XREAD`` after returning entries, so what the task held in its output buffer (the
rest of the burst) waited there until the next entry came or ``block_ms`` passed (p90 2 s
with ``block_ms=2000``); now it reads once without blocking first and, finding nothing, lets
the task send what it holds. Here ``block_ms`` is 10 minutes and each burst is written only
once the one before came out: with the old reader the test would wait out its guard."""

from __future__ import annotations

import threading

import pytest

import raystream as rs
from raystream.operators.redis_streams import RedisStreamSource
from tests.waiting import wait_for


@pytest.mark.parametrize("parallelism", [1, 2])
def test_every_entry_of_a_burst_comes_out_before_the_next_burst(redis_url, redis_client, parallelism):
    keys = [f"burst{parallelism}:{k}" for k in range(parallelism)]
    env = rs.StreamEnvironment(parallelism=parallelism)
    stream = env.from_source(RedisStreamSource(keys, redis_url, bounded=False, block_ms=600_000)).map(lambda r: r["n"])
    got: list = []
    with stream.execute_and_collect("burst-tail", stream=True) as records:
        reader = threading.Thread(target=lambda: got.extend(records), daemon=True)
        reader.start()
        sent: list = []
        for burst in range(4):
            names = [f"{burst}-{i}" for i in range(7)]
            for i, n in enumerate(names):
                redis_client.xadd(keys[i % len(keys)], {"n": n})
            sent += names
            expected = len(sent)
            wait_for(lambda n=expected: len(got) >= n, f"burst {burst} at the sink before the next is written",
                     timeout_s=120)
        assert sorted(got) == sorted(sent)
