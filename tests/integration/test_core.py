"""Engine core on a real local Ray: results, parallelism, back-pressure, errors, cleanup."""

import collections
import datetime as dt
import decimal
import enum
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import ray

import raystream as rs
from raystream.engine.connectors import Sink, SinkWriter
from raystream.jobs.wordcount import final_counts, generated_text, tokenize
from raystream.operators.sinks import collected_records
from tests.waiting import wait_for

TEXT = [generated_text(i) for i in range(3000)] + ["Hello hello, world!", ""]


def wordcount(env, lines):
    return (
        env.from_collection(lines, batch_size=500)
        .flat_map(tokenize)
        .map(lambda w: (w, 1))
        .key_by(0)
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
    )


def test_wordcount_equals_counter():
    env = rs.StreamEnvironment(parallelism=2)
    got = final_counts(wordcount(env, TEXT).execute_and_collect())
    assert got == collections.Counter(w for line in TEXT for w in tokenize(line))


def test_keyed_reduce_identical_at_parallelism_1_2_4():
    results = []
    for p in (1, 2, 4):
        env = rs.StreamEnvironment(parallelism=p)
        out = wordcount(env, TEXT).execute_and_collect()
        results.append(sorted(out))
    assert results[0] == results[1] == results[2]


def test_wordcount_job_module_reads_text_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("\n".join(TEXT))
    from raystream.jobs.wordcount import main

    counts = main([str(path), "--parallelism", "2"])
    assert counts == collections.Counter(w for line in TEXT for w in tokenize(line))


def test_parquet_batch_api_and_vectorized_aggregate(tmp_path):
    n = 50_000
    keys = [f"k{i % 97:03d}" for i in range(n)]
    table = pa.table({"key": keys, "value": pa.array(range(n), pa.int64())})
    pq.write_table(table, tmp_path / "events.parquet", row_group_size=8192)
    env = rs.StreamEnvironment(parallelism=2)
    out = (
        env.read_parquet(str(tmp_path / "events.parquet"), batch_size=4096)
        .map_batches(lambda b: b.filter(pc.equal(pc.bit_wise_and(b["value"], 1), 0)))
        .map_batches(lambda d: {"key": d["key"], "value": d["value"] * 3}, batch_format="numpy")
        .key_by("key")
        .aggregate(total=("value", "sum"), n=("value", "count"), emit="final")
        .execute_and_collect(as_table=True)
    )
    even = table.filter(pc.equal(pc.bit_wise_and(table["value"], 1), 0))
    ref = even.group_by("key").aggregate([("value", "sum"), ("value", "count")])
    expect = {k: (s * 3, c) for k, s, c in zip(ref["key"].to_pylist(), ref["value_sum"].to_pylist(), ref["value_count"].to_pylist())}
    got = {k: (t, c) for k, t, c in zip(out["key"].to_pylist(), out["total"].to_pylist(), out["n"].to_pylist())}
    assert got == expect


def test_uneven_parquet_files_are_read_balanced_and_whole_at_p2(tmp_path):
    # files of 1.5 row groups: round-robin dealt every large row group to subtask 0
    for f in range(4):
        pq.write_table(pa.table({"f": [f] * 6000, "i": list(range(6000))}), tmp_path / f"part-{f}.parquet", row_group_size=4000)

    import os

    env = rs.StreamEnvironment(parallelism=2)  # (subtask i of every vertex in executor process i)
    out = env.read_parquet(str(tmp_path)).map(lambda r: (os.getpid(), r["f"], r["i"])).execute_and_collect()
    assert sorted((f, i) for _s, f, i in out) == [(f, i) for f in range(4) for i in range(6000)]
    per_subtask = collections.Counter(s for s, _f, _i in out)
    assert sorted(per_subtask.values()) == [12000, 12000]
    for s in per_subtask:  # each file's rows in file order within a subtask
        rows = [(f, i) for t, f, i in out if t == s]
        assert rows == sorted(rows)


def test_write_parquet_round_trip(tmp_path):
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(lambda i: {"i": i, "sq": i * i}, count=10_000).write_parquet(str(tmp_path / "out"))
    result = env.execute("write")
    files = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert files and not list((tmp_path / "out").glob(".inprogress*"))
    table = pa.concat_tables(pq.read_table(f) for f in files)
    assert sorted(table["i"].to_pylist()) == list(range(10_000))
    assert result.metrics["operators"]["write_parquet"]["records_in"] == 10_000


class SlowSink(Sink):
    def create_writer(self, ctx):
        class W(SinkWriter):
            def write(self, batch):
                time.sleep(0.02)

        return W()


