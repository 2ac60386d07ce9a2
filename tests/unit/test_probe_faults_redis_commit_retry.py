"""A Redis sink whose commit times out after its checkpoint completed: the restored job
commits it again, and every record reaches the stream exactly once.

The server stops answering writes (``CLIENT PAUSE ... WRITE``) while the job runs, so the
commits of the checkpoints completing meanwhile get no answer within ``commit_timeout_s``
(the script may still run once the pause ends: an ambiguous outcome). Each failed commit
fails the attempt; the restart re-commits what the restored checkpoint covers (its markers
skip what went through) and the sources replay the rest. The drill covers failing commits of
the file sink only.
"""

from __future__ import annotations

from collections import Counter

import raystream as rs
from raystream.engine.local_runtime import run_in_process
from raystream.operators.redis_streams import RedisStreamSink
from tests.integration.gated import generate, wait_until_paused
from tests.waiting import wait_for

N = 600


def test_commits_that_time_out_are_committed_once_by_the_restored_job(tmp_path, redis_url, redis_client):
    gate = str(tmp_path / "gate")
    env = rs.StreamEnvironment(parallelism=2, flush_ms=0)
    env.enable_checkpointing(50, checkpoint_dir=str(tmp_path / "chk"), timeout_ms=60_000)
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(50, 100))
    generate(env, lambda i: {"i": i}, count=N, rate=None, batch_size=20, gate=gate).uid("src") \
        .sink_to(RedisStreamSink("out", redis_url, commit_timeout_s=0.5, max_entries_per_commit=50)).uid("redis")

    def drill(master, runtime) -> None:
        wait_until_paused(gate, 2)
        wait_for(lambda: redis_client.xlen("out") > 0, "a first commit", 60)
        # the server answers no write for 2 s: commits time out, restarts follow
        redis_client.execute_command("CLIENT", "PAUSE", 2_000, "WRITE")
        open(gate, "w").close()
        wait_for(lambda: master.restarts >= 1, "a commit that timed out failed the attempt", 60)

    result = run_in_process(env.get_job_graph(), env._job_config("redis-retry"), on_start=drill, timeout_s=180)
    assert result["metrics"]["restarts"] >= 1
    got = Counter(int(fields["i"]) for _id, fields in redis_client.xrange("out"))
    lost, duplicated = Counter(range(N)) - got, got - Counter(range(N))
    assert not lost and not duplicated, (sum(lost.values()), sum(duplicated.values()))
