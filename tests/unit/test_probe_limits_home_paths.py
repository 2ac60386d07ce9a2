"""``~`` in a local path means the home directory, for the file sources and the file sinks,
as in a shell; URIs are taken as they are (no Ray).

Before, ``read_text("~/x")`` looked for ``<cwd>/~/x`` and failed with "no input file
matches", and ``write_jsonl("~/out")`` wrote into a directory named ``~`` below the working
directory."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raystream.engine.connectors import END_OF_INPUT
from raystream.engine.errors import ConfigError
from raystream.engine.records import Batch
from raystream.engine.sink_operator import SinkOperator
from raystream.operators.sinks import JsonLinesSink, ParquetSink
from raystream.operators.sources import ParquetSource, TextSource, resolve_paths
from raystream.operators.testing import OperatorHarness


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home directory of its own, and a working directory elsewhere."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return home


def read(source) -> list:
    reader = source.create_reader(None)
    reader.add_splits(source.create_splits(1))
    out: list = []
    while (b := reader.poll_next()) is not END_OF_INPUT:
        assert isinstance(b, Batch)
        out.extend(b.records())
    return out


def test_read_text_of_a_path_in_the_home_directory(home):
    (home / "notes.txt").write_text("a\nb\n")
    assert read(TextSource("~/notes.txt")) == ["a", "b"]
    assert resolve_paths("~/notes.txt")[1] == [str(home / "notes.txt")]


def test_globs_and_directories_in_the_home_directory(home):
    for i in range(2):
        (home / "data").mkdir(exist_ok=True)
        pq.write_table(pa.table({"a": [i]}), home / "data" / f"part-{i}.parquet")
    assert [r["a"] for r in read(ParquetSource("~/data"))] == [0, 1]
    assert [r["a"] for r in read(ParquetSource("~/data/*.parquet"))] == [0, 1]


def test_a_missing_file_in_the_home_directory_still_fails_naming_the_path_given(home):
    with pytest.raises(ConfigError, match=r"no input file matches '~/missing.txt'"):
        resolve_paths("~/missing.txt")


def test_a_tilde_inside_a_path_or_in_a_uri_is_a_plain_character(home, tmp_path):
    odd = tmp_path / "work" / "a~b"
    odd.mkdir()
    (odd / "x.txt").write_text("z\n")
    assert read(TextSource("a~b/x.txt")) == ["z"]
    with pytest.raises(ConfigError, match="no input file matches"):
        resolve_paths("file:///~/nothing-here.txt")  # a URI's path is not expanded


@pytest.mark.parametrize("sink_type", [JsonLinesSink, ParquetSink])
def test_file_sinks_write_into_the_home_directory(home, sink_type):
    sink = sink_type("~/out")
    harness = OperatorHarness(SinkOperator(sink))
    harness.process([{"a": 1}, {"a": 2}])
    sink.create_committer().commit([c for cs in harness.end_input().committables.values() for c in cs])
    files = sorted((home / "out").glob("part-*"))
    assert len(files) == 1
    assert not (home.parent / "work" / "~").exists()
    if sink_type is JsonLinesSink:
        assert [json.loads(line) for line in files[0].read_text().splitlines()] == [{"a": 1}, {"a": 2}]
    else:
        assert pq.read_table(files[0]).column("a").to_pylist() == [1, 2]
