"""A ``execute_and_collect(stream=True)`` iterator that is dropped without ``close()``.

In a notebook, ``it = stream.execute_and_collect(stream=True); next(it)`` in a cell that is
run again rebinds ``it``: the old iterator is garbage, nothing can read its job's records any
more. Before, that job ran on unseen (holding its executors and master), and the driver kept
the iterator's listening socket and threads for good: the reading threads waited forever to
hand over the messages they held. Now the job is cancelled and the socket and threads end.
No Ray: a real :class:`CollectServer` and a stand-in for the job's client.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

import pyarrow as pa

from raystream.engine.collect import CloseableIterator, CollectSender, CollectServer
from tests.waiting import wait_for


class _Client:
    """What a CloseableIterator uses of a JobClient, for a job that runs until cancelled."""

    name = "dropped"

    def __init__(self) -> None:
        self.cancels = 0
        self.callbacks: list[Any] = []

    def add_end_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def cancel(self) -> None:
        self.cancels += 1
        for callback in self.callbacks:
            callback()


def _collect_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("raystream-collect-")]


def test_a_dropped_iterator_cancels_its_job_and_its_threads_end():
    before = set(_collect_threads())
    client = _Client()
    server = CollectServer("local", max_queued=1)
    it = CloseableIterator(client, server, "collect")  # type: ignore[arg-type]  # (a stand-in client)
    sender = CollectSender(server.endpoint, "collect#0")
    for i in range(4):  # more than the queue holds: a reading thread waits to hand one over
        sender.send(0, ("rec", i), [pa.RecordBatch.from_pylist([{"v": i}])])
    assert next(it) == {"v": 0}
    wait_for(lambda: server.open_connections() == 1 and len(set(_collect_threads()) - before) >= 3,
             "the sender connected and its messages fill the queue")
    del it
    gc.collect()
    wait_for(lambda: client.cancels == 1, "the job of the dropped iterator is cancelled")
    wait_for(lambda: not set(_collect_threads()) - before - {sender._thread}, "the iterator's threads ended")
    sender.close()


def test_an_iterator_read_to_its_end_holds_no_socket():
    class _Finished(_Client):
        def wait(self, timeout: float | None = None) -> Any:
            class _Result:
                sink_results = {"collect": [(0, ("final", 0), [pa.RecordBatch.from_pylist([{"v": 9}])], ("c", 0))]}
            return _Result()

    before = set(_collect_threads())
    client = _Finished()
    server = CollectServer("local")
    it = CloseableIterator(client, server, "collect")  # type: ignore[arg-type]
    for callback in client.callbacks:  # the job has ended
        callback()
    assert next(it) == {"v": 9}
    try:
        next(it)
        raise AssertionError("the iterator did not end")
    except StopIteration:
        pass
    wait_for(lambda: not set(_collect_threads()) - before, "the server's accepting thread ended")
    assert client.cancels == 0
