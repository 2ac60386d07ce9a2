"""A Redis sink's commit against a server that stops answering fails; it never hangs.

The job master commits a completed checkpoint's committables one commit at a time; a commit
that never returns holds every later commit back (and the job's end) for good, with no error.
Before, the committer's client took redis-py's default socket timeout: none before redis-py 8
(``redis>=4.2`` is allowed), so a server that accepted the connection and then answered
nothing (paused here with ``CLIENT PAUSE``; a hung host or a network partition does the same)
blocked ``commit`` until the server answered again; 5 s since redis-py 8, not configurable
apart from ``connection_kwargs`` and named nowhere in the error. Now a commit
that gets no answer within ``commit_timeout_s`` fails naming the sink and the timeout (the job
master fails the attempt and the restored job commits again), and committing the same
committable again once the server answers writes its entries exactly once: the script may
have run after the client gave up, and its marker then skips it.
"""

from __future__ import annotations

import threading

import pytest

from raystream.engine.errors import ConfigError, JobFailed
from raystream.operators.redis_streams import RedisStreamCommittable, RedisStreamSink


def test_a_commit_to_a_server_that_stops_answering_fails_and_its_recommit_writes_once(redis_url, redis_client):
    sink = RedisStreamSink("out", redis_url, commit_timeout_s=2.0)
    committable = RedisStreamCommittable("sink/0/tok/chk-3/0", {"out": [{"n": 1}, {"n": 2}, {"n": 3}]})
    outcome: list[BaseException | None] = []

    def commit() -> None:
        try:
            sink.create_committer().commit([committable])
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    redis_client.execute_command("CLIENT", "PAUSE", 120_000, "WRITE")  # (the server answers no write)
    try:
        thread = threading.Thread(target=commit, daemon=True)
        thread.start()
        thread.join(60)  # (a bound for a hang; the commit gives up after 2 s)
        hung = thread.is_alive()
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")
    thread.join(60)
    assert not hung, "the commit hung while the server answered nothing"
    assert isinstance(outcome[0], JobFailed), outcome
    message = str(outcome[0])
    assert "commit_timeout_s=2.0" in message and "sink/0/tok/chk-3/0" in message, message

    sink.create_committer().commit([committable])  # (the restored job's re-commit)
    sink.create_committer().commit([committable])
    assert [e[1] for e in redis_client.xrange("out")] == [{"n": "1"}, {"n": "2"}, {"n": "3"}]


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "5", True])
def test_a_commit_timeout_must_be_a_positive_number_or_none(bad):
    with pytest.raises(ConfigError, match="commit_timeout_s"):
        RedisStreamSink("out", commit_timeout_s=bad)
