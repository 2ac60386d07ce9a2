"""The generic dataflow engine: graphs, tasks, channels, key groups and Ray deployment.

The engine knows no concrete operator (those live in ``operators``) and nothing of
stateful functions; it runs whatever :class:`StreamOperator` chains a job graph holds.
"""

from typing import TYPE_CHECKING, Any

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
from .operator import (
    Clock,
    KeyGroupedState,
    ManualClock,
    OperatorContext,
    Output,
    StreamOperator,
    SystemClock,
)
from .records import Batch

if TYPE_CHECKING:  # the lazily loaded names below, for type checkers
    from .client import JobClient, JobResult, submit
    from .pool import shutdown_workers


def __getattr__(name: str) -> Any:
    # JobClient/JobResult/submit and the worker pool need Ray; they load on first use so that
    # the contracts (engine.errors ...) and every package built on them import without Ray
    if name in ("JobClient", "JobResult", "submit"):
        from . import client

        return getattr(client, name)
    if name == "shutdown_workers":
        from . import pool

        return pool.shutdown_workers
    raise AttributeError(f"module 'raystream.engine' has no attribute {name!r}")


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
    "shutdown_workers",
    "submit",
    "KeyGroupRange",
    "KeyGroupedState",
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
