"""A routed ingress's Arrow message batches queued in compact form (issue 13, at p > 1): the
dispatcher reads such a batch's id and value columns (``compact_message_batch``) and holds,
queues and spills it as :class:`~statefun_api.routing.CompactMessages` instead of decoding one
record per message.

Each test runs the same messages as the exchange hands them over at p > 1 (an Arrow batch of
the records, ``Batch.of_arrow(batch.arrow())``) and as plain lists of records (the record
path), and checks that nothing a user sees differs: order per address, the in-flight cap,
spilling and snapshots, the failure text. In process, no Ray.
"""

from __future__ import annotations

import functools

import pyarrow as pa
import pytest

from raystream.engine.operator import ManualClock
from raystream.engine.records import Batch, arrow_to_records, records_to_arrow
from raystream.statefun_api import BoolType, DoubleType, IntType, StringType, message_builder
from raystream.statefun_api.ingress import RoutedIngress
from raystream.statefun_api.queued_state import restored_messages
from raystream.statefun_api.routing import (
    compact_message_batch,
    message_to_record,
    typed_records_batch,
)
from tests.statefun.test_probe_sfcompact_queue import (
    INT,
    as_records,
    functions,
    int_ingress,
    mixed_batches,
    open_op,
    record_state,
    run,
    seen_per_address,
)
from tests.statefun.test_probe_sfcompact_queue import compact_spy as compact_spy  # noqa: F401  (fixture)
from tests.statefun.test_statefun_dispatcher import _ctx


def as_arrow(batch: Batch) -> Batch:
    """The same messages as an Arrow batch, as the exchange delivers them at p > 1."""
    return Batch.of_arrow(as_records(batch).arrow())


def arrow_int_ingress(*pairs) -> Batch:
    return as_arrow(int_ingress(*pairs))


@pytest.mark.parametrize("value_type, values", [(IntType, [1, -2, 3]), (DoubleType, [1.5, 2.0, -0.5]), (BoolType, [True, False, True]),
                                                (StringType, ["ab", "", "xyz"])])
def test_an_ingress_arrow_batch_reads_back_as_its_records(value_type, values):
    routed = RoutedIngress(["t/log"], value_type).route_batch(Batch.of_records(list(zip(["a", "b", "a"], values))))
    rb = as_arrow(routed).arrow()
    c = compact_message_batch(rb)
    assert c is not None and (c.typename, c.value_typename) == ("t/log", value_type.typename)
    assert c.records() == arrow_to_records(rb) == list(routed.records())


def _record(target="t/log", fid="a", caller=("", ""), vt=INT, value=1, has_value=True):
    return (target, fid, caller[0], caller[1], vt, value, has_value)


@pytest.mark.parametrize("records", [
    [_record(), _record(caller=("t/src", "s"))],  # a caller
    [_record(caller=("t/src", "s")), _record(fid="b", caller=("t/src", "s"))],  # one caller throughout
    [_record(), _record(target="t/other")],  # two targets (an ingress routing to two function types)
    [_record(), _record(vt="io.statefun.types/long")],  # two value typenames
    [_record(value=b"\x08\x01"), _record(value=b"\x08\x02")],  # values serialized (a binary column)
    [_record(), _record(value=b"", has_value=False)],  # a message without value
    [_record(value=1), _record(value=b"\n\x01x")],  # values of two kinds: serialized
], ids=["caller", "one-caller", "targets", "value-typenames", "serialized", "no-value", "mixed-kinds"])
def test_other_message_batches_are_not_read_in_compact_form(records):
    assert compact_message_batch(records_to_arrow(records)) is None
    assert compact_message_batch(typed_records_batch(records)) is None


def test_a_message_without_value_in_a_typed_column_is_not_read_in_compact_form():
    rb = typed_records_batch([_record(fid="a", value=1), _record(fid="b", value=2)])
    columns = rb.columns[:6] + [pa.array([True, False])]
    no_value = pa.RecordBatch.from_arrays(columns, schema=rb.schema)
    assert compact_message_batch(rb) is not None and compact_message_batch(no_value) is None


