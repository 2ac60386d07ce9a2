"""A send of a released (failed) attempt to an executor that now serves the next attempt."""
import asyncio

import pytest

from raystream.engine.errors import RaystreamError
from raystream.engine.executor import TaskExecutor, _Hosted


class _NoTransport:
    pass


def test_push_to_a_task_the_executor_no_longer_hosts_delivers_nothing_and_says_so():
    executor = TaskExecutor(_NoTransport())  # type: ignore[arg-type]
    executor._hosted[("map", 0, "attempt-1")] = _Hosted()  # set up, never run

    async def scenario() -> bool:
        await executor.release(2.0, cancel=True)  # the attempt failed: released for the next one
        return await executor.push(("map", 0, "attempt-1"), 0, 0, [1, 2, 3])

    assert asyncio.run(scenario()) is False  # at once: not delivered, no wait for a setup
    assert executor._hosted == {}  # nothing was created for the stale key


class _Task:
    def __init__(self, cancelled: bool) -> None:
        self.cancelled = cancelled


@pytest.mark.parametrize("cancelled", [True, False])
def test_a_sender_whose_consumer_was_released_stops(ray_session, cancelled):
    import ray

    from raystream.engine.channels import Cancelled
    from raystream.engine.ray_runtime import RaySender

    class _Actor:
        push = None

    sender = RaySender(3, 4, _Actor(), [_Task(cancelled)])
    refs = [ray.put(True), ray.put(False)]
    sender._pending.extend(refs)
    expected = Cancelled if cancelled else RaystreamError
    with pytest.raises(expected) as err:
        sender._reap(refs)
    if not cancelled:
        assert "channel 3" in str(err.value) and "no longer hosted" in str(err.value)
