"""The operator library and the DataStream API built on the engine's contracts."""

from .basic import FilterOperator, FlatMapOperator, MapBatchesOperator, MapOperator
from .datastream import DataStream, DataStreamSink, KeyedStream, StreamEnvironment
from .functions import (
    BroadcastProcessFunction,
    CoProcessFunction,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    OutputTag,
    ProcessContext,
    RuntimeContext,
)
from .joins import ProcessJoinFunction
from .keyed import AggregateOperator, KeyedProcessOperator, ReduceOperator
from .sinks import CollectSink, FileSink, JsonLinesSink, ParquetSink, PrintSink
from .sources import CollectionSource, GeneratorSource, ParquetSource, TextSource
from .testing import OperatorHarness
from .time import WatermarkStrategy
from .windows import (
    CountTrigger,
    EventTimeSessionWindows,
    EventTimeTrigger,
    GlobalWindows,
    NeverTrigger,
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
)

__all__ = [
    "StreamEnvironment",
    "DataStream",
    "DataStreamSink",
    "KeyedStream",
    "KeyedProcessFunction",
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
    # event time
    "WatermarkStrategy",
    "OutputTag",
    "CoProcessFunction",
    "KeyedCoProcessFunction",
    "BroadcastProcessFunction",
    "ProcessJoinFunction",
    "ProcessWindowFunction",
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
