"""Joins on event time: interval join and window join / co-group.

* ``a.key_by(k1).interval_join(b.key_by(k2)).between(lower, upper).process(fn)`` joins
  ``l`` with every ``r`` of the same key with ``l.ts + lower <= r.ts <= l.ts + upper``.
  Buffered records are dropped by event-time timers once no future partner can arrive.
* ``a.join(b).where(k1).equal_to(k2).window(assigner).apply(fn)`` joins the pairs of each
  window; ``a.co_group(b)...apply(fn(key, lefts, rights))`` sees both sides' lists; late records
  of either input go to ``.side_output_late_data(tag)`` if set.

Graph builders: each adds one two-input node whose operator comes from
:mod:`operators.join_operators`. They import only the stream base, so
:mod:`operators.datastream` can import them.

Example:
    >>> # bids.key_by("auction").interval_join(auctions.key_by("id")).between(-10_000, 0)
    >>> #     .process(lambda bid, auction: {**bid, "seller": auction["seller"]})
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Generic, TypeVar

from raystream.engine.errors import ConfigError, GraphError
from raystream.engine.partitioners import KeyGroupPartitioner, KeySelector

from ._stream_base import (
    Key,
    StreamBase,
    add_two_input,
    event_time_assigner,
    find_timestamp_assigner,
    global_window_error,
)
from .functions import OutputTag, tag_name

# the operators, re-exported from where they lived before operators.join_operators
from .join_operators import (
    CoGroupWindowOperator,
    IntervalJoinOperator,
    JoinContext,
    ProcessJoinFunction,
    _CoGroup,
)
from .time import duration_ms, shown_ms
from .windows import Trigger, WindowAssigner

__all__ = [
    "ProcessJoinFunction",
    "JoinContext",
    "IntervalJoinOperator",
    "IntervalJoin",
    "JoinedStreams",
    "CoGroupWindowOperator",
]

S = TypeVar("S")


def _key_of(stream: StreamBase[Any], method: str) -> KeySelector:
    selector = stream._key_selector()
    if selector is None:
        raise GraphError(f"{method} expects keyed streams (key_by first), got {type(stream).__name__}")
    return selector


class IntervalJoin(Generic[S]):
    """``left.interval_join(right)``: set the bounds with :meth:`between`, then :meth:`process`."""

    def __init__(self, left: StreamBase[S], right: StreamBase[Any]) -> None:
        self.left, self.right = left, right
        self.bounds: tuple[int, int] | None = None
        self._late_tag: str | None = None
        self._exclusive = [False, False]  # lower, upper

    def between(self, lower_ms: int | dt.timedelta, upper_ms: int | dt.timedelta) -> IntervalJoin[S]:
        """Join ``l`` with ``r`` when ``l.ts + lower_ms <= r.ts <= l.ts + upper_ms`` (both bounds
        inclusive unless :meth:`lower_bound_exclusive` / :meth:`upper_bound_exclusive`; ints of
        ms or ``timedelta`` values)."""
        lower, upper = duration_ms(lower_ms, "between()'s lower bound"), duration_ms(upper_ms, "between()'s upper bound")
        for name, bound, given in (("lower", lower, lower_ms), ("upper", upper, upper_ms)):
            if bound is None:
                raise GraphError(f"between({lower_ms!r}, {upper_ms!r}): the {name} bound must be an int (ms) or timedelta, "
                                 f"got {type(given).__name__} {given!r}")
        assert lower is not None and upper is not None
        if lower > upper:
            raise GraphError(f"between({lower_ms!r}, {upper_ms!r}): lower bound must be <= upper bound")
        self.bounds = (lower, upper)
        return self

    def lower_bound_exclusive(self) -> IntervalJoin[S]:
        """Exclude the lower bound: join when ``l.ts + lower_ms < r.ts`` (Flink's
        ``lowerBoundExclusive()``).

        Example:
            >>> # bids.interval_join(asks).between(0, 5_000).lower_bound_exclusive()  # 0 < r.ts - l.ts <= 5 s
        """
        self._exclusive[0] = True
        return self

    def upper_bound_exclusive(self) -> IntervalJoin[S]:
        """Exclude the upper bound: join when ``r.ts < l.ts + upper_ms`` (Flink's
        ``upperBoundExclusive()``)."""
        self._exclusive[1] = True
        return self

    def side_output_late_data(self, tag: OutputTag | str) -> IntervalJoin[S]:
        """Send late records of either side to side output ``tag``."""
        self._late_tag = tag_name(tag)
        return self

    def process(self, fn: Callable[[Any, Any], Any] | ProcessJoinFunction) -> S:
        """``fn(left, right) -> record`` (None skips; a generator function yields any number of
        records) or a :class:`ProcessJoinFunction`."""
        if self.bounds is None:
            raise GraphError("interval_join(...) needs .between(lower_ms, upper_ms) before process()")
        if isinstance(fn, type) and issubclass(fn, ProcessJoinFunction):
            raise GraphError(f"interval_join process() expects an instance of {fn.__name__}, got the class: "
                             f"process({fn.__name__}())")
        if not (callable(fn) or isinstance(fn, ProcessJoinFunction)):
            raise GraphError(f"interval_join process() expects a function or ProcessJoinFunction, got {fn!r}")
        ts0, ts1 = find_timestamp_assigner(self.left.node), find_timestamp_assigner(self.right.node)
        if ts0 is None or ts1 is None:
            raise GraphError("interval_join needs event timestamps on both inputs: assign_timestamps_and_watermarks(...) upstream")
        ts = _event_time_sides("interval_join", (self.left.node, self.right.node), (ts0, ts1))
        sels = (_key_of(self.left, "interval_join()"), _key_of(self.right, "interval_join()"))
        lo, hi = self.bounds
        # exclusive bounds are the inclusive ones a millisecond inside (timestamps are int ms), as in Flink
        lo, hi = lo + self._exclusive[0], hi - self._exclusive[1]
        if lo > hi:
            raise GraphError(f"interval_join: between({self.bounds[0]!r}, {self.bounds[1]!r}) with "
                             f"{' and '.join(n for n, e in zip(('lower_bound_exclusive()', 'upper_bound_exclusive()'), self._exclusive) if e)} "
                             "holds no timestamp: no pair could ever join; widen the bounds or keep them inclusive")
        tag = self._late_tag
        IntervalJoinOperator(sels, ts, lo, hi, fn, tag)  # validate now, at graph build time
        return add_two_input(self.left, self.right, "interval_join",
                             lambda: IntervalJoinOperator(sels, ts, lo, hi, fn, tag), True,
                             (KeyGroupPartitioner(sels[0]), KeyGroupPartitioner(sels[1])))


class JoinedStreams(Generic[S]):
    """``a.join(b)`` / ``a.co_group(b)``: ``.where(k1).equal_to(k2).window(assigner).apply(fn)``
    (optionally ``.trigger(t)``, ``.allowed_lateness(ms)``, ``.side_output_late_data(tag)``)."""

    def __init__(self, first: StreamBase[S], second: StreamBase[Any], co_group: bool = False) -> None:
        self.first, self.second, self.co_group = first, second, co_group
        self.k1: KeySelector | None = None
        self.k2: KeySelector | None = None
        self.assigner: WindowAssigner | None = None
        self._trigger: Trigger | None = None
        self._lateness = 0
        self._late_tag: str | None = None

    def where(self, key: Key) -> JoinedStreams[S]:
        """Key of the first stream."""
        self.k1 = KeySelector(key)
        return self

    def equal_to(self, key: Key) -> JoinedStreams[S]:
        """Key of the second stream."""
        self.k2 = KeySelector(key)
        return self

    def window(self, assigner: WindowAssigner) -> JoinedStreams[S]:
        """The windows in which records are joined."""
        if not isinstance(assigner, WindowAssigner):
            raise GraphError(f"window() expects a WindowAssigner, got {assigner!r}")
        self.assigner = assigner
        return self

    def trigger(self, trigger: Trigger) -> JoinedStreams[S]:
        """A custom trigger."""
        if not isinstance(trigger, Trigger):
            raise GraphError(f"trigger() expects a Trigger (operators.windows), got {type(trigger).__name__} {trigger!r}")
        self._trigger = trigger
        return self

    def allowed_lateness(self, ms: int | dt.timedelta) -> JoinedStreams[S]:
        """Keep windows ``ms`` (an int of ms or a ``timedelta``) after they fired; later
        records re-fire them (event time)."""
        lateness = duration_ms(ms, "allowed_lateness")
        if lateness is None or lateness < 0:
            raise GraphError(f"allowed_lateness must be a non-negative int (ms) or timedelta, got {shown_ms(ms)}")
        self._lateness = lateness
        return self

    def side_output_late_data(self, tag: OutputTag | str) -> JoinedStreams[S]:
        """Send records of either input that arrive after all their windows have expired
        (later than ``allowed_lateness``) to side output ``tag`` (read it with
        ``get_side_output(tag)`` on the joined stream) instead of dropping them."""
        self._late_tag = tag_name(tag)
        return self

    def apply(self, fn: Callable[..., Any]) -> S:
        """join: ``fn(left, right) -> record`` per pair (None skips; a generator function
        yields any number of records, as Flink's FlatJoinFunction); co_group:
        ``fn(key, lefts, rights) -> iterable``."""
        if self.k1 is None or self.k2 is None or self.assigner is None:
            raise GraphError("join/co_group needs .where(key1).equal_to(key2).window(assigner) before apply()")
        if not callable(fn):
            raise GraphError(f"apply() expects a function, got {fn!r}")
        ts = (find_timestamp_assigner(self.first.node), find_timestamp_assigner(self.second.node))
        if self.assigner.is_event_time and (ts[0] is None or ts[1] is None):
            raise GraphError("an event-time window join needs timestamps on both inputs: assign_timestamps_and_watermarks(...)")
        if self.assigner.is_event_time:
            ts = _event_time_sides("window_co_group" if self.co_group else "window_join",
                                   (self.first.node, self.second.node), ts)  # type: ignore[arg-type]
        sels = (self.k1, self.k2)
        assigner, trig, lateness, late_tag = self.assigner, self._trigger, self._lateness, self._late_tag
        function = _CoGroup(fn, None) if self.co_group else _CoGroup(None, fn)
        name = "window_co_group" if self.co_group else "window_join"
        try:  # validate now, at graph build time (e.g. a trigger that cannot merge session windows)
            CoGroupWindowOperator(sels, ts, assigner, function, trig, lateness, late_tag)
        except ConfigError as exc:
            raise GraphError(f"{name}: {exc}") from exc
        return add_two_input(self.first, self.second, name,
                             lambda: CoGroupWindowOperator(sels, ts, assigner, function, trig, lateness, late_tag), True,
                             (KeyGroupPartitioner(sels[0]), KeyGroupPartitioner(sels[1])))


def _event_time_sides(what: str, nodes: tuple[Any, Any], assigners: tuple[Any, Any]) -> tuple[Any, Any]:
    """The assigners a join (``what``) reads each input's event time with: the upstream one,
    or :class:`~operators._stream_base.UnstampedAfterWindow` for an input downstream of a
    window, where a record without a timestamp must fail instead of having a field of a
    window's result read as its time; an input downstream of a count window (whose results
    carry the largest watermark as their time) is refused."""
    out = []
    for side, node, assigner in zip(("first", "second"), nodes, assigners):
        error = global_window_error(f"{what} ({side} input)", node)
        if error is not None:
            raise error
        out.append(event_time_assigner(f"{what} ({side} input)", node, assigner))
    return out[0], out[1]
