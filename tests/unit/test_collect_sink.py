"""The collect sink's commits: a subtask's written batches travel as few large batches (runs
of one schema concatenated), with the same records in the same order."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.local_runtime import run_in_process
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.sinks import CollectSink, collected_records


def _writer() -> Any:
    ctx = OperatorContext(operator_name="collect", operator_uid="collect", task_name="collect (1/1)",
                          subtask_index=0, parallelism=1, max_parallelism=128,
                          key_group_range=KeyGroupRange.for_subtask(0, 1, 128))
    return CollectSink().create_writer(ctx)


def test_a_commit_concatenates_each_run_of_one_schema_in_order() -> None:
    writer = _writer()
    written = [
        [(i, f"s{i}") for i in range(0, 3)],       # typed tuples (int, str)
        [(i, f"s{i}") for i in range(3, 7)],       # same schema: joins the run
        [{"a": 1}, "mixed", 2.5],                  # mixed types: a pickled batch
        [(i, f"s{i}") for i in range(7, 9)],       # typed again: a new run
        [(i, f"s{i}") for i in range(9, 10)],
    ]
    for records in written:
        writer.write(Batch.of_records(records))
    [(subtask, tag, batches)] = writer.prepare_commit(None)
    assert (subtask, tag) == (0, ("final", writer.attempt))
    assert [b.num_rows for b in batches] == [7, 3, 3]
    assert collected_records(batches) == [r for records in written for r in records]
    assert writer.prepare_commit(None) == []  # the buffer went with the commit


def test_a_commit_of_one_batch_sends_it_as_it_is() -> None:
    writer = _writer()
    rb = pa.record_batch([pa.array([1, 2, 3])], ["v"])
    writer.write(Batch.of_arrow(rb))
    [(_subtask, tag, batches)] = writer.prepare_commit(7)
    assert tag == ("chk", 7)
    assert batches == [rb] and batches[0] is rb


def test_collected_results_of_a_job_are_unchanged_by_the_concatenation() -> None:
    env = rs.StreamEnvironment(parallelism=2, batch_size=64)
    env.from_collection(list(range(1000))).map(lambda x: (x % 7, x * 3)).collect()
    result = run_in_process(env.get_job_graph(), JobConfig(name="collect-concat"), timeout_s=120)
    [batches] = result["results"].values()
    # two subtasks, each committing one concatenated batch (not one per 64-row batch)
    assert len(batches) == 2
    assert sorted(collected_records(batches)) == sorted((x % 7, x * 3) for x in range(1000))
