"""``execute_and_collect(limit=N)`` and ``execute_and_collect(stream=True)``: the records of
a running job reach the driver as the sink writes them (Flink's ``executeAndCollect(limit)``
and its ``CloseableIterator``), also from an unbounded job, which ends when the driver has
what it wants; each compared with a plain-Python reference, at parallelism 1 and 2."""

from __future__ import annotations

import os
import threading
from collections import Counter

import pytest

import raystream as rs
from raystream.engine.client import JobClient
from raystream.engine.errors import JobFailed
from raystream.operators.redis_streams import RedisStreamSource
from raystream.operators.sinks import collected_records
from tests.waiting import wait_for

PARALLELISM = [1, 2]


def _running() -> list[str]:
    return list(JobClient.list_running())


@pytest.mark.parametrize("p", PARALLELISM)
def test_limit_takes_the_first_records_of_an_unbounded_job_and_cancels_it(p):
    env = rs.StreamEnvironment(parallelism=p)
    got = env.generate(lambda i: {"i": i, "sq": i * i}).execute_and_collect("unbounded-limit", limit=7)
    assert len(got) == 7
    assert all(r == {"i": r["i"], "sq": r["i"] ** 2} for r in got)
    assert len({r["i"] for r in got}) == 7  # (no record twice)
    if p == 1:
        assert [r["i"] for r in got] == list(range(7))  # one subtask: in its order
    assert not _running()


@pytest.mark.parametrize("p", PARALLELISM)
def test_limit_larger_than_a_bounded_output_returns_all_of_it(p):
    env = rs.StreamEnvironment(parallelism=p)
    words = ["ä", "b", None, "ünï", ""] * 40
    got = env.from_collection(words).map(lambda w: (w, len(w or ""))).execute_and_collect(limit=10_000)
    assert Counter(got) == Counter((w, len(w or "")) for w in words)


@pytest.mark.parametrize("p", PARALLELISM)
def test_limit_with_as_table_gives_a_table_of_that_many_rows(p):
    env = rs.StreamEnvironment(parallelism=p, batch_size=16)
    table = env.generate(lambda i: {"k": i % 3, "v": float(i)}).execute_and_collect(limit=50, as_table=True)
    assert table.num_rows == 50 and table.column_names == ["k", "v"]
    assert all(row["k"] == int(row["v"]) % 3 for row in table.to_pylist())
    env = rs.StreamEnvironment(parallelism=p, batch_size=16)
    small = env.from_collection([{"k": 1, "v": 2.0}] * 3).execute_and_collect(limit=50, as_table=True)
    assert small.to_pylist() == [{"k": 1, "v": 2.0}] * 3


@pytest.mark.parametrize("p", PARALLELISM)
def test_a_stream_yields_every_record_of_a_bounded_job_and_ends(p):
    env = rs.StreamEnvironment(parallelism=p, batch_size=64)
    stream = env.from_collection(list(range(3000))).map(lambda x: {"x": x, "s": str(x) * (x % 5)})
    with stream.execute_and_collect("bounded-stream", stream=True) as records:
        got = list(records)
        assert records.client.status() == "FINISHED"
    assert sorted(got, key=lambda r: r["x"]) == [{"x": x, "s": str(x) * (x % 5)} for x in range(3000)]


def test_breaking_out_of_a_for_loop_cancels_the_job():
    env = rs.StreamEnvironment(parallelism=2)
    records = env.generate(lambda i: i).execute_and_collect("break", stream=True)
    seen = []
    for r in records:
        seen.append(r)
        if len(seen) == 5:
            break
    assert len(set(seen)) == 5
    assert records.client.status() == "CANCELLED"  # (the loop's end closed it: waited for the end)
    assert not _running()
    with pytest.raises(StopIteration):  # closed: nothing more
        next(records)


def test_close_before_reading_cancels_the_job():
    env = rs.StreamEnvironment(parallelism=1)
    records = env.generate(lambda i: i).execute_and_collect(stream=True)
    records.close()
    records.close()  # (idempotent)
    assert records.client.status() == "CANCELLED"
    assert not _running()


@pytest.mark.parametrize("p", PARALLELISM)
def test_a_failed_job_raises_its_error_from_the_iterator(p):
    def explode(x: int) -> int:
        if x == 500:
            raise ValueError("bad record")
        return x

    env = rs.StreamEnvironment(parallelism=p)
    with env.generate(lambda i: i).map(explode).execute_and_collect(stream=True) as records:
        with pytest.raises(JobFailed) as failed:
            for _ in records:
                pass
    assert failed.value.operator == "map" and "bad record" in str(failed.value)
    assert failed.value.record == "500"


def test_a_slow_consumer_holds_the_job_back():
    """Records of 1 KB from an unbounded source, the driver reads 10 and stops: the sink
    task stops taking input once the path to the driver is full (instead of piling up
    the job's whole output somewhere), and goes on when the driver reads again."""
    env = rs.StreamEnvironment(parallelism=2, batch_size=100, buffer_bytes=64 << 10, credits=2)
    with env.generate(lambda i: "x" * 1000).execute_and_collect(stream=True) as records:
        for _ in range(10):
            next(records)
        last: list[int] = []

        def stalled() -> bool:
            ops = records.client.metrics()["operators"]
            taken = ops["collect"]["records_in"]
            last.append(taken)
            return len(last) > 3 and last[-4] == taken  # (metrics are sampled about once a second)

        wait_for(stalled, "the collect sink stops taking input", poll_s=0.5)
        assert last[-1] < 100_000, last  # (without back-pressure: millions within seconds)
        assert len([next(records) for _ in range(20_000)]) == 20_000  # it goes on


