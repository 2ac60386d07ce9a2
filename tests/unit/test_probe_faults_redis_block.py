"""An unbounded Redis source that blocks longer than redis-py's socket timeout.

``RedisStreamSource(bounded=False, block_ms=n)`` blocks in ``XREAD`` up to ``n`` ms while no
entry is ready. redis-py 8 gives every client a 5 s socket timeout by default, so before, a
``block_ms`` above 5,000 on a quiet stream failed the source task with ``TimeoutError: Timeout
reading from ...`` after 5 s (the job restarted, again and again while the stream stayed
quiet). Now the reader's client waits ``block_ms`` plus a margin, and a ``socket_timeout`` of
``connection_kwargs`` that does not exceed ``block_ms`` is refused when the source is made.
"""

from __future__ import annotations

import pytest

from raystream.engine.connectors import NOTHING_AVAILABLE
from raystream.engine.errors import ConfigError
from raystream.operators.redis_streams import RedisStreamSource
from tests.unit.test_redis_streams import reader_for


def test_a_block_longer_than_redis_pys_default_timeout_waits_and_finds_nothing(redis_url, redis_client):
    redis_client.xadd("quiet", {"i": 0})
    source = RedisStreamSource("quiet", redis_url, bounded=False, start_id="$", block_ms=5_600).resolve_at_submit()
    reader = reader_for(source)
    try:
        assert reader.poll_next() is NOTHING_AVAILABLE  # (before: TimeoutError after 5 s)
        redis_client.xadd("quiet", {"i": 1})
        assert [r["i"] for r in reader.poll_next().records()] == ["1"]
    finally:
        reader.close()


def test_a_socket_timeout_shorter_than_the_block_is_refused():
    with pytest.raises(ConfigError, match=r"socket_timeout=2.*block_ms=3000"):
        RedisStreamSource("s", bounded=False, block_ms=3_000, connection_kwargs={"socket_timeout": 2})
    RedisStreamSource("s", bounded=False, block_ms=3_000, connection_kwargs={"socket_timeout": None})  # (for ever)
    RedisStreamSource("s", bounded=False, block_ms=3_000, connection_kwargs={"socket_timeout": 4})
