"""The dispatcher's one-frame invocation path (issue 13), in process, no Ray.

* one address's batch mixing values held decoded and serialized values of the same
  built-in type, with and without a caller, gives the function each message as sent, also
  when the function keeps a message in the middle of the batch;
* ingress held back by ``max_in_flight`` and admitted in parts keeps every address's order;
* the input-size estimate of the spilling queue counts serialized values only.
"""

from __future__ import annotations

from raystream.engine.operator import ManualClock
from raystream.engine.records import Batch
from raystream.statefun_api import IntType, StatefulFunctions, ValueSpec, message_builder
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
