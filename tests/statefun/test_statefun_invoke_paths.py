"""The dispatcher's one-frame invocation path (issue 13), in process, no Ray.

* one address's batch mixing values held decoded and serialized values of the same
  built-in type, with and without a caller, gives the function each message as sent, also
  when the function keeps a message in the middle of the batch;
* ingress held back by ``max_in_flight`` and admitted in parts keeps every address's order;
* the input-size estimate of the spilling queue counts serialized values only;
* consecutive invocations that change only their state, send, emit to an egress, or both,
  each apply exactly their own effects (the state-only ones take a shorter path).
"""

from __future__ import annotations

from raystream.engine.operator import ManualClock
from raystream.engine.records import Batch
from raystream.statefun_api import (
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.dispatcher import DispatcherConfig, FunctionDispatcher
from raystream.statefun_api.routing import encode_record, message_to_record
from raystream.statefun_api.spill import RECORD_OVERHEAD, estimate_bytes
from tests.statefun.test_statefun_dispatcher import _ctx, _Out

INT = "io.statefun.types/int"


def _open(fns: StatefulFunctions, **limits: int) -> tuple[FunctionDispatcher, list]:
    posted: list = []
    op = FunctionDispatcher(DispatcherConfig(fns, {}, **limits))
    op.open(_ctx(posted, [], ManualClock()), _Out())
    return op, posted


def _run(op: FunctionDispatcher, posted: list) -> None:
    while posted:
        posted.pop(0)()


def test_decoded_and_serialized_values_of_one_type_in_one_batch_reach_the_function_as_sent():
    seen: list = []
    kept: list = []
    fns = StatefulFunctions()

    @fns.bind("test/f", specs=[ValueSpec("n", IntType)])
    def f(context, message):
        context.storage.n = (context.storage.n or 0) + 1
        caller = context.caller
        seen.append((message.is_int(), message.as_int(), message.value_typename(), None if caller is None else str(caller)))
        if message.as_int() == 3:
            kept.append(message)

    op, posted = _open(fns)
    decoded = [message_to_record(message_builder("test/f", "a", int_value=i)) for i in range(6)]
    records = [
        decoded[0],
        encode_record(decoded[1]),  # serialized, same typename
        decoded[2][:2] + ("test/g", "x") + decoded[2][4:],  # decoded, with a caller
        encode_record(decoded[3][:2] + ("test/g", "y") + decoded[3][4:]),  # serialized, with a caller; kept
        decoded[4],
        decoded[5],
    ]
    op.process_batch(Batch.of_records(records))
    _run(op, posted)
    assert seen == [
        (True, 0, INT, None),
        (True, 1, INT, None),
        (True, 2, INT, "test/g/x"),
        (True, 3, INT, "test/g/y"),
        (True, 4, INT, None),
        (True, 5, INT, None),
    ]
    assert [m.as_int() for m in kept] == [3]  # the kept message was not refilled by the later ones
    assert op.counters["invocations"] == 1 and op.counters["messages"] == 6
    op.close()


def test_ingress_admitted_in_parts_keeps_every_address_order():
    seen: dict[str, list[int]] = {}
    fns = StatefulFunctions()

    @fns.bind("test/f")
    def f(context, message):
        seen.setdefault(context.address.id, []).append(message.as_int())

    op, posted = _open(fns, max_in_flight=7, drain_step=3)
    ids = ["a", "b", "c", "a", "a", "b"] * 10
    batch = Batch.of_records([message_to_record(message_builder("test/f", k, int_value=i)) for i, k in enumerate(ids)])
    op.process_batch(batch)
    assert op.counters["held_ingress"] == len(ids) - 7
    _run(op, posted)
    for k in "abc":
        assert seen[k] == [i for i, key in enumerate(ids) if key == k]
    assert op.is_idle()
    op.close()


def test_estimate_bytes_counts_serialized_values_only():
    decoded = message_to_record(message_builder("test/f", "a", int_value=7))
    encoded = encode_record(decoded)
    assert estimate_bytes([]) == 0
    assert estimate_bytes([decoded, encoded, encoded]) == 3 * RECORD_OVERHEAD + 2 * len(encoded[5])


def test_invocations_with_and_without_effects_in_any_order_apply_exactly_their_own():
    fns = StatefulFunctions()

    @fns.bind("test/mix", specs=[ValueSpec("n", IntType)])
    def mix(context, message):
        n = (context.storage.n or 0) + 1
        context.storage.n = n
        v = message.as_int()
        if v & 1:
            context.send(message_builder("test/sink", context.address.id, int_value=n))
        if v & 2:
            context.send_egress(egress_message_builder("test/out", f"{context.address.id}:{n}", StringType))

    @fns.bind("test/sink", specs=[ValueSpec("total", IntType)])
    def sink(context, message):
        total = (context.storage.total or 0) + message.as_int()
        context.storage.total = total
        context.send_egress(egress_message_builder("test/out", f"sink {context.address.id}:{total}", StringType))

    ids = [f"a{(i * 7) % 5}" for i in range(60)]
    values = [(i * 5) % 4 for i in range(60)]  # 0: state only, 1: send, 2: egress, 3: both
    want: list[str] = []
    counts: dict[str, int] = {}
    totals: dict[str, int] = {}
    for fid, v in zip(ids, values):
        counts[fid] = n = counts.get(fid, 0) + 1
        if v & 1:
            totals[fid] = totals.get(fid, 0) + n
            want.append(f"sink {fid}:{totals[fid]}")
        if v & 2:
            want.append(f"{fid}:{n}")
    posted: list = []
    op = FunctionDispatcher(DispatcherConfig(fns, {"test/out": None}))
    out = _Out()
    op.open(_ctx(posted, [], ManualClock()), out)
    for i in range(0, 60, 16):  # several ingress batches
        op.process_batch(Batch.of_records(
            [message_to_record(message_builder("test/mix", fid, int_value=v)) for fid, v in zip(ids[i:i + 16], values[i:i + 16])]))
        _run(op, posted)
    op.flush()
    assert sorted(out.side["egress:test/out"]) == sorted(want)
    assert op.counters["messages"] == 60 + sum(v & 1 for v in values)
    op.close()


def test_value_types_that_change_between_invocations_reach_the_function_as_sent():
    seen: list = []
    fns = StatefulFunctions()

    @fns.bind("test/any")
    def any_value(context, message):
        value = message.as_int() if message.is_int() else message.as_string()
        seen.append((context.address.id, message.value_typename(), value))

    sent = [
        message_to_record(message_builder("test/any", "a", int_value=1)),
        encode_record(message_to_record(message_builder("test/any", "c", int_value=2))),
        message_to_record(message_builder("test/any", "d", int_value=3)),
        message_to_record(message_builder("test/any", "b", str_value="x")),
        message_to_record(message_builder("test/any", "e", str_value="y")),
        message_to_record(message_builder("test/any", "f", str_value="z")),
    ]
    op, posted = _open(fns)
    op.process_batch(Batch.of_records(sent))
    _run(op, posted)
    assert seen == [("a", INT, 1), ("c", INT, 2), ("d", INT, 3), ("b", "io.statefun.types/string", "x"),
                    ("e", "io.statefun.types/string", "y"), ("f", "io.statefun.types/string", "z")]
    op.close()
