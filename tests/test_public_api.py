"""The public surface: every name in ``raystream.__all__`` (and ``operators.__all__``)
imports, and every public class and function has a docstring."""

from __future__ import annotations

import pytest

import raystream
from raystream import operators


@pytest.mark.parametrize("module", [raystream, operators], ids=lambda m: m.__name__)
def test_all_names_import_and_are_documented(module):
    assert len(set(module.__all__)) == len(module.__all__), "duplicate names in __all__"
    undocumented = []
    for name in module.__all__:
        obj = getattr(module, name)  # AttributeError: listed but not importable
        if callable(obj) and not (obj.__doc__ or "").strip():  # its own docstring, not a base class's
            undocumented.append(name)
    assert not undocumented, f"public callables without a docstring: {undocumented}"


def test_event_time_api_is_public():
    for name in ("WatermarkStrategy", "OutputTag", "TumblingEventTimeWindows", "SlidingEventTimeWindows",
                 "EventTimeSessionWindows", "GlobalWindows", "EventTimeTrigger", "CountTrigger", "PurgingTrigger",
                 "ProcessWindowFunction", "KeyedProcessFunction", "CoProcessFunction", "KeyedCoProcessFunction",
                 "BroadcastProcessFunction", "AggregateFunction"):
        assert name in raystream.__all__
    from raystream.operators.windows import TumblingEventTimeWindows

    assert raystream.TumblingEventTimeWindows is TumblingEventTimeWindows
