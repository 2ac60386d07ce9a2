"""A side output emitted in ``on_timer`` carries the timer's time in both time domains, as
Flink's ``OnTimerContextImpl.output(tag, value)`` stamps it (``new StreamRecord<>(value,
timer.getTimestamp())``, KeyedProcessOperator and KeyedCoProcessOperator); the main output of a
processing-time timer carries none (``collector.eraseTimestamp()``), an event-time timer's
carries its time (``setAbsoluteTimestamp``).

Before, raystream stamped an event-time timer's side outputs only; a processing-time timer's
carried none (operators/keyed.py ``KeyedProcessOperator._fire`` and operators/two_input.py
``_KeyedTimers._fire``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch
from raystream.operators.functions import KeyedCoProcessFunction, KeyedProcessFunction
from raystream.operators.keyed import KeyedProcessOperator
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.two_input import KeyedCoProcessOperator


def _stamped(records: list, stamps: list[int]) -> Batch:
    b = Batch.of_records(records)
    b.timestamps = np.array(stamps, dtype=np.int64)
    return b


def _emitted(batches: list[Batch]) -> list[tuple[Any, int | None]]:
    out = []
    for b in batches:
        ts = b.timestamps.tolist() if b.timestamps is not None else [None] * len(b)
        out.extend(zip(b.records(), ts))
    return out


class Timers(KeyedProcessFunction):
    """Registers a timer of the domain it is given; on_timer emits main and side output."""

    def __init__(self, domain: str) -> None:
        self.domain = domain

    def process_element(self, value, ctx):
        ts = ctx.timer_service()
        if self.domain == "processing_time":
            ts.register_processing_time_timer(50)
        else:
            ts.register_event_time_timer(5_000)

    def on_timer(self, timestamp, ctx):
        ctx.output("late", ("side", timestamp))
        yield ("main", timestamp)


class CoTimers(KeyedCoProcessFunction):
    def process_element1(self, value, ctx):
        ctx.timer_service().register_processing_time_timer(50)

    def process_element2(self, value, ctx):
        pass

    def on_timer(self, timestamp, ctx):
        ctx.output("late", ("side", timestamp))
        yield ("main", timestamp)


def test_an_event_time_timers_main_and_side_output_carry_its_time():
    h = OperatorHarness(KeyedProcessOperator(KeySelector(0), Timers("event_time")))
    h.process(_stamped([("a", 1)], [1_000]))
    h.advance_watermark(5_000)
    assert _emitted(h.output.batches) == [(("main", 5_000), 5_000)]
    assert _emitted(h.output.side["late"]) == [(("side", 5_000), 5_000)]


def test_a_processing_time_timers_main_output_carries_no_timestamp():
    h = OperatorHarness(KeyedProcessOperator(KeySelector(0), Timers("processing_time")))
    h.process(_stamped([("a", 1)], [1_000]))
    h.advance_processing_time(50)
    assert _emitted(h.output.batches) == [(("main", 50), None)]


def test_a_processing_time_timers_side_output_carries_its_time():
    h = OperatorHarness(KeyedProcessOperator(KeySelector(0), Timers("processing_time")))
    h.process(_stamped([("a", 1)], [1_000]))
    h.advance_processing_time(50)
    assert _emitted(h.output.side["late"]) == [(("side", 50), 50)]


def test_a_keyed_co_process_processing_time_timers_side_output_carries_its_time():
    ts = TimestampAssigner(column=1)
    h = OperatorHarness(KeyedCoProcessOperator(CoTimers(), (KeySelector(0), KeySelector(0)), (ts, ts)))
    h.process(_stamped([("a", 1)], [1_000]), 0)
    h.advance_processing_time(50)
    assert _emitted(h.output.batches) == [(("main", 50), None)]
    assert _emitted(h.output.side["late"]) == [(("side", 50), 50)]
