"""raystream: exactly-once stream processing and stateful functions for Python, on Ray.

Example:
    >>> import raystream as rs
    >>> env = rs.StreamEnvironment(parallelism=2)
    >>> env.from_collection(["to be or not to be"]).flat_map(str.split).print()  # doctest: +SKIP
"""

from typing import TYPE_CHECKING, Any

from raystream import engine
from raystream.checkpoint import AggregateFunction
from raystream.engine import (
    Barrier,
    Batch,
    CheckpointError,
    Committer,
    ConfigError,
    GraphError,
    JobCancelled,
    JobFailed,
    KeyGroupedState,
    KeyGroupRange,
    ManualClock,
    RaystreamError,
    Sink,
    SinkWriter,
    Source,
    SourceReader,
    StateError,
    StreamOperator,
    Watermark,
)
from raystream.engine.restart import RestartStrategy
from raystream.operators import (  # event time
    AllWindowFunction,
    BroadcastProcessFunction,
    CoProcessFunction,
    CountTrigger,
    DataStream,
    EventTimeSessionWindows,
    EventTimeTrigger,
    FilterFunction,
    FlatMapFunction,
    GlobalWindows,
    KeyedBroadcastProcessFunction,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    KeyedStream,
    MapFunction,
    NeverTrigger,
    OperatorHarness,
    OutputTag,
    ProcessAllWindowFunction,
    ProcessFunction,
    ProcessingTimeSessionWindows,
    ProcessingTimeTrigger,
    ProcessJoinFunction,
    ProcessWindowFunction,
    PurgingTrigger,
    RedisStreamSink,
    RedisStreamSource,
    ReduceFunction,
    RuntimeContext,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    StreamEnvironment,
    TimeWindow,
    Trigger,
    TriggerResult,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
    WatermarkStrategy,
    WindowFunction,
)

__version__ = "0.1.0"

if TYPE_CHECKING:  # loaded on first use (they need Ray): see __getattr__
    from raystream.engine import JobClient, JobResult, shutdown_workers


def __getattr__(name: str) -> Any:
    # the Ray-backed names load on first use, so that `import raystream.statefun_api` (the
    # SDK surface) and the graph-building API import without Ray
    if name in ("JobClient", "JobResult", "shutdown_workers"):
        return getattr(engine, name)
    raise AttributeError(f"module 'raystream' has no attribute {name!r}")

__all__ = [
    "AggregateFunction",
    "Barrier",
    "Batch",
    "BroadcastProcessFunction",
    "KeyedBroadcastProcessFunction",
    "CheckpointError",
    "CoProcessFunction",
    "Committer",
    "ConfigError",
    "CountTrigger",
    "DataStream",
    "EventTimeSessionWindows",
    "EventTimeTrigger",
    "GlobalWindows",
    "GraphError",
    "JobCancelled",
    "JobClient",
    "JobFailed",
    "JobResult",
    "KeyGroupRange",
    "KeyGroupedState",
    "KeyedCoProcessFunction",
    "KeyedProcessFunction",
    "KeyedStream",
    "ManualClock",
    "NeverTrigger",
    "OperatorHarness",
    "OutputTag",
    "ProcessFunction",
    "ProcessJoinFunction",
    "ProcessWindowFunction",
    "MapFunction",
    "FlatMapFunction",
    "FilterFunction",
    "ReduceFunction",
    "ProcessAllWindowFunction",
    "WindowFunction",
    "AllWindowFunction",
    "ProcessingTimeSessionWindows",
    "ProcessingTimeTrigger",
    "PurgingTrigger",
    "RaystreamError",
    "RedisStreamSink",
    "RedisStreamSource",
    "RestartStrategy",
    "RuntimeContext",
    "Sink",
    "SinkWriter",
    "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows",
    "Source",
    "SourceReader",
    "StateError",
    "StreamEnvironment",
    "StreamOperator",
    "TimeWindow",
    "Trigger",
    "TriggerResult",
    "TumblingEventTimeWindows",
    "TumblingProcessingTimeWindows",
    "Watermark",
    "WatermarkStrategy",
    "__version__",
    "shutdown_workers",
]

from raystream.operators import CountEvictor, DeltaEvictor, Evictor, TimeEvictor, TimestampedValue  # noqa: E402

__all__ += ["Evictor", "CountEvictor", "TimeEvictor", "DeltaEvictor", "TimestampedValue"]

from raystream.operators import BoundedOutOfOrdernessWatermarks, WatermarkGenerator, WatermarkOutput  # noqa: E402

__all__ += ["WatermarkGenerator", "WatermarkOutput", "BoundedOutOfOrdernessWatermarks"]
