"""RocksDB timer queues hold memory for their live timers, not for the timers' history.

A RocksDB timer queue keeps a heap of its key groups' earliest timers; a head that is
replaced stays as a stale entry until it comes up. The heap was rebuilt from the live heads
only when a group's head changed while the group kept other timers: a group's first timer
(after its last one was deleted) was pushed without that check. So Flink's timeout pattern
(on every record, delete the key's timer and register one an hour later) on a key alone in
its key group left one stale head per record until the hour had passed: a long-running job
with a 1-hour (or 1-day) idle timeout held a heap entry for every record of that window of
history (20,000 moves of one timer: 20,001 entries, for one live timer).
"""

from __future__ import annotations

import pytest

from raystream.engine.keygroups import KeyGroupRange, key_group_for

pytest.importorskip("rocksdict")

from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend  # noqa: E402

MAXP = 128
HOUR_MS = 3_600_000
MOVES = 20_000
#: heap entries a queue may hold for a handful of live timers (its rebuild slack is 256)
BOUND = 600


@pytest.fixture
def backend(tmp_path):
    b = RocksDBKeyedStateBackend(KeyGroupRange(0, MAXP - 1), MAXP, local_dir=str(tmp_path))
    yield b
    b.close()


def keys_in_distinct_groups(n: int) -> list[str]:
    """``n`` keys, each alone in its key group."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < n:
        out.setdefault(key_group_for(f"user-{i}", MAXP), f"user-{i}")
        i += 1
    return list(out.values())


@pytest.mark.parametrize("n_keys", [1, 5])
def test_a_timeout_timer_moved_on_every_record_keeps_the_heap_bounded(backend, n_keys: int) -> None:
    queue = backend.create_timer_queue("processing")
    keys = keys_in_distinct_groups(n_keys)
    deadline = dict.fromkeys(keys, HOUR_MS)
    for key in keys:
        assert queue.add(key, None, deadline[key])
    now = 0
    for i in range(MOVES):  # a record of key k at `now`: its timeout moves to now + 1 h
        key = keys[i % n_keys]
        now += 10
        assert queue.remove(key, None, deadline[key])
        deadline[key] = now + HOUR_MS
        assert queue.add(key, None, deadline[key])
        assert queue.entries <= BOUND, f"{queue.entries} heap entries for {len(queue)} live timers after {i + 1} moves"
    assert len(queue) == n_keys
    # the timers still fire once each, at their last deadline, in time order
    assert queue.peek_time() == min(deadline.values())
    assert queue.pop_due(min(deadline.values()) - 1) is None
    fired = []
    while (due := queue.pop_due(now + 2 * HOUR_MS)) is not None:
        fired.append(due)
    assert fired == sorted((t, k, None) for k, t in deadline.items())
    assert len(queue) == 0 and queue.peek_time() is None


def test_stale_heads_of_emptied_groups_are_dropped_when_groups_start_again(backend) -> None:
    """Groups that run empty (their only timer deleted) and get a timer again, round after
    round: the heap follows the groups with timers."""
    queue = backend.create_timer_queue("event")
    keys = keys_in_distinct_groups(40)
    for rnd in range(200):
        t = (rnd + 1) * 1_000_000  # later every round: the stale heads never come up
        for key in keys:
            assert queue.add(key, "w", t)
        for key in keys:
            assert queue.remove(key, "w", t)
        assert len(queue) == 0
        assert queue.entries <= BOUND, f"round {rnd}: {queue.entries} heap entries, no live timer"
    assert queue.peek_time() is None
