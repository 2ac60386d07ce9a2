"""Barrier alignment in one process under seeded random channel interleavings (no Ray).

Three upstream channels deliver records and barriers in an order chosen by a seeded
scheduler, which also reorders sends of one channel (the task restores order from the
sequence numbers). Exactly-once alignment must make snapshot n contain exactly the
records sent before Barrier(n) on every channel.
"""

import random
import threading
import time

import pyarrow as pa
import pytest

from raystream.checkpoint import loads
from raystream.engine.channels import InputInfo
from raystream.engine.config import TaskConfig
from raystream.engine.events import Barrier, EndOfInput
from raystream.engine.operator import StreamOperator
from raystream.engine.task import Task, TaskHooks, TaskSpec


class Recorder(StreamOperator):
    def __init__(self):
        self.seen = []
        self.snapshotted = []

    def process_batch(self, batch, input_index=0):
        self.seen.extend(batch.records())

    def snapshot_state(self, checkpoint_id):
        self.snapshotted.append(checkpoint_id)
        return list(self.seen)


class Capture(TaskHooks):
    def __init__(self):
        self.acks = {}
        self.done = threading.Event()

    def acknowledge(self, checkpoint_id, vertex_id, subtask, state):
        self.acks[checkpoint_id] = loads(state["rec"]["op"])["operator"]


def make_task(channels: int, exactly_once: bool = True) -> tuple[Task, Capture]:
    spec = TaskSpec(
        job_id="j", vertex_id=0, name="rec", subtask_index=0, parallelism=1, max_parallelism=128,
        chain=[{"name": "rec", "uid": "rec", "factory": Recorder, "kind": "operator", "keyed": False}],
        inputs=[InputInfo(0, f"up{c}") for c in range(channels)], outputs=[],
        config=TaskConfig(exactly_once=exactly_once, flush_ms=5),
    )
    hooks = Capture()
    return Task(spec, [], hooks=hooks), hooks


def script(rng: random.Random, channels: int, checkpoints: int):
    """Per channel: a list of sends (lists of items) and the barrier positions."""
    plans, cuts = [], {}
    for c in range(channels):
        n = rng.randint(5, 40)
        positions = sorted(rng.sample(range(n + 1), checkpoints)) if n + 1 >= checkpoints else [n] * checkpoints
        items, i = [], 0
        for cid, pos in enumerate(positions, start=1):
            while i < pos:
                items.append(pa.RecordBatch.from_pylist([{"c": c, "i": i}]))
                i += 1
            items.append(Barrier(cid))
            cuts.setdefault(cid, set()).update((c, j) for j in range(pos))
        while i < n:
            items.append(pa.RecordBatch.from_pylist([{"c": c, "i": i}]))
            i += 1
        items.append(EndOfInput())
        sends, k = [], 0
        while k < len(items):
            size = rng.randint(1, 4)
            sends.append(items[k : k + size])
            k += size
        plans.append(sends)
    return plans, cuts


def run_schedule(task: Task, plans, rng: random.Random) -> None:
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", task.run()), daemon=True)
    t.start()
    queues = [list(enumerate(p)) for p in plans]
    while any(queues):
        c = rng.choice([i for i, q in enumerate(queues) if q])
        q = queues[c]
        # the transport may reorder two consecutive sends of a channel
        k = 1 if len(q) > 1 and rng.random() < 0.3 else 0
        seq, items = q.pop(k)
        task.deliver(c, seq, items, lambda: None)
    t.join(20)
    assert not t.is_alive(), "task did not finish"
    assert "r" in result


@pytest.mark.parametrize("seed", range(25))
def test_exactly_once_snapshots_are_consistent_cuts(seed):
    rng = random.Random(seed)
    task, hooks = make_task(3)
    plans, cuts = script(rng, 3, checkpoints=3)
    run_schedule(task, plans, rng)
    assert sorted(hooks.acks) == [1, 2, 3]
    for cid, expected in cuts.items():
        got = {(r["c"], r["i"]) for r in hooks.acks[cid]}
        assert got == expected, f"checkpoint {cid} is not the cut before its barriers"


@pytest.mark.parametrize("seed", range(10))
def test_at_least_once_snapshots_contain_the_cut(seed):
    rng = random.Random(1000 + seed)
    task, hooks = make_task(3, exactly_once=False)
    # one checkpoint: with max_concurrent=1 the next barrier only starts once this one completed
    plans, cuts = script(rng, 3, checkpoints=1)
    run_schedule(task, plans, rng)
    for cid, expected in cuts.items():
        assert expected <= {(r["c"], r["i"]) for r in hooks.acks[cid]}


def test_aborted_alignment_unblocks_channels():
    task, hooks = make_task(2)
    t = threading.Thread(target=task.run, daemon=True)
    t.start()
    one = pa.RecordBatch.from_pylist([{"c": 0, "i": 0}])
    task.deliver(0, 0, [Barrier(1), one], lambda: None)
    task.post(lambda: task.notify_checkpoint_aborted(1))
    task.deliver(1, 0, [one, EndOfInput()], lambda: None)
    task.deliver(0, 1, [EndOfInput()], lambda: None)
    t.join(10)
    assert not t.is_alive()
    assert hooks.acks == {}