def test_a_batch_of_other_form_or_empty_is_not_read_in_compact_form():
    assert compact_message_batch(pa.RecordBatch.from_pydict({"key": ["a"], "value": [1]})) is None
    assert compact_message_batch(typed_records_batch([message_to_record(message_builder("t/log", "a", int_value=1))])[:0]) is None


@pytest.mark.parametrize("drain_step, memory", [(1, 0), (3, 64 << 20)])
def test_arrow_ingress_batches_keep_the_order_per_address(tmp_path, compact_spy, drain_step, memory):  # noqa: F811
    results, counts = [], []
    for form in (as_arrow, as_records):
        op, posted, out = open_op(functions(), drain_step=drain_step, inbox_memory_bytes=memory, spill_dir=str(tmp_path))
        for batch in mixed_batches():  # (int ingress batches: compact; str ones and feedback: records)
            op.process_batch(form(batch))
        run(op, posted)
        assert op.is_idle() and op.counters["messages"] == 27
        results.append(seen_per_address(out))
        counts.append(compact_spy[0])
        op.close()
    assert counts[0] > 0 and counts[1] == counts[0]  # Arrow int ingress batches queued in compact form; records none
    assert results[0] == results[1]
    assert [t.split(":")[1] for t in results[0]["a"]] == ["1", "3", "5", "seven", "9", "12", "14", "17", "19", "22", "31"]


def test_the_cap_counts_every_message_of_an_arrow_batch(compact_spy):  # noqa: F811
    traces = []
    for form in (as_arrow, as_records):
        op, posted, _out = open_op(functions(), max_in_flight=5, drain_step=2)
        trace: list = []
        state = functools.partial(record_state, op, trace)
        op.process_batch(form(int_ingress(*[(f"k{i % 4}", i) for i in range(12)])))
        state()
        assert trace[0] == (5, 12, 7, 12, False)
        second = [form(int_ingress(*[(f"k{i % 3}", 100 + i) for i in range(9)]))]
        while posted:
            posted.pop(0)()
            state()
            if op.accepts_input() and second:
                op.process_batch(second.pop())
                state()
        assert op.is_idle() and op.counters["messages"] == 21
        traces.append(trace)
        op.close()
    assert compact_spy[0] == 21
    assert traces[0] == traces[1]


def test_arrow_ingress_spills_snapshots_and_restores_as_records(tmp_path, compact_spy):  # noqa: F811
    snapshots, results = [], []
    for form in (as_arrow, as_records):
        op, posted, _out = open_op(functions(), drain_step=2, inbox_memory_bytes=0, spill_dir=str(tmp_path / "a"), max_in_flight=30)
        for batch in mixed_batches():
            op.process_batch(form(batch))
        assert op.counters["spilled_messages"] > 0
        op.process_batch(form(int_ingress(*[("b", 40 + i) for i in range(12)])))
        assert op.counters["held_ingress"] > 0
        snap = op.snapshot_state(1)
        snapshots.append(restored_messages([snap]))
        op.close()
        restored, posted2, out2 = open_op(functions(), drain_step=2, inbox_memory_bytes=0, spill_dir=str(tmp_path / "b"))
        restored.restore_state([snap])
        restored.open(_ctx(posted2, [], ManualClock()), out2)
        run(restored, posted2)
        assert restored.is_idle() and restored.counters["messages"] == 39
        results.append(seen_per_address(out2))
        restored.close()
    assert compact_spy[0] > 0
    assert snapshots[0] == snapshots[1]
    assert results[0] == results[1]


def test_a_failed_invocation_of_an_arrow_batch_names_its_address_and_message():
    failures, results = [], []
    for form in (as_arrow, as_records):
        fail_on = {12}
        op, posted, out = open_op(functions(fail_on), drain_step=3)
        for batch in mixed_batches():
            op.process_batch(form(batch))
        with pytest.raises(Exception) as info:
            run(op, posted)
        failures.append(str(info.value))
        fail_on.clear()
        run(op, posted)
        assert op.is_idle() and op.counters["messages"] == 27
        results.append(seen_per_address(out))
        op.close()
    assert failures[0] == failures[1]
    assert "t/log/a" in failures[0] and "refused 12" in failures[0]
    assert results[0] == results[1]
