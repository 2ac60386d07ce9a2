"""Session windows with a gap per record, as Flink's ``withDynamicGap``
(``SessionWindowTimeGapExtractor``): ``EventTimeSessionWindows.with_dynamic_gap(fn)`` and
``ProcessingTimeSessionWindows.with_dynamic_gap(fn)``; a record's window is ``[t, t + gap)``
and windows that overlap or touch merge. Compared with a plain-Python sweep over the
records' intervals at parallelism 1 and 2, on the heap and RocksDB backends; a gap that is
no positive int fails naming the record. Before, there was no ``with_dynamic_gap``."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

import raystream as rs
from raystream.engine.errors import ConfigError, UserCodeError
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.partitioners import KeySelector
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner, WatermarkStrategy
from raystream.operators.window_operator import LIST, WindowOperator
from raystream.operators.windows import (
    EventTimeSessionWindows,
    ProcessingTimeSessionWindows,
    ProcessWindowFunction,
)
from tests.event_time.test_windows import backend_of

MAXP = 128
TS = TimestampAssigner(column=2)  # records: (key, value, ts, gap)


class Sessions(ProcessWindowFunction):
    def process(self, key, context, elements):
        yield (key, context.window.start, context.window.end, sorted(e[1] for e in elements))


def rows(n, keys=6, seed=5, disorder=0):
    rng = random.Random(seed)
    out = [(f"k{rng.randrange(keys)}", i, 1000 + 4 * i, rng.randrange(1, 60)) for i in range(n)]
    if disorder:
        out = [(k, v, t + rng.randrange(-disorder, disorder + 1), g) for k, v, t, g in out]
    return out


def model(records):
    """Flink's merged sessions: per key, the unions of the intervals [t, t + gap) that
    overlap or touch (TimeWindow.intersects: start <= other.end and end >= other.start)."""
    per_key = defaultdict(list)
    for k, v, t, g in records:
        per_key[k].append((t, t + g, v))
    out = []
    for k, iv in per_key.items():
        iv.sort()
        start, end, vals = iv[0][0], iv[0][1], [iv[0][2]]
        for s, e, v in iv[1:]:
            if s <= end:
                end, vals = max(end, e), vals + [v]
            else:
                out.append((k, start, end, sorted(vals)))
                start, end, vals = s, e, [v]
        out.append((k, start, end, sorted(vals)))
    return sorted(out)


def make():
    return WindowOperator(KeySelector(0).key_of, EventTimeSessionWindows.with_dynamic_gap(lambda r: r[3]), LIST,
                          None, Sessions(), timestamp_assigner=TS)


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
@pytest.mark.parametrize("disorder", [0, 15])
def test_dynamic_event_time_sessions_equal_the_interval_model(parallelism, backend, disorder, tmp_path):
    records = rows(500, disorder=disorder)
    bound = disorder + 1  # no record can touch a session that already fired: nothing late
    hs = [OperatorHarness(make(), i, parallelism, MAXP, state_backend=backend_of(backend, tmp_path / str(i)))
          for i in range(parallelism)]
    owners = [KeyGroupRange.for_subtask(i, parallelism, MAXP) for i in range(parallelism)]
    max_ts = -(2**63)
    for s in range(0, len(records), 17):
        part = records[s : s + 17]
        for h, kgr in zip(hs, owners):
            mine = [r for r in part if key_group_for(r[0], MAXP) in kgr]
            if mine:
                h.process(mine)
        max_ts = max(max_ts, *(r[2] for r in part))
        for h in hs:
            h.advance_watermark(max_ts - bound - 1)
    for h in hs:
        h.end_input()
    got = sorted(r for h in hs for r in h.records())
    assert got == model(records)


def test_a_gap_extractor_object_and_equal_timestamps(state_backend):
    class GapOf:
        def extract(self, element):
            return element[3]

    op = WindowOperator(KeySelector(0).key_of, EventTimeSessionWindows.with_dynamic_gap(GapOf()), LIST, None,
                        Sessions(), timestamp_assigner=TS)
    h = OperatorHarness(op, state_backend=state_backend)
    # equal timestamps, different gaps: one session to the largest end; 130 touches it (merges)
    h.process([("a", 1, 100, 10), ("a", 2, 100, 30), ("a", 3, 130, 5), ("a", 4, 136, 1)])
    h.advance_watermark(1000)
    assert h.take() == [("a", 100, 135, [1, 2, 3]), ("a", 136, 137, [4])]


@pytest.mark.parametrize("gap", [0, -5, None, "30", True, 2.5])
def test_a_gap_that_is_no_positive_int_fails_naming_the_record(gap):
    h = OperatorHarness(make())
    with pytest.raises(ConfigError) as err:
        h.process([("a", 1, 100, 10), ("b", 2, 101, gap)])
    msg = str(err.value)
    assert f"('b', 2, 101, {gap!r})" in msg and "positive int" in msg and "with_dynamic_gap" in msg


def test_an_extractor_that_raises_names_the_record():
    def gap_of(r):
        return r["gap"]

    h = OperatorHarness(WindowOperator(KeySelector(0).key_of, EventTimeSessionWindows.with_dynamic_gap(gap_of), LIST,
                                       None, Sessions(), timestamp_assigner=TS))
    with pytest.raises(UserCodeError) as err:
        h.process([("a", 1, 100, 10)])
    assert err.value.record == ("a", 1, 100, 10)
    with pytest.raises(ConfigError, match="extract"):
        EventTimeSessionWindows.with_dynamic_gap(42)


def test_dynamic_processing_time_sessions():
    op = WindowOperator(KeySelector(0).key_of, ProcessingTimeSessionWindows.with_dynamic_gap(lambda r: r[3]), LIST,
                        None, Sessions())
    h = OperatorHarness(op)
    h.advance_processing_time(1000)
    h.process([("a", 1, 0, 50), ("b", 2, 0, 10)])
    h.advance_processing_time(1020)  # b's session [1000, 1010) fired; a's [1000, 1050) goes on
    h.process([("a", 3, 0, 5)])  # [1020, 1025) merges into [1000, 1050)
    assert h.take() == [("b", 1000, 1010, [2])]
    h.advance_processing_time(1100)
    assert h.take() == [("a", 1000, 1050, [1, 3])]


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("parallelism", [1, 2])
def test_with_dynamic_gap_end_to_end(parallelism):
    records = rows(200, keys=4, seed=9)
    env = rs.StreamEnvironment(parallelism=parallelism)
    out = (env.from_collection(records)
           .assign_timestamps_and_watermarks(WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column(2))
           .key_by(0).window(EventTimeSessionWindows.with_dynamic_gap(lambda r: r[3]))
           .process(Sessions()).execute_and_collect())
    assert sorted(tuple(r) for r in out) == model(records)
