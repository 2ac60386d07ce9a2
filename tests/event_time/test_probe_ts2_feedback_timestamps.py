"""Records fed back by close_feedback keep their event timestamps (Flink's iterations keep
the StreamRecord timestamp): the feedback edge sends them as the Arrow batch's last column
(engine/records.py with_timestamp_column), which is what a checkpoint logs and a restore
replays. Before, the edge dropped them and the loop head applied the upstream assigner again:
a fed-back record without the time field failed the job naming the wrong operator ("every
operator in between ... must keep the field"), one whose field changed got another time.
"""
from __future__ import annotations

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records

EV = [{"k": f"k{i % 2}", "ts": i * 100, "v": i} for i in range(10)]
AGAIN = rs.OutputTag("again")


class Loop(rs.KeyedProcessFunction):
    def process_element(self, value, ctx):
        if "round" not in value:
            ctx.output(AGAIN, {"k": value["k"], "v": value["v"], "round": 1})  # (no ts: it carries its timestamp)
        yield (value.get("round", 0), value["v"], ctx.timestamp)


def test_a_fed_back_record_keeps_its_timestamp():
    env = rs.StreamEnvironment(parallelism=2)
    s = env.from_collection(EV).assign_timestamps_and_watermarks(
        rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts"))
    s.key_by("k").process(Loop()).close_feedback(AGAIN, "k").collect()
    results = run_in_process(env.get_job_graph(), JobConfig(name="loop"), timeout_s=120)["results"]
    got = sorted(r for b in results.values() for r in collected_records(b))
    assert got == sorted((rnd, e["v"], e["ts"]) for e in EV for rnd in (0, 1))


def test_a_fed_back_batch_is_logged_with_its_timestamps_and_replayed_with_them() -> None:
    """What a feedback edge sends is what the task logs in a checkpoint (engine/task.py,
    dumps of the Arrow batches) and replays after a restore (Batch.of_arrow, then the loop's
    partitioner picks this subtask's records): the timestamps stay with their records."""
    import numpy as np
    import pyarrow as pa

    from raystream.engine.partitioners import KeyGroupPartitioner, KeySelector
    from raystream.engine.records import Batch, with_timestamp_column
    from raystream.engine.serde import dumps, loads

    rb = Batch.of_records([{"k": f"k{i % 3}", "v": i} for i in range(6)]).arrow()
    sent = with_timestamp_column(rb, np.array([10, 11, 12, 13, 14, 15], dtype=np.int64))
    (logged,) = loads(dumps([sent], what="feedback log"))
    replayed = Batch.of_arrow(logged)
    assert replayed.arrow().schema.equals(rb.schema, check_metadata=True)  # (the records' own schema)
    assert replayed.records() == rb.to_pylist() and replayed.timestamps.tolist() == [10, 11, 12, 13, 14, 15]
    p = KeyGroupPartitioner(KeySelector("k"))
    p.setup(0, 2, 128)
    got = sorted((r["v"], t) for _target, part in p.select(replayed)
                 for r, t in zip(part.records(), part.timestamps.tolist()))
    assert got == [(i, 10 + i) for i in range(6)]
    plain = Batch.of_arrow(rb)  # (a batch without timestamps: as it was, none)
    assert plain.timestamps is None and plain.arrow() is rb
    assert isinstance(sent, pa.RecordBatch)
