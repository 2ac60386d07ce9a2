"""Issue 13: messages to other subtasks cross the feedback edge with their values held
decoded (typed Arrow columns), not encoded to TypedValue bytes; values of mixed kinds to one
address, and values not held decoded, go serialized as before.

Checked: the exact values of every built-in kind at its bounds through the edge's Arrow form;
a dispatcher's feedback batches of several steps and kinds through the engine's own channel
writer (which merges consecutive records batches per target: nothing pickled, every record
back, in order); spilled feedback batches; a restore of a checkpoint whose feedback log
holds in-flight records in both forms (binary, as every older snapshot; typed).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pyarrow as pa
import pytest

from raystream.checkpoint import ValueStateDescriptor
from raystream.engine.channels import LocalSender, OutputInfo, RecordWriter
from raystream.engine.partitioners import KeyGroupPartitioner, KeySelector
from raystream.engine.records import KIND_KEY, Batch, arrow_to_records
from raystream.operators.testing import OperatorHarness
from raystream.statefun_api import (
    FloatType,
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api import types as types_module
from raystream.statefun_api.address import Address
from raystream.statefun_api.dispatcher import (
    DispatcherConfig,
    FunctionDispatcher,
    declared_egresses,
)
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.routing import (
    VALUE,
    FeedbackBatches,
    address_key,
    encode_records,
    message_key_groups,
    message_record_key_groups,
    message_to_record,
    record_typed_value,
    records_to_arrow_batch,
    typed_records_batch,
)
from raystream.statefun_api.spill import SpillingQueue
from raystream.statefun_api.state_layout import value_state_name

CALLER = Address.of("demo/caller", "c")

#: values held decoded, at the bounds of their types
DECODED = [
    ("int_value", [0, 1, -1, -(2**31), 2**31 - 1]),
    ("long_value", [2**31, -(2**31) - 1, 2**63 - 1, -(2**63)]),
    ("double_value", [1.5, -1e300, 5e-324, math.inf, -math.inf, 0.0]),
    ("str_value", ["", "a", "héllo ✓ 世界 🙂", "x" * 300]),
    ("bool_value", [True, False]),
]


def _records(keyword: str, values: list[Any], prefix: str = "k") -> list:
    return [
        message_to_record(message_builder("demo/f", f"{prefix}{i}", **{keyword: v}), CALLER) for i, v in enumerate(values)
    ]


def _typed(records: list) -> list:
    """The records with the type of every field: a decoded 1 and an encoded one differ."""
    return [tuple((type(v).__name__, v) for v in r) for r in records]


def _no_serializer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every built-in serializer call (float32's excepted: it is never held decoded)."""
    calls: list[str] = []
    for cls in (types_module._WrapperSerializer, types_module._FixedSerializer, types_module._StringSerializer):
        original = cls.__dict__["serialize"]

        def serialize(self: Any, value: Any, _original: Any = original) -> bytes:
            if self is not FloatType.serializer():
                calls.append(repr(value))
            return _original(self, value)  # type: ignore[no-any-return]

        monkeypatch.setattr(cls, "serialize", serialize)
    return calls


@pytest.mark.parametrize(("keyword", "values"), DECODED)
def test_decoded_values_cross_in_a_typed_column_exactly(keyword, values):
    records = _records(keyword, values)
    rb = typed_records_batch(records)
    assert rb.schema.types[VALUE] != pa.binary()
    back = arrow_to_records(rb)
    assert _typed(back) == _typed(records)
    # the typename says int or long; the value reads back as what was sent, encoded alike
    assert [record_typed_value(r) for r in back] == [record_typed_value(r) for r in encode_records(records)]
    (batch,) = FeedbackBatches().batches(records)
    assert _typed(arrow_to_records(batch.arrow())) == _typed(records)  # the channel's conversion of it


def test_values_not_held_decoded_stay_serialized():
    # float32 (rounded: 0.1 reads back as its float32), -0.0 as a double, a JSON value: bytes
    records = [
        message_to_record(message_builder("demo/f", "a", float_value=0.1), CALLER),
        message_to_record(message_builder("demo/f", "b", double_value=-0.0), CALLER),
        message_to_record(message_builder("demo/f", "c", value={"x": 1}, value_type=types_module.make_json_type("demo/j")), CALLER),
    ]
    assert {type(r[VALUE]) for r in records} == {bytes}
    (batch,) = FeedbackBatches().batches(records)
    back = arrow_to_records(batch.arrow())
    assert back == records
    assert record_typed_value(back[0]).decoded(FloatType) == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert math.copysign(1.0, record_typed_value(back[1]).decoded(types_module.DoubleType)) == -1.0


