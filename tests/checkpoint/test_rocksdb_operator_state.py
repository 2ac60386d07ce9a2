"""Operators' own keyed state on an off-heap backend (issue 16): the record-API reduce in a
ReducingState and process functions' timers in RocksDB timer queues; the heap backend keeps
its in-operator dicts and heaps (operator state format unchanged). Rescaling re-splits both
by key group; a heap job's savepoint restores into RocksDB."""

from __future__ import annotations

import random

import pytest

from raystream.checkpoint import ValueStateDescriptor
from raystream.checkpoint.backends import HeapStateBackend
from raystream.engine.errors import StateError
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.operator import ManualClock
from raystream.engine.partitioners import KeySelector
from raystream.operators.functions import KeyedProcessFunction
from raystream.operators.keyed import (
    EVENT_TIMERS,
    REDUCE_STATE,
    KeyedProcessOperator,
    ReduceOperator,
)
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.timers import _TimerQueue

pytest.importorskip("rocksdict")

from raystream.checkpoint.backends import RocksDBStateBackend  # noqa: E402
from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend  # noqa: E402
from raystream.checkpoint.rocksdb_timers import RocksDBTimerQueue  # noqa: E402

MAXP = 128


@pytest.fixture
def rocks(tmp_path):
    return RocksDBStateBackend(str(tmp_path / "rocksdb"), cache_size=256)


def add(a, b):
    return (a[0], a[1] + b[1])


def reduce_op(emit="updates"):
    return ReduceOperator(KeySelector(0), add, emit)


def records(n, keys=50, seed=0):
    rnd = random.Random(seed)
    return [(f"k{rnd.randrange(keys)}", rnd.randrange(100)) for _ in range(n)]


def owned(h, recs):
    return [r for r in recs if key_group_for(r[0], MAXP) in h.ctx.key_group_range]


# -- reduce -------------------------------------------------------------------------------

def test_reduce_on_rocksdb_keeps_its_values_in_the_keyed_backend(rocks):
    data = records(3000)
    heap, off = OperatorHarness(reduce_op()), OperatorHarness(reduce_op(), state_backend=rocks)
    for h in (heap, off):
        for i in range(0, len(data), 500):
            h.process(data[i:i + 500])
    assert off.records() == heap.records()
    assert off.operator.state == {} and heap.operator.state  # no dict on RocksDB
    backend = off.ctx.keyed_backend
    assert isinstance(backend, RocksDBKeyedStateBackend) and backend.off_heap
    assert sorted(backend.keys(REDUCE_STATE)) == sorted(heap.operator.state)
    snap = off.snapshot()
    assert snap["operator"] == {"by_key_group": {}}  # the values are in the keyed snapshot


@pytest.mark.parametrize("new_parallelism", [1, 3])
def test_reduce_rescaled_restore_continues_like_an_uninterrupted_run(rocks, new_parallelism):
    first, second = records(2000, seed=1), records(2000, seed=2)
    ref = OperatorHarness(reduce_op())
    ref.process(first)
    ref.take()
    ref.process(second)
    expected = sorted(ref.records())
    h = OperatorHarness(reduce_op(), parallelism=1, state_backend=rocks)
    h.process(first)
    snap = h.snapshot()
    h.process(second[:700])  # after the checkpoint: lost with the failure, replayed below
    restored = [OperatorHarness(reduce_op(), i, new_parallelism, MAXP, restore=[snap], state_backend=rocks)
                for i in range(new_parallelism)]
    got = []
    for r in restored:
        r.process(owned(r, second))
        got.extend(r.records())
    assert sorted(got) == expected


def test_final_reduce_on_rocksdb_emits_every_key_once_and_clears(rocks):
    data = records(5000, keys=300, seed=3)
    heap, off = OperatorHarness(reduce_op("final")), OperatorHarness(reduce_op("final"), state_backend=rocks)
    backend = off.ctx.keyed_backend
    close, backend.close = backend.close, lambda: None  # (the ending task closes it: look at it first)
    for h in (heap, off):
        h.process(data)
        assert h.records() == []
        h.end_input()
    assert sorted(off.records()) == sorted(heap.records()) and len(off.records()) == 300
    assert list(backend.keys(REDUCE_STATE)) == []  # emitted: nothing to emit again
    close()


def test_reduce_user_error_names_the_record(rocks):
    def bad(a, b):
        raise ValueError("boom")

    h = OperatorHarness(ReduceOperator(KeySelector(0), bad), state_backend=rocks)
    h.process([("a", 1)])
    with pytest.raises(Exception, match="boom"):
        h.process([("a", 2)])


