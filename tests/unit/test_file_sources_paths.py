"""Which files ``read_parquet`` / ``read_text`` read for a directory, a glob or a URI (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raystream.engine.connectors import END_OF_INPUT
from raystream.engine.errors import ConfigError
from raystream.engine.records import Batch
from raystream.operators.sources import ParquetSource, TextSource, resolve_paths
from tests.checkpoint import conftest as s3_conftest

s3_server = s3_conftest.s3_server  # a moto S3 endpoint, as the checkpoint tests use


def read(source) -> list:
    """Every record of ``source``, one reader reading all its splits (ctx is unused)."""
    reader = source.create_reader(None)
    reader.add_splits(source.create_splits(1))
    out: list = []
    while (b := reader.poll_next()) is not END_OF_INPUT:
        assert isinstance(b, Batch)
        out.extend(b.records())
    return out


def write(path: Path, a: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"a": [a]}), path)


@pytest.fixture
def table_dir(tmp_path: Path) -> Path:
    """A directory as Spark or a raystream sink leaves it: data plus markers, temporary and
    in-progress files that a reader must skip."""
    d = tmp_path / "_staging" / "table"  # components above the directory given do not count
    write(d / "part-0.parquet", 1)
    write(d / "year=2024" / "part-1.parquet", 2)
    write(d / "_temporary" / "0" / "part-0.parquet", 99)
    write(d / ".hidden" / "part-0.parquet", 98)
    write(d / "sub" / "_tmp" / "part-0.parquet", 97)
    write(d / ".inprogress-0-1-abc", 96)
    write(d / "sub" / "_part.parquet", 95)
    (d / "_SUCCESS").write_bytes(b"")
    return d


def test_a_directory_skips_every_path_component_starting_with_underscore_or_dot(table_dir):
    assert pq.read_table(table_dir).column("a").to_pylist() == [1, 2]  # what pyarrow reads
    assert [r["a"] for r in read(ParquetSource(str(table_dir)))] == [1, 2]
    assert resolve_paths(str(table_dir))[1] == [str(table_dir / "part-0.parquet"),
                                                str(table_dir / "year=2024" / "part-1.parquet")]


def test_a_directory_uri_skips_them_too(table_dir):
    assert [r["a"] for r in read(ParquetSource(f"file://{table_dir}"))] == [1, 2]


def test_read_text_of_a_directory_skips_them(tmp_path):
    (tmp_path / "_temporary").mkdir()
    (tmp_path / "_temporary" / "a.txt").write_text("temporary\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "a.txt").write_text("hidden\n")
    (tmp_path / ".inprogress-0-0-x").write_text("in progress\n")
    (tmp_path / "a.txt").write_text("a\nb\n")
    assert read(TextSource(str(tmp_path))) == ["a", "b"]


def test_a_file_named_explicitly_is_read_even_if_it_starts_with_underscore(tmp_path):
    write(tmp_path / "_only.parquet", 7)
    assert [r["a"] for r in read(ParquetSource(str(tmp_path / "_only.parquet")))] == [7]


def test_a_directory_with_only_skipped_files_is_an_error_naming_it(tmp_path):
    write(tmp_path / "_temporary" / "x.parquet", 1)
    for path in (str(tmp_path), f"file://{tmp_path}"):
        with pytest.raises(ConfigError, match="no input file matches"):
            resolve_paths(path)


def test_symlinked_directories_are_not_followed(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("x\n")
    (tmp_path / "a" / "loop").symlink_to(tmp_path)
    assert resolve_paths(str(tmp_path))[1] == [str(tmp_path / "a" / "f.txt")]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel, a in [("top.parquet", 1), ("a/mid.parquet", 2), ("a/b/deep.parquet", 3), ("a/b/other.txt", 0),
                   ("_temporary/0/t.parquet", 99), (".hidden/h.parquet", 98), ("a/_tmp/t.parquet", 97),
                   ("_x.parquet", 96), (".y.parquet", 95)]:
        write(tmp_path / rel, a)
    return tmp_path


def values(path: str) -> list[int]:
    return [r["a"] for r in read(ParquetSource(path))]


def test_double_star_recurses_including_the_top_level_as_python_glob(tree):
    import glob

    pattern = f"{tree}/**/*.parquet"
    expected = sorted(p for p in glob.glob(pattern, recursive=True) if "/_" not in p)
    assert resolve_paths(pattern)[1] == expected
    assert values(pattern) == [3, 2, 1]  # sorted paths: a/b/deep, a/mid, top
    assert values(f"{tree}/a/**/*.parquet") == [3, 2]
    assert values(f"{tree}/**/deep.parquet") == [3]


def test_wildcards_do_not_match_names_starting_with_underscore_or_dot_unless_written(tree):
    assert values(f"{tree}/*.parquet") == [1]
    assert values(f"{tree}/_*.parquet") == [96]
    assert values(f"{tree}/.*.parquet") == [95]
    assert values(f"{tree}/_temporary/*/*.parquet") == [99]  # literal components are read


def test_a_glob_matching_a_directory_reads_its_files(tree):
    assert values(f"{tree}/[a]") == [3, 0, 2]  # a/b/deep, a/b/other.txt, a/mid (not a/_tmp)
    assert resolve_paths(f"{tree}/?")[1] == [str(tree / "a/b/deep.parquet"), str(tree / "a/b/other.txt"),
                                             str(tree / "a/mid.parquet")]


def test_character_classes_and_relative_globs(tree, monkeypatch):
    monkeypatch.chdir(tree / "a")
    assert values("[m]id.parquet") == [2]
    assert values("**/[!m]*.parquet") == [3]


def test_a_glob_that_matches_nothing_is_an_error_naming_it(tree):
    for pattern in (f"{tree}/**/*.csv", f"{tree}/nope/*.parquet", f"{tree}/top.parquet/*"):
        with pytest.raises(ConfigError, match="no input file matches"):
            resolve_paths(pattern)


def test_globs_on_file_uris(tree):
    assert values(f"file://{tree}/*.parquet") == [1]
    assert values(f"file://{tree}/**/*.parquet") == [3, 2, 1]
    assert values(f"file://{tree}/[a]/*.parquet") == [2]
    assert resolve_paths(f"file://{tree}/**/*.txt")[1] == [str(tree / "a/b/other.txt")]
    with pytest.raises(ConfigError, match="no input file matches 'file://.*/nope/\\*.parquet'"):
        resolve_paths(f"file://{tree}/nope/*.parquet")


def test_a_missing_file_uri_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="no input file matches 'file://.*/nope.parquet'"):
        resolve_paths(f"file://{tmp_path}/nope.parquet")


def test_a_glob_in_the_bucket_name_is_refused():
    with pytest.raises(ConfigError, match="bucket or host name"):
        resolve_paths("s3://logs-*/x.parquet")


def test_globs_on_s3_uris_keep_the_query_and_read_the_files(s3_server):
    import uuid

    fs = s3_server.filesystem()
    prefix = f"{s3_server.bucket}/glob-{uuid.uuid4().hex[:8]}"
    for rel, a in [("top.parquet", 1), ("2024/01/x.parquet", 2), ("_temporary/t.parquet", 99), ("notes.txt", 0)]:
        with fs.open_output_stream(f"{prefix}/{rel}") as out:
            pq.write_table(pa.table({"a": [a]}), out)
    key = prefix.split("/", 1)[1]
    assert values(s3_server.uri(f"{key}/**/*.parquet")) == [2, 1]
    assert values(s3_server.uri(f"{key}/*.parquet")) == [1]
    assert values(s3_server.uri(f"{key}/20[0-9][0-9]")) == [2]
    assert len(resolve_paths(s3_server.uri(key))[1]) == 3  # a directory: not _temporary/