@pytest.mark.parametrize("queued_items", [0, 1, 5])
def test_a_trigger_that_arrives_before_the_queued_end_of_input_waits_for_it(queued_items):
    """FLIP-147: the master triggers a task once it saw every upstream task finish, but their
    last records and end of input may still be queued in the task. The trigger must not be
    dropped (the checkpoint would hang until it timed out, and no later one could start):
    the snapshot is taken after the end of input, with every record before it."""
    task, hooks = make_task(2)
    task.open()
    records = [pa.RecordBatch.from_pylist([{"i": i}]) for i in range(queued_items)]
    task.deliver(0, 0, [*records, EndOfInput()], lambda: None)
    task.post(lambda: task.trigger_checkpoint(Barrier(7)))  # the trigger overtakes channel 1's end
    task.step()
    assert 7 not in hooks.acks  # channel 1 is still open
    task.deliver(1, 0, [pa.RecordBatch.from_pylist([{"i": 99}]), EndOfInput()], lambda: None)
    task.step()
    assert [r["i"] for r in hooks.acks[7]] == [r["i"] for r in [*records, pa.RecordBatch.from_pylist([{"i": 99}])]
                                                for r in r.to_pylist()]


def test_a_deferred_trigger_of_an_aborted_checkpoint_is_dropped():
    task, hooks = make_task(1)
    task.open()
    task.post(lambda: task.trigger_checkpoint(Barrier(3)))
    task.step()
    task.notify_checkpoint_aborted(3)
    task.deliver(0, 0, [EndOfInput()], lambda: None)
    task.step()
    assert hooks.acks == {}


class SlowStorage(Capture):
    """Hooks whose snapshot writer has ``busy`` snapshots still being written."""

    def __init__(self):
        super().__init__()
        self.busy = 0
        self.declines = {}

    def snapshots_in_flight(self):
        return self.busy

    def decline(self, checkpoint_id, vertex_id, subtask, reason, committables=None):
        self.declines[checkpoint_id] = (reason, committables)


def test_a_task_whose_snapshots_are_not_written_yet_declines_at_the_barrier_without_a_snapshot():
    """Checkpoint storage slower than the checkpoints (e.g. snapshots of checkpoints that timed
    out still being written): at ``max_snapshots_in_flight`` the task declines the next
    checkpoint at its barrier and takes no snapshot, so snapshots never pile up in memory;
    the next checkpoint, once the writer caught up, holds every record before its barrier.
    A savepoint (asked for by the user) is taken anyway."""
    spec = TaskSpec(
        job_id="j", vertex_id=0, name="rec", subtask_index=0, parallelism=1, max_parallelism=128,
        chain=[{"name": "rec", "uid": "rec", "factory": Recorder, "kind": "operator", "keyed": False}],
        inputs=[InputInfo(0, "up0"), InputInfo(0, "up1")], outputs=[],
        config=TaskConfig(exactly_once=True, flush_ms=5), max_snapshots_in_flight=2,
    )
    hooks = SlowStorage()
    task = Task(spec, [], hooks=hooks)
    t = threading.Thread(target=task.run, daemon=True)
    t.start()

    def rows(c, *ids):
        return [pa.RecordBatch.from_pylist([{"c": c, "i": i}]) for i in ids]

    def wait_until(condition):
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, "the task did not get there"
            time.sleep(0.005)

    hooks.busy = 2
    task.deliver(0, 0, [*rows(0, 0, 1), Barrier(1)], lambda: None)
    task.deliver(1, 0, [*rows(1, 0), Barrier(1), *rows(1, 1)], lambda: None)
    wait_until(lambda: hooks.declines)
    assert list(hooks.declines) == [1] and hooks.acks == {}
    reason, committables = hooks.declines[1]
    assert "2 snapshots of task 'rec (1/1)' are still being written" in reason and committables is None
    task.deliver(0, 1, [Barrier(2, savepoint=True)], lambda: None)  # a savepoint is taken anyway
    task.deliver(1, 1, [Barrier(2, savepoint=True)], lambda: None)
    wait_until(lambda: hooks.acks)
    assert sorted(hooks.acks) == [2]
    hooks.busy = 1  # the writer caught up (one snapshot left: under the limit)
    task.deliver(0, 2, [*rows(0, 2), Barrier(3), EndOfInput()], lambda: None)
    task.deliver(1, 2, [Barrier(3), EndOfInput()], lambda: None)
    t.join(10)
    assert not t.is_alive()
    assert sorted(hooks.acks) == [2, 3] and list(hooks.declines) == [1]
    assert {(r["c"], r["i"]) for r in hooks.acks[3]} == {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)}
    assert 1 not in task.operators[0].snapshotted  # no snapshot for the declined checkpoint