def test_heap_reduce_savepoint_restores_into_rocksdb_rescaled(rocks):
    first, second = records(1500, seed=4), records(1500, seed=5)
    heap = OperatorHarness(reduce_op())
    heap.process(first)
    snap = heap.snapshot()
    assert snap["operator"]["by_key_group"]  # the heap format: values per key group
    heap.process(second)
    expected = sorted(heap.records()[len(first):])
    restored = [OperatorHarness(reduce_op(), i, 2, MAXP, restore=[snap], state_backend=rocks) for i in range(2)]
    got = []
    for r in restored:
        r.process(owned(r, second))
        got.extend(r.records())
    assert sorted(got) == expected


def test_heap_reduce_operator_state_format_is_unchanged():
    h = OperatorHarness(reduce_op())
    h.process([("a", 1), ("a", 2), ("b", 5)])
    snap = h.snapshot()
    assert snap["operator"] == {"by_key_group": {key_group_for("a", MAXP): {"a": ("a", 3)},
                                                 key_group_for("b", MAXP): {"b": ("b", 5)}}}


# -- timers -------------------------------------------------------------------------------

class Timers(KeyedProcessFunction):
    """Per record: count in keyed state, an event-time timer at ts + 100 and a processing
    timer at ts + 1000 (deleting the previous one of the key); timers emit (key, count, time)."""

    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))
        self.proc = ctx.get_state(ValueStateDescriptor("proc"))

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        ts = ctx.timer_service()
        ts.register_event_time_timer(value[1] + 100)
        old = self.proc.value()
        if old is not None:
            ts.delete_processing_time_timer(old)
        ts.register_processing_time_timer(value[1] + 1000)
        self.proc.update(value[1] + 1000)
        return []

    def on_timer(self, timestamp, ctx):
        if ctx.time_domain() == "processing_time":
            self.proc.clear()
        yield (ctx.get_current_key(), self.count.value(), timestamp, ctx.time_domain())


def timers_op():
    return KeyedProcessOperator(KeySelector(0), Timers(), TimestampAssigner(column=1))


def stamped(n, keys=40, seed=0):
    rnd = random.Random(seed)
    return [(f"k{rnd.randrange(keys)}", i * 3 + rnd.randrange(3)) for i in range(n)]


def drive(h, data, chunk=100, upto=None, only_owned=False):
    """Chunks of records, each followed by its last timestamp as watermark and processing
    time (``only_owned``: the records of the harness's key groups; time moves as for all)."""
    for i in range(0, len(data), chunk):
        part = data[i:i + chunk]
        h.process(owned(h, part) if only_owned else part)
        h.advance_watermark(part[-1][1])
        h.advance_processing_time(part[-1][1])
    if upto is not None:
        h.advance_watermark(upto)
        h.advance_processing_time(upto)


def test_process_function_timers_live_in_rocksdb_and_fire_like_the_heap_ones(rocks):
    data = stamped(3000)
    heap, off = OperatorHarness(timers_op()), OperatorHarness(timers_op(), state_backend=rocks)
    for h in (heap, off):
        drive(h, data, upto=20_000)
    assert off.records() == heap.records()  # distinct times per key group: the same order
    assert not isinstance(off.operator.timers.event, _TimerQueue)
    assert isinstance(off.operator.timers.event, RocksDBTimerQueue)
    assert isinstance(heap.operator.timers.event, _TimerQueue)


def test_rocksdb_timers_are_in_the_keyed_snapshot_and_rescale(rocks):
    data = stamped(2000, seed=1)
    half = len(data) // 2
    ref = OperatorHarness(timers_op())
    drive(ref, data, upto=20_000)
    expected = sorted(ref.records())
    h = OperatorHarness(timers_op(), state_backend=rocks)
    drive(h, data[:half])
    assert h.operator.timers.num_event_timers() > 0 and h.operator.timers.num_processing_timers() > 0
    snap = h.snapshot()
    assert snap["operator"]["timers"]["event"] == {} and snap["operator"]["timers"]["processing"] == {}
    got = h.records()
    drive(h, data[half:half + 300])  # after the checkpoint: lost with the failure, replayed below
    now = data[half - 1][1]
    restored = [OperatorHarness(timers_op(), i, 3, MAXP, clock=ManualClock(now), restore=[snap], state_backend=rocks)
                for i in range(3)]
    # each subtask's processing-time timers are registered with its task again: one wake-up
    assert [len(r.pending_processing_timers) for r in restored] == [1, 1, 1]
    for r in restored:
        drive(r, data[half:], upto=20_000, only_owned=True)
        got.extend(r.records())
    assert sorted(got) == expected


