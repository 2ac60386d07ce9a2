"""The generic dataflow engine: graphs, tasks, channels, key groups and Ray deployment.

The engine knows no concrete operator (those live in ``operators``) and nothing of
stateful functions; it runs whatever :class:`StreamOperator` chains a job graph holds.
"""

from .channels import ChannelMetrics, ChannelSender, LocalSender
from .connectors import (
    END_OF_INPUT,
    NOTHING_AVAILABLE,
    Committer,
    Sink,
    SinkWriter,
    Source,
    SourceReader,
)
from .errors import (
    CheckpointError,
    ConfigError,
    GraphError,
    JobCancelled,
    JobFailed,
    RaystreamError,
    StateError,
)
from .events import Barrier, EndOfInput, StreamStatus, Watermark
from .keygroups import KeyGroupRange, key_group_for, stable_hash
from .operator import Clock, ManualClock, OperatorContext, Output, StreamOperator, SystemClock
from .records import Batch


def __getattr__(name: str):
    # JobClient/JobResult need Ray; import them lazily so that `import engine.errors`
    # (used by the Ray-free checkpoint and statefun_api packages) does not load Ray.
    if name in ("JobClient", "JobResult", "submit"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")

__all__ = [
    "Barrier",
    "Batch",
    "ChannelMetrics",
    "ChannelSender",
    "CheckpointError",
    "Clock",
    "Committer",
    "ConfigError",
    "END_OF_INPUT",
    "EndOfInput",
    "GraphError",
    "JobCancelled",
    "JobClient",
    "JobFailed",
    "JobResult",
    "submit",
    "KeyGroupRange",
    "LocalSender",
    "ManualClock",
    "NOTHING_AVAILABLE",
    "OperatorContext",
    "Output",
    "RaystreamError",
    "Sink",
    "SinkWriter",
    "Source",
    "SourceReader",
    "StateError",
    "StreamOperator",
    "StreamStatus",
    "SystemClock",
    "Watermark",
    "key_group_for",
    "stable_hash",
]
