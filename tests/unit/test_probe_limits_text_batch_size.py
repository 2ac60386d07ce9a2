"""``read_text(path, batch_size=n)``: batches of at most ``n`` lines, in every encoding, and a
snapshot taken between two batches resumes at the next line (no Ray).

Before, ``batch_size`` was checked and then ignored: a batch was every line of a 1 MiB read
(20,000 lines of 50 bytes with ``batch_size=100``), so a slow map downstream got 200 times
the records per batch it asked for."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

import raystream as rs
from raystream.engine.connectors import END_OF_INPUT
from raystream.operators.sources import TextSource

LINES = [f"line {i} " + "ü" * (i % 7) + "x" * (i % 50) for i in range(20_000)]


def batches(reader) -> list[list[str]]:
    out = []
    while (b := reader.poll_next()) is not END_OF_INPUT:
        out.append(b.records())
    return out


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32-be", "latin-1"])
@pytest.mark.parametrize("batch_size", [1, 100, 8192])
def test_batches_hold_at_most_batch_size_lines(tmp_path: Path, encoding, batch_size):
    lines = LINES if encoding != "latin-1" else [line.replace("ü", "u") for line in LINES]
    path = tmp_path / "t.txt"
    path.write_text("\n".join(lines), encoding=encoding)  # (no newline after the last line)
    source = TextSource(str(path), batch_size=batch_size, split_bytes=300_000, encoding=encoding)
    reader = source.create_reader(None)
    reader.add_splits(source.create_splits(1))
    got = batches(reader)
    assert [line for b in got for line in b] == lines
    assert max(len(b) for b in got) <= batch_size
    if batch_size == 100:
        assert len(got) >= len(lines) // 100


def test_a_snapshot_between_batches_resumes_at_the_next_line(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_text("\n".join(LINES) + "\n")
    source = TextSource(str(path), batch_size=100)
    reader = source.create_reader(None)
    reader.add_splits(source.create_splits(1))
    first = [reader.poll_next().records() for _ in range(3)]
    state = copy.deepcopy(reader.snapshot_state(1))
    restored = source.create_reader(None)
    restored.add_splits(state)
    rest = batches(restored)
    assert [line for b in first + rest for line in b] == LINES


def test_read_text_passes_batch_size_on(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_text("\n".join(LINES[:500]))
    env = rs.StreamEnvironment()
    env.read_text(str(path), batch_size=10)
    [node] = [n for n in env.graph.nodes if n.source is not None]
    reader = node.source.create_reader(None)
    reader.add_splits(node.source.create_splits(1))
    got = batches(reader)
    assert max(len(b) for b in got) <= 10 and sum(len(b) for b in got) == 500
