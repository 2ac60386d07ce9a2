"""The deterministic ``events(N)`` data set of BENCHMARKS.md.

Schema (plain columns, no dictionary encoding):

========  ======  ==========================================================
column    type    values
========  ======  ==========================================================
key       string  ``k00000``..``k09999``, Zipf-like with s = 1.1: key ``k{r:05d}``
                  has weight ``(r + 1) ** -1.1`` so ``k00000`` is ~15.1% of events
value     int64   uniform in [0, 1_000_000)
ts        int64   epoch ms, ``T0 + i // 10`` (10,000 events per event-time second)
========  ======  ==========================================================

Keys and values come from two independent seeded streams (``SEED_KEYS``, ``SEED_VALUES``)
and every column is prefix-stable: ``events(m)`` is the first ``m`` rows of ``events(n)``
for ``m <= n``, and :func:`iter_batches` yields exactly the rows of :func:`events`.
With these seeds, N = 2M has 432,224 distinct (key, 1 s window) pairs, the figure quoted
in BENCHMARKS.md.

Example:
    >>> t = events(1000)
    >>> t.schema.names, t.num_rows
    (['key', 'value', 'ts'], 1000)
    >>> t.column("ts")[0].as_py() == T0
    True

CLI::

    python -m benchmarks.datagen --n 2000000 --out benchmarks/data/events_2M.parquet
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "NUM_KEYS",
    "ZIPF_S",
    "T0",
    "EVENTS_PER_MS",
    "SEED_KEYS",
    "SEED_VALUES",
    "VALUE_HIGH",
    "SCHEMA",
    "KEY_NAMES",
    "key_probabilities",
    "events",
    "iter_batches",
    "write_parquet",
    "ensure_parquet",
    "top_key_share",
]

NUM_KEYS = 10_000
ZIPF_S = 1.1
T0 = 1_700_000_000_000  # epoch ms, a multiple of 1000 so 1 s windows align with i // 10_000
EVENTS_PER_MS = 10
SEED_KEYS = 42
SEED_VALUES = 43
VALUE_HIGH = 1_000_000
_CHUNK = 1 << 20  # rows generated at a time by iter_batches

SCHEMA = pa.schema([("key", pa.string()), ("value", pa.int64()), ("ts", pa.int64())])
KEY_NAMES: list[str] = [f"k{i:05d}" for i in range(NUM_KEYS)]
_KEY_ARRAY = pa.array(KEY_NAMES, pa.string())


def key_probabilities() -> np.ndarray:
    """Return the probability of each key index (``(r + 1) ** -s``, normalised)."""
    w = np.arange(1, NUM_KEYS + 1, dtype=np.float64) ** -ZIPF_S
    return w / w.sum()


def _key_cdf() -> np.ndarray:
    cdf = np.cumsum(key_probabilities())
    cdf /= cdf[-1]
    return cdf


def _chunks(n: int, chunk: int) -> Iterator[pa.RecordBatch]:
    """Yield the rows of ``events(n)`` as batches of ``chunk`` rows (the last may be short)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    if chunk <= 0:
        raise ValueError(f"chunk must be > 0, got {chunk!r}")
    cdf = _key_cdf()
    rng_keys = np.random.default_rng(SEED_KEYS)
    rng_values = np.random.default_rng(SEED_VALUES)
    start = 0
    while start < n:
        m = min(chunk, n - start)
        # Same draw as rng.choice(NUM_KEYS, p=...), but streamable chunk by chunk.
        idx = cdf.searchsorted(rng_keys.random(m), side="right")
        np.minimum(idx, NUM_KEYS - 1, out=idx)
        keys = _KEY_ARRAY.take(pa.array(idx))
        values = rng_values.integers(0, VALUE_HIGH, size=m, dtype=np.int64)
        ts = T0 + np.arange(start, start + m, dtype=np.int64) // EVENTS_PER_MS
        yield pa.RecordBatch.from_arrays([keys, pa.array(values), pa.array(ts)], schema=SCHEMA)
        start += m


def events(n: int) -> pa.Table:
    """Return the first ``n`` events as one ``pyarrow.Table`` (one chunk per column)."""
    batches = list(_chunks(n, max(n, 1)))
    return pa.Table.from_batches(batches, schema=SCHEMA)


def iter_batches(n: int, batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
    """Yield the first ``n`` events as ``RecordBatch`` es of ``batch_size`` rows, generated lazily.

    Memory stays bounded (about one megarow at a time) whatever ``n`` is.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size!r}")
    chunk = batch_size * max(1, _CHUNK // batch_size)
    for big in _chunks(n, chunk):
        for off in range(0, big.num_rows, batch_size):
            yield big.slice(off, batch_size)


def write_parquet(path: str | Path, n: int, row_group_size: int = 65536) -> Path:
    """Write ``events(n)`` to ``path`` as Parquet with row groups of ``row_group_size`` rows.

    The key column is written without dictionary encoding and reads back as ``string``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with pq.ParquetWriter(tmp, SCHEMA, use_dictionary=False) as writer:
        for batch in iter_batches(n, row_group_size):
            writer.write_batch(batch, row_group_size=row_group_size)
    tmp.replace(path)
    return path


def ensure_parquet(path: str | Path, n: int, row_group_size: int = 65536) -> Path:
    """Return ``path``, writing ``events(n)`` there first unless a file with ``n`` rows exists."""
    path = Path(path)
    if path.exists():
        try:
            md = pq.ParquetFile(path).metadata
            if md.num_rows == n and md.schema.to_arrow_schema().remove_metadata().equals(SCHEMA):
                return path
        except (OSError, pa.ArrowException):
            pass
    return write_parquet(path, n, row_group_size)


def top_key_share(table: pa.Table | pa.RecordBatch) -> tuple[str, float]:
    """Return the most frequent key and its share of the rows."""
    counts = table.column("key").value_counts()
    c = counts.field("counts").to_numpy()
    i = int(np.argmax(c))
    return counts.field("values")[i].as_py(), float(c[i]) / len(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.datagen", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--n", type=int, default=2_000_000, help="number of events")
    ap.add_argument(
        "--out", default="benchmarks/data/events_2M.parquet", help="Parquet file to write"
    )
    ap.add_argument("--row-group-size", type=int, default=65536)
    args = ap.parse_args(argv)

    t = time.perf_counter()
    table = events(args.n)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    write_parquet(args.out, args.n, args.row_group_size)
    write_s = time.perf_counter() - t
    key, share = top_key_share(table)
    windows = (table.column("ts").to_numpy() - T0) // 1000
    wk = pa.table({"k": table.column("key"), "w": windows})
    n_pairs = wk.group_by(["k", "w"]).aggregate([]).num_rows
    print(
        f"events({args.n:,}): generated in {gen_s:.2f} s, written in {write_s:.2f} s -> {args.out}"
    )
    print(
        f"top key {key} share {share:.2%} (theory {key_probabilities()[0]:.2%}); "
        f"distinct keys {pc.count_distinct(table.column('key')).as_py():,}; "
        f"distinct (key, 1 s window) pairs {n_pairs:,}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
