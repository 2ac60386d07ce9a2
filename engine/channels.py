"""Channels: the one small interface between a producing task and a consuming task.

A :class:`ChannelSender` ships a list of items (Arrow RecordBatches and control events,
in order) to one input channel of one downstream task. It enforces **credit-based
back-pressure**: at most ``window`` sends may be unacknowledged; a consumer acknowledges a
send only after it has *processed* every item in it, so in-flight data per channel is
bounded by ``window`` sends. Feedback channels (``window=None``) never block.

Implementations: the Ray actor-call transport lives in :mod:`engine.ray_runtime`;
:class:`LocalSender` connects tasks in one process (tests, seeded schedulers).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["ChannelMetrics", "ChannelSender", "LocalSender", "Cancelled"]


class Cancelled(Exception):
    """Raised inside a task thread when the task was cancelled while blocked."""


@dataclass
class ChannelMetrics:
    """Counters of one output channel (read by tests and metrics)."""

    sends: int = 0
    batches: int = 0
    rows: int = 0
    bytes: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    blocked_s: float = 0.0


class ChannelSender(ABC):
    """Sends item lists to one downstream input channel, with a credit window."""

    transport = "abstract"  # shown in the channel metrics

    def __init__(self, channel_index: int, window: int | None) -> None:
        self.channel_index = channel_index
        self.window = window
        self.metrics = ChannelMetrics()
        self._seq = 0

    def send(self, items: list[Any], rows: int = 0, nbytes: int = 0, batches: int = 0) -> None:
        """Ship ``items`` in order; blocks while ``window`` sends are unacknowledged."""
        seq = self._seq
        self._seq += 1
        if self.window is not None and self.metrics.in_flight >= self.window:
            start = time.perf_counter()
            self._wait_for_credit()
            self.metrics.blocked_s += time.perf_counter() - start
        self._transmit(seq, items)
        m = self.metrics
        m.sends += 1
        m.batches += batches
        m.rows += rows
        m.bytes += nbytes
        m.in_flight += 1
        if m.in_flight > m.max_in_flight:
            m.max_in_flight = m.in_flight

    def _acked(self, n: int = 1) -> None:
        self.metrics.in_flight -= n

    @abstractmethod
    def _transmit(self, seq: int, items: list[Any]) -> None:
        """Start shipping one numbered send (must not block on the consumer)."""

    @abstractmethod
    def _wait_for_credit(self) -> None:
        """Block until at least one earlier send is acknowledged (or raise Cancelled)."""

    def drain(self) -> None:
        """Block until every send is acknowledged."""
        while self.metrics.in_flight > 0:
            self._wait_for_credit()


class LocalSender(ChannelSender):
    """In-process channel: ``deliver(channel_index, seq, items, ack)`` is the consumer's
    thread-safe entry point (normally ``Task.deliver``)."""

    transport = "local"

    def __init__(
        self,
        channel_index: int,
        window: int | None,
        deliver: Callable[[int, int, list, Callable[[], None]], None],
        is_cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(channel_index, window)
        self._deliver = deliver
        self._cond = threading.Condition()
        self._acks = 0
        self._is_cancelled = is_cancelled

    def _ack(self) -> None:
        with self._cond:
            self._acks += 1
            self._cond.notify_all()

    def _collect_acks(self) -> None:
        with self._cond:
            n, self._acks = self._acks, 0
        if n:
            self._acked(n)

    def _transmit(self, seq: int, items: list[Any]) -> None:
        self._collect_acks()
        self._deliver(self.channel_index, seq, items, self._ack)

    def _wait_for_credit(self) -> None:
        with self._cond:
            while self._acks == 0:
                if self._is_cancelled():
                    raise Cancelled()
                self._cond.wait(0.05)
        self._collect_acks()
