"""raystream: exactly-once stream processing and stateful functions for Python, on Ray.

Example:
    >>> import raystream as rs
    >>> env = rs.StreamEnvironment(parallelism=2)
    >>> env.from_collection(["to be or not to be"]).flat_map(str.split).print()  # doctest: +SKIP
"""

from engine import (
    Barrier,
    Batch,
    CheckpointError,
    ConfigError,
    GraphError,
    JobCancelled,
    JobClient,
    JobFailed,
    JobResult,
    KeyGroupRange,
    ManualClock,
    RaystreamError,
    Sink,
    SinkWriter,
    Committer,
    Source,
    SourceReader,
    StateError,
    StreamOperator,
    Watermark,
)
from engine.restart import RestartStrategy
from operators import (
    DataStream,
    KeyedProcessFunction,
    KeyedStream,
    RuntimeContext,
    StreamEnvironment,
)

__version__ = "0.1.0"

__all__ = [
    "Barrier",
    "Batch",
    "CheckpointError",
    "Committer",
    "ConfigError",
    "DataStream",
    "GraphError",
    "JobCancelled",
    "JobClient",
    "JobFailed",
    "JobResult",
    "KeyGroupRange",
    "KeyedProcessFunction",
    "KeyedStream",
    "ManualClock",
    "RaystreamError",
    "RestartStrategy",
    "RuntimeContext",
    "Sink",
    "SinkWriter",
    "Source",
    "SourceReader",
    "StateError",
    "StreamEnvironment",
    "StreamOperator",
    "Watermark",
    "__version__",
]
