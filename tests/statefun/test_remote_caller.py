"""The remote-function I/O thread's hand-offs (statefun_api.http_caller.RemoteCaller): calls
submitted together all run, and a burst of replies wakes the consumer once until it takes
the completions again (rearm_notify), never leaving a reply without a wake-up."""

from __future__ import annotations

import asyncio
import threading

from raystream.statefun_api.endpoints import remote_endpoint
from raystream.statefun_api.http_caller import CallResult, RemoteCaller
from tests.waiting import wait_for


class _Gated(RemoteCaller):
    """A RemoteCaller whose calls answer at once, without HTTP, once ``gate`` is set."""

    def __init__(self, notify) -> None:
        super().__init__(notify, name="test-remote-caller")
        self.gate = threading.Event()
        self.answering: set[asyncio.Task] = set()

    def _start(self, call_id, ep, url, body):  # noqa: ANN001, ANN202 - the overridden signature
        async def answer() -> None:
            while not self.gate.is_set():
                await asyncio.sleep(0.001)
            self.deliver(None, CallResult(call_id, body, None, 1, 200))

        task = self.loop.create_task(answer())
        self.answering.add(task)
        task.add_done_callback(self.answering.discard)


def _take(caller: RemoteCaller) -> list[int]:
    caller.rearm_notify()
    out = []
    while not caller.completions.empty():
        out.append(caller.completions.get_nowait().call_id)
    return out


def test_a_burst_of_replies_notifies_once_until_the_consumer_takes_them():
    notified = []
    caller = _Gated(lambda: notified.append(1))
    ep = remote_endpoint("demo/*", "http://127.0.0.1:9/{function.name}")
    try:
        for i in range(50):
            caller.submit(i, ep, "http://127.0.0.1:9/f", b"x")
        caller.gate.set()
        wait_for(lambda: caller.completions.qsize() == 50, "the 50 replies queued")
        assert len(notified) == 1  # one wake-up for the whole burst
        assert sorted(_take(caller)) == list(range(50))
        caller.submit(50, ep, "http://127.0.0.1:9/f", b"y")  # after the consumer took them: notifies again
        wait_for(lambda: len(notified) == 2, "a second notify for the reply after rearm_notify")
        assert _take(caller) == [50]
    finally:
        caller.close()


def test_replies_racing_the_consumer_are_never_left_without_a_wakeup():
    """The consumer takes completions whenever notified, on its own thread, while calls keep
    finishing: every reply is taken (a lost wake-up would leave some in the queue)."""
    wake = threading.Event()
    caller = _Gated(wake.set)
    caller.gate.set()
    ep = remote_endpoint("demo/*", "http://127.0.0.1:9/{function.name}")
    taken: list[int] = []
    done = threading.Event()

    def consumer() -> None:
        while not done.is_set():
            if wake.wait(0.01):
                wake.clear()
                taken.extend(_take(caller))

    t = threading.Thread(target=consumer, daemon=True)
    t.start()
    try:
        for i in range(2000):
            caller.submit(i, ep, "http://127.0.0.1:9/f", b"z")
        wait_for(lambda: len(taken) == 2000, "all 2000 replies taken by the notified consumer")
        assert sorted(taken) == list(range(2000))
    finally:
        done.set()
        t.join(5)
        caller.close()


def test_a_call_submitted_to_a_waiting_loop_always_wakes_it():
    """The loop takes the outbox before each wait and a submitter rings only while it waits:
    one call at a time (the loop asleep each time) and calls submitted from two threads at
    once all start; a lost wake-up would leave one unstarted forever."""
    caller = _Gated(lambda: None)
    caller.gate.set()
    ep = remote_endpoint("demo/*", "http://127.0.0.1:9/{function.name}")
    got: list[int] = []

    def take_until(n: int) -> None:
        def arrived() -> bool:
            while not caller.completions.empty():
                got.append(caller.completions.get_nowait().call_id)
            return len(got) >= n

        wait_for(arrived, f"{n} replies")

    try:
        for i in range(300):  # one at a time: each submit finds the loop waiting
            caller.submit(i, ep, "http://127.0.0.1:9/f", b"x")
            take_until(i + 1)
        threads = [
            threading.Thread(target=lambda base=base: [caller.submit(base + j, ep, "http://127.0.0.1:9/f", b"y") for j in range(500)])
            for base in (1000, 2000)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        take_until(1300)
        assert sorted(got) == list(range(300)) + list(range(1000, 1500)) + list(range(2000, 2500))
    finally:
        caller.close()
