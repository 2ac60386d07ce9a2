"""State hygiene: entry counts of timer and state structures before and after churn.

Memory must follow the LIVE timers and state, never their history. Four churns, each
printed as "entries after the churn" next to "what is live", in-process (no Ray):

* **timers**: ``--timers`` register + delete pairs of event-time and processing-time timers
  at now + 1 h (a distinct time each) on an ``InternalTimerService`` wired to a real
  ``Task``'s ``register_processing_timer``: timer heaps, wake-ups, the task's registrations;
* **key groups**: the timer service's key -> key group cache after ``--keys`` distinct keys;
* **TTL**: ``--entries`` values written with a 1 s TTL (``ManualClock``), the clock moved
  10 s on, then (a) only accesses to other keys, (b) only the background hook
  ``backend.cleanup(1024)`` (what the task's mailbox loop calls every 100 ms); no snapshot;
* **delayed messages**: ``--delayed`` stateful-function delayed messages sent and cancelled
  behind one that is still due (``FunctionDispatcher`` timer heap).

Run::

    python -m benchmarks.bench_state_hygiene            # --timers 200000 --keys 1000000
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

from raystream.checkpoint import HeapKeyedStateBackend, StateTtlConfig, ValueStateDescriptor
from raystream.engine.config import TaskConfig
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import ManualClock
from raystream.engine.task import Task, TaskSpec
from raystream.operators.timers import InternalTimerService

HOUR = 3_600_000
Row = tuple[str, int, int, float]  # (structure, entries after churn, live, seconds)


def timers(n: int) -> list[Row]:
    clock = ManualClock(0)
    spec = TaskSpec(job_id="bench", vertex_id=0, name="t", subtask_index=0, parallelism=1,
                    max_parallelism=128, chain=[], inputs=[], outputs=[], config=TaskConfig(), clock=clock)
    task = Task(spec, [])
    ts = InternalTimerService(128, lambda *a: None, lambda *a: None, task.register_processing_timer, clock)
    t0 = time.perf_counter()
    for i in range(n):
        key, t = f"k{i}", HOUR + i
        ts.register_processing_time_timer(key, None, t)
        ts.register_event_time_timer(key, None, t)
        ts.delete_processing_time_timer(key, None, t)
        ts.delete_event_time_timer(key, None, t)
    dt = time.perf_counter() - t0
    s, task_stats = ts.stats(), task.processing_timer_stats()
    return [
        (f"event-time heap ({n:,} register+delete)", s["event_heap"], s["event_timers"], dt),
        ("processing-time heap", s["processing_heap"], s["processing_timers"], dt),
        ("wake-ups registered with the task", s["task_wakeups"], s["processing_timers"] and 1, dt),
        ("task processing-time registrations", task_stats["entries"], task_stats["live"], dt),
    ]


def key_groups(n: int) -> list[Row]:
    ts = InternalTimerService(128, lambda *a: None, lambda *a: None)
    t0 = time.perf_counter()
    for k in range(n):
        ts.delete_event_time_timer(k, None, 0)  # looks the key's group up
    return [(f"key -> key group cache ({n:,} distinct keys)", ts.stats()["key_group_cache"], 0,
             time.perf_counter() - t0)]


def ttl(n: int) -> list[Row]:
    rows = []
    for how in ("accesses", "background"):
        clock = ManualClock(0)
        backend = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128, clock)
        state = backend.get_state(ValueStateDescriptor("v", ttl=StateTtlConfig(1_000)))
        for k in range(n):
            backend.set_current_key(k)
            state.update(k)
        clock.advance(10_000)
        before = backend.num_entries("v")
        t0 = time.perf_counter()
        if how == "accesses":
            calls = n // StateTtlConfig(1).cleanup_size + 1_000
            for i in range(calls):
                backend.set_current_key(-1 - i % 10)
                state.value()
            label = f"TTL entries, {calls:,} reads of other keys"
        else:
            calls = 0
            for _ in range(2):
                while backend.cleanup(1024) >= 1024:
                    calls += 1
            label = f"TTL entries, {calls} background cleanup(1024) calls"
        rows.append((f"{label} (was {before:,})", backend.num_entries("v"), 0, time.perf_counter() - t0))
    return rows


def delayed(n: int) -> list[Row]:
    from raystream.statefun_api import StatefulFunctions, message_builder
    from raystream.statefun_api.local import LocalDispatchers

    functions = StatefulFunctions()

    @functions.bind("bench/delay")
    def delay(context, message):
        op, _, count = message.as_string().partition(":")
        if op == "soon":
            context.send_after(timedelta(milliseconds=10), message_builder("bench/delay", "x", str_value="noop:0"))
        for i in range(int(count)):
            if op == "send":
                context.send_after(timedelta(hours=1), message_builder("bench/delay", "x", str_value="noop:0"),
                                   cancellation_token=f"t{i}")
            elif op == "cancel":
                context.cancel_delayed_message(f"t{i}")

    run = LocalDispatchers(functions)
    (op,) = run.dispatchers
    t0 = time.perf_counter()
    for cmd in ("soon:0", f"send:{n}", f"cancel:{n}"):
        run.send(message_builder("bench/delay", "a", str_value=cmd))
    return [(f"delayed-message timer heap ({n:,} sent + cancelled)", op.delayed_timer_entries(),
             op.pending_delayed(), time.perf_counter() - t0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timers", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--entries", type=int, default=110_000)
    parser.add_argument("--delayed", type=int, default=20_000)
    args = parser.parse_args()
    rows = timers(args.timers) + key_groups(args.keys) + ttl(args.entries) + delayed(args.delayed)
    width = max(len(r[0]) for r in rows)
    print(f"{'structure':<{width}}  {'entries':>8}  {'live':>6}  {'seconds':>7}")
    for name, entries, live, secs in rows:
        print(f"{name:<{width}}  {entries:>8,}  {live:>6,}  {secs:>7.2f}")


if __name__ == "__main__":
    main()
