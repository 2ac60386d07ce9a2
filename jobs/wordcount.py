"""Word count: the first raystream job module.

Counts words of a text file, a Parquet file (its ``text`` column, or ``--column``), or of
generated text when no input is given, and prints the most frequent words.

Run it::

    python -m raystream.jobs.wordcount                       # generated text, embedded local Ray
    python -m raystream.jobs.wordcount README.md --parallelism 2
    python -m raystream.jobs.wordcount data.parquet --column body

Job-module convention: ``build(env, args)`` adds the job to a StreamEnvironment and
returns the stream to collect (the CLI calls it); ``main(argv)`` runs it standalone.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import raystream as rs

__all__ = ["build", "main", "tokenize", "generated_text"]

_WORD = re.compile(r"[a-z0-9']+")

_VOCABULARY = (
    "the quick brown fox jumps over the lazy dog while streams of events flow through "
    "operators keyed by words and counted exactly once across failures"
).split()


def tokenize(line: str) -> list[str]:
    """Lower-cased words of a line."""
    return _WORD.findall(line.lower())


def generated_text(i: int) -> str:
    """Deterministic line ``i`` of generated text (for runs without an input file)."""
    n = len(_VOCABULARY)
    return " ".join(_VOCABULARY[(i * 7 + j * j) % n] for j in range(12))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="wordcount", description=__doc__.splitlines()[0])
    p.add_argument("input", nargs="?", help="text or Parquet file (default: generated text)")
    p.add_argument("--column", default="text", help="text column of a Parquet input")
    p.add_argument("--lines", type=int, default=20000, help="generated lines when no input is given")
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--top", type=int, default=10)
    return p.parse_args(argv)


def build(env: rs.StreamEnvironment, args: argparse.Namespace) -> rs.DataStream:
    """Add the word count to ``env``; returns the stream of ``(word, count)`` updates."""
    if args.input is None:
        lines = env.generate(generated_text, count=args.lines)
    elif args.input.endswith(".parquet"):
        column = args.column
        lines = env.read_parquet(args.input, columns=[column]).map(lambda row: row[column] or "")
    else:
        lines = env.read_text(args.input)
    return (
        lines.flat_map(tokenize)
        .map(lambda w: (w, 1))
        .key_by(0)
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .name("count")
    )


def final_counts(updates: list[tuple[str, int]]) -> dict[str, int]:
    """The last (largest) count per word of a rolling count stream."""
    out: dict[str, int] = {}
    for word, n in updates:
        if n > out.get(word, 0):
            out[word] = n
    return out


def report(updates: list[tuple[str, int]], args: argparse.Namespace) -> dict[str, int]:
    """Print the most frequent words (``python -m raystream.jobs.wordcount`` and ``raystream run`` alike)."""
    counts = final_counts(updates)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: args.top]
    width = max((len(w) for w, _ in top), default=4)
    print(f"{'word':<{width}}  count")
    for word, n in top:
        print(f"{word:<{width}}  {n}")
    print(f"{len(counts)} distinct words, {sum(counts.values())} words in all")
    return counts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = rs.StreamEnvironment(parallelism=args.parallelism)
    return report(build(env, args).execute_and_collect("wordcount"), args)


if __name__ == "__main__":
    main(sys.argv[1:])