def test_heap_timers_of_a_savepoint_move_into_rocksdb(rocks):
    data = stamped(1000, seed=2)
    half = len(data) // 2
    heap = OperatorHarness(timers_op())
    drive(heap, data[:half])
    snap = heap.snapshot()
    assert snap["operator"]["timers"]["event"]  # heap format: timers in the operator state
    got = heap.records()
    drive(heap, data[half:], upto=20_000)
    expected = sorted(heap.records())
    now = data[half - 1][1]
    restored = [OperatorHarness(timers_op(), i, 2, MAXP, clock=ManualClock(now), restore=[snap], state_backend=rocks)
                for i in range(2)]
    for r in restored:
        assert isinstance(r.operator.timers.event, RocksDBTimerQueue) and r.operator.timers.num_event_timers() > 0
        drive(r, data[half:], upto=20_000, only_owned=True)
        got.extend(r.records())
    assert sorted(got) == expected


def test_rocksdb_timer_memory_is_bounded_by_the_per_group_caches(rocks):
    h = OperatorHarness(timers_op(), state_backend=rocks)
    data = [(f"k{i}", 10 + i) for i in range(10_000)]  # 20k timers, none due
    for i in range(0, len(data), 1000):
        h.process(data[i:i + 1000])
    ts = h.operator.timers
    assert ts.num_event_timers() == 10_000 and ts.num_processing_timers() == 10_000
    st = ts.event.stats()
    assert st["cached"] <= MAXP * 32 and st["heap"] <= 2 * MAXP + 256
    h.advance_watermark(10 + 10_000 + 100)
    assert len(h.records()) == 10_000 and ts.num_event_timers() == 0


# -- the timer queue against the heap queue ---------------------------------------------

@pytest.mark.parametrize("per_group", [1, 3, 32])
def test_rocksdb_timer_queue_equals_the_heap_queue_under_random_operations(tmp_path, per_group):
    rnd = random.Random(per_group)
    b = RocksDBKeyedStateBackend(KeyGroupRange(0, MAXP - 1), MAXP, local_dir=str(tmp_path))
    q = RocksDBTimerQueue(b, b._register_id("t"), cache_per_group=per_group)
    ref: _TimerQueue = _TimerQueue(MAXP)
    for step in range(6000):
        op = rnd.random()
        key, ns, t = f"k{rnd.randrange(200)}", rnd.choice(["w1", "w2"]), rnd.randrange(-50, 1000)
        if op < 0.5:
            assert q.add(key, ns, t) == ref.add(key, ns, t)
        elif op < 0.7:
            assert q.remove(key, ns, t) == ref.remove(key, ns, t)
        elif op < 0.72:
            assert q.timers_of(key) == ref.timers_of(key)
        else:
            limit = rnd.randrange(-50, 300)
            got, want_time = q.pop_due(limit), ref.peek_time()
            if want_time is None or want_time > limit:
                assert got is None
            else:
                assert got is not None and got[0] == want_time
                assert ref.remove(got[1], got[2], got[0])
        if step % 500 == 0:
            assert len(q) == len(ref) and q.peek_time() == ref.peek_time()
    # a snapshot holds every timer; restored into two subtasks, each keeps its key groups
    snap = b.snapshot(1)
    left = []
    for r in (KeyGroupRange(0, 40), KeyGroupRange(41, MAXP - 1)):
        b2 = RocksDBKeyedStateBackend(r, MAXP, local_dir=str(tmp_path))
        b2.restore([snap])
        q2 = b2.create_timer_queue("t")
        times = []
        while (e := q2.pop_due(10**9)) is not None:
            assert key_group_for(e[1], MAXP) in r
            times.append(e[0])
            left.append(e)
        assert times == sorted(times)
        b2.close()
    assert sorted(left, key=repr) == sorted(((t, k, ns) for g in ref.by_group.values() for t, k, ns in g), key=repr)
    b.close()


def test_timer_queue_names_do_not_clash_with_states(tmp_path):
    b = RocksDBKeyedStateBackend(KeyGroupRange(0, MAXP - 1), MAXP, local_dir=str(tmp_path))
    b.create_timer_queue(EVENT_TIMERS)
    with pytest.raises(StateError):
        b.create_timer_queue(EVENT_TIMERS)
    with pytest.raises(StateError):
        b.get_state(ValueStateDescriptor(EVENT_TIMERS))
    b.get_state(ValueStateDescriptor("v"))
    with pytest.raises(StateError):
        b.create_timer_queue("v")
    b.close()
    heap = HeapStateBackend().create_keyed_backend(OperatorHarness(reduce_op()).ctx)
    assert heap.off_heap is False
    with pytest.raises(StateError, match="off_heap"):
        heap.create_timer_queue(EVENT_TIMERS)
