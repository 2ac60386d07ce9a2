"""``execute_and_collect(stream=True)`` with checkpoints that keep failing (checkpoint storage
failing every write, ``tolerable_failures`` unlimited: the job goes on): the collect sink holds
its output until a checkpoint completes (exactly once), and pauses its task's input once it
holds ``max_bytes`` of output of checkpoints that have not completed, instead of holding all
the output since the last completed checkpoint. Before 2026-12-07 it took input as long as its
sender had room, which it always had (nothing is sent before a checkpoint completes): 40
pieces of 4 MB (160 MB) were held for a 1 MB limit. Once a checkpoint completes every piece
goes, in order, once, and the input resumes. In one process (no Ray): the sink writer as its
task drives it."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from raystream.engine.collect import CollectServer
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.sinks import StreamingCollectSink
from tests.waiting import wait_for

ROWS = 500_000  # 8 bytes each: 4 MB a checkpoint's piece
PIECES = 40
LIMIT = 1 << 20


def _writer(server: CollectServer, posted: list) -> Any:
    ctx = OperatorContext(operator_name="collect", operator_uid="collect", task_name="collect (1/1)",
                          subtask_index=0, parallelism=1, max_parallelism=128,
                          key_group_range=KeyGroupRange.for_subtask(0, 1, 128), checkpointing=True,
                          post=posted.append)
    return StreamingCollectSink(server.endpoint, max_bytes=LIMIT).create_writer(ctx)


def _piece(cid: int) -> Batch:
    return Batch.of_arrow(pa.record_batch([pa.array(range(cid * ROWS, (cid + 1) * ROWS), pa.int64())], ["value"]))


def test_failing_checkpoints_pause_the_input_instead_of_holding_all_output():
    server = CollectServer("local")
    posted: list = []
    writer = _writer(server, posted)
    try:
        written = 0
        # the task: a piece and a barrier per loop, input taken only while the writer says so;
        # no checkpoint completes (each is aborted: its storage write failed)
        while written < PIECES and writer.accepts_input():
            written += 1
            writer.write(_piece(written))
            assert writer.prepare_commit(written) == []
            writer.snapshot_state(written)
        assert written == 1, f"the writer took {written} pieces of 4 MB while no checkpoint completed"
        assert writer.held_bytes <= LIMIT + 4 * ROWS * 8
        # the data ahead of the next barrier still passes (it is written while paused)
        writer.write(_piece(2))
        assert writer.prepare_commit(2) == []
        assert not writer.accepts_input()
        # checkpoint 2 completes (storage is back): both pieces go, in order, once; input resumes
        writer.notify_checkpoint_complete(2)
        assert posted, "the paused task was not woken"
        got = [server.get(timeout=60), server.get(timeout=60)]
        assert [m[3] for m in got if m is not None] == [("chk", 1), ("chk", 2)]
        assert got[1] is not None and got[1][4][0].column(0)[-1].as_py() == 3 * ROWS - 1
        assert writer.held_bytes == 0
        wait_for(writer.accepts_input, "the collect sink takes input again")
    finally:
        writer.close()
        server.close()


def test_between_completing_checkpoints_an_intervals_output_is_taken():
    """(No pause while no checkpoint's output waits: a healthy job is not throttled.)"""
    server = CollectServer("local")
    writer = _writer(server, [])
    try:
        for i in range(3):  # 12 MB written after the last completed checkpoint, none pending
            assert writer.accepts_input()
            writer.write(_piece(i))
        writer.prepare_commit(1)
        assert not writer.accepts_input()  # (checkpoint 1's 12 MB wait for it to complete)
        writer.notify_checkpoint_complete(1)
        message = server.get(timeout=60)
        assert message is not None and message[3] == ("chk", 1)
        wait_for(writer.accepts_input, "the collect sink takes input again")
    finally:
        writer.close()
        server.close()
