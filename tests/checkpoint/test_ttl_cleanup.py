"""Expired TTL state leaves memory without any snapshot: incrementally on state access and
in the background (the task's mailbox loop calls ``backend.cleanup``). The tests that take
``make_backend`` run on the heap and the RocksDB backend."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

from raystream.checkpoint import (
    HeapKeyedStateBackend,
    HeapStateBackend,
    ListStateDescriptor,
    MapStateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)
from raystream.checkpoint.ttl import TtlCleanupCursor
from raystream.engine.channels import InputInfo
from raystream.engine.config import TaskConfig
from raystream.engine.errors import ConfigError
from raystream.engine.events import EndOfInput
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import ManualClock, StreamOperator
from raystream.engine.task import Task, TaskHooks, TaskSpec

MAXP = 128
N = 20_000  # ~156 keys a key group: a cleanup call of 1,000 ends inside a key group
TTL = StateTtlConfig(1_000)
# RocksDB's read cache in these tests: well below N, so that most entries are only in RocksDB
# and the cleanup reads them from there as well as from the cache (its default, 65,536
# entries, would hold them all)
ROCKSDB_CACHE = 4_096


def filled(clock: ManualClock, n: int = N, make=None) -> tuple[HeapKeyedStateBackend, object]:
    kwargs = {"cache_size": ROCKSDB_CACHE} if getattr(make, "kind", None) == "rocksdb" else {}
    backend = (make or HeapKeyedStateBackend)(KeyGroupRange(0, MAXP - 1), MAXP, clock, **kwargs)
    state = backend.get_state(ValueStateDescriptor("v", ttl=TTL))
    for k in range(n):
        backend.set_current_key(k)
        state.update(k)
    return backend, state


def sweep(backend: HeapKeyedStateBackend, budget: int = 1000) -> int:
    """Call the background hook until a full pass found nothing more to do."""
    calls = 0
    for _ in range(2):  # the pass in progress, then one over everything
        while backend.cleanup(budget) >= budget:
            calls += 1
    return calls


def test_accesses_remove_expired_entries_of_other_keys_without_a_snapshot(make_backend):
    clock = ManualClock(0)
    backend, state = filled(clock, make=make_backend)
    assert backend.num_entries("v") == N
    clock.advance(10_000)  # everything expired 9 s ago
    # each access pays for cleanup_size (5) entries: N / 5 accesses visit them all
    for i in range(N // TTL.cleanup_size + 1_000):
        backend.set_current_key(f"reader{i % 10}")
        assert state.value() is None
    assert backend.num_entries("v") == 0
    assert backend.ttl_stats()["removed"] == N


def test_background_cleanup_removes_state_nobody_reads(make_backend):
    clock = ManualClock(0)
    backend, _ = filled(clock, make=make_backend)
    clock.advance(999)
    sweep(backend)
    assert backend.num_entries("v") == N  # nothing expired yet: nothing removed
    clock.advance(1)
    calls = sweep(backend)
    assert backend.num_entries("v") == 0
    assert calls <= 2 * (N + MAXP) // 1000 + 2  # bounded work per call
    assert backend.num_keys() == 0
    if make_backend.kind == "heap":
        assert backend.snapshot(1).key_groups == {}


def test_cleanup_is_free_while_nothing_can_have_expired(make_backend):
    clock = ManualClock(0)
    backend, state = filled(clock, 10_000, make=make_backend)
    sweep(backend)  # one pass learns that the oldest entry was written at 0
    clock.advance(999)
    assert backend.cleanup(1000) == 0  # nothing to check before 1000
    clock.advance(1)
    assert backend.cleanup(1000) == 1000


def test_list_and_map_elements_expire_one_by_one_and_live_ones_stay(make_backend):
    clock = ManualClock(0)
    backend = make_backend(KeyGroupRange(0, MAXP - 1), MAXP, clock)
    lst = backend.get_state(ListStateDescriptor("l", ttl=TTL))
    m = backend.get_state(MapStateDescriptor("m", ttl=TTL))
    for k in range(500):
        backend.set_current_key(k)
        lst.add("old")
        m.put("old", 1)
    backend.set_current_key(0)
    before = lst.get()
    clock.advance(600)
    for k in range(250):  # half the keys get a newer element too
        backend.set_current_key(k)
        lst.add("new")
        m.put("new", 2)
    clock.advance(500)  # the old elements expired, the new ones not
    sweep(backend)
    assert backend.num_entries("l") == backend.num_entries("m") == 250
    for k in range(250):
        backend.set_current_key(k)
        assert lst.get() == ["new"] and m.items() == [("new", 2)]
    assert before == ["old"]  # values handed out earlier are never changed in place


def test_the_cursor_leaves_the_accessed_key_to_its_own_access():
    table = {0: {"a": (1, 0), "b": (2, 0)}, 1: {"c": (3, 0), "d": (4, 50)}}
    cursor = TtlCleanupCursor(table, "value", ttl_ms=10)
    assert cursor.step(100, now=20, skip="a") == 6  # 2 key groups + 4 keys: the pass ended
    assert table == {0: {"a": (1, 0)}, 1: {"d": (4, 50)}}  # "a" is read (or refreshed) by its access
    assert cursor.removed == 2


def test_cleanup_size_is_validated_and_zero_leaves_it_to_the_background(make_backend):
    with pytest.raises(ConfigError, match="cleanup_size"):
        StateTtlConfig(1000, cleanup_size=-1)
    with pytest.raises(ConfigError, match="cleanup_size"):
        StateTtlConfig(1000, cleanup_size=True)
    clock = ManualClock(0)
    backend = make_backend(KeyGroupRange(0, MAXP - 1), MAXP, clock)
    state = backend.get_state(ValueStateDescriptor("v", ttl=StateTtlConfig(10, cleanup_size=0)))
    for k in range(1000):
        backend.set_current_key(k)
        state.update(k)
    clock.advance(10)
    for _ in range(1000):
        backend.set_current_key("reader")
        state.value()
    assert backend.num_entries("v") == 1000
    sweep(backend)
    assert backend.num_entries("v") == 0


def test_restored_ttl_state_not_asked_for_yet_is_swept_too(make_backend):
    clock = ManualClock(0)
    old, _ = filled(clock, 5_000, make=make_backend)
    snap = old.snapshot(1)
    backend = make_backend(KeyGroupRange(0, MAXP - 1), MAXP, clock)
    backend.restore([snap])
    assert backend.num_entries("v") == 5_000
    clock.advance(1_000)
    sweep(backend)
    assert backend.num_entries("v") == 0


# -- the task drives the background cleanup ------------------------------------------------


class WriteKeys(StreamOperator):
    """Writes every record's key into a TTL value state."""

    keyed = True

    def open(self, ctx, output):
        super().open(ctx, output)
        self.backend = ctx.keyed_backend
        self.state = self.backend.get_state(ValueStateDescriptor("seen", ttl=TTL))

    def process_batch(self, batch, input_index=0):
        for record in batch.records():
            self.backend.set_current_key(record["k"])
            self.state.update(1)