def test_a_mixed_step_goes_as_one_batch_per_kind_without_encoding(monkeypatch):
    calls = _no_serializer(monkeypatch)
    kinds = [kw_values for kw_values in DECODED]
    records = []
    for n in range(3):  # interleaved kinds, each address one kind
        for kw, values in kinds:
            records += _records(kw, values, prefix=f"{kw}-{n}-")
    records.append(message_to_record(message_builder("demo/f", "f32", float_value=0.5), CALLER))
    feedback = FeedbackBatches()
    batches = feedback.batches(records)
    assert len(batches) == 5  # int, float, str, bool columns (int and long share one) and float32's bytes
    assert calls == []
    back = [r for b in batches for r in arrow_to_records(b.arrow())]
    assert sorted(_typed(back)) == sorted(_typed(records))
    # each address's messages keep their order; every batch holds one kind
    for b in batches:
        assert len({type(r[VALUE]) for r in b.records()}) == 1
    assert [r for r in back if r[1].startswith("int_value-")] == [r for r in records if r[1].startswith("int_value-")]


def test_two_kinds_to_one_address_go_serialized_in_order():
    records = [
        message_to_record(message_builder("demo/f", "a", int_value=1), CALLER),
        message_to_record(message_builder("demo/f", "a", str_value="two"), CALLER),
        message_to_record(message_builder("demo/f", "a", int_value=3), CALLER),
    ]
    (batch,) = FeedbackBatches().batches(records)
    assert batch.records() == encode_records(records)
    assert arrow_to_records(batch.arrow()) == encode_records(records)


def _writer(delivered: list, targets: int = 2) -> RecordWriter:
    senders = [
        LocalSender(t, None, lambda channel, seq, items, ack, t=t: (delivered.extend((t, i) for i in items), ack()))
        for t in range(targets)
    ]
    selector = KeySelector(
        address_key, stable_keys=True, record_key_groups=message_record_key_groups, batch_key_groups=message_key_groups
    )
    info = OutputInfo(KeyGroupPartitioner(selector), 1, targets, 0, feedback=True, side_tag="statefun-feedback")
    return RecordWriter(info, senders, 0, 128, batch_size=100_000, flush_ms=60_000)


def test_the_channel_writer_merges_steps_of_several_forms_without_pickling():
    steps = [
        _records("int_value", list(range(40)), prefix="i"),
        _records("str_value", [f"s{i}" for i in range(30)], prefix="s"),
        encode_records(_records("long_value", [2**40] * 5, prefix="b")),  # serialized (e.g. after a mixed step)
        _records("int_value", list(range(40, 60)), prefix="i"),
        _records("bool_value", [True, False] * 4, prefix="t"),
        _records("int_value", list(range(60, 70)), prefix="j") + _records("str_value", ["z"] * 3, prefix="z"),
    ]
    delivered: list = []
    writer = _writer(delivered)
    feedback = FeedbackBatches()
    for step in steps:
        for batch in feedback.batches(step):
            writer.write(batch)
    writer.flush_all()
    assert delivered
    per_target: dict[int, list] = {}
    for target, item in delivered:
        assert isinstance(item, pa.RecordBatch)
        assert item.schema.metadata[KIND_KEY] == b"tuple"  # never pickled
        per_target.setdefault(target, []).extend(arrow_to_records(item))
    sent = [r for step in steps for r in step]
    assert sorted(_typed(r for rs in per_target.values() for r in rs)) == sorted(_typed(sent))
    for records in per_target.values():  # per address, in the order sent
        for key in {address_key(r) for r in records}:
            assert [r for r in records if address_key(r) == key] == [r for r in sent if address_key(r) == key]


def test_spilled_feedback_batches_come_back_decoded():
    ints = _records("int_value", list(range(100)))
    strs = _records("str_value", [f"v{i}" for i in range(100)], prefix="s")
    q = SpillingQueue(memory_bytes=0, chunk_rows=32)
    try:
        q.push_arrow(typed_records_batch(ints))  # as received over the feedback edge
        q.push(strs)  # local fan-out beyond the active set
        q.push_arrow(records_to_arrow_batch(ints))  # an older binary batch
        assert q.spilled_messages == 300
        snapshot = [r for rb in q.snapshot() for r in arrow_to_records(rb)]
        out = q.pop(1000)
    finally:
        q.close()
    expected = ints + strs + encode_records(ints)
    assert _typed(out) == _typed(expected)
    assert _typed(snapshot) == _typed(expected)


def _hop_functions(kind: str = "both") -> StatefulFunctions:
    """``fan/<k>`` sends int messages to ``i`` sinks and str messages to ``s`` sinks (about
    half on the other subtask; ``kind``: "int", "str" or "both"); a sink adds what it gets
    (a str: its length) to its total and emits it."""
    functions = StatefulFunctions()

    @functions.bind("demo/fan")
    def fan(context, message):
        n = message.as_int()
        for j in range(4):
            if kind != "str":
                context.send(message_builder("demo/sink", f"i{(n * 4 + j) % 37}", int_value=n + j))
            if kind != "int":
                context.send(message_builder("demo/sink", f"s{(n * 4 + j) % 37}", str_value="x" * (j + 1)))

    @functions.bind("demo/sink", specs=[ValueSpec("total", IntType)])
    def sink(context, message):
        add = message.as_int() if message.is_int() else len(message.as_string())
        context.storage.total = (context.storage.total or 0) + add
        context.send_egress(egress_message_builder("demo/out", f"{context.address.id}:{context.storage.total}", StringType))

    return functions


