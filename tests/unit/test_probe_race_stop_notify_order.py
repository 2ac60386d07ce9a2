"""The job master's side of a stop-with-savepoint's notification racing its cancel (no Ray).

``stop_with_savepoint`` cancels the tasks once the savepoint is complete; the master sent each
task ``notify_checkpoint_complete(n)`` just before, without waiting. The executors are async
Ray actors, which do not run calls in the order they were submitted when one starts later than
another (Ray: "asynchronous or threaded actors do not guarantee the task execution order"):
a task could be cancelled before its notification started, and a sink that publishes what the
savepoint covers on it (the streaming ``collect()`` writer) never did. With the fake executors
of ``test_job_master``, a notification that starts a few event-loop turns late stands for that;
every task must have taken its notification before it sees the cancel.
"""

from __future__ import annotations

import asyncio

from tests.unit.test_job_master import FakeTask, master_until_stopped

LATE_TURNS = 5  # event-loop turns a notification's start lags (no time: turns of the loop)


def test_every_task_takes_the_savepoints_notification_before_its_cancel(tmp_path, monkeypatch):
    calls: list[tuple[tuple, str, int | None]] = []

    async def late_notify(self: FakeTask, cid: int) -> None:
        for _ in range(LATE_TURNS):
            await asyncio.sleep(0)
        calls.append((self.key, "notify", cid))

    async def cancel(self: FakeTask) -> None:
        calls.append((self.key, "cancel", None))
        self.done.set()

    monkeypatch.setattr(FakeTask, "notify_checkpoint_complete", late_notify)
    monkeypatch.setattr(FakeTask, "cancel", cancel)
    master, runtime, graph, config = master_until_stopped(tmp_path)

    async def main() -> tuple[dict, str]:
        job = asyncio.ensure_future(master.run(graph, config, "job-1", None, False))
        while master.status != "RUNNING":
            await asyncio.sleep(0.01)
        written = await asyncio.wait_for(master.stop_with_savepoint(str(tmp_path / "sp"), "job-1"), 60)
        return await asyncio.wait_for(job, 60), written

    result, written = asyncio.run(main())
    assert master.stopped_with_savepoint == written and result["savepoint"] == written
    savepoint_id = max(cid for _t, what, cid in calls if what == "notify")
    for key in {k for k, _what, _cid in calls}:
        mine = [(what, cid) for k, what, cid in calls if k == key]
        assert ("notify", savepoint_id) in mine, f"task {key} never took the savepoint's notification: {mine}"
        assert mine.index(("notify", savepoint_id)) < mine.index(("cancel", None)), (
            f"task {key} was cancelled before the savepoint's notification: {mine}")
