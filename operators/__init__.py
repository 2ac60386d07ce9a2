"""The operator library and the DataStream API built on the engine's contracts.

The library (``basic``, ``keyed``, ``functions``, ``time``, ``timers``, ``windows``,
``window_operator``, ``window_fast``, ``two_input``, ``join_operators``, ``sources``,
``sinks``, ``redis_streams``, ``testing``) holds operators and user-function contracts and
knows nothing of the API. The API is graph building on top of it, its modules importing one way::

    _environment_base   the job being built: graph, settings, engine.submit (the one door)
      <- _stream_base   StreamBase (a handle on a node), shared graph helpers
      <- connected, joins, windowed_stream   builders of two-input and window nodes
      <- datastream     DataStream, KeyedStream, DataStreamSink
      <- environment    StreamEnvironment (the sources)

``tests/unit/test_api_layering.py`` checks that the imports stay that way.
"""

from .basic import FilterOperator, FlatMapOperator, MapBatchesOperator, MapOperator
from .datastream import DataStream, DataStreamSink, KeyedStream
from .environment import StreamEnvironment
from .flink_functions import FilterFunction, FlatMapFunction, MapFunction, ReduceFunction
from .functions import (
    BroadcastProcessFunction,
    CoProcessFunction,
    KeyedBroadcastProcessFunction,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    OutputTag,
    ProcessContext,
    ProcessFunction,
    RuntimeContext,
)
from .join_operators import ProcessJoinFunction
from .keyed import AggregateOperator, KeyedProcessOperator, ReduceOperator
from .redis_streams import RedisStreamSink, RedisStreamSource
from .sinks import CollectSink, FileSink, JsonLinesSink, ParquetSink, PrintSink
from .sources import CollectionSource, GeneratorSource, ParquetSource, TextSource
from .testing import OperatorHarness
from .time import WatermarkStrategy
from .windows import (
    AllWindowFunction,
    CountTrigger,
    EventTimeSessionWindows,
    EventTimeTrigger,
    GlobalWindows,
    NeverTrigger,
    ProcessAllWindowFunction,
    ProcessingTimeSessionWindows,
    ProcessingTimeTrigger,
    ProcessWindowFunction,
    PurgingTrigger,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    TimeWindow,
    Trigger,
    TriggerResult,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
    WindowFunction,
)

__all__ = [
    "FilterFunction",
    "FlatMapFunction",
    "MapFunction",
    "ReduceFunction",
    "StreamEnvironment",
    "DataStream",
    "DataStreamSink",
    "KeyedStream",
    "KeyedProcessFunction",
    "ProcessFunction",
    "ProcessContext",
    "RuntimeContext",
    "MapOperator",
    "FlatMapOperator",
    "FilterOperator",
    "MapBatchesOperator",
    "ReduceOperator",
    "AggregateOperator",
    "KeyedProcessOperator",
    "CollectSink",
    "PrintSink",
    "FileSink",
    "ParquetSink",
    "JsonLinesSink",
    "CollectionSource",
    "GeneratorSource",
    "ParquetSource",
    "TextSource",
    "RedisStreamSource",
    "RedisStreamSink",
    # event time
    "WatermarkStrategy",
    "OutputTag",
    "CoProcessFunction",
    "KeyedCoProcessFunction",
    "BroadcastProcessFunction",
    "KeyedBroadcastProcessFunction",
    "ProcessJoinFunction",
    "ProcessWindowFunction",
    "ProcessAllWindowFunction",
    "WindowFunction",
    "AllWindowFunction",
    "TimeWindow",
    "TumblingEventTimeWindows",
    "TumblingProcessingTimeWindows",
    "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows",
    "EventTimeSessionWindows",
    "ProcessingTimeSessionWindows",
    "GlobalWindows",
    "Trigger",
    "TriggerResult",
    "EventTimeTrigger",
    "ProcessingTimeTrigger",
    "CountTrigger",
    "PurgingTrigger",
    "NeverTrigger",
    "OperatorHarness",
]

from .evictors import CountEvictor, DeltaEvictor, Evictor, TimeEvictor, TimestampedValue  # noqa: E402  (window evictors)

__all__ += ["Evictor", "CountEvictor", "TimeEvictor", "DeltaEvictor", "TimestampedValue"]

from .time import BoundedOutOfOrdernessWatermarks, WatermarkGenerator, WatermarkOutput  # noqa: E402  (watermark generators)

__all__ += ["WatermarkGenerator", "WatermarkOutput", "BoundedOutOfOrdernessWatermarks"]

from .time import Duration, Time, TimestampAssigner  # noqa: E402  (PyFlink's Duration, Time, TimestampAssigner)

__all__ += ["Duration", "Time", "TimestampAssigner"]

from .environment import StreamExecutionEnvironment  # noqa: E402  (PyFlink's name of the environment)
from .timers import TimeDomain  # noqa: E402  (what ctx.time_domain() of on_timer equals)

__all__ += ["StreamExecutionEnvironment", "TimeDomain"]
