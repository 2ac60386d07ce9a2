"""How a job runs: :class:`JobConfig` (set through ``StreamEnvironment``) and the per-task
knobs of :class:`TaskConfig`. Plain data, part of the engine's ground floor: the API builds
these, the runtime reads them.

Example:
    >>> JobConfig(name="wordcount").task.flush_ms
    50
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from .errors import ConfigError
from .operator import Clock
from .restart import RestartStrategy
from .state_backend import StateBackend

__all__ = ["CHANNEL_TRANSPORTS", "JobConfig", "TaskConfig", "as_int", "check_channel_transport"]

#: the values of ``channel_transport`` (``StreamEnvironment(channel_transport=...)``)
CHANNEL_TRANSPORTS = ("auto", "ray")


def as_int(value: object) -> int | None:
    """``value`` as a Python ``int`` if it is a whole number of an integer type (``int``,
    a numpy integer such as ``np.int64``, any ``numbers.Integral``), else None. ``bool`` is
    not a number here (``True`` as a window size or a count is a mistake, not 1). Settings
    are checked with it so that a count or a length in ms computed with numpy is taken
    (and kept as a plain ``int``, which pickles and prints as one).

    Example:
        >>> import numpy as np
        >>> as_int(np.int64(5)), as_int(5), as_int(True), as_int(5.0)
        (5, 5, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def check_channel_transport(value: object) -> str:
    """``value`` if it is a known channel transport, else a :class:`ConfigError` naming them.

    Example:
        >>> check_channel_transport("ray")
        'ray'
    """
    if value not in CHANNEL_TRANSPORTS:
        raise ConfigError(f"channel_transport must be one of {', '.join(map(repr, CHANNEL_TRANSPORTS))}, got {value!r}")
    return str(value)


@dataclass
class TaskConfig:
    """Runtime knobs of every task of a job."""

    batch_size: int = 65536  # rows per network batch
    flush_ms: int = 50  # buffer timeout
    buffer_bytes: int = 8 << 20  # about the most bytes of records per network batch
    credits: int = 4  # unacknowledged sends allowed per channel
    exactly_once: bool = True  # align barriers (False: at-least-once, no alignment)
    # an idle source (its reader returned NOTHING_AVAILABLE) is polled again after
    # idle_poll_ms, then after twice as long each time it still has nothing, up to
    # idle_poll_max_ms (the larger of the two); records start it over at idle_poll_ms. Mail
    # (checkpoints, timers due, cancel, a reader's ctx.post) wakes the task at once
    idle_poll_ms: int = 5
    idle_poll_max_ms: int = 100
    # how channels between task executors travel (see CHANNEL_TRANSPORTS): "auto": a Unix
    # domain socket between executors on the same node, Ray actor calls otherwise; "ray":
    # always Ray actor calls
    channel_transport: str = "auto"
    # how often (processing time) a user's WatermarkGenerator gets on_periodic_emit whether
    # records came or not (Flink's ExecutionConfig.setAutoWatermarkInterval; 0: only after
    # each batch)
    auto_watermark_interval_ms: int = 200

    def __post_init__(self) -> None:
        """Refuse a setting no task could run with, naming it, when the job is built (a NaN or
        infinite ``flush_ms`` failed every task with ``ValueError: Invalid value NaN`` or
        ``OverflowError: timestamp out of range``; a fractional ``credits`` was taken as the
        next int up).

        Example:
            >>> try:
            ...     TaskConfig(flush_ms=float("nan"))
            ... except ConfigError as exc:
            ...     print(exc)
            flush_ms must be a finite number >= 0 (ms a partly filled batch may wait), got nan
        """
        for name, what in (("batch_size", "rows per network batch"), ("buffer_bytes", "bytes of records per network batch"),
                           ("credits", "unacknowledged sends per channel")):
            value = as_int(getattr(self, name))
            if value is None or value < 1:
                raise ConfigError(f"{name} must be an int >= 1 ({what}), got {getattr(self, name)!r}")
            setattr(self, name, value)
        for name, what in (("flush_ms", "ms a partly filled batch may wait"), ("idle_poll_ms", "ms an idle source waits"),
                           ("idle_poll_max_ms", "most ms an idle source waits between polls")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < math.inf:
                raise ConfigError(f"{name} must be a finite number >= 0 ({what}), got {value!r}")
        interval = as_int(self.auto_watermark_interval_ms)
        if interval is None or interval < 0:
            raise ConfigError("auto_watermark_interval_ms must be an int >= 0 (ms between a watermark generator's "
                              f"periodic emits; 0: after batches only), got {self.auto_watermark_interval_ms!r}")
        self.auto_watermark_interval_ms = interval
        check_channel_transport(self.channel_transport)


@dataclass
class JobConfig:
    """Everything about how a job runs (set through StreamEnvironment)."""

    name: str = "raystream-job"
    task: TaskConfig = field(default_factory=TaskConfig)
    task_num_cpus: float = 0.0
    # how checkpoints are taken when checkpointing is enabled (a checkpoint.CheckpointConfig):
    # opaque to the engine, which hands it to the state backend's create_coordinator
    checkpoint: object | None = None
    restart: RestartStrategy | None = None  # None: the master's default for the job
    clock: Clock | None = None  # processing time of every task (None: the system clock)
    from_savepoint: str | None = None
    allow_non_restored_state: bool = False
    slot_sharing: bool = True  # one TaskActor per subtask index hosts that subtask of every vertex
    reuse_workers: bool = True  # deploy onto (and give back to) the driver's worker pool
    master_failovers: int = 3  # new masters that may take the job over (needs checkpointing)
    # warm spare task executors a job that can restart keeps (from the driver's worker pool):
    # a restart replaces a lost executor with a spare instead of starting a process
    standby_executors: int = 1
    # keyed state, snapshots, checkpoint coordination and storage (engine.state_backend);
    # None: the registered default (checkpoint's heap backend), filled in by engine.submit
    state_backend: StateBackend | None = None
