"""The fraud-detection job's KeyedProcessFunction in-process: event and processing time,
snapshot/restore mid-stream; the Ray run is in tests/integration/test_fraud_detection.py."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.keygroups import key_group_for
from raystream.engine.partitioners import KeySelector
from raystream.jobs.fraud_detection import FraudDetector, reference_alerts, transaction
from raystream.operators.keyed import KeyedProcessOperator
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner

TXS = [transaction(i) for i in range(30_000)]


def harness(time_domain="event_time", **kw):
    op = KeyedProcessOperator(KeySelector("account"), FraudDetector(time_domain), TimestampAssigner(column="ts"))
    return OperatorHarness(op, **kw)


def _run(h, txs):
    for i in range(0, len(txs), 1000):
        chunk = txs[i:i + 1000]
        h.process(chunk)
        h.advance_watermark(chunk[-1]["ts"])


def test_event_time_alerts_equal_reference_and_timers_clear_flags(state_backend):
    h = harness(state_backend=state_backend)
    _run(h, TXS)
    expected = reference_alerts(TXS)
    assert len(expected) >= 10
    assert h.records() == expected
    assert h.operator.timers.num_event_timers() <= 20  # at most one pending flag timer per account


def test_snapshot_restore_mid_stream_gives_the_same_alerts(state_backend):
    h = harness(state_backend=state_backend)
    _run(h, TXS[:13_000])
    snap = h.snapshot()
    before = h.records()
    restored = [harness(subtask_index=i, parallelism=2, restore=[snap], state_backend=state_backend) for i in range(2)]
    for r in restored:  # each subtask gets the accounts of its key groups (rescaled 1 -> 2)
        _run(r, [t for t in TXS[13_000:] if key_group_for(t["account"], 128) in r.ctx.key_group_range])
    after = sorted((a for r in restored for a in r.records()), key=lambda a: a["ts"])
    assert before + after == reference_alerts(TXS)


def test_processing_time_timer_clears_the_flag(state_backend):
    h = harness("processing_time", state_backend=state_backend)
    small, large = {"account": 1, "amount": 0.5, "ts": 0}, {"account": 1, "amount": 900.0, "ts": 1}
    h.process([small])
    h.advance_processing_time(30_000)
    h.process([large])
    assert [a["amount"] for a in h.take()] == [900.0]
    h.process([small])  # flag again at 30 s, timer at 90 s
    assert h.pending_processing_timers == [90_000]  # the deleted 60 s timer's wake-up was cancelled
    h.advance_processing_time(90_000)  # the timer clears the flag
    h.process([large])
    assert h.take() == []


def test_bad_time_domain_is_rejected():
    with pytest.raises(rs.ConfigError, match="'wall_clock'"):
        FraudDetector("wall_clock")
