"""PyFlink's ``context.global_state().get_list_state(d)`` / ``context.window_state().get_map_state(d)``
in a ``ProcessWindowFunction``: before, AttributeError ('KeyedStateStore' has only get_state)."""

from __future__ import annotations

import raystream as rs
from raystream.checkpoint.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
)
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.windows import ProcessWindowFunction, TumblingEventTimeWindows


class Firings(ProcessWindowFunction):
    """Per key: every window's count in a global list, per window a map of values seen."""

    def process(self, key, context, elements):
        seen = context.window_state().get_map_state(MapStateDescriptor("seen"))
        for e in elements:
            seen.put(e[1], True)
        history = context.global_state().get_list_state(ListStateDescriptor("counts"))
        history.add(len(list(seen.keys())))
        total = context.global_state().get_reducing_state(ReducingStateDescriptor("total", lambda a, b: a + b))
        total.add(len(elements))
        yield key, context.window().start, list(history.get()), total.get()


def test_pyflink_state_store_names_in_a_process_window_function():
    data = [("a", v, t) for v, t in [(1, 0), (1, 5), (2, 12), (3, 25), (3, 26), (4, 27)]]
    env = rs.StreamEnvironment(parallelism=2, batch_size=2)
    (env.from_collection(data)
        .assign_timestamps_and_watermarks(rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[2]))
        .key_by(lambda r: r[0]).window(TumblingEventTimeWindows.of(10)).process(Firings())
        .collect())
    result = run_in_process(env.get_job_graph(), JobConfig(name="window-state-names"), timeout_s=120)
    (batches,) = result["results"].values()
    assert sorted(collected_records(batches)) == [("a", 0, [1], 2), ("a", 10, [1, 1], 3), ("a", 20, [1, 1, 2], 6)]
