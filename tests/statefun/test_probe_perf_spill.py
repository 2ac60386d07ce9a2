"""The inbox's memory budget counts string values held decoded (stop 45).

A message with a ``str_value`` stays a Python string in the dispatcher (no serialization
between embedded functions), and the queue counted such a record as its constant overhead
only: 100 messages of 100,000 characters were 20 KB to a 1 MB budget, none spilled, while
the process held 10 MB. ``estimate_bytes`` now adds the length of every value that has one
(bytes, str), as cheaply as it used to count bytes alone."""

from __future__ import annotations

import pytest

from raystream.engine.operator import ManualClock
from raystream.engine.records import Batch
from raystream.statefun_api import StatefulFunctions, StringType, ValueSpec, message_builder
from raystream.statefun_api.dispatcher import DispatcherConfig, FunctionDispatcher
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.routing import encode_record, message_to_record, record_to_invocation
from raystream.statefun_api.spill import (
    MIN_CHUNK_BYTES,
    RECORD_OVERHEAD,
    SpillingQueue,
    estimate_bytes,
)
from tests.statefun.test_statefun_dispatcher import _ctx, _Out

BIG = "é" + "x" * 99_999


def _records(n: int, value: str = BIG) -> list[tuple]:
    return [message_to_record(message_builder("test/f", f"k{i}", str_value=value)) for i in range(n)]


def test_a_decoded_string_counts_its_length_as_its_serialized_form_counts_its_bytes():
    decoded = _records(3)
    assert type(decoded[0][5]) is str  # (held decoded: the case that was counted as nothing)
    encoded = [encode_record(r) for r in decoded]
    assert estimate_bytes(decoded) == 3 * (RECORD_OVERHEAD + len(BIG))
    assert abs(estimate_bytes(decoded) - estimate_bytes(encoded)) <= 3 * 8  # (the UTF-8 and protobuf framing)
    ints = [message_to_record(message_builder("test/f", "k", int_value=7))] * 4
    assert estimate_bytes(ints) == 4 * RECORD_OVERHEAD
    assert estimate_bytes([]) == 0


def test_the_queue_spills_decoded_strings_beyond_its_budget(tmp_path):
    q = SpillingQueue(memory_bytes=1_000_000, directory=str(tmp_path), chunk_rows=10)
    records = _records(100)
    q.push(records)
    assert q.memory_bytes <= 1_000_000 and q.spilled_messages >= 90
    back = q.pop(1000)  # (spilled values come back serialized)
    assert [r[:5] for r in back] == [r[:5] for r in records]
    assert all(record_to_invocation(r).message.as_string() == BIG for r in back)
    q.close()


def test_a_chunk_of_big_values_read_back_stays_bounded(tmp_path):
    q = SpillingQueue(memory_bytes=1_000_000, directory=str(tmp_path))  # (chunks of up to 8192 rows)
    records = _records(300)  # 30 MB in one push
    q.push(records)
    assert q.memory_bytes == 0 and q.spilled_messages == 300
    back: list = []
    while len(q):
        back += q.pop(1)
        assert q.memory_bytes <= MIN_CHUNK_BYTES  # (it read back all 30 MB at the first pop)
    assert [r[1] for r in back] == [r[1] for r in records]
    q.close()
    big = _records(1, "z" * (MIN_CHUNK_BYTES + 1))  # one record above the bound: a chunk of its own
    q = SpillingQueue(memory_bytes=0, directory=str(tmp_path))
    q.push(big + _records(2, "s"))
    assert q.spilled_messages == 3
    assert [r[1] for r in q.pop(1)] == ["k0"]  # (a chunk of its own: read back alone)
    assert [r[1] for r in q.pop(10)] == ["k0", "k1"]
    q.close()


def _echo_functions(seen: list[tuple[str, int]]) -> StatefulFunctions:
    functions = StatefulFunctions()

    @functions.bind("test/f", specs=[ValueSpec("n", StringType)])
    def f(context, message):
        text = message.as_string()
        seen.append((context.address.id, len(text)))
        context.storage.n = text[:3]

    return functions


def test_the_dispatcher_keeps_big_string_messages_within_its_inbox_budget(tmp_path):
    seen: list[tuple[str, int]] = []
    budget = 1 << 20
    op = FunctionDispatcher(
        DispatcherConfig(_echo_functions(seen), drain_step=4, inbox_memory_bytes=budget, spill_dir=str(tmp_path))
    )
    posted: list = []
    op.open(_ctx(posted, [], ManualClock()), _Out())
    op.process_batch(Batch.of_records(_records(200)))
    # the active set holds 8 messages; the other 192 (19 MB of text) wait in the inbox
    assert op.counters["inbox_memory_bytes"] <= budget
    assert op.counters["spilled_messages"] >= 150
    while posted:  # a spilled chunk read back (at the head) holds at most max(budget, 4 MiB)
        posted.pop(0)()
        assert op.counters["inbox_memory_bytes"] <= MIN_CHUNK_BYTES + budget
    assert sorted(seen) == sorted((f"k{i}", len(BIG)) for i in range(200))
    assert op.is_idle() and op.counters["spill_disk_bytes"] == 0
    op.close()


@pytest.mark.parametrize("parallelism", [1, 2])
def test_spilled_string_messages_are_delivered_once_in_order(parallelism, tmp_path):
    seen: list[tuple[str, int]] = []
    functions = StatefulFunctions()

    @functions.bind("test/f")
    def f(context, message):
        seen.append((context.address.id, int(message.as_string()[-4:])))

    run = LocalDispatchers(functions, parallelism=parallelism, drain_step=3, inbox_memory_bytes=50_000, spill_dir=str(tmp_path))
    run.send(*[message_builder("test/f", f"k{i % 3}", str_value="y" * 20_000 + f"{i:04d}") for i in range(60)])
    assert run.is_idle() and run.counters()["spilled_messages"] > 0
    for key in ("k0", "k1", "k2"):  # each address gets its messages once, in the order sent
        assert [i for k, i in seen if k == key] == [i for i in range(60) if f"k{i % 3}" == key]
    run.close()
