"""The streaming collect writer of ``execute_and_collect(stream=True)`` with checkpointing holds
what it wrote until a checkpoint covering it completes. While checkpoints keep failing that
grew with the job's output, without bound (a job on failing storage with ``tolerable_failures``
unset ran out of memory). It is now bounded: past ``HELD_BYTES_FACTOR`` times the sink's
``max_bytes`` the writer fails its task with an error naming the bound (the job then restarts
from its last completed checkpoint, which frees it); a writer whose checkpoints complete never
comes near it. One process, no Ray: the writer driven as its task drives it."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from raystream.engine.collect import CollectServer
from raystream.engine.errors import RaystreamError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.sinks import StreamingCollectSink

MAX_BYTES = 64 << 10
ROWS = 4_096  # 8 bytes each: 32 KiB a checkpoint interval


def _writer(server: CollectServer) -> Any:
    ctx = OperatorContext(operator_name="collect", operator_uid="collect", task_name="collect (1/1)",
                          subtask_index=0, parallelism=1, max_parallelism=128,
                          key_group_range=KeyGroupRange.for_subtask(0, 1, 128), attempt=0, checkpointing=True)
    return StreamingCollectSink(server.endpoint, max_bytes=MAX_BYTES).create_writer(ctx)


def _piece(cid: int) -> Batch:
    return Batch.of_arrow(pa.record_batch([pa.array(range(cid * ROWS, (cid + 1) * ROWS), pa.int64())], ["value"]))


def test_output_held_for_checkpoints_that_keep_failing_is_bounded():
    server = CollectServer("local")
    writer = _writer(server)
    try:
        written = 0
        with pytest.raises(RaystreamError) as failed:
            for cid in range(1, 1_000):  # every checkpoint fails: no notify_checkpoint_complete
                writer.write(_piece(cid))
                written += ROWS * 8
                writer.prepare_commit(cid)
                writer.snapshot_state(cid)
        assert written <= 32 * MAX_BYTES + ROWS * 8  # (failed within one interval past the bound)
        message = str(failed.value)
        assert "collect sink 'collect (1/1)'" in message and f"{32 * MAX_BYTES:,} bytes" in message
        assert "checkpoints 1..64 have not completed" in message and "buffer_bytes" in message
    finally:
        writer.close()
        server.close()


def test_a_writer_whose_checkpoints_complete_never_reaches_the_bound():
    server = CollectServer("local")
    writer = _writer(server)
    got: list[int] = []
    try:
        for cid in range(1, 201):  # 200 intervals: 6.4 MB written, three times the 2 MiB bound
            writer.write(_piece(cid))
            writer.prepare_commit(cid)
            writer.snapshot_state(cid)
            if cid % 3 == 0:  # (two of three checkpoints fail; the third releases all three)
                writer.notify_checkpoint_complete(cid)
                while len(got) < cid * ROWS:
                    message = server.get(timeout=60)
                    assert message is not None
                    got.extend(v for b in message[4] for v in b.column(0).to_pylist())
        assert got == list(range(ROWS, 199 * ROWS))
    finally:
        writer.close()
        server.close()
