"""The snapshot writer counts the snapshots it has not written yet (a task declines new
checkpoints at their barriers while too many are), whether their writes succeed or fail."""

import threading

from raystream.engine.snapshots import AsyncSnapshotWriter


class GatedStorage:
    """Checkpoint storage whose writes wait for ``release`` and fail for checkpoint ``fail``."""

    def __init__(self, fail: int | None = None) -> None:
        self.release = threading.Event()
        self.fail = fail

    def write_state(self, job_id, checkpoint_id, name, data):
        assert self.release.wait(10)
        if checkpoint_id == self.fail:
            raise OSError("storage is down")
        return f"{checkpoint_id}/{name}"


def test_snapshots_in_flight_are_counted_until_written_or_failed():
    storage = GatedStorage(fail=2)
    writer = AsyncSnapshotWriter(storage, "job")
    acks, declines = [], []
    try:
        for cid in (1, 2, 3):
            writer(cid, 0, 0, {"op": {"op": b"x"}}, lambda c, v, s, handles: acks.append(c),
                   lambda c, reason, committables=None: declines.append(c))
        assert writer.in_flight() == 3  # (the first write waits for the storage)
        storage.release.set()
        writer.drain()
        assert writer.in_flight() == 0
        assert acks == [1, 3] and declines == [2]
    finally:
        writer.close()
