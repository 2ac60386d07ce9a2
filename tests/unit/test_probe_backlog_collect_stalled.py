"""A driver that stops reading its ``execute_and_collect(stream=True)`` iterator (a notebook
took ``next()`` five times and the user went on with other work) holds the job back with a
bounded amount of its output in memory: the driver's server queue is bounded in bytes, not
only in messages. With checkpointing a message is a whole checkpoint's output (any size), so
before 2026-12-07 the driver held up to 16 of them (measured on Ray, 1 KB records, 200 ms
checkpoints: the sink had taken 788k records, ~790 MB, for 5 read; the driver's RSS 920 MB).
Once the reader reads again every piece arrives, in order, once. In one process (no Ray): the
sink writer as its task drives it, checkpoints completing while the driver reads nothing."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from raystream.engine.collect import MAX_QUEUED_BYTES, CollectServer
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.sinks import StreamingCollectSink
from tests.waiting import wait_for

ROWS = 500_000  # 8 bytes each: 4 MB a checkpoint's piece
PIECES = 40  # 160 MB if nothing held the writer back


def _writer(server: CollectServer) -> Any:
    ctx = OperatorContext(operator_name="collect", operator_uid="collect", task_name="collect (1/1)",
                          subtask_index=0, parallelism=1, max_parallelism=128,
                          key_group_range=KeyGroupRange.for_subtask(0, 1, 128), checkpointing=True)
    return StreamingCollectSink(server.endpoint, max_bytes=1 << 20).create_writer(ctx)


def _piece(cid: int) -> Batch:
    return Batch.of_arrow(pa.record_batch([pa.array(range(cid * ROWS, (cid + 1) * ROWS), pa.int64())], ["value"]))


def _room_within(writer: Any, seconds: float) -> bool:
    try:
        wait_for(writer.accepts_input, "the collect sink takes input", timeout_s=seconds, poll_s=0.01)
    except AssertionError:
        return False
    return True


def test_a_driver_that_stops_reading_holds_a_bounded_part_of_the_output():
    server = CollectServer("local")
    writer = _writer(server)
    try:
        written = 0
        # the task: a checkpoint's piece per loop, input taken only while the writer has room
        # (a writer held back for 3 s is taken as stopped: on a slow machine that is earlier,
        # never later, so the count below only gets smaller)
        while written < PIECES and _room_within(writer, 3.0):
            written += 1
            writer.write(_piece(written))
            assert writer.prepare_commit(written) == []
            writer.snapshot_state(written)
            writer.notify_checkpoint_complete(written)
        # held: the driver's queue (8 MB, or one piece), a piece its reading thread waits to
        # queue, the sockets' buffers (a few MB on loopback), the outbox (1 MB, or one piece)
        assert written <= 12, f"the writer took {written} pieces of 4 MB while the driver read nothing"
        assert server.queued_bytes() <= MAX_QUEUED_BYTES + 5 * (1 << 20)
        # the reader reads again: every piece arrives, in order, once; the writer takes input again
        got = []
        while len(got) < written:
            message = server.get(timeout=60)
            assert message is not None, f"only {len(got)} of {written} pieces came"
            got.append(message)
        assert [m[3] for m in got] == [("chk", cid) for cid in range(1, written + 1)]
        assert got[-1][4][0].column(0)[-1].as_py() == (written + 1) * ROWS - 1
        wait_for(writer.accepts_input, "the collect sink takes input again")
        assert server.queued_bytes() == 0
    finally:
        writer.close()
        server.close()


def test_a_message_larger_than_the_bound_is_taken_when_the_queue_is_empty():
    server = CollectServer("local", max_bytes=1024)
    writer = _writer(server)
    try:
        for cid in (1, 2):
            writer.write(_piece(cid))
            writer.prepare_commit(cid)
            writer.notify_checkpoint_complete(cid)
        first = server.get(timeout=60)
        second = server.get(timeout=60)
        assert first is not None and second is not None
        assert [first[3], second[3]] == [("chk", 1), ("chk", 2)]
    finally:
        writer.close()
        server.close()