def test_fast_source_into_slow_sink_keeps_in_flight_bounded():
    env = rs.StreamEnvironment(parallelism=1, batch_size=100, credits=2)
    env.generate(200_000, batch_size=100).disable_chaining().sink_to(SlowSink()).disable_chaining()
    client = env.execute_async("backpressure")
    deadline = time.time() + 60
    while True:  # wait until the source has had time to run into the slow sink
        live = client.metrics()
        if sum(c["sends"] for c in live["channels"]) >= 20 or time.time() > deadline:
            break
        time.sleep(0.2)
    client.cancel()
    with pytest.raises(rs.JobCancelled):
        client.wait()
    chans = [c for c in live["channels"] if c["sends"] > 0]
    assert chans, live
    for c in chans:
        assert c["max_in_flight"] <= c["window"] == 2
    assert any(c["blocked_s"] > 0 for c in chans)  # the producer really waited for credits
    assert sum(c["rows"] for c in chans) < 200_000  # and was held back


def test_user_function_error_names_operator_subtask_and_record():
    env = rs.StreamEnvironment(parallelism=2)

    def explode(x):
        if x == 1234:
            raise ValueError("bad value")
        return x

    env.generate(5000).map(explode).name("explode").collect()
    with pytest.raises(rs.JobFailed) as info:
        env.execute("failing")
    err = info.value
    assert err.operator == "explode"
    assert err.record == "1234"
    assert err.subtask in (0, 1)
    assert "ValueError: bad value" in str(err) and "1234" in str(err)


def test_missing_column_at_runtime_is_a_clear_error():
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection([{"a": 1}]).map(lambda r: {"b": r["a"]}).key_by("a").reduce(lambda x, y: x).collect()
    with pytest.raises(rs.JobFailed, match="KeyError"):
        env.execute()


def test_cancel_unbounded_job_leaves_no_actor():
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(lambda i: i, rate=1000).key_by(lambda x: x % 7).reduce(lambda a, b: a + b).collect()
    client = env.execute_async("forever")
    assert client.status() in ("CREATED", "RUNNING")
    wait_for(lambda: client.status() == "RUNNING", "the job's tasks to be deployed")
    client.cancel()
    with pytest.raises(rs.JobCancelled):
        client.wait()
    assert client.status() == "CANCELLED"


def test_union_and_broadcast():
    env = rs.StreamEnvironment(parallelism=2)
    a = env.from_collection(range(100))
    b = env.from_collection(range(100, 150))
    out = a.union(b).map(lambda x: x).execute_and_collect()
    assert sorted(out) == list(range(150))
    env = rs.StreamEnvironment(parallelism=3)
    out = env.from_collection([1, 2]).set_parallelism(1).broadcast().map(lambda x: x).execute_and_collect()
    assert sorted(out) == [1, 1, 1, 2, 2, 2]


def test_keyed_process_function_with_value_state():
    from raystream.checkpoint import ValueStateDescriptor

    class Count(rs.KeyedProcessFunction):
        def open(self, ctx):
            self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

        def process_element(self, value, ctx):
            self.count.update(self.count.value() + 1)
            yield (ctx.get_current_key(), self.count.value())

    env = rs.StreamEnvironment(parallelism=2)
    out = env.from_collection([i % 5 for i in range(100)]).key_by(lambda x: x).process(Count()).execute_and_collect()
    finals = {}
    for k, c in out:
        finals[k] = max(finals.get(k, 0), c)
    assert finals == {k: 20 for k in range(5)}


class Countdown(rs.StreamOperator):
    """Emits n and feeds n-1 back into the loop until 0."""

    def process_batch(self, batch, input_index=0):
        records = batch.records()
        self.output.emit(rs.Batch.of_records(records))
        again = [(k, n - 1) for k, n in records if n > 0]
        if again:
            self.output.emit_side("loop", rs.Batch.of_records(again))


@pytest.mark.parametrize("parallelism", [1, 3])
def test_feedback_loop_terminates_after_the_loop_drains(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=5)
    items = [(f"k{i}", i % 17) for i in range(300)]
    looped = env.from_collection(items, batch_size=7).key_by(0).transform("countdown", Countdown, keyed=True)
    looped.close_feedback("loop", key=0)
    out = looped.execute_and_collect()
    expect = sorted((k, m) for k, n in items for m in range(n, -1, -1))
    assert sorted(out) == expect


