"""A ``ProcessJoinFunction`` of an interval join is opened and closed, and emits side
outputs (Flink's ``ProcessJoinFunction``: a rich function whose ``Context`` has
``output(tag, value)``).

Before, ``open()`` was never called (a function that set itself up there failed on its first
pair with an ``AttributeError``), ``close()`` neither, and ``ctx.output`` did not exist.
"""

from __future__ import annotations

import raystream as rs
from raystream.operators.functions import OutputTag
from raystream.operators.joins import ProcessJoinFunction
from raystream.operators.testing import OperatorHarness
from raystream.operators.time import WatermarkStrategy

FAR = OutputTag("far")
STRATEGY = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")


class Enrich(ProcessJoinFunction):
    closed = 0

    def open(self, runtime_context):  # noqa: ANN001
        self.subtask = runtime_context.index_of_this_subtask

    def process_element(self, left, right, ctx):  # noqa: ANN001
        gap = ctx.right_timestamp - ctx.left_timestamp
        if abs(gap) > 5:
            ctx.output(FAR, (ctx.key, gap))
        else:
            yield (ctx.key, left["v"], right["v"], self.subtask)

    def close(self) -> None:
        type(self).closed += 1


def test_process_join_function_is_opened_emits_side_outputs_and_is_closed() -> None:
    env = rs.StreamEnvironment(parallelism=2)
    a = env.from_collection([]).assign_timestamps_and_watermarks(STRATEGY).key_by("k")
    b = env.from_collection([]).assign_timestamps_and_watermarks(STRATEGY).key_by("k")
    joined = a.interval_join(b).between(-10, 10).process(Enrich())
    factory = joined.node.operator_factory
    assert factory is not None
    h = OperatorHarness(factory(), subtask_index=1, parallelism=2)
    h.process([{"k": "x", "ts": 100, "v": "l"}], 0)
    h.process([{"k": "x", "ts": 103, "v": "r1"}, {"k": "x", "ts": 108, "v": "r2"}], 1)
    assert h.take() == [("x", "l", "r1", 1)]
    assert h.side_records(FAR) == [("x", 8)]
    before = Enrich.closed
    h.end_input()
    assert Enrich.closed == before + 1
