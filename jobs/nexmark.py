"""Nexmark: a seeded auction-event generator and queries q0, q1, q2, q5, q7 and q8.

The generator follows the Nexmark proportions (out of every 50 events: 1 person, 3
auctions, 46 bids, i.e. 2% / 6% / 92%). Event ``i`` is a pure function of ``(i, seed)``,
so any parallel split of the index range produces the same events, and every event carries
an event-time timestamp ``ts = T0 + i * 1000 // events_per_second`` (10 events per ms by
default, as in ``../shared/BENCHMARKS.md``).

Every event is a flat dict with the same keys (so it crosses tasks as typed Arrow columns)::

    {"kind": 0 person | 1 auction | 2 bid, "ts": epoch ms,
     "id": person / auction id (-1 for bids), "auction": the bid's auction (-1 otherwise),
     "person": auction seller / bidder (-1 for persons), "price": bid price / auction reserve,
     "category": auction category (-1 otherwise), "name": person / item name ("" for bids)}

Queries (window sizes are arguments; defaults fit 100k events = 10 s of event time):

* q0: passthrough of all events.
* q1: bids with the price converted from dollars to euro cents (``price * 908 // 1000``).
* q2: bids whose auction id is a multiple of ``--q2-modulus`` (123).
* q5: hot items: bids per auction in sliding windows (``--window-ms``, ``--slide-ms``);
  per window the auctions with the most bids.
* q7: highest bid(s) per tumbling window of ``--window-ms``.
* q8: persons who opened an auction in the tumbling window in which they registered
  (a window co-group of persons and auctions on ``person.id == auction.seller``).

Each query is ``build_qN(env, args)`` returning the stream to collect; :func:`reference`
computes the same result with a plain Python loop over :func:`generate_events`. The source
tasks generate a batch of indices at a time: q2 and q8, which filter records first, with the
same :func:`nexmark_event` call per event (:func:`event_batch`); q0, q1, q5 and q7, whose first
operators take Arrow batches (the sink, a vectorized ``map_batches``), as typed Arrow columns
of only the fields the query reads (:func:`event_columns`), built from :func:`event_row`: the
same per-event Python arithmetic as :func:`nexmark_event`, one call per event, returning the
values as a tuple instead of a dict (columns are built from it without a dict per event).

Run it::

    python -m raystream.jobs.nexmark --query 5 --events 100000
    raystream run jobs/nexmark.py -p 2 -- --query 8 --events 20000

Example:
    >>> e = nexmark_event(4)
    >>> e["kind"] == BID, e["ts"] == T0
    (True, True)
    >>> reference(2, generate_events(2_000), parse_args(["--query", "2"]))[0]
    {'auction': 1107, 'price': 138046}
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from functools import partial
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import raystream as rs
from raystream.checkpoint import AggregateFunction
from raystream.operators.sources import GeneratorSource
from raystream.operators.time import WatermarkStrategy
from raystream.operators.windows import (
    ProcessWindowFunction,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)

__all__ = [
    "PERSON",
    "AUCTION",
    "BID",
    "T0",
    "EVENT_SCHEMA",
    "nexmark_event",
    "event_row",
    "event_batch",
    "event_columns",
    "generate_events",
    "events",
    "build_q0",
    "build_q1",
    "build_q2",
    "build_q5",
    "build_q7",
    "build_q8",
    "build",
    "reference",
    "parse_args",
    "main",
    "QUERIES",
]

PERSON, AUCTION, BID = 0, 1, 2
#: event time of event 0 (2024-01-01T00:00:00Z)
T0 = 1_704_067_200_000
FIRST_PERSON_ID = 1000
FIRST_AUCTION_ID = 1000
_M64 = (1 << 64) - 1
_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")


def _mix(x: int) -> int:
    """splitmix64 finalizer: a well-mixed 64-bit hash of ``x``."""
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def nexmark_event(i: int, seed: int = 0, events_per_second: int = 10_000) -> dict[str, Any]:
    """Event number ``i`` of the stream seeded by ``seed`` (a pure function of its arguments).

    Example:
        >>> [nexmark_event(i)["kind"] for i in range(5)]
        [0, 1, 1, 1, 2]
    """
    h = _mix(seed * 0x9E3779B97F4A7C15 + i)
    epoch, offset = divmod(i, 50)
    ts = T0 + i * 1000 // events_per_second
    last_person = FIRST_PERSON_ID + epoch
    if offset == 0:
        pid = last_person
        return {"kind": PERSON, "ts": ts, "id": pid, "auction": -1, "person": -1, "price": 0,
                "category": -1, "name": f"{_NAMES[h % 10]}-{pid}"}
    if offset <= 3:
        aid = FIRST_AUCTION_ID + 3 * epoch + offset - 1
        # sellers are mostly the newest person (hot sellers), else one of the last 20
        seller = last_person if h & 3 else max(FIRST_PERSON_ID, last_person - (h >> 2) % 20)
        return {"kind": AUCTION, "ts": ts, "id": aid, "auction": -1, "person": seller,
                "price": 100 + (h >> 16) % 10_000, "category": 10 + (h >> 32) % 5, "name": f"item-{aid}"}
    last_auction = FIRST_AUCTION_ID + 3 * epoch + 2
    # half the bids go to the 4 newest auctions (hot items), the rest to one of the last 200
    back = (h >> 1) % 4 if h & 1 == 0 else (h >> 1) % 200
    return {"kind": BID, "ts": ts, "id": -1, "auction": max(FIRST_AUCTION_ID, last_auction - back),
            "person": max(FIRST_PERSON_ID, last_person - (h >> 12) % 50),
            "price": 1 + (h >> 24) % 1_000_000, "category": -1, "name": ""}


#: the events as Arrow columns (every event dict has these keys, in this order)
EVENT_SCHEMA = pa.schema([("kind", pa.int64()), ("ts", pa.int64()), ("id", pa.int64()), ("auction", pa.int64()),
                          ("person", pa.int64()), ("price", pa.int64()), ("category", pa.int64()),
                          ("name", pa.string())])


_EVENT_POSITIONS = [(pos, f.type) for pos, f in enumerate(EVENT_SCHEMA)]


def generate_events(n: int, seed: int = 0, events_per_second: int = 10_000) -> list[dict[str, Any]]:
    """The first ``n`` events, as a list (for references and baselines)."""
    return [nexmark_event(i, seed, events_per_second) for i in range(n)]


def event_batch(indices: range, seed: int = 0, events_per_second: int = 10_000) -> list[dict[str, Any]]:
    """The events of ``indices`` (a source batch: one :func:`nexmark_event` call per event).

    Example:
        >>> event_batch(range(0, 6, 2)) == [nexmark_event(i) for i in (0, 2, 4)]
        True
    """
    return [nexmark_event(i, seed, events_per_second) for i in indices]


def event_row(i: int, seed: int = 0, events_per_second: int = 10_000) -> tuple:
    """The values of ``nexmark_event(i, seed, events_per_second)`` in :data:`EVENT_SCHEMA`
    order, as a tuple: the same arithmetic, without building the dict (what
    :func:`event_columns` generates; keep the two functions in step, the tests compare them).

    Example:
        >>> event_row(4) == tuple(nexmark_event(4).values())
        True
    """
    h = _mix(seed * 0x9E3779B97F4A7C15 + i)
    epoch, offset = divmod(i, 50)
    ts = T0 + i * 1000 // events_per_second
    last_person = FIRST_PERSON_ID + epoch
    if offset == 0:
        return (PERSON, ts, last_person, -1, -1, 0, -1, f"{_NAMES[h % 10]}-{last_person}")
    if offset <= 3:
        aid = FIRST_AUCTION_ID + 3 * epoch + offset - 1
        seller = last_person if h & 3 else max(FIRST_PERSON_ID, last_person - (h >> 2) % 20)
        return (AUCTION, ts, aid, -1, seller, 100 + (h >> 16) % 10_000, 10 + (h >> 32) % 5, f"item-{aid}")
    last_auction = FIRST_AUCTION_ID + 3 * epoch + 2
    back = (h >> 1) % 4 if h & 1 == 0 else (h >> 1) % 200
    return (BID, ts, -1, max(FIRST_AUCTION_ID, last_auction - back),
            max(FIRST_PERSON_ID, last_person - (h >> 12) % 50), 1 + (h >> 24) % 1_000_000, -1, "")


def event_columns(indices: range, seed: int = 0, events_per_second: int = 10_000,
                  columns: tuple[str, ...] | None = None) -> pa.RecordBatch:
    """The events of ``indices`` as an Arrow batch of :data:`EVENT_SCHEMA`, or of its
    ``columns`` only (a projection). One :func:`event_row` call per event (the values of
    :func:`nexmark_event`, no dict), the rows transposed into one typed column per field.

    Example:
        >>> event_columns(range(3)).to_pylist() == event_batch(range(3))
        True
        >>> event_columns(range(1), columns=("kind", "ts")).to_pylist()
        [{'kind': 0, 'ts': 1704067200000}]
    """
    rows = [event_row(i, seed, events_per_second) for i in indices]
    fields, schema = _projection(columns)
    values = list(zip(*rows)) if rows else [()] * len(_EVENT_POSITIONS)
    return pa.RecordBatch.from_arrays([pa.array(values[pos], t) for pos, t in fields], schema=schema)


def _projection(columns: tuple[str, ...] | None) -> tuple[list[tuple[int, pa.DataType]], pa.Schema]:
    """(position in :data:`EVENT_SCHEMA`, type) of ``columns`` (all when None) and their schema."""
    if columns is None:
        return _EVENT_POSITIONS, EVENT_SCHEMA
    unknown = [c for c in columns if c not in EVENT_SCHEMA.names]
    if unknown:
        raise rs.ConfigError(f"Nexmark events have no columns {unknown!r}; they have {EVENT_SCHEMA.names}")
    schema = pa.schema([EVENT_SCHEMA.field(c) for c in columns])
    return [(EVENT_SCHEMA.get_field_index(c), EVENT_SCHEMA.field(c).type) for c in columns], schema


# ---------------------------------------------------------------------------- dataflow
def events(env: rs.StreamEnvironment, args: argparse.Namespace, columnar: bool = False,
           columns: tuple[str, ...] | None = None) -> rs.DataStream:
    """The generated events as a timestamped source stream (watermarks per source split).

    Each source batch is generated by one call of :func:`event_batch` (records), or of
    :func:`event_columns` with ``columnar`` (an Arrow stream, for operators that take Arrow
    batches; ``columns`` projects it, and must include ``ts``). ``args.rate`` (records/s,
    optional) throttles the source in processing time.
    """
    if columnar:
        fn: Callable[[range], Any] = partial(event_columns, seed=args.seed,
                                             events_per_second=args.events_per_second, columns=columns)
    else:
        fn = partial(event_batch, seed=args.seed, events_per_second=args.events_per_second)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    source = GeneratorSource(batch_fn=fn, count=args.events, rate=getattr(args, "rate", None),
                             batch_size=args.batch_size)
    return env.from_source(source, "generate").assign_timestamps_and_watermarks(strategy)


def _bids(env: rs.StreamEnvironment, args: argparse.Namespace) -> rs.DataStream:
    return events(env, args).filter(lambda e: e["kind"] == BID).name("bids")


def _bid_rows(events: pa.RecordBatch) -> pa.RecordBatch:
    """The bids of a batch of events (vectorized ``kind == BID``)."""
    return events.filter(pc.equal(events.column("kind"), BID))


def _columnar_bids(env: rs.StreamEnvironment, args: argparse.Namespace, columns: tuple[str, ...]) -> rs.DataStream:
    """The bids, column-wise, with the event ``columns`` a query reads (``kind`` and ``ts`` included)."""
    return events(env, args, columnar=True, columns=columns).map_batches(_bid_rows).name("bids")


def build_q0(env: rs.StreamEnvironment, args: argparse.Namespace) -> rs.DataStream:
    """q0, passthrough: every event unchanged (the columnar source stream itself: what is
    generated goes to the sink as it is)."""
    return events(env, args, columnar=True)


def _q1_row(e: dict[str, Any]) -> dict[str, Any]:
    return {"auction": e["auction"], "bidder": e["person"], "price": e["price"] * 908 // 1000, "ts": e["ts"]}


def _q1_columns(events: pa.RecordBatch) -> pa.RecordBatch:
    """:func:`_q1_row` of every bid in a batch of events, column-wise."""
    bids = _bid_rows(events)
    price = bids.column("price").to_numpy() * 908 // 1000
    return pa.RecordBatch.from_arrays([bids.column("auction"), bids.column("person"), pa.array(price), bids.column("ts")],
                                      names=["auction", "bidder", "price", "ts"])


def build_q1(env: rs.StreamEnvironment, args: argparse.Namespace) -> rs.DataStream:
    """q1, currency conversion: bids as ``{auction, bidder, price (euro), ts}``, computed
    column-wise on the columnar event stream (``map_batches``)."""
    columns = ("kind", "ts", "auction", "person", "price")
    return events(env, args, columnar=True, columns=columns).map_batches(_q1_columns).name("q1")


def build_q2(env: rs.StreamEnvironment, args: argparse.Namespace) -> rs.DataStream:
    """q2, selection: ``{auction, price}`` of bids on auctions ``% args.q2_modulus == 0``."""
    m = args.q2_modulus
    return (events(env, args).filter(lambda e: e["kind"] == BID and e["auction"] % m == 0)
            .map(lambda e: {"auction": e["auction"], "price": e["price"]}).name("q2"))


class _HotItems(ProcessWindowFunction):
    """The rows of one window (all auctions' counts) -> those with the largest count."""

    def process(self, key: Any, context: Any, elements: Any) -> Any:
        rows = list(elements)
        top = max(r["num"] for r in rows)
        return [{"auction": r["auction"], "num": r["num"], "window_start": r["window_start"],
                 "window_end": r["window_end"]} for r in rows if r["num"] == top]


def build_q5(env: rs.StreamEnvironment, args: argparse.Namespace) -> rs.DataStream:
    """q5, hot items: per sliding window, the auction(s) with the most bids.

    Stage 1 counts bids per auction and window (the vectorized window path, fed the
    columnar event stream, bids selected column-wise); stage 2 keys
    the counts by window and keeps the maximum, with each count timestamped at its
    window's end, so it lands in the tumbling window of the slide that contains it.
    """
    counts = (_columnar_bids(env, args, ("kind", "ts", "auction")).key_by("auction")
              .window(SlidingEventTimeWindows.of(args.window_ms, args.slide_ms))
              .aggregate(num=("auction", "count")).name("q5-counts"))
    return (counts.key_by("window_start").window(TumblingEventTimeWindows.of(args.slide_ms))
            .with_timestamp(lambda r: r["window_end"] - 1).process(_HotItems()).name("q5"))


class _MaxBids(AggregateFunction):
    """Accumulates ``(max price, bids with that price)``."""

    def create_accumulator(self) -> tuple[int, list]:
        return (-1, [])

    def add(self, value: dict, acc: tuple[int, list]) -> tuple[int, list]:
        price = value["price"]
        if price > acc[0]:
            return (price, [value])
        if price == acc[0]:
            acc[1].append(value)
        return acc

    def get_result(self, acc: tuple[int, list]) -> list:
        return acc[1]

    def merge(self, a: tuple[int, list], b: tuple[int, list]) -> tuple[int, list]:
        if a[0] == b[0]:
            return (a[0], a[1] + b[1])
        return a if a[0] > b[0] else b


class _WithWindowEnd(ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Any) -> Any:
        end = context.window.end
        return [{"auction": b["auction"], "bidder": b["person"], "price": b["price"], "ts": b["ts"],
                 "window_end": end} for bids in elements for b in bids]


def _top_bids(events: pa.RecordBatch, size: int) -> pa.RecordBatch:
    """The bids of a batch of events that have the batch's top price in their tumbling
    window of ``size`` ms (column-wise; no other bid of the batch can be a window's top bid)."""
    bids = _bid_rows(events)
    if not bids.num_rows:
        return bids
    ts, price = bids.column("ts").to_numpy(), bids.column("price").to_numpy()
    windows, index = np.unique(ts - ts % size, return_inverse=True)
    top = np.full(len(windows), np.iinfo(np.int64).min)
    np.maximum.at(top, index, price)
    return bids.filter(pa.array(price == top[index]))


def build_q7(env: rs.StreamEnvironment, args: argparse.Namespace) -> rs.DataStream:
    """q7, highest bid: the bid(s) with the top price in each tumbling window.

    Each source batch keeps, column-wise, only its bids with the top price of their window
    (:func:`_top_bids`: a pre-aggregation that cannot drop a window's top bid); they go as
    records to ``window_all``, whose ``combine=True`` folds each batch's bids into one
    ``(max price, bids)`` accumulator per window before the exchange to its one subtask.
    """
    columns = ("kind", "ts", "auction", "person", "price")
    top_bids = (events(env, args, columnar=True, columns=columns)
                .map_batches(partial(_top_bids, size=args.window_ms)).name("top bids per batch"))
    return (top_bids.window_all(TumblingEventTimeWindows.of(args.window_ms))
            .aggregate(_MaxBids(), window_function=_WithWindowEnd(), combine=True).name("q7"))


def _person_id(e: dict[str, Any]) -> int:
    """The person an event is about: a person's own id, an auction's seller."""
    return e["id"] if e["kind"] == PERSON else e["person"]


class _NewSellers(ProcessWindowFunction):
    """One person id's persons and auctions of a window -> the persons, if they sold."""

    def process(self, key: Any, context: Any, elements: Any) -> Any:
        evs = list(elements)
        if not any(e["kind"] == AUCTION for e in evs):
            return []
        start = context.window.start
        return [{"id": e["id"], "name": e["name"], "window_start": start} for e in evs if e["kind"] == PERSON]


def _persons_and_auctions(events: pa.RecordBatch) -> pa.RecordBatch:
    """The persons and auctions of a batch of events (vectorized ``kind != BID``), with the
    person each one is about (:func:`_person_id`) as column ``pid``."""
    rows = events.filter(pc.not_equal(events.column("kind"), BID))
    pid = pc.if_else(pc.equal(rows.column("kind"), PERSON), rows.column("id"), rows.column("person"))
    return pa.RecordBatch.from_arrays([*rows.columns, pid], names=[*rows.schema.names, "pid"])


def build_q8(env: rs.StreamEnvironment, args: argparse.Namespace) -> rs.DataStream:
    """q8, new users: persons who opened an auction in the tumbling window they registered in.

    A window co-group of persons (by id) and auctions (by seller), written as what a
    co-group is (Flink builds ``coGroup`` the same way): the persons and auctions keyed by
    the person they are about, one tumbling window per person id holding both kinds.
    Bids (92% of the events) are dropped column-wise in the source's own chain (the
    columnar event stream, :func:`_persons_and_auctions`), and the rest crosses one
    exchange, straight from the source tasks to the window.
    """
    columns = ("kind", "ts", "id", "person", "name")
    return (events(env, args, columnar=True, columns=columns).map_batches(_persons_and_auctions)
            .name("persons and auctions")
            .key_by("pid").window(TumblingEventTimeWindows.of(args.window_ms)).process(_NewSellers())
            .name("q8"))


QUERIES: dict[int, Callable[[rs.StreamEnvironment, argparse.Namespace], rs.DataStream]] = {
    0: build_q0, 1: build_q1, 2: build_q2, 5: build_q5, 7: build_q7, 8: build_q8,
}


def build(env: rs.StreamEnvironment, args: argparse.Namespace) -> rs.DataStream:
    """Add query ``args.query`` to ``env``; returns the stream to collect."""
    try:
        return QUERIES[args.query](env, args)
    except KeyError:
        raise rs.ConfigError(f"unknown Nexmark query {args.query!r}; choose one of {sorted(QUERIES)}") from None


# ---------------------------------------------------------------------------- reference
def reference(query: int, evs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Query ``query`` computed with a plain Python loop over ``evs`` (the test oracle and
    the benchmark baseline). Row order is unspecified; compare sorted rows."""
    if query == 0:
        return list(evs)
    if query == 1:
        return [_q1_row(e) for e in evs if e["kind"] == BID]
    if query == 2:
        m = args.q2_modulus
        return [{"auction": e["auction"], "price": e["price"]} for e in evs if e["kind"] == BID and e["auction"] % m == 0]
    if query == 5:
        size, slide = args.window_ms, args.slide_ms
        counts: dict[int, Counter] = defaultdict(Counter)
        for e in evs:
            if e["kind"] == BID:
                t = e["ts"]
                start = t - t % slide
                while start > t - size:
                    counts[start][e["auction"]] += 1
                    start -= slide
        out5: list[dict[str, int]] = []
        for start, c in counts.items():
            top = max(c.values())
            out5.extend({"auction": a, "num": n, "window_start": start, "window_end": start + size}
                        for a, n in c.items() if n == top)
        return out5
    if query == 7:
        size = args.window_ms
        best: dict[int, tuple[int, list]] = {}
        for e in evs:
            if e["kind"] == BID:
                w = e["ts"] - e["ts"] % size
                cur = best.get(w)
                if cur is None or e["price"] > cur[0]:
                    best[w] = (e["price"], [e])
                elif e["price"] == cur[0]:
                    cur[1].append(e)
        return [{"auction": b["auction"], "bidder": b["person"], "price": b["price"], "ts": b["ts"], "window_end": w + size}
                for w, (_, bids) in best.items() for b in bids]
    if query == 8:
        size = args.window_ms
        persons: dict[tuple[int, int], dict] = {}
        sellers: set[tuple[int, int]] = set()
        for e in evs:
            w = e["ts"] - e["ts"] % size
            if e["kind"] == PERSON:
                persons[(e["id"], w)] = e
            elif e["kind"] == AUCTION:
                sellers.add((e["person"], w))
        return [{"id": p["id"], "name": p["name"], "window_start": w} for (pid, w), p in persons.items() if (pid, w) in sellers]
    raise rs.ConfigError(f"unknown Nexmark query {query!r}; choose one of {sorted(QUERIES)}")


def sort_rows(rows: list[dict[str, Any]]) -> list[tuple]:
    """Rows as sorted tuples of their items (for order-independent comparison)."""
    return sorted(tuple(sorted(r.items())) for r in rows)


# ---------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments (``--query``, ``--events``, window sizes, ...)."""
    p = argparse.ArgumentParser(prog="nexmark", description=__doc__.splitlines()[0])
    p.add_argument("--query", type=int, default=5, choices=sorted(QUERIES))
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--events-per-second", type=int, default=10_000, help="event-time rate (sets the ts spacing)")
    p.add_argument("--rate", type=float, default=None, help="throttle the source to this many records/s")
    p.add_argument("--window-ms", type=int, default=2_000, help="window size of q5, q7, q8")
    p.add_argument("--slide-ms", type=int, default=500, help="slide of q5's sliding windows")
    p.add_argument("--q2-modulus", type=int, default=123)
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--check", action="store_true", help="compare with the plain-Python reference")
    return p.parse_args(argv)


def report(records: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print a few result rows and the row count."""
    for r in sorted(records, key=lambda r: tuple(sorted(r.items())))[:10]:
        print(r)
    print(f"q{args.query}: {len(records)} rows from {args.events} events")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run one query on an embedded local Ray (or RAYSTREAM_ADDRESS) and print the result."""
    args = parse_args(argv)
    env = rs.StreamEnvironment(parallelism=args.parallelism)
    t = time.perf_counter()
    rows = build(env, args).execute_and_collect(f"nexmark-q{args.query}")
    elapsed = time.perf_counter() - t
    report(rows, args)
    print(f"{args.events / elapsed:,.0f} events/s ({elapsed:.2f} s, job start included)")
    if args.check:
        ok = sort_rows(rows) == sort_rows(reference(args.query, generate_events(args.events, args.seed, args.events_per_second), args))
        print("matches the plain-Python reference" if ok else "DIFFERS from the plain-Python reference")
        if not ok:
            raise SystemExit(1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
