"""Fraud detection: the Apache Flink DataStream walkthrough on raystream.

A transaction stream is keyed by account; a :class:`FraudDetector` (a
``KeyedProcessFunction`` with keyed state and timers) raises an alert when a small
transaction (< $1.00) is followed, as the account's next transaction and within one
minute, by a large one (> $500.00). The "last transaction was small" flag lives in
``ValueState``; a timer one minute after the small transaction clears it.

Two clocks, as in Flink:

* ``event_time`` (default): the timer is an event-time timer at ``small.ts + 1 min`` and
  the minute is checked on the timestamps, so the alerts are deterministic (tests, replays,
  recovery);
* ``processing_time``: the walkthrough's original, a processing-time timer one minute after
  the small transaction arrived (``ctx.timer_service().current_processing_time()``).

Run it::

    python -m raystream.jobs.fraud_detection --transactions 50000
    raystream run jobs/fraud_detection.py -p 2 -- --time processing_time

Example:
    >>> txs = [transaction(i) for i in range(20_000)]
    >>> alerts = reference_alerts(txs)
    >>> len(alerts) > 0, all(a["amount"] > LARGE_AMOUNT for a in alerts)
    (True, True)
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Any, Iterable

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.operators.time import WatermarkStrategy

__all__ = [
    "SMALL_AMOUNT",
    "LARGE_AMOUNT",
    "ONE_MINUTE",
    "FraudDetector",
    "transaction",
    "reference_alerts",
    "build",
    "parse_args",
    "main",
]

SMALL_AMOUNT = 1.00
LARGE_AMOUNT = 500.00
ONE_MINUTE = 60_000
T0 = 1_704_067_200_000
_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def transaction(i: int, seed: int = 0, accounts: int = 20, interval_ms: int = 1_000) -> dict[str, Any]:
    """Transaction ``i`` (a pure function of its arguments): ``{account, amount, ts}``.

    About 4% of the amounts are small (< $1), 4% large (> $500), the rest in between; one
    transaction every ``interval_ms`` of event time over ``accounts`` accounts.

    Example:
        >>> sorted(transaction(0))
        ['account', 'amount', 'ts']
    """
    h = _mix(seed * 0x9E3779B97F4A7C15 + i)
    kind = h % 25
    cents = (h >> 8) % 100_000
    if kind == 0:
        amount = (cents % 100) / 100  # $0.00 .. $0.99
    elif kind == 1:
        amount = 500.01 + cents / 100  # > $500
    else:
        amount = 1.00 + (cents % 49_900) / 100  # $1.00 .. $499.99
    return {"account": int(1 + (h >> 40) % accounts), "amount": amount, "ts": T0 + i * interval_ms}


class FraudDetector(rs.KeyedProcessFunction):
    """Alerts on a small transaction followed by a large one within a minute (per account).

    Args:
        time_domain: ``"event_time"`` (timestamps; deterministic) or ``"processing_time"``.

    Example:
        >>> # transactions.key_by("account").process(FraudDetector())
    """

    def __init__(self, time_domain: str = "event_time") -> None:
        if time_domain not in ("event_time", "processing_time"):
            raise rs.ConfigError(f"FraudDetector(time_domain=...) must be 'event_time' or 'processing_time', got {time_domain!r}")
        self.event_time = time_domain == "event_time"

    def open(self, ctx: Any) -> None:
        # when the last transaction was small: its time (event or processing), else None
        self.small_at = ctx.get_state(ValueStateDescriptor("small_at", default=None))
        self.timer = ctx.get_state(ValueStateDescriptor("timer", default=None))

    def _now(self, ctx: Any) -> int:
        return ctx.timestamp if self.event_time else ctx.timer_service().current_processing_time()

    def process_element(self, tx: dict[str, Any], ctx: Any) -> Iterable[dict[str, Any]]:
        now = self._now(ctx)
        small_at = self.small_at.value()
        out = []
        if small_at is not None:
            if tx["amount"] > LARGE_AMOUNT and now - small_at < ONE_MINUTE:
                out.append({"account": tx["account"], "amount": tx["amount"], "ts": tx["ts"], "small_at": small_at})
            self._clean_up(ctx)
        if tx["amount"] < SMALL_AMOUNT:
            self.small_at.update(now)
            t = now + ONE_MINUTE
            if self.event_time:
                ctx.timer_service().register_event_time_timer(t)
            else:
                ctx.timer_service().register_processing_time_timer(t)
            self.timer.update(t)
        return out

    def on_timer(self, timestamp: int, ctx: Any) -> None:
        self.small_at.clear()
        self.timer.clear()

    def _clean_up(self, ctx: Any) -> None:
        t = self.timer.value()
        if t is not None:
            if self.event_time:
                ctx.timer_service().delete_event_time_timer(t)
            else:
                ctx.timer_service().delete_processing_time_timer(t)
        self.small_at.clear()
        self.timer.clear()


def reference_alerts(txs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The event-time alerts computed with a plain loop (transactions in timestamp order)."""
    small: dict[int, int] = {}
    out = []
    for tx in txs:
        acc, ts = tx["account"], tx["ts"]
        s = small.pop(acc, None)
        if s is not None and tx["amount"] > LARGE_AMOUNT and ts - s < ONE_MINUTE:
            out.append({"account": acc, "amount": tx["amount"], "ts": ts, "small_at": s})
        if tx["amount"] < SMALL_AMOUNT:
            small[acc] = ts
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="fraud_detection", description=__doc__.splitlines()[0])
    p.add_argument("--transactions", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accounts", type=int, default=20)
    p.add_argument("--time", choices=["event_time", "processing_time"], default="event_time")
    p.add_argument("--parallelism", type=int, default=2)
    return p.parse_args(argv)


def build(env: rs.StreamEnvironment, args: argparse.Namespace) -> rs.DataStream:
    """Add the detector to ``env``; returns the stream of alerts.

    One source subtask keeps each account's transactions in order (the detector looks at
    consecutive transactions of an account)."""
    fn = partial(transaction, seed=args.seed, accounts=args.accounts)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    txs = env.generate(fn, count=args.transactions).set_parallelism(1).assign_timestamps_and_watermarks(strategy)
    return txs.key_by("account").process(FraudDetector(args.time)).name("fraud-detector")


def report(alerts: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the alerts."""
    for a in sorted(alerts, key=lambda a: a["ts"])[:20]:
        print(f"ALERT account {a['account']}: ${a['amount']:.2f} at {a['ts']} after a small transaction at {a['small_at']}")
    print(f"{len(alerts)} alerts in {args.transactions} transactions")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the job on an embedded local Ray and print the alerts."""
    args = parse_args(argv)
    env = rs.StreamEnvironment(parallelism=args.parallelism)
    alerts = build(env, args).execute_and_collect("fraud-detection")
    report(alerts, args)
    return alerts


if __name__ == "__main__":
    main(sys.argv[1:])