def _expected_totals(n: int, kind: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for m in range(n):
        for j in range(4):
            if kind != "str":
                totals[f"i{(m * 4 + j) % 37}"] = totals.get(f"i{(m * 4 + j) % 37}", 0) + m + j
            if kind != "int":
                totals[f"s{(m * 4 + j) % 37}"] = totals.get(f"s{(m * 4 + j) % 37}", 0) + j + 1
    return totals


@pytest.mark.parametrize("kind", ["int", "str"])
def test_spilling_dispatchers_forward_decoded_values(monkeypatch, kind):
    """Feedback batches received while the active set is full go to the inbox as they came
    (typed Arrow) and, with no memory budget, to disk; local fan-out of one kind spills typed
    too: nothing is encoded."""
    calls = _no_serializer(monkeypatch)
    n = 60
    run = LocalDispatchers(_hop_functions(kind), parallelism=2, egresses=["demo/out"], inbox_memory_bytes=0, drain_step=16)
    run.send(*[message_builder("demo/fan", str(m), int_value=m) for m in range(n)])
    totals = _expected_totals(n, kind)
    assert {k: run.state("demo/sink", k, "total") for k in totals} == totals
    assert run.counters()["remote_messages"] > 0
    assert run.counters()["spilled_messages"] > 0
    assert calls == []


def test_spilling_dispatchers_forward_mixed_kinds():
    n = 60
    run = LocalDispatchers(_hop_functions(), parallelism=2, egresses=["demo/out"], inbox_memory_bytes=0, drain_step=16, seed=3)
    run.send(*[message_builder("demo/fan", str(m), int_value=m) for m in range(n)])
    totals = _expected_totals(n, "both")
    assert {k: run.state("demo/sink", k, "total") for k in totals} == totals
    assert run.counters()["spilled_messages"] > 0


@pytest.mark.parametrize("form", ["binary", "typed", "both"])
def test_a_checkpoint_with_in_flight_feedback_records_restores(form):
    """The engine's feedback log holds the Arrow batches as the channel delivered them and a
    restored task replays them (``Task._replay_feedback_log``: each as ``Batch.of_arrow``
    into the head operator) before anything else."""
    functions = _hop_functions()
    config = DispatcherConfig(functions, declared_egresses(["demo/out"]))
    before = OperatorHarness(FunctionDispatcher(config))
    before.process([message_to_record(message_builder("demo/sink", "i1", int_value=5))])
    before.step()
    snapshot = before.snapshot()
    in_flight = [
        message_to_record(message_builder("demo/sink", f"i{k}", int_value=k * 10), Address.of("demo/fan", "0")) for k in range(5)
    ] + [message_to_record(message_builder("demo/sink", f"s{k}", str_value="ab"), Address.of("demo/fan", "0")) for k in range(3)]
    binary = records_to_arrow_batch(in_flight)  # what every checkpoint before issue 13's change logged
    typed = [b.arrow() for b in FeedbackBatches().batches(in_flight)]
    log = {"binary": [binary], "typed": typed, "both": [binary, *typed]}[form]
    after = OperatorHarness(FunctionDispatcher(config), restore=[snapshot])
    for rb in log:  # what the task's replay of its restored feedback log does with each batch
        after.process(Batch.of_arrow(rb))
    while after.task.has_mail():
        after.step()
    op = after.operator
    expected = _running_totals(log, {"i1": 5})
    final = {r[1]: total for r, total in expected}
    state = op.backend.get_state(ValueStateDescriptor(value_state_name("demo/sink", "total")))
    got = {}
    for key in final:
        op.backend.set_current_key(("demo/sink", key))
        value = state.value()
        got[key] = value[1] if type(value) is tuple else value.decoded(IntType)
    assert got == final
    assert sorted(after.side_records("egress:demo/out")) == sorted(f"{r[1]}:{total}" for r, total in expected)


def _running_totals(log: list[pa.RecordBatch], start: dict[str, int]) -> list[tuple[Any, int]]:
    totals = dict(start)
    out = []
    for rb in log:
        for r in arrow_to_records(rb):
            tv = record_typed_value(r)
            add = tv.decoded(IntType) if tv.typename == IntType.typename else len(tv.decoded(StringType))
            totals[r[1]] = totals.get(r[1], 0) + add
            out.append((r, totals[r[1]]))
    return out


def test_batch_of_records_in_a_step_keeps_first_form():
    # the first batch's form is the records form; a later batch of another form is Arrow
    feedback = FeedbackBatches()
    (first,) = feedback.batches(_records("str_value", ["a"]))
    (second,) = feedback.batches(_records("int_value", [1]))
    (third,) = feedback.batches(_records("str_value", ["b"]))
    assert (first.is_arrow, second.is_arrow, third.is_arrow) == (False, True, False)
    assert isinstance(second, Batch) and second.records()[0][VALUE] == 1
