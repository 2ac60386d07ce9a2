"""Control events that travel in order with data through every channel.

Nothing overtakes data in its channel: a :class:`Barrier` or :class:`Watermark` is
delivered after every batch sent before it on the same channel.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Barrier", "Watermark", "EndOfInput", "StreamStatus", "ControlEvent", "MIN_WATERMARK", "MAX_WATERMARK"]

MIN_WATERMARK = -(2**63)
MAX_WATERMARK = 2**63 - 1


@dataclass(frozen=True)
class Barrier:
    """Checkpoint barrier n (Chandy-Lamport marker). ``savepoint`` marks a user savepoint;
    ``stop`` a stop-with-savepoint: a task that has snapshotted it processes nothing more."""

    checkpoint_id: int
    timestamp_ms: int = 0
    savepoint: bool = False
    stop: bool = False


@dataclass(frozen=True)
class Watermark:
    """Event time has advanced to ``timestamp`` (ms): no record with ts <= it should follow."""

    timestamp: int


@dataclass(frozen=True)
class EndOfInput:
    """The sending channel will carry nothing more."""


@dataclass(frozen=True)
class StreamStatus:
    """An input channel became idle (``idle=True``) or active again; idle ones don't hold watermarks."""

    idle: bool


ControlEvent = Barrier | Watermark | EndOfInput | StreamStatus
