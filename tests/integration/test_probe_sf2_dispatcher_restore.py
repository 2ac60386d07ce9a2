"""A restored stateful-functions dispatcher subtask receives only its key groups' queued
messages.

The dispatcher snapshots the messages it holds but has not applied (the active set, async
invocations in flight, the inbox with its spilled chunks) as operator state. That state used
to be one list per old subtask, handed whole to every restored subtask, which kept the
messages of its own key groups in ``open``: each restored task unpickled the whole job's
queue and the job master shipped it p times. Now it is a ``KeyGroupedState`` keyed by the
target address's key group, cut to each subtask's key groups by the restore plan; snapshots
of the previous format are still restored.

In process (the job master and task code of a cluster, without Ray): a job at parallelism 2
whose async function waits for a file is stopped with a savepoint while every message of the
first half of its input is queued or in flight, then restored at parallelism 3 and 1 once the
file exists. The output equals a failure-free run's, every queued message is restored once,
and each restored subtask received only its key groups.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.local_runtime import run_in_process
from raystream.engine.operator import KeyGroupedState
from raystream.engine.records import Batch, arrow_to_records
from raystream.statefun_api import (
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.dispatcher import FunctionDispatcher
from raystream.statefun_api.job import StatefulFunctionsJob
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.routing import record_to_invocation
from tests.integration.gated import generate, wait_until_paused

N = 400  # ingress records; the source pauses at N // 2 until the gate opens
KEYS = 53


def record(i: int) -> tuple[str, int]:
    return f"k{(i * 7919) % KEYS:02d}", i


def functions(release: str) -> StatefulFunctions:
    fns = StatefulFunctions()

    @fns.bind("t/slow", specs=[ValueSpec("n", IntType)])
    async def slow(context, message):
        while not os.path.exists(release):  # (held: the savepoint finds its messages queued)
            await asyncio.sleep(0.005)
        context.storage.n = n = (context.storage.n or 0) + 1
        context.send(message_builder("t/echo", context.address.id, int_value=message.as_int() * 1000 + n))

    @fns.bind("t/echo", specs=[ValueSpec("seen", IntType)])
    def echo(context, message):
        context.storage.seen = seen = (context.storage.seen or 0) + 1
        context.send_egress(egress_message_builder("t/out", f"{context.address.id}:{seen}:{message.as_int()}", StringType))

    return fns


def run(parallelism: int, tmp: str, release: str, gate: str | None = None, from_savepoint: str | None = None,
        on_start: Any = None) -> list[str]:
    env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=10)
    env.enable_checkpointing(3_600_000, checkpoint_dir=os.path.join(tmp, "chk"))  # (savepoints only)
    # a small active set and no memory for the inbox: most queued messages are spilled Arrow chunks
    sf = StatefulFunctionsJob(env, functions(release), drain_step=8, max_batch_per_address=2, inbox_memory_bytes=0)
    sf.with_routed_ingress(generate(env, record, N, None, 50, gate=gate).set_parallelism(1), "t/slow", IntType)
    sf.egress_stream("t/out").collect()
    config = JobConfig(name=f"sf2-restore-p{parallelism}", checkpoint=env.checkpoint_config, from_savepoint=from_savepoint)
    result = run_in_process(env.get_job_graph(), config, timeout_s=300, on_start=on_start)
    return [r for batches in result["results"].values() for b in batches for r in arrow_to_records(b)]


def queued_records(state: Any) -> list[tuple]:
    parts = state["messages"]
    assert isinstance(parts, KeyGroupedState)
    out: list[tuple] = []
    for records, batches in parts.values():
        out.extend(records)
        for rb in batches:
            out.extend(Batch.of_arrow(rb).records())
    return out


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> tuple[str, list[str], str, str]:
    """(a savepoint of the job at parallelism 2 with the first half queued, its output, the
    gate, the release file), taken once."""
    tmp = str(tmp_path_factory.mktemp("sf2"))
    gate, release, path = (os.path.join(tmp, name) for name in ("gate", "release", "sp"))

    def stop_halfway(master: Any, runtime: Any) -> None:
        wait_until_paused(gate, 1)
        asyncio.run_coroutine_threadsafe(master.stop_with_savepoint(path), runtime.loop).result(120)
        open(release, "w").close()  # the invocations left waiting end (the stopped tasks apply nothing)

    before = run(2, tmp, release, gate, on_start=stop_halfway)
    open(gate, "w").close()  # the restored runs read on
    return path, before, gate, release


@pytest.mark.parametrize("new_parallelism", [3, 1])
def test_restored_dispatchers_get_only_their_key_groups_and_the_output_of_a_failure_free_run(
        new_parallelism, stopped, tmp_path, monkeypatch):
    path, before, gate, release = stopped
    reference = sorted(run(1, str(tmp_path / "reference"), release))
    assert len(reference) == N

    received: list[tuple[KeyGroupRange, int, list[Any]]] = []
    restore_state, open_ = FunctionDispatcher.restore_state, FunctionDispatcher.open

    def recording_restore(self: Any, states: list[Any]) -> None:
        self.__dict__["_test_restored"] = states
        restore_state(self, states)

    def recording_open(self: Any, ctx: Any, output: Any) -> None:
        if "_test_restored" in self.__dict__:
            received.append((ctx.key_group_range, ctx.max_parallelism, self.__dict__.pop("_test_restored")))
        open_(self, ctx, output)

    monkeypatch.setattr(FunctionDispatcher, "restore_state", recording_restore)
    monkeypatch.setattr(FunctionDispatcher, "open", recording_open)
    after = run(new_parallelism, str(tmp_path / "restored"), release, gate, from_savepoint=path)

    assert before == [], "nothing is applied before the savepoint (the function waits)"
    assert sorted(before + after) == reference, "the restored run lost or repeated output"
    assert len(received) == new_parallelism
    restored: list[tuple] = []
    for rng, max_parallelism, states in received:
        assert len(states) == 2, "one operator state per old subtask"
        for state in states:
            outside = sorted(kg for kg in state["messages"] if kg not in rng)
            assert not outside, f"the subtask of key groups {rng} received key groups {outside} of others"
            for r in queued_records(state):
                assert key_group_for((r[0], r[1]), max_parallelism) in rng
                restored.append(r)
    # every message of the first half was queued at the savepoint, and is restored once
    values = sorted((r[1], record_to_invocation(r).message.as_int()) for r in restored)
    assert values == sorted(record(i) for i in range(N // 2))


def test_a_snapshot_of_the_previous_format_is_restored(tmp_path) -> None:
    """``{"pending": [records], "queued": [Arrow batches]}`` of every old subtask, whole."""
    broken = [True]
    fns = StatefulFunctions()

    @fns.bind("t/f", specs=[ValueSpec("n", IntType)])
    def f(context, message):
        if broken[0]:
            raise RuntimeError("not yet")
        context.storage.n = n = (context.storage.n or 0) + 1
        context.send_egress(egress_message_builder("t/out", f"{context.address.id}:{n}:{message.as_int()}", StringType))

    messages = [message_builder("t/f", record(i)[0], int_value=i) for i in range(120)]
    with LocalDispatchers(fns, egresses=["t/out"], drain_step=8, inbox_memory_bytes=0) as first:
        with pytest.raises(Exception, match="not yet"):
            first.send(*messages)
        op = first.dispatchers[0]
        keyed, parts = op.backend.snapshot(1), op.snapshot_state(1)["messages"]
    # written as before: every message of the subtask in one list and its batches
    pending = [r for records, _ in parts.values() for r in records]
    queued = [rb for _, batches in parts.values() for rb in batches]
    assert pending and queued and len(pending) + sum(rb.num_rows for rb in queued) == len(messages)
    snapshot = [(keyed, {"pending": pending, "queued": queued})]
    broken[0] = False
    expected: dict[str, int] = {}
    reference = []
    for m in messages:
        expected[m.target.id] = expected.get(m.target.id, 0) + 1
        reference.append(f"{m.target.id}:{expected[m.target.id]}:{m.as_int()}")
    for parallelism in (1, 2, 3):
        with LocalDispatchers.restore(fns, snapshot, parallelism=parallelism, egresses=["t/out"]) as run_:
            run_.run_until_idle()
            assert sorted(run_.egress("t/out")) == sorted(reference), parallelism
