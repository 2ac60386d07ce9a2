"""RocksDB timer queues hold memory for their live timers, not for the timers' history.

A RocksDB timer queue keeps a heap of its key groups' earliest timers; a head that is
replaced stays as a stale entry until it comes up to the top. The heap was rebuilt from the
live heads only when a group's head changed while the group kept other timers: a group's
first timer (after its last one was deleted) was pushed without that check. So Flink's
timeout pattern (on every record, delete the key's timer and register one an hour later) on
a key alone in its key group, while an earlier timer of another key was pending (an idle
key's timeout), left one stale head per record until that earlier timer fired: a
long-running job with a 1-hour (or 1-day) idle timeout held a heap entry for every record of
that window of history (20,000 moves of one timer: 20,002 entries for two live timers).
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


@pytest.mark.parametrize("n_busy", [1, 5])
def test_a_timeout_timer_moved_on_every_record_keeps_the_heap_bounded(backend, n_busy: int) -> None:
    """An idle key's timeout is pending (the earliest timer); busy keys move theirs on every
    record, and after each record the task asks for its next wake-up (``peek_time``)."""
    queue = backend.create_timer_queue("processing")
    idle, *busy = keys_in_distinct_groups(n_busy + 1)
    assert queue.add(idle, None, HOUR_MS // 2)
    deadline = {key: HOUR_MS for key in busy}
    for key in busy:
        assert queue.add(key, None, deadline[key])
    now = 0
    for i in range(MOVES):  # a record of a busy key at `now`: its timeout moves to now + 1 h
        key = busy[i % n_busy]
        now += 10
        assert queue.remove(key, None, deadline[key])
        deadline[key] = now + HOUR_MS
        assert queue.add(key, None, deadline[key])
        assert queue.peek_time() == HOUR_MS // 2
        assert queue.entries <= BOUND, f"{queue.entries} heap entries for {len(queue)} live timers after {i + 1} moves"
    assert len(queue) == n_busy + 1
    # the timers still fire once each, at their last deadline, in time order
    fired = []
    while (due := queue.pop_due(now + 2 * HOUR_MS)) is not None:
        fired.append(due)
    assert fired == [(HOUR_MS // 2, idle, None)] + sorted((t, k, None) for k, t in deadline.items())
    assert len(queue) == 0 and queue.peek_time() is None


def test_stale_heads_of_emptied_groups_are_dropped_when_groups_start_again(backend) -> None:
    """Groups that run empty (their only timer deleted) and get a timer again, round after
    round, behind an earlier pending timer: the heap follows the groups with timers."""
    queue = backend.create_timer_queue("event")
    first, *keys = keys_in_distinct_groups(41)
    assert queue.add(first, "w", 1)
    for rnd in range(200):
        t = (rnd + 1) * 1_000_000  # later every round: behind the pending timer at 1
        for key in keys:
            assert queue.add(key, "w", t)
        for key in keys:
            assert queue.remove(key, "w", t)
        assert len(queue) == 1 and queue.peek_time() == 1
        assert queue.entries <= BOUND, f"round {rnd}: {queue.entries} heap entries, one live timer"
    assert queue.pop_due(1) == (1, first, "w")
    assert queue.peek_time() is None
