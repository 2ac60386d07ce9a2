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
            await ex.setup((0, 0, "job#2"), b"", [], None, after="job#1")
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
