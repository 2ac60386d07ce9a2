"""Idle inputs in a task (Flink's ``StatusWatermarkValve``), in one process.

A task whose input channels are all idle is idle itself and says so downstream, after the
largest watermark of its channels; a channel that becomes active again makes it say ACTIVE
before anything else, and counts for the watermark only once it caught up; an ended channel
counts as neither; barriers, a restore and the end of input keep all of this right. The
valve is tested on its own (:class:`~raystream.engine.watermark_valve.WatermarkValve`), in a task with
chained operators, behind a real record writer (the status crosses a network hop) and under
seeded random interleavings against a model.
"""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa

from raystream.engine.channels import ChannelSender, InputInfo, OutputInfo
from raystream.engine.config import TaskConfig
from raystream.engine.events import MAX_WATERMARK, MIN_WATERMARK, Barrier, StreamStatus, Watermark
from raystream.engine.operator import StreamOperator
from raystream.engine.partitioners import ForwardPartitioner
from raystream.engine.records import Batch
from raystream.engine.task import Task, TaskSpec
from raystream.engine.watermark_valve import WatermarkValve
from tests.event_time.idle_tasks import ACTIVE, IDLE, IdleTask, Pass, wm


class StatusProbe(StreamOperator):
    """A chained operator that notes the statuses it sees and passes them on, and that
    emits a watermark of its own after each batch (as a generator would)."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        self.output.emit(batch)
        self.output.emit_watermark(Watermark(max(batch.records())))

    def process_watermark_status(self, idle: bool, input_index: int = 0) -> None:
        self.seen.append(idle)
        self.output.emit_watermark_status(idle)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the valve alone


def test_valve_leaves_idle_channels_out_and_flushes_the_largest_watermark_when_all_are_idle() -> None:
    v = WatermarkValve([0, 1, 2])
    assert v.on_watermark(0, 30) == [] and v.on_watermark(1, 10) == []
    assert v.on_watermark(2, 20) == [Watermark(10)]
    assert v.on_status(1, True) == [Watermark(20)]  # channel 1 no longer holds event time back
    assert v.on_status(2, True) == [Watermark(30)]
    assert v.on_watermark(1, 50) == []  # kept, but an idle channel does not count
    # the last active channel goes idle: the largest watermark (the idle one's 50), then IDLE
    assert v.on_status(0, True) == [Watermark(50), StreamStatus(True)]
    assert v.idle and v.watermark == 50


def test_valve_says_active_first_and_realigns_a_channel_only_once_it_caught_up() -> None:
    v = WatermarkValve([0, 1])
    v.on_watermark(0, 100)
    v.on_watermark(1, 100)
    v.on_status(0, True)
    assert v.on_status(1, True) == [StreamStatus(True)]
    assert v.on_status(0, False) == [StreamStatus(False)]  # before any watermark
    assert v.on_watermark(0, 60) == []  # behind: the watermark never goes back
    assert v.on_status(1, False) == []  # channel 1 (at 100) is aligned at once
    assert v.on_watermark(1, 140) == []  # channel 0 caught up? not yet: it holds nothing
    assert v.on_watermark(0, 120) == [Watermark(120)]  # caught up: counts again
    assert v.watermark == 120


def test_valve_an_ended_channel_is_neither_active_nor_idle() -> None:
    v = WatermarkValve([0, 1])
    v.on_watermark(0, 5)
    v.on_watermark(1, 7)
    v.on_status(1, True)
    # channel 0 ends: nothing active is left, so the input is idle (the ended channel does
    # not keep it active) and its watermark is the ended one's end of time
    assert v.on_end(0) == [Watermark(MAX_WATERMARK), StreamStatus(True)]
    # every channel ended: not idle (an ended channel is not idle either)
    assert v.on_end(1) == [StreamStatus(False)] and v.ended and not v.idle
    assert v.on_status(1, True) == [] and v.on_watermark(1, 9) == []


# --------------------------------------------------------------------------- in a task


def test_a_task_whose_channels_are_all_idle_is_idle_and_says_so_after_the_flush() -> None:
    t = IdleTask([Pass])
    t.watermark(0, 10)
    t.watermark(1, 3)
    t.idle(0)
    assert t.take() == [wm(3)]  # channel 1 still holds event time
    t.idle(1)
    assert t.take() == [wm(10), IDLE]  # the largest watermark, then IDLE: once
    t.idle(1)
    assert t.take() == []


def test_a_channel_active_again_says_active_before_its_records_and_watermarks() -> None:
    t = IdleTask([Pass])
    t.watermark(0, 10)
    t.watermark(1, 10)
    t.idle(0)
    t.idle(1)
    t.take()
    t.send(1, StreamStatus(False), [11, 12], Watermark(8), Watermark(12))
    # 8 is behind the task's 10: it does not go back (channel 1 is re-aligned at 12)
    assert t.take() == [ACTIVE, ("data", [11, 12]), wm(12)]
    t.watermark(1, 20)
    assert t.take() == [wm(20)]  # channel 0 is still idle: it holds nothing back


def test_chained_operators_see_the_status_and_an_idle_output_carries_no_watermark() -> None:
    probes: list[StatusProbe] = []

    def probe() -> StatusProbe:
        probes.append(StatusProbe())
        return probes[-1]

    t = IdleTask([Pass, probe])  # Pass has no process_watermark_status: it passes it on
    t.idle(0)
    t.idle(1)
    assert probes[0].seen == [True] and t.take() == [IDLE]
    t.send(0, [5])  # records of an idle channel are processed; the probe's watermark stays in
    assert t.take() == [("data", [5])]
    t.idle(0, False)
    t.send(0, [6])
    assert probes[0].seen == [True, False] and t.take() == [ACTIVE, ("data", [6]), wm(6)]


class _Recording(ChannelSender):
    """A sender that keeps every send (never blocks)."""

    transport = "ray"

    def __init__(self) -> None:
        super().__init__(0, None)
        self.sent: list[Any] = []

    def _transmit(self, seq: int, items: list[Any]) -> None:
        self.sent.extend(items)

    def _wait_for_credit(self) -> None:
        raise AssertionError("a window-less sender never waits")


def test_the_status_crosses_the_network_to_the_next_task() -> None:
    """The repro's ``union_rebalanced``: a task between the idle source and the window
    must forward IDLE over its output channel (before: it only marked its own channel)."""
    sender = _Recording()
    spec = TaskSpec(
        job_id="j", vertex_id=1, name="map", subtask_index=0, parallelism=1, max_parallelism=128,
        chain=[{"name": "map", "uid": "map", "factory": Pass}],
        inputs=[InputInfo(0, "source")], config=TaskConfig(flush_ms=0),
        outputs=[OutputInfo(ForwardPartitioner(), target_vertex=2, num_targets=1, channel_index=0)],
    )
    task = Task(spec, [[sender]])
    task.open()
    items = [pa.RecordBatch.from_pydict({"v": [1]}), Watermark(1), StreamStatus(True), Watermark(2),
             StreamStatus(False), Watermark(3)]
    task.deliver(0, 0, items, lambda: None)
    task.step()
    task.network.flush_all()
    kinds = [("data" if isinstance(i, pa.RecordBatch) else i) for i in sender.sent]
    # the idle channel's watermark 2 counts once it is active again (it is not behind)
    assert kinds == ["data", Watermark(1), StreamStatus(True), StreamStatus(False), Watermark(2), Watermark(3)]


def test_status_across_barrier_alignment_and_checkpoints() -> None:
    t = IdleTask([Pass])
    t.watermark(0, 4)
    t.idle(1)
    assert t.take() == [wm(4)]
    # channel 0's barrier blocks it (exactly once); its IDLE behind the barrier waits for
    # the alignment, which the idle channel 1 completes (an idle channel carries barriers)
    t.send(0, Barrier(1), StreamStatus(True))
    assert t.take() == []
    t.send(1, Barrier(1))
    assert 1 in t.hooks.acks
    assert t.take() == [("event", Barrier(1)), IDLE]
    t.send(1, Barrier(2), Watermark(9))  # idle channel: kept, not counted, through a barrier
    t.send(0, Barrier(2))
    assert t.take() == [("event", Barrier(2))]
    t.idle(1, False)
    assert t.take() == [ACTIVE, wm(9)]


def test_a_restored_task_starts_active() -> None:
    t = IdleTask([Pass])
    t.watermark(0, 4)
    t.idle(1)
    t.idle(0)
    restore = t.snapshot(1)
    assert t.take()[-2:] == [IDLE, ("event", Barrier(1))]
    r = IdleTask([Pass], restore=restore)
    r.watermark(0, 10)
    assert r.take() == []  # both channels active again: channel 1 (no watermark yet) holds it
    r.idle(1)
    assert r.take() == [wm(10)]
    r.idle(0)
    assert r.take() == [IDLE]


class Fires(StreamOperator):
    """Forwards records, and emits the watermark it reached as a record (a window firing)."""

    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        self.output.emit(batch)

    def process_watermark(self, watermark: Watermark, input_index: int = 0) -> None:
        self.output.emit(Batch.of_records([("fired", watermark.timestamp)]))
        self.output.emit_watermark(watermark)


def test_end_of_input_an_ended_channel_is_neither_and_the_final_watermark_passes() -> None:
    t = IdleTask([Pass, Fires])
    t.watermark(0, 5)
    t.idle(1)
    t.take()
    t.end(0)  # the ended channel does not keep the task active
    assert t.take() == [("data", [("fired", MAX_WATERMARK)]), wm(MAX_WATERMARK), IDLE]
    t.end(1)  # every channel ended: not idle any more
    assert t.take() == [ACTIVE]
    t.task.finish()
    assert t.take() == [wm(MAX_WATERMARK)]


def test_idle_channels_then_end_of_input_fire_through_an_idle_chain() -> None:
    t = IdleTask([Pass, Fires])
    t.idle(0)
    t.idle(1)
    assert t.take() == [IDLE]
    t.end(0)
    t.end(1)  # the final watermark must reach the chain's end: ACTIVE first
    assert t.take() == [ACTIVE, ("data", [("fired", MAX_WATERMARK)]), wm(MAX_WATERMARK)]


# --------------------------------------------------------------------------- seeded interleavings


def _model_status(state: dict[int, str]) -> bool:
    live = [s for s in state.values() if s != "ended"]
    return bool(live) and all(s == "idle" for s in live)


def test_seeded_interleavings_never_regress_repeat_or_leak_watermarks_while_idle() -> None:
    for seed in range(60):
        rng = random.Random(seed)
        n = rng.randint(1, 4)
        t = IdleTask([Pass], channel_inputs=(0,) * n)
        marks = {c: MIN_WATERMARK for c in range(n)}
        state = {c: "active" for c in range(n)}
        events: list[tuple[str, Any]] = []
        idle = False
        for _ in range(rng.randint(5, 60)):
            live = [c for c in range(n) if state[c] != "ended"]
            if not live:
                break
            c = rng.choice(live)
            r = rng.random()
            if r < 0.55:
                marks[c] += rng.randint(-3, 10)
                t.watermark(c, marks[c])
            elif r < 0.9:
                want = state[c] == "active"
                state[c] = "idle" if want else "active"
                t.idle(c, want)
            else:
                state[c] = "ended"
                t.end(c)
            new = t.take()
            events += new
            for kind, value in new:
                if kind == "status":
                    assert value != idle, f"seed {seed}: status {value} announced twice"
                    idle = value
            assert idle == _model_status(state), f"seed {seed}: announced idle={idle}, channels {state}"
        for c in range(n):
            if state[c] != "ended":
                t.end(c)
        events += t.take()
        marks_out = [v for k, v in events if k == "wm"]
        assert marks_out == sorted(set(marks_out)), f"seed {seed}: a watermark went back or came twice: {marks_out}"
        assert marks_out and marks_out[-1] == MAX_WATERMARK, seed
        idle = False
        for kind, value in events:
            if kind == "status":
                idle = value
            assert not (kind == "wm" and idle), f"seed {seed}: watermark while idle in {events}"


# --------------------------------------------------------------------------- the source's status


def test_a_source_task_says_idle_and_active_through_its_chain_active_before_records() -> None:
    from raystream.engine.connectors import END_OF_INPUT, NOTHING_AVAILABLE, Source, SourceReader
    from raystream.engine.operator import ManualClock
    from raystream.operators.sources import RangeSplit
    from raystream.operators.time import WatermarkedSource, WatermarkStrategy
    from tests.event_time.idle_tasks import RecordingOutput

    clock = ManualClock(0)

    class Scripted(Source):
        def create_splits(self, parallelism: int) -> list:
            return [RangeSplit("s", 0, 3, 0)]

        def create_reader(self, ctx: Any) -> SourceReader:
            return Reader()

    class Reader(SourceReader):
        script: list[Any] = [[{"ts": 10}], 600, [{"ts": 20}]]  # records, or ms of nothing

        def add_splits(self, splits: list) -> None:
            self.splits = list(splits)

        def poll_next(self) -> Any:
            if not self.script:
                self.splits = []
                return END_OF_INPUT
            step = self.script.pop(0)
            if isinstance(step, int):
                clock.advance(step)
                return NOTHING_AVAILABLE
            return Batch.of_records(step)

        def snapshot_state(self, checkpoint_id: int) -> list:
            return list(self.splits)

    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts").with_idleness(500)
    source = WatermarkedSource(Scripted(), strategy)
    spec = TaskSpec(
        job_id="j", vertex_id=0, name="src", subtask_index=0, parallelism=1, max_parallelism=128,
        chain=[{"name": "src", "uid": "src", "kind": "source"}, {"name": "fires", "uid": "fires", "factory": Fires}],
        inputs=[], outputs=[], config=TaskConfig(), source=source, splits=source.create_splits(1), clock=clock,
    )
    out = RecordingOutput()
    Task(spec, [], output=out).run()  # type: ignore[arg-type]
    assert out.events == [
        ("data", [{"ts": 10}]), ("data", [("fired", 9)]), wm(9),
        IDLE,  # 600 ms without records (idleness 500)
        ACTIVE, ("data", [{"ts": 20}]), ("data", [("fired", 19)]), wm(19),  # ACTIVE before the records
        # an idle source that ends: the final watermark still passes its chain
        ("data", [("fired", MAX_WATERMARK)]), wm(MAX_WATERMARK),
        wm(MAX_WATERMARK),  # (the task's own at the end: a network output drops the repeat)
    ]


def test_watermarked_reader_idleness_counts_from_the_start_and_from_a_restore() -> None:
    from raystream.engine.keygroups import KeyGroupRange
    from raystream.engine.operator import ManualClock, OperatorContext
    from raystream.operators.sources import CollectionSource
    from raystream.operators.time import WatermarkedSource, WatermarkStrategy, _SplitWatermark

    clock = ManualClock(1_000)
    ctx = OperatorContext("src", "src", "src (1/1)", 0, 1, 128, KeyGroupRange(0, 127), clock=clock)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts").with_idleness(500)
    source = WatermarkedSource(CollectionSource([{"ts": 1}, {"ts": 2}]), strategy)
    fresh = source.create_reader(ctx)
    fresh.add_splits(source.create_splits(1))
    assert not fresh.is_idle()  # nothing read yet: not idle at once (its first poll may find nothing)
    clock.advance(500)
    assert fresh.is_idle()
    # restored with a generator that saw records: idle again after the idleness (before:
    # a restored split had no activity time and could never become idle)
    restored = source.create_reader(ctx)
    restored.add_splits([_SplitWatermark(s, max_timestamp=1) for s in source.create_splits(1)])
    assert not restored.is_idle()
    clock.advance(500)
    assert restored.is_idle()
