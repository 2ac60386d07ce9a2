"""``ProcessWindowFunction`` context state, as in Flink: ``context.window_state()`` (state of
the key and window, e.g. how often a window fired within its allowed lateness) and
``context.global_state()`` (the key's state across its windows), and
``ProcessWindowFunction.clear(context)`` when a window is cleaned up. Before, the context
had neither (``AttributeError: 'WindowContext' object has no attribute 'window_state'``)
and ``clear`` was never called. Checked on both backends, across a snapshot restored at
another parallelism, on every record-API path (panes, per-window timers, sliding)."""

from __future__ import annotations

import pytest

from raystream.checkpoint import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor
from raystream.checkpoint.descriptors import StateTtlConfig
from raystream.engine.errors import ConfigError, UserCodeError
from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.partitioners import KeySelector
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import TimestampAssigner
from raystream.operators.window_operator import LIST, REDUCE, WindowOperator
from raystream.operators.window_state import KeyedStateStore
from raystream.operators.windows import (
    EventTimeSessionWindows,
    ProcessWindowFunction,
    SlidingEventTimeWindows,
    TimeWindow,
    TumblingEventTimeWindows,
)
from tests.event_time.test_windows import backend_of

TS = TimestampAssigner(column=1)
FIRED = ValueStateDescriptor("fired", default=0)
SIZES = ListStateDescriptor("sizes")


class Firings(ProcessWindowFunction):
    """Emits (key, window start, firings of this window, firings of the key, sizes seen)."""

    def __init__(self) -> None:
        self.cleared: list[tuple] = []

    def process(self, key, context, elements):
        fired = context.window_state().get_state(FIRED)
        total = context.global_state().get_state(FIRED)  # same name, other scope
        sizes = context.window_state().get_state(SIZES)
        fired.update(fired.value() + 1)
        total.update(total.value() + 1)
        sizes.add(len(list(elements)))
        yield (key, context.window.start, fired.value(), total.value(), sizes.get())

    def clear(self, context):
        self.cleared.append((context.key, context.window.start))
        context.window_state().get_state(FIRED).clear()
        context.window_state().get_state(SIZES).clear()


def firings(lateness: int = 50, assigner=None) -> WindowOperator:
    return WindowOperator(KeySelector(0).key_of, assigner or TumblingEventTimeWindows.of(100), LIST, None, Firings(),
                          allowed_lateness=lateness, timestamp_assigner=TS)


def window_value(h: OperatorHarness, key: str, window: TimeWindow) -> int:
    return KeyedStateStore(h.ctx.keyed_backend, key, window).get_state(FIRED).value()


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
def test_late_firings_count_in_window_state_across_a_rescaling_restore(backend, tmp_path):
    ops = [firings() for _ in range(2)]
    hs = [OperatorHarness(op, subtask_index=i, parallelism=2, state_backend=backend_of(backend, tmp_path / str(i)))
          for i, op in enumerate(ops)]
    records = [("a", 1), ("c", 2), ("a", 3)]  # key groups 55 and 70: one key per subtask
    for i, h in enumerate(hs):
        mine = KeyGroupRange.for_subtask(i, 2, 128)
        mine_records = [r for r in records if key_group_for(r[0], 128) in mine]
        if mine_records:
            h.process(mine_records)
        h.advance_watermark(99)
    assert [h.take() for h in hs] == [[("a", 0, 1, 1, [2])], [("c", 0, 1, 1, [1])]]
    snapshots = [h.snapshot() for h in hs]

    op = firings()
    h = OperatorHarness(op, restore=snapshots, state_backend=backend_of(backend, tmp_path / "p1"))
    h.process([("a", 5)])  # late, within the lateness: the window fires a 2nd time
    assert h.take() == [("a", 0, 2, 2, [2, 3])]
    h.process([("a", 120)])
    h.advance_watermark(149)  # window [0, 100) cleaned up: clear() ran and emptied its state
    assert sorted(op.window_function.cleared) == [("a", 0), ("c", 0)]
    assert window_value(h, "a", TimeWindow(0, 100)) == 0
    h.advance_watermark(199)
    assert h.take() == [("a", 100, 1, 3, [1])]  # a new window starts at 1; the key's count goes on


@pytest.mark.parametrize("assigner,starts", [(TumblingEventTimeWindows.of(100), [0, 100]),
                                             (SlidingEventTimeWindows.of(100, 50), [-50, 0, 50, 100])])
def test_clear_runs_for_every_window_on_the_fast_paths_too(state_backend, assigner, starts):
    op = firings(lateness=0, assigner=assigner)  # tumbling without lateness: the pane path
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("a", 1), ("a", 120)])
    h.advance_watermark(1000)
    assert [r[1:3] for r in h.take()] == [(s, 1) for s in starts]
    assert op.window_function.cleared == [("a", s) for s in starts]
    assert all(window_value(h, "a", TimeWindow(s, s + assigner.size)) == 0 for s in starts)


def test_every_state_kind_per_window(state_backend):
    class Kinds(ProcessWindowFunction):
        def process(self, key, context, elements):
            m = context.window_state().get_state(MapStateDescriptor("m"))
            for e in elements:
                m.put(e[1], e[1] * 10)
            m.remove(elements[0][1])
            yield (key, context.window.start, sorted(m.items()), m.contains(3), m.is_empty())

    op = WindowOperator(KeySelector(0).key_of, TumblingEventTimeWindows.of(100), LIST, None, Kinds(),
                        timestamp_assigner=TS)
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("a", 1), ("a", 3), ("a", 101)])
    h.advance_watermark(199)
    assert h.take() == [("a", 0, [(3, 30)], True, False), ("a", 100, [], False, True)]


class UsesWindowState(ProcessWindowFunction):
    def __init__(self, descriptor) -> None:
        self.descriptor = descriptor

    def process(self, key, context, elements):
        context.window_state().get_state(self.descriptor)
        yield key


def test_window_state_is_refused_for_merging_windows_and_with_a_ttl(state_backend):
    op = WindowOperator(KeySelector(0).key_of, EventTimeSessionWindows.with_gap(10), LIST, None,
                        UsesWindowState(FIRED), timestamp_assigner=TS)
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("a", 1)])
    with pytest.raises(UserCodeError) as err:
        h.advance_watermark(100)
    assert isinstance(err.value.original, ConfigError) and "merging windows" in str(err.value.original)

    ttl = ValueStateDescriptor("t", ttl=StateTtlConfig(1000))
    op = WindowOperator(KeySelector(0).key_of, TumblingEventTimeWindows.of(10), REDUCE, lambda a, b: a,
                        UsesWindowState(ttl), timestamp_assigner=TS)
    h = OperatorHarness(op, state_backend=state_backend)
    h.process([("a", 1)])
    with pytest.raises(UserCodeError) as err:
        h.advance_watermark(100)
    assert "has a TTL" in str(err.value.original)
