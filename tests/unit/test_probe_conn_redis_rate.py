"""``RedisStreamSource(rate=...)`` reads at the rate asked whatever the parallelism (against a
real ``redis-server``, no Ray; the clock of the module is replaced, nothing waits).

The rate is "records per second over all subtasks". Before, each subtask took ``rate /
parallelism``, also a subtask that holds no stream: one stream read at parallelism 4 came at a
quarter of the rate, and of 3 streams at parallelism 2 the one read alone came twice as fast as
each of the other two; and a subtask reading several streams asked ``XREAD`` for its whole
allowance from each (the count is per stream): 2 streams read at twice the subtask's share
until the overdraft was paid back. Now every stream gets ``rate / number of streams``, in
whichever subtask reads it, and a read asks each stream for its part of the allowance.
"""

from __future__ import annotations

import pytest

from raystream.engine.connectors import NOTHING_AVAILABLE
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.operators import redis_streams
from raystream.operators.redis_streams import RedisStreamSource


class _Clock:
    now = 100.0

    @classmethod
    def monotonic(cls) -> float:
        return cls.now


def _read_for_one_second(source: RedisStreamSource, parallelism: int) -> list[int]:
    """Entries each subtask reads in one second of the fake clock, with the splits dealt as
    the master deals them (round robin: streams without weight weigh the same)."""
    splits = source.create_splits(parallelism)
    readers = []
    for s in range(parallelism):
        reader = source.create_reader(OperatorContext("src", "src", f"src ({s + 1}/{parallelism})", s, parallelism, 128,
                                                      KeyGroupRange(0, 127)))
        reader.add_splits(splits[s::parallelism])
        readers.append(reader)
    _Clock.now += 1.0
    counts = []
    for reader in readers:
        n = 0
        while (b := reader.poll_next()) is not NOTHING_AVAILABLE:
            n += len(b)
        reader.close()
        counts.append(n)
    return counts


@pytest.mark.parametrize(("streams", "parallelism", "per_subtask"), [
    (1, 1, [120]), (1, 2, [120, 0]), (1, 4, [120, 0, 0, 0]), (3, 2, [80, 40]), (4, 2, [60, 60]),
])
def test_the_rate_is_shared_by_the_streams(redis_url, redis_client, monkeypatch, streams, parallelism, per_subtask):
    monkeypatch.setattr(redis_streams, "time", _Clock)
    keys = [f"rate:{i}" for i in range(streams)]
    pipe = redis_client.pipeline()
    for key in keys:
        redis_client.delete(key)
        for i in range(500):
            pipe.xadd(key, {"i": i})
    pipe.execute()
    source = RedisStreamSource(keys, redis_url, bounded=False, rate=120.0, batch_size=1000)
    assert _read_for_one_second(source, parallelism) == per_subtask
