"""An idle source is polled less and less often, and mail still wakes its task at once (no Ray).

Before, a source task whose reader had nothing polled it every ``idle_poll_ms`` (5 ms) for
as long as it stayed idle: an unbounded ``RedisStreamSource`` without ``block_ms`` sent Redis
200 non-blocking ``XREAD``s a second, 3 % of a core for the task. Now the wait doubles after
each empty poll up to ``TaskConfig.idle_poll_max_ms`` (100 ms) and starts over with records;
it is a wait on the task's mailbox, so a checkpoint trigger, a cancel or a call a reader posts
(``ctx.post``) ends it at once, and it ends when the next processing-time timer is due.

No timing assertion: spans are counted in timer firings and polls, and the tests that
need the mail to wake the task give it a cap of ten minutes, so a wake that did not come
would show as a condition that never happens.
"""

from __future__ import annotations

import math
import threading
from collections import deque

import pytest

from raystream.engine.config import TaskConfig
from raystream.engine.connectors import NOTHING_AVAILABLE, Source, SourceReader
from raystream.engine.errors import ConfigError
from raystream.engine.events import Barrier
from raystream.engine.operator import StreamOperator
from raystream.engine.records import Batch
from raystream.engine.task import Task, TaskHooks, TaskSpec
from tests.waiting import wait_for

TEN_MINUTES_MS = 600_000


class PushReader(SourceReader):
    """An unbounded reader whose records a test pushes (as a client callback would)."""

    def __init__(self, ctx, wake: bool, timer_every_ms: int | None) -> None:
        self.ctx = ctx
        self.wake = wake
        self.polls = 0
        self.read_at: list[int] = []  # the polls that returned records
        self.firings = 0
        self.pending: deque = deque()
        self.lock = threading.Lock()
        if timer_every_ms is not None:
            self.every = timer_every_ms
            ctx.register_processing_timer(ctx.clock.now_ms() + timer_every_ms, self._fire)

    def _fire(self, time_ms: int) -> None:
        self.firings += 1
        self.ctx.register_processing_timer(self.ctx.clock.now_ms() + self.every, self._fire)

    def push(self, records: list) -> None:
        """Called on the test's thread."""
        with self.lock:
            self.pending.append(records)
        if self.wake:
            self.ctx.post(lambda: None)  # wake the task: records are there

    def add_splits(self, splits):
        pass

    def poll_next(self):
        self.polls += 1
        with self.lock:
            if not self.pending:
                return NOTHING_AVAILABLE
            self.read_at.append(self.polls)
            return Batch.of_records(self.pending.popleft())

    def snapshot_state(self, checkpoint_id):
        return []


class PushSource(Source):
    bounded = False

    def __init__(self, wake: bool = False, timer_every_ms: int | None = None) -> None:
        self.wake = wake
        self.timer_every_ms = timer_every_ms
        self.readers: list[PushReader] = []

    def create_splits(self, parallelism):
        return []

    def create_reader(self, ctx):
        reader = PushReader(ctx, self.wake, self.timer_every_ms)
        self.readers.append(reader)
        return reader


class Collect(StreamOperator):
    def __init__(self) -> None:
        self.records: list = []

    def process_batch(self, batch, input_index=0):
        self.records.extend(batch.records())


class Acks(TaskHooks):
    def __init__(self) -> None:
        self.acks: list[int] = []

    def acknowledge(self, checkpoint_id, vertex_id, subtask, state):
        self.acks.append(checkpoint_id)


class Running:
    """A source task run on a thread of its own (as its executor runs it)."""

    def __init__(self, source: PushSource, config: TaskConfig) -> None:
        spec = TaskSpec(
            job_id="j", vertex_id=0, name="push -> collect", subtask_index=0, parallelism=1, max_parallelism=128,
            chain=[{"name": "push", "uid": "push", "kind": "source"},
                   {"name": "collect", "uid": "collect", "factory": Collect, "kind": "operator", "keyed": False}],
            inputs=[], outputs=[], config=config, source=source, checkpointing=True,
        )
        self.hooks = Acks()
        self.task = Task(spec, [], hooks=self.hooks)
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.reader = wait_for(lambda: source.readers and source.readers[0], "the task created its reader", 30)

    def _run(self) -> None:
        try:
            self.task.run()
        except BaseException as exc:  # noqa: BLE001 - Cancelled at the end, or a failure to show
            self.error.append(exc)

    def collected(self) -> list:
        return self.task.operators[0].records if self.task.operators else []

    def stop(self) -> None:
        self.task.cancel()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the cancel did not wake the idle source task"
        assert all(type(e).__name__ == "Cancelled" for e in self.error), self.error


def test_an_idle_source_is_polled_less_often_than_every_idle_poll_ms():
    # a span of 8 firings of a 50 ms processing-time timer: polled every 5 ms, an idle
    # reader was polled about 10 times a firing (80); now about once (the wait ends when
    # the timer is due), and a few times while the wait grows to 50 ms
    run = Running(PushSource(timer_every_ms=50), TaskConfig())
    try:
        wait_for(lambda: run.reader.firings >= 8, "8 firings of the processing-time timer", 60)
        firings, polls = run.reader.firings, run.reader.polls
    finally:
        run.stop()
    assert polls <= 2 * firings + 10, (polls, firings)


def test_mail_wakes_an_idle_source_at_once_checkpoints_records_cancel():
    # a cap of ten minutes: only mail can wake the task in the time this test takes
    run = Running(PushSource(wake=True), TaskConfig(idle_poll_ms=1, idle_poll_max_ms=TEN_MINUTES_MS))
    try:
        wait_for(lambda: run.reader.polls >= 10, "the idle wait grew (10 empty polls: 1 ms, 2 ms ... 512 ms)", 30)
        run.task.post(lambda: run.task.trigger_checkpoint(Barrier(1)))
        wait_for(lambda: run.hooks.acks == [1], "the checkpoint of the idle source was taken", 30)
        run.reader.push(["a", "b"])
        wait_for(lambda: run.collected() == ["a", "b"], "records pushed after the idleness were read", 30)
    finally:
        run.stop()  # (the cancel wakes it too)


def test_polling_starts_over_after_records():
    # without a wake: the pushed records wait for the next poll; after them the wait starts
    # over at 1 ms, so 9 more polls come in a quarter of a second (the grown wait: a minute)
    run = Running(PushSource(wake=False), TaskConfig(idle_poll_ms=1, idle_poll_max_ms=TEN_MINUTES_MS))
    try:
        wait_for(lambda: run.reader.polls >= 8, "the idle wait grew (8 empty polls: 1 ms ... 128 ms)", 30)
        run.reader.push([1, 2, 3])
        wait_for(lambda: run.collected() == [1, 2, 3], "records pushed after the idleness were read", 30)
        [read_at] = run.reader.read_at
        assert read_at > 8
        wait_for(lambda: run.reader.polls >= read_at + 9, "9 polls after the records (waits of 1 ms ... 256 ms)", 30)
    finally:
        run.stop()


def test_idle_poll_max_ms_is_checked_and_never_below_idle_poll_ms():
    with pytest.raises(ConfigError, match="idle_poll_max_ms must be a finite number >= 0"):
        TaskConfig(idle_poll_max_ms=math.inf)
    # a cap below idle_poll_ms is no cap below it: the idle wait is idle_poll_ms
    run = Running(PushSource(timer_every_ms=20), TaskConfig(idle_poll_ms=20, idle_poll_max_ms=0))
    try:
        wait_for(lambda: run.reader.firings >= 3 and run.reader.polls >= 3, "the idle source was polled", 30)
    finally:
        run.stop()