@pytest.mark.parametrize("slot_sharing", [True, False])
def test_slot_sharing_deploys_one_actor_per_subtask_index(slot_sharing):
    """With slot sharing one TaskActor hosts subtask i of every vertex (data between them
    stays in process); without, one actor per task. Both give the same result."""
    env = rs.StreamEnvironment(parallelism=2, slot_sharing=slot_sharing)
    words = env.generate(lambda i: f"w{i % 11}", count=20_000, rate=20_000, batch_size=500)
    words.map(lambda w: (w, 1)).disable_chaining().key_by(lambda t: t[0]).reduce(
        lambda a, b: (a[0], a[1] + b[1])).collect()
    tasks = sum(v.parallelism for v in env.get_job_graph().vertices)
    assert tasks == 6
    client = env.execute_async("slots")
    deadline = time.time() + 60
    names: dict = {}
    while len(names) < tasks and time.time() < deadline:
        try:
            names = ray.get(client._master.task_actor_names.remote())
        except Exception:  # noqa: BLE001 - not deployed yet
            pass
        time.sleep(0.05)
    result = client.wait()
    assert len(names) == tasks
    assert len(set(names.values())) == (2 if slot_sharing else tasks)
    final = {}
    for w, n in (r for b in result.sink_results.values() for r in collected_records(b)):
        final[w] = max(final.get(w, 0), n)
    assert final == {f"w{k}": len(range(k, 20_000, 11)) for k in range(11)}
    transports = collections.Counter(c["transport"] for c in result.metrics["channels"] if c["sends"])
    # between executors (all on this one node): Unix domain sockets (channel_transport="auto")
    if slot_sharing:  # forward edge source -> map stays in process, hash edges half and half
        assert transports["local"] >= 2 and transports["socket"] >= 1, transports
    else:
        assert set(transports) == {"socket"}, transports


def test_side_output_stays_a_side_output_through_key_by_and_union():
    """``get_side_output(tag).key_by(k)`` and ``union`` of a side output read that side
    output, never the main output (they silently read the main output before)."""
    odd = rs.OutputTag("odd")

    class Split(rs.KeyedProcessFunction):
        def process_element(self, value, ctx):
            if value["n"] % 2:
                ctx.output(odd, value)
            else:
                yield value

    env = rs.StreamEnvironment(parallelism=2)
    main = env.from_collection([{"k": n % 3, "n": n} for n in range(20)]).key_by("k").process(Split())
    side = main.get_side_output(odd)
    keyed = side.key_by("k").map(lambda r: ("keyed-side", r["n"]))
    unioned = side.union(env.from_collection([{"k": 0, "n": 100}])).map(lambda r: ("union", r["n"]))
    keyed.union(unioned).collect()
    got = sorted(env.execute_and_collect())
    odds = [n for n in range(20) if n % 2]
    assert got == sorted([("keyed-side", n) for n in odds] + [("union", n) for n in odds + [100]])


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


def test_write_parquet_of_enums_aware_datetimes_and_decimals(tmp_path):
    """Such records cross channels pickled (Arrow would give them back changed) and are
    written as Arrow holds them: an IntEnum as its int, a datetime with its zone, a Decimal
    at the column's scale."""
    utc = dt.timezone.utc
    records = [
        {"i": i, "level": Level(1 + i % 2), "at": dt.datetime(2024, 1, 1, tzinfo=utc) + dt.timedelta(seconds=i),
         "price": decimal.Decimal("1.5") if i % 2 else decimal.Decimal("2.25")}
        for i in range(1000)
    ]
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection(records).rebalance().write_parquet(str(tmp_path / "out"))
    env.execute("write")
    table = pa.concat_tables(pq.read_table(f) for f in sorted((tmp_path / "out").glob("part-*.parquet")))
    rows = sorted(table.to_pylist(), key=lambda r: r["i"])
    assert rows == records
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("level").type == pa.int64()
    assert not any(k.startswith(b"raystream.") for k in table.schema.metadata or {})  # (how records travel)


@pytest.mark.parametrize("exchange", [False, True], ids=["chained", "after-a-channel"])
def test_map_batches_gets_typed_columns_of_records_that_cross_channels_pickled(exchange):
    utc = dt.timezone.utc
    env = rs.StreamEnvironment(parallelism=2)
    stream = env.from_collection(list(range(100))).map(
        lambda i: {"at": dt.datetime(2024, 1, 1, tzinfo=utc) + dt.timedelta(days=i), "level": Level(1 + i % 2)})
    if exchange:
        stream = stream.rebalance()
    out = (
        stream
        .map_batches(lambda rb: {"type": [str(rb.schema.field("at").type)] * rb.num_rows,
                                 "level": rb.column(1).to_pylist()})
        .execute_and_collect()
    )
    assert {r["type"] for r in out} == {"timestamp[us, tz=UTC]"}
    assert sorted(r["level"] for r in out) == [1] * 50 + [2] * 50