@pytest.mark.parametrize("p", PARALLELISM)
def test_with_checkpointing_a_restart_delivers_every_record_once(p, tmp_path):
    """A map fails once mid-stream; the job restarts from its latest checkpoint and replays:
    the iterator delivers what a failure-free run delivers, each record once."""
    marker = tmp_path / "failed"

    def build(fail: bool) -> rs.DataStream:
        def maybe_fail(x: int) -> int:
            if fail and x == 1500 and not os.path.exists(marker):
                marker.touch()
                raise RuntimeError("injected failure")
            return x

        env = rs.StreamEnvironment(parallelism=p, flush_ms=20)
        env.enable_checkpointing(100, checkpoint_dir=str(tmp_path / ("chk-fail" if fail else "chk")))
        env.set_restart_strategy(rs.RestartStrategy.fixed_delay(3, 100))
        # (the rate gives the failing run checkpoints before its failure; the failure-free
        # run's output does not depend on it: it runs at full speed)
        return env.generate(count=3000, rate=1500 if fail else None).map(maybe_fail).map(lambda x: (x % 5, x))

    with build(fail=True).execute_and_collect(stream=True) as records:
        got = list(records)
    assert marker.exists()  # (the failure was injected)
    with build(fail=False).execute_and_collect(stream=True) as records:
        clean = list(records)
    want = [(x % 5, x) for x in range(3000)]
    assert Counter(clean) == Counter(want)
    lost, duplicated = Counter(want) - Counter(got), Counter(got) - Counter(want)
    assert not lost and not duplicated, (sum(lost.values()), sum(duplicated.values()))


def test_a_keyed_job_with_checkpoints_streams_its_updates_in_order():
    """Rolling sums with checkpointing at parallelism 1: the updates arrive as the job makes
    them (checkpoint by checkpoint), equal to the plain-Python rolling sums."""
    env = rs.StreamEnvironment(parallelism=1, flush_ms=20)
    env.enable_checkpointing(100)
    events = [{"k": "ä" if i % 3 else "b", "v": i} for i in range(2000)]
    stream = env.from_collection(events).key_by("k").sum("v")
    with stream.execute_and_collect(stream=True) as records:
        got = [(r["k"], r["v"]) for r in records]
    totals: dict[str, int] = {}
    want = []
    for e in events:
        totals[e["k"]] = totals.get(e["k"], 0) + e["v"]
        want.append((e["k"], totals[e["k"]]))
    assert got == want


@pytest.mark.parametrize("p", PARALLELISM)
def test_limit_on_an_unbounded_redis_stream(p, redis_url, redis_client):
    """A Redis stream read on and on (``bounded=False``): ``limit`` returns once that many
    entries have come, the entries appended, in order at p=1."""
    for i in range(30):
        redis_client.xadd("clicks", {"user": f"ü{i % 4}", "n": str(i)})
    env = rs.StreamEnvironment(parallelism=p)
    clicks = env.from_source(RedisStreamSource("clicks", redis_url, bounded=False)).map(lambda e: (e["user"], int(e["n"])))
    got = clicks.execute_and_collect("clicks", limit=30)
    want = [(f"ü{i % 4}", i) for i in range(30)]
    assert Counter(got) == Counter(want)
    if p == 1:
        assert got == want
    assert not _running()


def test_stop_with_savepoint_delivers_everything_before_it_once(tmp_path):
    """Another thread stops the job with a savepoint while the driver reads: the iterator
    ends with what the job wrote up to the savepoint, and a job resumed from the savepoint
    gives the rest: every record exactly once."""
    n, pad = 30_000, 1000

    def build(rate: float | None) -> tuple[rs.StreamEnvironment, rs.DataStream]:
        env = rs.StreamEnvironment(parallelism=2, batch_size=100, buffer_bytes=32 << 10, credits=2)
        env.enable_checkpointing(100, checkpoint_dir=str(tmp_path / "chk"))
        numbers = env.generate(lambda i: i, count=n, rate=rate).uid("numbers")
        return env, numbers.map(lambda i: "x" * pad + str(i)).uid("padded")  # (1 KB records to collect)

    _env, stream = build(5000)  # (rate-limited: still running when the savepoint is taken)
    savepoint: list[str] = []
    with stream.execute_and_collect(stream=True) as records:
        got = [next(records) for _ in range(1000)]
        stopper = threading.Thread(
            target=lambda: savepoint.append(records.client.stop_with_savepoint(str(tmp_path / "sp"))))
        stopper.start()
        got += list(records)
        stopper.join()
        assert records.client.status() == "FINISHED"
    assert len(got) < n  # (stopped before its end)
    env, resumed = build(None)  # the rest at full speed (the rate is no state)
    resumed.collect()
    rest = [r for batches in env.execute("resumed", from_savepoint=savepoint[0]).sink_results.values()
            for r in collected_records(batches)]
    numbers = [int(s[pad:]) for s in got + rest]
    lost, duplicated = Counter(range(n)) - Counter(numbers), Counter(numbers) - Counter(range(n))
    assert not lost and not duplicated, (len(got), len(rest), sum(lost.values()), sum(duplicated.values()))
