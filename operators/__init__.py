"""The operator library and the DataStream API built on the engine's contracts."""

from .basic import FilterOperator, FlatMapOperator, MapBatchesOperator, MapOperator
from .datastream import DataStream, DataStreamSink, KeyedStream, StreamEnvironment
from .functions import KeyedProcessFunction, ProcessContext, RuntimeContext
from .keyed import AggregateOperator, KeyedProcessOperator, ReduceOperator
from .sinks import CollectSink, FileSink, JsonLinesSink, ParquetSink, PrintSink
from .sources import CollectionSource, GeneratorSource, ParquetSource, TextSource

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
]
