"""The dispatcher's direct state path (heap backend, states without TTL: values read and
written in the backend's tables, no current key per invocation) against the generic path
(TTL states, RocksDB): the same values, snapshots that see every write, restores at another
parallelism."""

from __future__ import annotations

from datetime import timedelta

import pytest

from raystream.checkpoint import HeapStateBackend, RocksDBStateBackend
from raystream.operators.testing import OperatorHarness
from raystream.statefun_api import (
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.dispatcher import DispatcherConfig, FunctionDispatcher
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.routing import egress_tag, message_to_record


def counters() -> StatefulFunctions:
    """``test/plain`` (no TTL), ``test/ttl`` (expire after write) and ``test/stateless``;
    a ``str_value`` "reset" deletes the count."""
    functions = StatefulFunctions()

    def count(context, message):
        if message.is_string():
            del context.storage.n
            return
        n = (context.storage.n or 0) + message.as_int()
        context.storage.n = n
        context.storage.last = f"{context.address.id}:{n}"
        context.send_egress(egress_message_builder("test/out", context.storage.last, StringType))

    functions.register("test/plain", count, specs=[ValueSpec("n", IntType), ValueSpec("last", StringType)])
    functions.register(
        "test/ttl", count,
        specs=[ValueSpec("n", IntType, expire_after_write=timedelta(minutes=1)), ValueSpec("last", StringType)],
    )

    @functions.bind("test/stateless")
    def stateless(context, message):
        context.send(message_builder("test/plain", context.address.id, int_value=message.as_int()))

    return functions


def send_round(run: LocalDispatchers, keys: range, value: int) -> None:
    run.send(*[message_builder(t, f"k{i}", int_value=value) for i in keys for t in ("test/plain", "test/ttl")])
    run.send(*[message_builder("test/stateless", f"k{i}", int_value=value) for i in keys])


def test_direct_and_generic_paths_agree_and_snapshots_see_every_write():
    """Snapshot 1, then change the same keys (their key groups were snapshotted already, so a
    snapshot that reused untouched key groups' bytes would lose these writes), snapshot 2,
    restore snapshot 2 at other parallelisms: every value is the latest."""
    run = LocalDispatchers(counters(), parallelism=1, egresses=["test/out"])
    send_round(run, range(40), 1)
    run.snapshot()
    send_round(run, range(40), 10)
    run.send(message_builder("test/plain", "k3", str_value="reset"), message_builder("test/ttl", "k3", str_value="reset"))
    snap = run.snapshot()
    for i in range(40):
        expect = None if i == 3 else 22  # plain: 1 + 1 (via stateless) + 10 + 10; ttl: 1 + 10
        assert run.state("test/plain", f"k{i}", "n") == expect
        assert run.state("test/ttl", f"k{i}", "n") == (None if i == 3 else 11)
    for parallelism in (1, 3):
        restored = LocalDispatchers.restore(counters(), snap, parallelism=parallelism, egresses=["test/out"])
        for i in range(40):
            assert restored.state("test/plain", f"k{i}", "n") == (None if i == 3 else 22), (parallelism, i)
            assert restored.state("test/ttl", f"k{i}", "n") == (None if i == 3 else 11), (parallelism, i)
            assert restored.state("test/plain", f"k{i}", "last") == f"k{i}:22"  # (reset deletes only n)
        restored.send(message_builder("test/plain", "k3", int_value=5), message_builder("test/plain", "k4", int_value=5))
        assert restored.state("test/plain", "k3", "n") == 5
        assert restored.state("test/plain", "k4", "n") == 27


def _run_on(backend, messages):
    harness = OperatorHarness(
        FunctionDispatcher(DispatcherConfig(counters(), {"test/out": None})), state_backend=backend,
    )
    harness.process([message_to_record(m) for m in messages])
    return harness


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
def test_heap_direct_path_gives_the_rocksdb_backends_results(backend, tmp_path):
    """The same messages on the heap backend (direct path) and RocksDB (through the states):
    the same egress and the same snapshot contents when restored into the heap backend."""
    messages = [message_builder(t, f"k{i % 7}", int_value=i) for i in range(60) for t in ("test/plain", "test/ttl")]
    made = HeapStateBackend() if backend == "heap" else RocksDBStateBackend(str(tmp_path / "db"))
    harness = _run_on(made, messages)
    snap = harness.snapshot()
    egress = harness.side_records(egress_tag("test/out"))
    restored = LocalDispatchers.restore(counters(), {"subtasks": [snap]}, parallelism=2, egresses=["test/out"])
    totals = {f"k{k}": sum(i for i in range(60) if i % 7 == k) for k in range(7)}
    for key, total in totals.items():
        assert restored.state("test/plain", key, "n") == total
        assert restored.state("test/ttl", key, "n") == total
    running = [f"k{i % 7}:{sum(j for j in range(i + 1) if j % 7 == i % 7)}" for i in range(60)]
    assert sorted(egress) == sorted(running * 2)  # test/plain and test/ttl


def test_sends_keep_their_order_and_caller_across_built_in_and_custom_types():
    """context.send on the dispatcher's sync path makes the record at once (built-in values
    decoded, custom types as TypedValue bytes): one sender's messages to one target arrive in
    send order, with the sender as caller; a non-message still fails as in the SDK."""
    from raystream.statefun_api import make_json_type

    Note = make_json_type("test/Note")
    functions = StatefulFunctions()

    @functions.bind("test/sender")
    def sender(context, message):
        for i in range(6):
            if i % 2:
                context.send(message_builder("test/log", "one", value={"i": i}, value_type=Note))
            else:
                context.send(message_builder("test/log", "one", int_value=i))
        if message.as_int() < 0:
            context.send("not a message")

    @functions.bind("test/log")
    def log(context, message):
        got = message.as_type(Note)["i"] if message.is_type(Note) else message.as_int()
        context.send_egress(egress_message_builder("test/out", f"{context.caller}:{got}", StringType))

    for parallelism in (1, 2):
        run = LocalDispatchers(functions, parallelism=parallelism, egresses=["test/out"])
        run.send(message_builder("test/sender", "s", int_value=1))
        assert run.egress("test/out") == [f"test/sender/s:{i}" for i in range(6)]
    with pytest.raises(Exception, match="send expects a Message"):
        run.send(message_builder("test/sender", "s", int_value=-1))


def test_a_message_for_another_subtasks_key_group_fails_on_the_direct_path():
    """An ingress record routed to the wrong subtask (its key group is another subtask's)
    fails as on the generic path, naming the key group, instead of writing foreign state."""
    from raystream.engine.errors import JobFailed
    from raystream.engine.keygroups import key_group_for, subtask_for_key_group

    harness = OperatorHarness(
        FunctionDispatcher(DispatcherConfig(counters(), {"test/out": None})), subtask_index=0, parallelism=2,
        max_parallelism=128,
    )
    key = next(f"k{i}" for i in range(100) if subtask_for_key_group(key_group_for(("test/plain", f"k{i}"), 128), 2, 128) == 1)
    with pytest.raises(JobFailed, match=r"StateError: key \('test/plain', 'k\d+'\) with key group \d+ is outside this backend's range 0..63"):
        harness.process([message_to_record(message_builder("test/plain", key, int_value=1))])
        harness.step()
