"""The sink writer of ``execute_and_collect(stream=True)`` with checkpointing, in one
process (no Ray): pieces of completed checkpoints reach the driver's server once each, also
those still waiting for a slow driver when the task ends (at a stop-with-savepoint barrier),
and a restored writer sends again what its checkpointed state holds, under the same keys."""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa

from raystream.engine.collect import CollectServer
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.sinks import StreamingCollectSink

ROWS = 400_000  # 8 bytes each: 3.2 MB a piece, five pieces more than the sockets buffer


def _writer(server: CollectServer, attempt: int = 0) -> Any:
    ctx = OperatorContext(operator_name="collect", operator_uid="collect", task_name="collect (1/1)",
                          subtask_index=0, parallelism=1, max_parallelism=128,
                          key_group_range=KeyGroupRange.for_subtask(0, 1, 128), attempt=attempt,
                          checkpointing=True)
    return StreamingCollectSink(server.endpoint, max_bytes=1 << 20).create_writer(ctx)


def _take(server: CollectServer, count: int) -> list[tuple]:
    out = []
    while len(out) < count:
        message = server.get(timeout=60)
        assert message is not None, f"only {len(out)} of {count} messages came: {[m[3] for m in out]}"
        out.append(message)
    return out


def _piece(cid: int) -> Batch:
    return Batch.of_arrow(pa.record_batch([pa.array(range(cid * ROWS, (cid + 1) * ROWS), pa.int64())], ["value"]))


def test_pieces_waiting_for_a_slow_driver_are_sent_when_the_task_ends():
    server = CollectServer("local", max_queued=1)
    try:
        writer = _writer(server)
        for cid in range(1, 6):
            writer.write(_piece(cid))
            assert writer.prepare_commit(cid) == []
            writer.snapshot_state(cid)
            writer.notify_checkpoint_complete(cid)  # (the driver reads nothing meanwhile)
        closing = threading.Thread(target=writer.close)  # the task ends (a stop-with-savepoint)
        closing.start()
        messages = _take(server, 5)
        closing.join(timeout=60)
        assert not closing.is_alive()
        assert [m[3] for m in messages] == [("chk", cid) for cid in range(1, 6)]
        values = [v for m in messages for b in m[4] for v in b.column(0).to_pylist()]
        assert values == list(range(ROWS, 6 * ROWS))
    finally:
        server.close()


def test_a_restored_writer_sends_the_pieces_of_its_state_again_under_their_keys():
    server = CollectServer("local")
    try:
        writer = _writer(server)
        writer.write(_piece(1))
        writer.prepare_commit(1)
        state = writer.snapshot_state(1)  # (checkpoint 1 completes; the task dies before its notify)
        writer.write(_piece(2))  # (after the barrier: replayed by the restored job, not in the state)
        writer.close()
        restored = _writer(server, attempt=1)
        restored.restore_state([state])
        [message] = _take(server, 1)
        assert message[2:4] == (0, ("chk", 1))
        assert [v for b in message[4] for v in b.column(0).to_pylist()] == list(range(ROWS, 2 * ROWS))
        restored.close()
    finally:
        server.close()
