"""The hand-back release of a finished job's executor (``TaskExecutor.release(hand_back=tag)``),
which its master does not await: the next job's calls told the tag wait for it, whichever
arrives first, and an executor it leaves not clean takes no new tasks."""

from __future__ import annotations

import asyncio
import threading

import pytest

from raystream.engine.executor import TaskExecutor, _Hosted


def _executor_hosting(*keys: tuple) -> TaskExecutor:
    ex = TaskExecutor(transport=None)  # type: ignore[arg-type]  # (release and hosted do not use it)
    for key in keys:
        host = ex._hosted[key] = _Hosted()
        host.started = host.finished = True
    return ex


@pytest.mark.parametrize("release_first", [True, False])
def test_a_call_told_the_tag_waits_for_that_release_whichever_comes_first(release_first) -> None:
    async def scenario() -> list:
        ex = _executor_hosting((0, 0, "job#1"), (1, 0, "job#1"))
        if release_first:
            assert await ex.release(2.0, False, "job#1") is True
            return await ex.hosted(after="job#1")
        waiting = asyncio.ensure_future(ex.hosted(after="job#1"))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # the release has not come yet: nothing answers before it
        assert await ex.release(2.0, False, "job#1") is True
        return await waiting

    assert asyncio.run(scenario()) == []


def test_an_executor_left_not_clean_takes_no_new_tasks() -> None:
    stop = threading.Event()
    leftover = threading.Thread(target=stop.wait, name="raystream-leftover", daemon=True)
    leftover.start()

    async def scenario() -> None:
        ex = _executor_hosting((0, 0, "job#1"))
        with pytest.raises(RuntimeError, match="not clean"):
            await ex.release(0.05, False, "job#1")
        with pytest.raises(RuntimeError, match="not clean"):
            await ex.setup_tasks((0, 0, "job#2"), [((0, 0, "job#2"), b"", [], None)], None, after="job#1")
        assert ex._hosted == {}

    try:
        asyncio.run(scenario())
    finally:
        stop.set()
        leftover.join()


def test_a_release_that_never_comes_counts_as_not_clean() -> None:
    async def scenario() -> bool:
        return await _executor_hosting()._handed_back("job#9", timeout_s=0.05)

    assert asyncio.run(scenario()) is False


class _Job:
    """A stand-in task: what the mailbox thread needs of one."""

    def __init__(self) -> None:
        self.spec = type("Spec", (), {"vertex_id": 0, "subtask_index": 0, "task_name": "stand-in"})()

    def run(self) -> str:
        return "ran"


def test_a_run_sent_with_the_setups_waits_for_its_setup_or_fails_clearly() -> None:
    """When one executor hosts the whole job the master sends the runs with the setups; an
    async actor may start the run first: it waits for the setup, and a setup that fails or
    never comes fails the run with a clear error instead of a hang."""

    async def scenario() -> None:
        ex = TaskExecutor(transport=None)  # type: ignore[arg-type]

        async def setup(key, *_args) -> None:  # (what TaskExecutor.setup leaves behind)
            await asyncio.sleep(0.02)
            if key[0] == 0:
                ex._hosted[key] = host = _Hosted()
                host.task = _Job()  # type: ignore[assignment]
            else:
                ex._hosted[key] = _Hosted()  # built halfway, then failed
                raise ValueError("cannot unpickle the operators")

        ex.setup = setup  # type: ignore[method-assign]
        first = asyncio.ensure_future(ex.run((0, 0, "job#1"), 5.0))
        broken = asyncio.ensure_future(ex.run((1, 0, "job#1"), 5.0))
        await asyncio.sleep(0.01)
        assert not first.done()
        with pytest.raises(ValueError, match="cannot unpickle"):
            await ex.setup_tasks((0, 0, "job#1"), [((0, 0, "job#1"), b"", [], None), ((1, 0, "job#1"), b"", [], None)], None)
        assert await first == "ran"
        with pytest.raises(RuntimeError, match=r"task \(1, 0\) was not set up"):
            await broken
        with pytest.raises(RuntimeError, match="was not set up"):
            await ex.run((2, 0, "job#1"), 0.05)  # its setup never comes
        assert ex._set_up == {}

    asyncio.run(scenario())
