"""Event time and stream status of one input of a task, from its channels (Flink's
``StatusWatermarkValve``): the task's input side of watermarks and idleness, without I/O.
"""

from __future__ import annotations

from typing import Iterable

from .events import MAX_WATERMARK, MIN_WATERMARK, StreamStatus, Watermark

__all__ = ["WatermarkValve"]


class WatermarkValve:
    """Event time and stream status of one input of a task, from the watermarks, statuses
    and ends of its channels (Flink's ``StatusWatermarkValve``). Sans-I/O: each call returns
    what the task hands on, in order (:class:`Watermark` and :class:`StreamStatus` events).

    * The input's watermark is the minimum over its *active* channels, and never goes back.
      An ended channel stays at ``MAX_WATERMARK`` (what its task sent last).
    * An idle channel does not hold it back. A channel that becomes active again counts
      only once its watermark has caught up with the input's (it is *re-aligned*); until
      then it cannot pull the watermark back.
    * The input is idle when every channel that has not ended is idle (an ended channel
      counts as neither active nor idle). On becoming idle it first flushes the largest
      watermark of its channels (none of them will advance), then says IDLE; when a channel
      becomes active again, ACTIVE comes before any watermark. When every channel has ended
      the input is not idle, and its watermark is ``MAX_WATERMARK``.

    Example:
        >>> v = WatermarkValve([0, 1])
        >>> v.on_watermark(0, 10), v.on_watermark(1, 4)
        ([], [Watermark(timestamp=4)])
        >>> v.on_status(1, idle=True)          # channel 1 no longer holds event time back
        [Watermark(timestamp=10)]
        >>> v.on_status(0, idle=True)
        [StreamStatus(idle=True)]
        >>> v.on_status(1, idle=False), v.on_watermark(1, 7), v.on_watermark(1, 12)
        ([StreamStatus(idle=False)], [], [Watermark(timestamp=12)])
    """

    def __init__(self, channels: Iterable[int]) -> None:
        self._marks: dict[int, int] = dict.fromkeys(channels, MIN_WATERMARK)
        self._idle: set[int] = set()
        self._ended: set[int] = set()
        self._aligned: set[int] = set(self._marks)  # the channels that count for the minimum
        #: the last watermark handed on
        self.watermark = MIN_WATERMARK
        #: whether the input is idle (the last status handed on)
        self.idle = False

    @property
    def ended(self) -> bool:
        """Every channel of the input has ended."""
        return len(self._ended) == len(self._marks)

    def on_watermark(self, channel: int, timestamp: int) -> list[Watermark | StreamStatus]:
        """Channel ``channel`` sent a watermark (an idle channel's is kept, not counted)."""
        if channel in self._ended or timestamp <= self._marks[channel]:
            return []
        self._marks[channel] = timestamp
        if channel in self._idle:
            return []
        if channel not in self._aligned:
            if timestamp < self.watermark:
                return []
            self._aligned.add(channel)  # caught up
        return self._advance()

    def on_status(self, channel: int, idle: bool) -> list[Watermark | StreamStatus]:
        """Channel ``channel`` became idle or active again."""
        if channel in self._ended or idle == (channel in self._idle):
            return []
        if idle:
            self._idle.add(channel)
            self._aligned.discard(channel)
        else:
            self._idle.discard(channel)
            if self._marks[channel] >= self.watermark:
                self._aligned.add(channel)
        return self._settle()

    def on_end(self, channel: int) -> list[Watermark | StreamStatus]:
        """Channel ``channel`` ended: nothing more comes, so it holds no event time back."""
        if channel in self._ended:
            return []
        self._ended.add(channel)
        self._idle.discard(channel)
        self._marks[channel] = MAX_WATERMARK
        self._aligned.add(channel)
        return self._settle()

    def _advance(self) -> list[Watermark | StreamStatus]:
        if not self._aligned:
            return []
        wm = min(self._marks[c] for c in self._aligned)
        if wm <= self.watermark:
            return []
        self.watermark = wm
        return [Watermark(wm)]

    def _settle(self) -> list[Watermark | StreamStatus]:
        """After a channel changed status or ended: the input's status and watermark."""
        live = [c for c in self._marks if c not in self._ended]
        idle = bool(live) and all(c in self._idle for c in live)
        if idle == self.idle:
            return [] if idle else self._advance()  # (an idle input hands on no watermark)
        self.idle = idle
        if not idle:
            return [StreamStatus(False), *self._advance()]
        out: list[Watermark | StreamStatus] = []
        top = max(self._marks.values())  # (no channel left to advance it: flush)
        if top > self.watermark:
            self.watermark = top
            out.append(Watermark(top))
        out.append(StreamStatus(True))
        return out
