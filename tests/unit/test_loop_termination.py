"""The job master's termination detection of a feedback loop (Mattern's four counters), in
one process: fake loop tasks answer the probe waves from a script, and the master must end
the loop only when two consecutive waves see every task idle with equal, unchanged totals of
records sent into and received from the loop. The races are scripted: a record in flight
during a wave, a record sent and received between the two waves, a task that becomes busy,
idle reports that arrive while a wave is out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from raystream.engine.master import JobMaster
from raystream.engine.observability import NullMetricsBackend

LOOP = 3  # the vertex id of the loop's head


class LoopTask:
    """A task of the loop: ``probe()`` answers ``(idle, sent, received)`` from ``answers``
    (the last one again once they run out); ``gate``: probes wait for it when set."""

    def __init__(self, answers: list[tuple[bool, int, int]]) -> None:
        self.answers = list(answers)
        self.probes = 0
        self.ended = 0
        self.gate: asyncio.Event | None = None
        self.probed = asyncio.Event()

    async def probe(self) -> tuple[bool, int, int]:
        self.probes += 1
        self.probed.set()
        if self.gate is not None:
            await self.gate.wait()
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def end_feedback(self) -> None:
        self.ended += 1  # (counted when sent: the master does not await it)


class _Call:
    def __init__(self, task: LoopTask, name: str) -> None:
        self.task, self.name = task, name

    def remote(self) -> Any:
        out = getattr(self.task, self.name)()
        return asyncio.ensure_future(out) if asyncio.iscoroutine(out) else out


class Handle:
    def __init__(self, task: LoopTask) -> None:
        self.task = task

    def __getattr__(self, name: str) -> _Call:
        return _Call(self.task, name)


class Runtime:
    async def wait(self, call: Any) -> Any:
        return await call


def master_of(*tasks: LoopTask, attempt: int = 1) -> JobMaster:
    master = JobMaster(Runtime(), metrics_backend=NullMetricsBackend())  # type: ignore[arg-type]
    master.attempt = attempt
    master._idle_requests, master._waves = set(), {}  # (what starting a job sets up)
    master.actors = {(LOOP, s): Handle(t) for s, t in enumerate(tasks)}
    master.actors[(LOOP + 1, 0)] = Handle(LoopTask([(False, 0, 0)]))  # a task outside the loop: never probed
    return master


async def settle(master: JobMaster) -> None:
    """Until no probe wave of the loop is out."""
    while LOOP in master._waves:
        await asyncio.sleep(0)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


async def ends_after_each_report(master: JobMaster, a: LoopTask, b: LoopTask,
                                 between: Callable[[], None]) -> tuple[int, int]:
    """The loop-ending calls sent once task 0 reported idle, and once task 1 reported idle
    after ``between`` changed what the tasks answer."""
    await master.task_idle(1, LOOP, 0)
    await settle(master)
    before = a.ended + b.ended
    between()
    await master.task_idle(1, LOOP, 1)
    await settle(master)
    return before, a.ended + b.ended


def test_two_waves_of_idle_tasks_with_equal_unchanged_totals_end_the_loop():
    async def main() -> tuple[LoopTask, LoopTask]:
        a, b = LoopTask([(True, 7, 3)]), LoopTask([(True, 2, 6)])
        master = master_of(a, b)
        await master.task_idle(1, LOOP, 0)
        await settle(master)
        return a, b

    a, b = run(main())
    assert (a.probes, b.probes) == (2, 2)
    assert (a.ended, b.ended) == (1, 1)


def test_a_record_in_flight_during_the_wave_keeps_the_loop_open_until_it_arrives():
    async def main() -> tuple[int, int]:
        # 5 sent, 4 received: one record is still on its way; all idle nonetheless
        a, b = LoopTask([(True, 5, 0)]), LoopTask([(True, 0, 4)])

        def arrived() -> None:  # it arrived, was processed, and b went idle again
            b.answers = [(True, 0, 5)]

        return await ends_after_each_report(master_of(a, b), a, b, arrived)

    assert run(main()) == (0, 2)


def test_a_record_sent_and_received_between_the_two_waves_keeps_the_loop_open():
    async def main() -> tuple[int, int]:
        # the first wave sees equal totals, but between the waves one more record went round:
        # the second wave differs, so the first proved nothing
        a = LoopTask([(True, 4, 2), (True, 5, 2), (True, 5, 2)])
        b = LoopTask([(True, 0, 2), (True, 0, 3), (True, 0, 3)])
        # (b, which received it, reports idle again)
        return await ends_after_each_report(master_of(a, b), a, b, lambda: None)

    assert run(main()) == (0, 2)


def test_a_busy_task_keeps_the_loop_open_until_it_reports_idle():
    async def main() -> tuple[int, int]:
        a, b = LoopTask([(True, 3, 3)]), LoopTask([(False, 3, 3)])

        def idle_again() -> None:
            b.answers = [(True, 3, 3)]

        return await ends_after_each_report(master_of(a, b), a, b, idle_again)

    assert run(main()) == (0, 2)


def test_an_idle_report_that_arrives_during_a_failing_wave_gets_a_wave_of_its_own():
    async def main() -> tuple[int, int, int]:
        # a reports idle while b is busy; b's report comes while that wave is out (no new wave
        # is started for it then): the master must probe again once that wave failed
        a, b = LoopTask([(True, 1, 0)]), LoopTask([(False, 0, 0), (True, 0, 1)])
        gate = asyncio.Event()
        a.gate = b.gate = gate
        master = master_of(a, b)
        await master.task_idle(1, LOOP, 0)
        await b.probed.wait()  # the first wave is out
        await master.task_idle(1, LOOP, 1)
        gate.set()
        await settle(master)
        return a.probes, a.ended, b.ended

    probes, a_ended, b_ended = run(main())
    assert (a_ended, b_ended) == (1, 1)
    assert probes == 3  # the failed wave, then the two that ended the loop


def test_idle_reports_of_an_earlier_attempt_are_ignored():
    async def main() -> tuple[int, int]:
        a = LoopTask([(True, 0, 0)])
        master = master_of(a, attempt=2)
        await master.task_idle(1, LOOP, 0)
        await settle(master)
        return a.probes, a.ended

    assert run(main()) == (0, 0)
