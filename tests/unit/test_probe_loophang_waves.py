"""A feedback loop restarted while a termination probe wave of the failed attempt was out
must still end (drill statefun-remote seed 6: all work done, the job checkpointed on and
never ended).

A probe is posted to a task's mailbox; a task cancelled before it takes that mail out never
answers it (its executor lives on when the restart reuses it), so the failed attempt's wave
waits for ever. Waves were kept per loop vertex, not per attempt: the restarted attempt's
idle reports found that wave "out" and started none, and its tasks report idle once per idle
period, so the loop was never probed again. Nor may a wave of the failed attempt that does
come back (its probes answered after the restart) swallow the new attempt's reports.

In process, with the fake loop tasks of ``test_loop_termination``.
"""

from __future__ import annotations

import asyncio

from raystream.engine.master import JobMaster
from tests.unit.test_loop_termination import LOOP, Handle, LoopTask, master_of, run


async def no_wave_out(before: set[asyncio.Task]) -> None:
    """Until every task the event loop runs besides those of ``before`` (the test's own) is
    done: the probe waves and their probes."""
    while any(not t.done() for t in asyncio.all_tasks() - before):
        await asyncio.sleep(0)


async def restart(master: JobMaster, *tasks: LoopTask) -> None:
    """What a restart does for the loop: the next attempt, its tasks deployed."""
    master.attempt += 1
    master.actors = {(LOOP, s): Handle(t) for s, t in enumerate(tasks)}


def test_a_wave_of_the_failed_attempt_that_never_comes_back_does_not_keep_the_restarted_loop_open():
    async def main() -> tuple[int, int, int, int]:
        old_a, old_b = LoopTask([(True, 3, 3)]), LoopTask([(True, 0, 0)])
        old_b.gate = asyncio.Event()  # cancelled before it took the probe out: never set
        before = asyncio.all_tasks()
        master = master_of(old_a, old_b)
        await master.task_idle(1, LOOP, 0)
        await old_b.probed.wait()  # the failed attempt's wave is out
        a, b = LoopTask([(True, 2, 1)]), LoopTask([(True, 1, 2)])
        await restart(master, a, b)
        await master.task_idle(2, LOOP, 0)
        await master.task_idle(2, LOOP, 1)
        await no_wave_out(before)
        return a.ended, b.ended, old_a.ended, old_b.ended

    # (before the fix: the stale wave never ends, so neither does this, TimeoutError)
    assert run(main()) == (1, 1, 0, 0)


def test_a_wave_of_the_failed_attempt_answered_after_the_restart_does_not_swallow_its_reports():
    async def main() -> tuple[int, int, int, int, int]:
        old_a, old_b = LoopTask([(False, 3, 2)]), LoopTask([(True, 0, 0)])
        gate = old_a.gate = old_b.gate = asyncio.Event()
        before = asyncio.all_tasks()
        master = master_of(old_a, old_b)
        await master.task_idle(1, LOOP, 1)
        await old_a.probed.wait()
        await old_b.probed.wait()  # the failed attempt's wave is out
        a, b = LoopTask([(True, 2, 1)]), LoopTask([(True, 1, 2)])
        await restart(master, a, b)
        await master.task_idle(2, LOOP, 0)  # (both report while it is out, once each)
        await master.task_idle(2, LOOP, 1)
        gate.set()  # the old tasks answer late: busy, so that wave fails
        await no_wave_out(before)
        return a.ended, b.ended, a.probes, old_a.ended, old_b.ended

    a_ended, b_ended, a_probes, old_a_ended, old_b_ended = run(main())
    assert (old_a_ended, old_b_ended) == (0, 0)  # the failed attempt's loop is not ended
    # before the fix: (0, 0), the new tasks never probed
    assert (a_ended, b_ended) == (1, 1)
    assert a_probes == 2


def test_idle_reports_of_the_failed_attempt_after_the_restart_start_no_wave():
    async def main() -> tuple[int, int]:
        a = LoopTask([(True, 0, 0)])
        before = asyncio.all_tasks()
        master = master_of(LoopTask([(True, 0, 0)]))
        await restart(master, a)
        await master.task_idle(1, LOOP, 0)  # a late report of attempt 1
        await no_wave_out(before)
        return a.probes, a.ended

    assert run(main()) == (0, 0)
