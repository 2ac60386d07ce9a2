"""Deleted timers are freed: memory of the timer service, the task's processing-time
registrations and the window operator follows the LIVE timers, never their history."""

from __future__ import annotations

from raystream.engine.config import TaskConfig
from raystream.engine.operator import ManualClock
from raystream.engine.partitioners import KeySelector
from raystream.engine.task import Task, TaskSpec
from raystream.engine.timer_queue import COMPACT_SLACK as TASK_SLACK
from raystream.engine.timer_queue import TimerQueue
from raystream.operators.testing import OperatorHarness
from raystream.operators.timers import COMPACT_SLACK, KG_CACHE_LIMIT, InternalTimerService
from raystream.operators.window_operator import REDUCE, WindowOperator
from raystream.operators.windows import ProcessingTimeSessionWindows

HOUR = 3_600_000


def bare_task(clock: ManualClock) -> Task:
    """A task without inputs or operators: only its processing-time registrations are used."""
    spec = TaskSpec(job_id="j", vertex_id=0, name="t", subtask_index=0, parallelism=1, max_parallelism=128,
                    chain=[], inputs=[], outputs=[], config=TaskConfig(), clock=clock)
    return Task(spec, [])


def service(task: Task, clock: ManualClock, fired: list) -> InternalTimerService:
    return InternalTimerService(128, lambda k, ns, t: fired.append(("event", k, t)),
                                lambda k, ns, t: fired.append(("processing", k, t)),
                                task.register_processing_timer, clock)


def test_200k_register_delete_at_now_plus_1h_leaves_no_entries():
    clock = ManualClock(0)
    task = bare_task(clock)
    ts = service(task, clock, fired := [])
    for i in range(200_000):
        key = f"k{i}"
        t = HOUR + i  # a distinct time each: one wake-up per distinct time would pile up
        ts.register_processing_time_timer(key, None, t)
        ts.register_event_time_timer(key, None, t)
        ts.delete_processing_time_timer(key, None, t)
        ts.delete_event_time_timer(key, None, t)
    stats = ts.stats()
    assert stats["processing_timers"] == stats["event_timers"] == 0
    assert stats["processing_heap"] <= COMPACT_SLACK and stats["event_heap"] <= COMPACT_SLACK
    assert stats["task_wakeups"] == 0
    assert stats["key_group_cache"] <= 2 * KG_CACHE_LIMIT
    assert task.processing_timer_stats() == {"live": 0, "entries": 0}
    ts.advance_watermark(2 * HOUR)
    assert ts.advance_processing_time(2 * HOUR) == 0 and fired == []


def test_churn_before_a_live_timer_keeps_one_wakeup_and_fires_it():
    clock = ManualClock(0)
    wakeups = TimerQueue()  # what the task keeps its registrations in
    fired: list = []
    ts = InternalTimerService(128, lambda k, ns, t: fired.append(("event", k, t)),
                              lambda k, ns, t: fired.append(("processing", k, t)), wakeups.push, clock)
    ts.register_processing_time_timer("live", None, 2 * HOUR)
    ts.register_event_time_timer("live", None, 2 * HOUR)
    for i in range(50_000):  # each one earlier than the last: the wake-up moves every time
        t = HOUR - i
        ts.register_processing_time_timer(f"k{i}", None, t)
        ts.register_event_time_timer(f"k{i}", None, t)
        ts.delete_processing_time_timer(f"k{i}", None, t)
        ts.delete_event_time_timer(f"k{i}", None, t)
    stats = ts.stats()
    assert stats["processing_timers"] == stats["event_timers"] == 1
    assert stats["processing_heap"] <= 2 + COMPACT_SLACK and stats["event_heap"] <= 2 + COMPACT_SLACK
    assert stats["task_wakeups"] == 1
    assert len(wakeups) == wakeups.entries == 1 and wakeups.peek_time() == 2 * HOUR
    clock.set(2 * HOUR)
    due = wakeups.pop_due(2 * HOUR)
    assert due is not None and wakeups.pop_due(2 * HOUR) is None
    due[1](due[0])
    ts.advance_watermark(2 * HOUR)
    assert fired == [("processing", "live", 2 * HOUR), ("event", "live", 2 * HOUR)]


def test_a_timer_deleted_and_registered_again_fires_once_in_registration_order():
    ts = InternalTimerService(128, lambda k, ns, t: fired.append(k), lambda *a: None)
    fired: list = []
    ts.register_event_time_timer("a", None, 10)
    ts.register_event_time_timer("b", None, 10)
    ts.delete_event_time_timer("a", None, 10)
    ts.register_event_time_timer("a", None, 10)  # its old heap entry is still there
    for i in range(3 * COMPACT_SLACK):  # force compactions
        ts.register_event_time_timer(f"x{i}", None, 5)
        ts.delete_event_time_timer(f"x{i}", None, 5)
    assert ts.advance_watermark(10) == 2
    assert fired == ["a", "b"]  # as without compaction: a's first entry fires it
    assert ts.stats()["event_heap"] == 0


def test_key_group_cache_stays_bounded_after_1m_distinct_keys():
    fired = []
    ts = InternalTimerService(128, lambda k, ns, t: fired.append(k), lambda *a: None)
    for i in range(0, 1_000_000, 20):
        ts.register_event_time_timer(i, None, i)  # every 20th key gets a timer...
        for k in range(i + 1, i + 20):  # ...every key is looked up (deleting a timer it has not)
            ts.delete_event_time_timer(k, None, i)
        if i % 100_000 == 0:
            assert ts.stats()["key_group_cache"] <= KG_CACHE_LIMIT
    assert ts.stats()["key_group_cache"] <= KG_CACHE_LIMIT
    assert ts.advance_watermark(1_000_000) == 50_000 and fired == list(range(0, 1_000_000, 20))
    assert ts.stats()["event_heap"] == 0


def test_deleting_the_earliest_processing_timer_moves_the_task_wakeup():
    h = OperatorHarness(WindowOperator(KeySelector(0).key_of, ProcessingTimeSessionWindows.with_gap(HOUR), REDUCE,
                                       lambda a, b: (a[0], a[1] + b[1])))
    for _ in range(20_000):  # every element extends the session: its old timer is deleted
        h.clock.advance(1)
        h.process([("a", 1)])
    stats = h.operator.timers.stats()
    assert stats["processing_timers"] == 1 and stats["processing_heap"] <= 1 + COMPACT_SLACK
    assert h.pending_processing_timers == [20_000 + HOUR - 1]
    assert h.processing_timer_entries == 1
    h.advance_processing_time(20_000 + HOUR)
    assert h.take() == [("a", 20_000)]
    assert h.operator.timers.stats()["processing_heap"] == 0 and h.pending_processing_timers == []


def test_task_timer_queue_cancel_frees_entries_and_keeps_order():
    q = TimerQueue()
    fired: list = []
    keep = [q.push(t, fired.append) for t in (30, 10, 20)]
    dead = [q.push(5 + i % 50, fired.append) for i in range(10_000)]
    for handle in dead:
        handle.cancel()
        handle.cancel()  # twice is a no-op
    assert len(q) == 3 and q.entries <= 2 * 3 + TASK_SLACK
    keep[1].cancel()
    assert q.peek_time() == 20
    while (due := q.pop_due(100)) is not None:
        due[1](due[0])
    assert fired == [20, 30] and not q and q.entries == 0
    keep[0].cancel()  # already fired: no-op
    assert len(q) == 0