def test_the_task_loop_removes_expired_state_with_no_input_and_no_checkpoint():
    clock = ManualClock(0)
    backends: list[HeapKeyedStateBackend] = []

    class Recording(HeapStateBackend):
        def create_keyed_backend(self, ctx):
            backends.append(HeapKeyedStateBackend(ctx.key_group_range, ctx.max_parallelism, ctx.clock))
            return backends[-1]

    spec = TaskSpec(
        job_id="j", vertex_id=0, name="w", subtask_index=0, parallelism=1, max_parallelism=MAXP,
        chain=[{"name": "w", "uid": "w", "factory": WriteKeys, "kind": "operator", "keyed": True}],
        inputs=[InputInfo(0, "up")], outputs=[], config=TaskConfig(flush_ms=5), clock=clock,
        state_backend=Recording(),
    )
    task = Task(spec, [], hooks=TaskHooks())
    task.state_cleanup_interval_s = 0.01
    thread = threading.Thread(target=task.run, daemon=True)
    thread.start()

    def entries() -> int:
        box: list[int] = []
        done = threading.Event()
        task.post(lambda: (box.append(backends[0].num_entries("seen")), done.set()))
        assert done.wait(10)
        return box[0]

    task.deliver(0, 0, [pa.RecordBatch.from_pylist([{"k": i} for i in range(N)])], lambda: None)
    deadline = time.monotonic() + 30
    while entries() < N and time.monotonic() < deadline:
        time.sleep(0.01)
    assert entries() == N
    clock.advance(10_000)
    while entries() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert entries() == 0
    task.deliver(0, 1, [EndOfInput()], lambda: None)
    thread.join(10)
    assert not thread.is_alive()
